import dataclasses
import json

import pytest

from twin.cli.main import main as cli_main
from twin.core.errors import ScenarioError
from reports.replay_report import write_report
from twin.core.results import to_json
from twin.core.specs import training_claims
from twin.training.replay.run import replay
from twin.training.replay.stages import _ramp_levels
from twin.core.scenario import load_scenario

from fake_step import fake_step  # tests/ is on sys.path (rootdir conftest)


@pytest.fixture(scope="module")
def base():
    return to_json(replay(load_scenario(), step_fn=fake_step))


def test_default_stages_follow_the_v3_report():
    st = {s.name: s for s in load_scenario().run.stages}
    assert st["pretrain"].total_tokens == 14.8e12
    assert (st["pretrain"].batch_ramp_start_seqs, st["pretrain"].global_batch_seqs) == (3072, 15360)
    assert st["context_32k"].total_tokens == 1000 * 32768 * 1920
    assert st["context_128k"].total_tokens == 1000 * 131072 * 480


def test_json_keys_and_totals_add_up(base):
    for key in ("stages", "total_gpu_hours", "total_cost_usd", "claims", "band"):
        assert key in base
    for s in base["stages"]:
        assert {"name", "tokens", "gpu_hours", "claimed_gpu_hours", "wall_days"} <= set(s)
    assert base["total_gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in base["stages"]))
    assert base["total_cost_usd"] == pytest.approx(base["total_gpu_hours"] * 2.0)
    assert base["total_gpu_hours_goodput"] > base["total_gpu_hours"]
    pre = next(s for s in base["stages"] if s["name"] == "pretrain")
    assert pre["claimed_gpu_hours"] == 2664000
    json.dumps(base)  # serialisable


def test_claims_are_compared_not_fitted(base):
    ids = {c["id"] for c in base["claims"]}
    assert {c["id"] for c in training_claims()} == ids
    groups = {st["group"] for st in base["stages"]}
    published = {c["id"]: c for c in training_claims()}
    for c in base["claims"]:
        if c["predicted"] is None:   # a figure of another run (R1-Zero's RL): no stage of this run has its group
            assert published[c["id"]].get("group") not in groups and c["rel_error"] is None
            continue
        assert c["rel_error"] == pytest.approx((c["predicted"] - c["claimed"]) / c["claimed"])
    total = next(c for c in base["claims"] if c["id"] == "train.cost.total_gpu_hours")
    assert total["predicted"] == pytest.approx(base["total_gpu_hours"])


def test_ramp_levels_cover_the_ramp_tokens():
    levels = _ramp_levels(3072, 15360, 469e9, 128)
    assert sum(t for _, t in levels) == pytest.approx(469e9)
    assert levels[0][0] == 3072 and levels[-1][0] == 15360 - 128
    assert all(b % 128 == 0 for b, _ in levels)


def test_ramp_costs_more_than_no_ramp():
    sc = load_scenario()
    pre = dataclasses.replace(sc.run.stages[0], batch_ramp_start_seqs=0, batch_ramp_tokens=0.0)
    flat = dataclasses.replace(sc, run=dataclasses.replace(sc.run, stages=(pre,)))
    ramp = dataclasses.replace(sc, run=dataclasses.replace(sc.run, stages=(sc.run.stages[0],)))
    a = to_json(replay(flat, step_fn=fake_step, uncertainty=False, sweep=False))["total_gpu_hours"]
    b = to_json(replay(ramp, step_fn=fake_step, uncertainty=False, sweep=False))["total_gpu_hours"]
    assert b > a  # smaller batches fill the pipeline less well


def test_infeasible_stage_is_reported_not_crashed():
    sc = load_scenario(overrides=["run.plan_search=false"])
    res = to_json(replay(sc, step_fn=fake_step, uncertainty=False, sweep=False))
    bad = next(s for s in res["stages"] if s["name"] == "context_128k")
    assert bad["feasible"] is False and bad["gpu_hours"] is None
    assert res["complete"] is False
    total = next(c for c in res["claims"] if c["id"] == "train.cost.total_gpu_hours")
    assert total["predicted"] is None and total["rel_error"] is None


def test_plan_search_finds_a_fitting_plan():
    res = to_json(replay(load_scenario(), step_fn=fake_step, uncertainty=False, sweep=False))
    s = next(s for s in res["stages"] if s["name"] == "context_128k")
    assert s["feasible"] and s["plan"]["tp"] * 65536 >= 131072  # the fake's memory limit
    assert "fallback" in s["plan_note"]


def test_what_if_needs_no_new_code():
    base = to_json(replay(load_scenario(), step_fn=fake_step, uncertainty=False, sweep=False))
    more = to_json(replay(load_scenario(overrides=["cluster.num_gpus=4096"]), step_fn=fake_step, uncertainty=False, sweep=False))
    h200 = to_json(replay(load_scenario(overrides=["cluster.gpu='h200'", "cluster.price_usd_per_gpu_hour=3.5"]),
                      step_fn=fake_step, uncertainty=False, sweep=False))
    assert more["total_wall_days"] < base["total_wall_days"]
    assert h200["gpu"] == "h200" and h200["total_cost_usd"] == pytest.approx(h200["total_gpu_hours"] * 3.5)


def test_failures_off_gives_ideal_and_goodput_basis():
    off = to_json(replay(load_scenario(overrides=["failures.enabled=false"]), step_fn=fake_step, uncertainty=False, sweep=False))
    assert off["total_gpu_hours_goodput"] == pytest.approx(off["total_gpu_hours_ideal"])
    gp = to_json(replay(load_scenario(overrides=["run.claims_basis='goodput'"]), step_fn=fake_step, uncertainty=False, sweep=False))
    assert gp["total_gpu_hours"] == pytest.approx(gp["total_gpu_hours_goodput"])


def test_bad_stage_tables_name_the_field():
    with pytest.raises(ScenarioError, match=r"run\.stages\[0\]\.tokens"):
        load_scenario(overrides=["run.stages=[{name='x'}]"])
    with pytest.raises(ScenarioError, match=r"run\.stages\[0\]\.bogus"):
        load_scenario(overrides=["run.stages=[{name='x', tokens=1e9, bogus=1}]"])
    with pytest.raises(ScenarioError, match=r"batch_ramp_start_seqs"):
        load_scenario(overrides=["run.stages=[{name='x', tokens=1e9, global_batch_seqs=128, batch_ramp_start_seqs=256, batch_ramp_tokens=1e8}]"])


def test_run_replay_writes_json_and_report(tmp_path):
    out = replay(load_scenario(), step_fn=fake_step)
    write_report(out, load_scenario(), tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "result.json").read_text())
    assert data["total_gpu_hours"] == pytest.approx(out.total_gpu_hours)
    for f in ("report.html", "report.md", "results.csv", "scenario.resolved.toml", "gpu_hours_by_stage.png",
              "step_gantt.png", "sensitivity_tornado.png", "cost_vs_cluster_size.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0
    assert load_scenario(tmp_path / "rep" / "scenario.resolved.toml") == load_scenario()


def test_a_replay_too_large_to_simulate_is_refused_naming_the_field():
    # 8x V3's batch: each step is within the step limit (1.2M tasks), but ~24 of them are not
    with pytest.raises(ScenarioError, match=r"workload.global_batch_seqs.*a replay of at most 20,000,000 simulated tasks"):
        replay(load_scenario(overrides=["workload.global_batch_seqs=122880"]), step_fn=fake_step)
    # 516 layers on 2 ranks: few tasks, but each op places 259 blocks together (measured 18 s alone)
    deep = [f"{k}={v}" for k, v in {"model.name": "'tiny'", "model.num_layers": 516, "cluster.num_gpus": 8, "plan.pp": 2,
                                    "plan.ep": 4, "workload.seq_len": 512, "workload.global_batch_seqs": 32}.items()]
    with pytest.raises(ScenarioError, match=r"model.num_layers.*a replay of at most 8,000,000 ops x blocks\^2"):
        replay(load_scenario(overrides=deep), step_fn=fake_step)


def test_replay_cli_with_stages_that_cannot_run_exits_3_naming_each(tmp_path, capsys):
    """V3 on 16 GPUs: no stage fits; the report and JSON are still written, and the command exits 3
    with each stage's reason on stderr (until s19ux: exit 0 and '0 GPU-hours')."""
    out = tmp_path / "json"
    code = cli_main(["replay", "--quiet", "--set", "cluster.num_gpus=16", "--set", "plan.ep=1", "--set", "workload.global_batch_seqs=32",
                     "--out", str(tmp_path / "report"), "--json", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 3 and json.loads(out.read_text())["complete"] is False and (tmp_path / "report" / "report.html").is_file()
    assert err[0].startswith("infeasible: stage pretrain: the scenario's plan does not fit: ") and len(err) == 5


def test_the_sensitivity_note_keeps_three_figures_at_any_size():
    """A small run's 1.66K -> 1.77K GPU-hours read '2K -> 2K' (whole thousands) until s21walk."""
    from twin.training.replay.run import gap_drivers
    sens = [{"label": "compute efficiency", "low_value": 0.903, "high_value": 1.11,
             "total_gpu_hours_low": 1_660.0, "total_gpu_hours_high": 1_770.0},
            {"label": "routing imbalance", "low_value": 1.01, "high_value": 1.14,
             "total_gpu_hours_low": 2_336_000.0, "total_gpu_hours_high": 2_759_000.0}]
    notes = gap_drivers({"claims": [], "uncertainty": {"sensitivity": sens}, "stages": []})
    note = next(n for n in notes if n.startswith("Inputs that move the total most"))
    assert "1.66K -> 1.77K GPU-hours" in note and "2.34M -> 2.76M GPU-hours" in note
