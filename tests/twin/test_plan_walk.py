"""Session 23's walk through training planning (docs/notes/s23walk.md): each test failed before its fix."""

import re
from pathlib import Path

import pytest

import twin
from twin.cli import summary
from twin.cli.main import main
from twin.core.errors import ScenarioError
from twin.core.fields import build
from twin.core.scenario import load_scenario
from twin.core.search_specs import SearchSpec
from twin.planning.space import apply, axes, candidates
from twin.planning.sweep import RANDOM, parse_axis, points
from reports.plan_report import build_page, page_result

ROOT = Path(__file__).resolve().parents[2]


def _full_space(base) -> dict:
    return dict(axes(base, build(SearchSpec, {"tokens": 1e12, "days": 30, "full_space": True}, "search")))


def test_the_full_space_of_a_dense_model_searches_plans_it_can_run():
    """D1: the default EP (32, 64) and comm SM (20, 32) values were V3's: every candidate of a dense
    model's full space was refused 'invalid: plan.ep'."""
    base = load_scenario(None, ["model.name='llama3-70b'", "plan.ep=1", "plan.comm_sms=0"])
    space = _full_space(base)
    assert space["plan.ep"] == (1,) and space["plan.comm_sms"] == (0,)
    cand = next(candidates([(k, v) for k, v in space.items()]))
    sc = apply(base, cand)
    assert sc.plan.ep == 1 and not sc.plan.comm_sms


def test_the_full_space_of_a_moe_model_takes_ep_degrees_that_divide_its_experts():
    """D1: Mixtral's 8 experts take EP 4 and 8, not V3's 32 and 64 (all invalid); V3 keeps 32, 64."""
    mixtral = load_scenario(None, ["model.name='mixtral-8x7b'", "plan.ep=8"])
    assert _full_space(mixtral)["plan.ep"] == (4, 8)
    assert _full_space(load_scenario(None))["plan.ep"] == (32, 64)


def test_a_searched_axis_need_not_hold_for_the_base_plan(capsys):
    """D2: `twin plan --set model.name=mixtral-8x7b --ep 8` was refused for the base plan's EP64
    (a value the search replaces); the base takes the list's first value where its own is not listed."""
    code = main(["plan", "--set", "model.name=mixtral-8x7b", "--ep", "8", "--gpu", "h100", "--num-gpus", "64",
                 "--pp", "4", "--tokens", "1e11", "--days", "30", "--quiet", "--workers", "1", "--simulate", "1"])
    err = capsys.readouterr().err
    assert code in (0, 3) and "plan.ep" not in err, err


def test_a_bad_searched_value_is_still_named_as_the_search_lists_it():
    """D2's base adjustment must not turn `--ep 0`'s refusal into one of the base's plan.ep."""
    with pytest.raises(ScenarioError, match=r"search\.ep\[0\].*got 0"):
        load_scenario(ROOT / "scenarios" / "v3_plan.toml", ["search.ep=[0]"])


def test_the_summary_shows_why_one_candidate_of_each_kind_cannot_run(v3):
    """D4: 'can't run 1: invalid: cluster.num_gpus' said which field refused, not why (the numbers were
    only in plan.csv); each kind now shows its first candidate's full reason."""
    out = twin.plan(v3, tokens=1e12, days=30, num_gpus=[2048], pp=[7, 16], workers=1)
    text = summary.plan_summary(out)
    assert re.search(r"can't run 1: invalid: cluster.num_gpus\n +e\.g\. 2048xh800 TP1 PP7 .*: got 2048; allowed: a "
                     r"multiple of plan.tp \* plan.cp \* plan.pp = 1 \* 1 \* 7 = 7", text), text
    page = build_page(page_result(out)).markdown()
    assert "2048xh800 TP1 PP7" in page and "allowed: a multiple of plan.tp" in page


def test_the_plan_scenario_searches_around_the_default_v3_plan():
    """D6: scenarios/v3_plan.toml says its base is the embedded default's plan but left out its BF16
    Adam moments (optimizer_bytes_per_param 8.0): `twin plan` counted V3 at 73.1 GiB a GPU where
    `twin step` counts 70.4 GiB, and its screen refused plans on that difference."""
    default, planned = load_scenario(None), load_scenario(ROOT / "scenarios" / "v3_plan.toml").base()
    assert planned.plan == default.plan and planned.workload == default.workload and planned.model == default.model


def test_a_range_over_a_float_field_draws_floats_whatever_its_ends_are_written_as():
    """D6: `--grid workload.routing_imbalance=1:2 --random 3` drew integers (both ends written as
    integers), so 1 or 2: two points for three asked, an LHS of 4 gave 1, 2, 1, 2. A float field's
    range is continuous; an integer field's (plan.pp=1:16) stays integer."""
    imbalance = parse_axis("workload.routing_imbalance=1:2")
    assert not imbalance.integer
    pts = points([imbalance], RANDOM, 3)
    assert len(pts) == 3 and all(isinstance(v, float) and 1 <= v <= 2 for (_, v), in pts)
    assert parse_axis("plan.pp=1:16").integer and parse_axis("model.num_layers=2:4").integer


TINY = ('name = "tiny"\n[model]\nname = "tiny"\n[cluster]\ngpu = "h800"\nnum_gpus = 8\n[plan]\npp = 2\nep = 4\n'
        '[workload]\nseq_len = 512\nglobal_batch_seqs = 32\n')


def test_a_random_sweep_says_when_repeated_draws_leave_fewer_points_than_asked(tmp_path, capsys):
    """D7: `--random 10` over two schedules ran 2 points and said '2 points (random)', no word of the 10."""
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    assert main(["sweep", str(scenario), "--quiet", "--workers", "1", "--grid", "plan.schedule=1f1b,zb1p", "--random", "10",
                 "--out", str(tmp_path / "sw")]) == 0
    assert "2 points (random; 10 drawn, 8 repeats dropped: the axes hold 2)" in capsys.readouterr().out


def test_no_plan_within_the_budget_names_the_tokens_as_the_summary_does(capsys):
    """D8: 'none of the 1 simulated plans trains 1.48e+13 tokens within 60 days for at most $1,000,000'."""
    code = main(["plan", "--tokens", "14.8e12", "--days", "60", "--budget", "1e6", "--gpu", "h800", "--num-gpus", "2048",
                 "--pp", "16", "--quiet", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 3 and "trains 14.8T tokens within 60 days for at most $1,000,000" in err, err


def test_searching_the_interleaved_schedule_tries_it_with_virtual_stages(v3):
    """D10: `twin plan --schedules 1f1b,interleaved-1f1b` kept the base plan's one chunk per rank, so
    the interleaved schedule was dropped as 1F1B under another name (alone: every candidate invalid,
    'plan.virtual_stages: got 1'). Without a virtual-stage list it takes the default space's (1, 2)."""
    def space(schedules):
        return dict(axes(v3, build(SearchSpec, {"tokens": 1e12, "days": 30, "schedule": schedules}, "search")))
    both = space(["1f1b", "interleaved-1f1b"])
    assert both["plan.virtual_stages"] == (1, 2)
    assert {(dict(c.settings)["plan.schedule"], dict(c.settings)["plan.virtual_stages"]) for c in candidates(list(both.items()))} \
        == {("1f1b", 1), ("interleaved-1f1b", 2)}
    assert space(["interleaved-1f1b"])["plan.virtual_stages"] == (2,)
    assert space(["dualpipe"])["plan.virtual_stages"] == (1,)


def test_a_training_sweep_point_costs_its_tokens_as_the_plan_search_costs_the_same_plan(v3):
    """D11: a training sweep's rows had step time, MFU and memory but no cost: a planner sweeping
    cluster.gpu=h800,h200 could not compare them by price. Each row now has GPU-hours per trillion
    tokens and $ per million tokens, at the point's own price, equal to `twin plan`'s costing."""
    swept = twin.sweep(grid=["cluster.gpu=h200"], workers=1).rows[0]
    planned = twin.plan(v3, tokens=1e12, days=1000, gpu=["h200"], num_gpus=[2048], pp=[16], workers=1).best
    assert swept["usd_per_million_tokens"] == pytest.approx(planned.cost_usd / 1e6, rel=1e-9)
    assert swept["gpu_hours_per_trillion_tokens"] == pytest.approx(planned.gpu_hours, rel=1e-9)


def test_the_schedule_summary_shows_each_ranks_work_so_schedules_compare(capsys):
    """D13: at the same --f/--b/--w, `twin schedule dualpipev` showed a 54 s makespan against 1F1B's 33 s
    with no word that its ranks run two stages of F per micro-batch (2 x pp stages: twice the model);
    the busy time per rank says it (24 s against 48 s), and --f's help names the stage."""
    for name, busy in (("1f1b", "24 s"), ("dualpipev", "48 s")):
        assert main(["schedule", name, "--pp", "4", "--microbatches", "8", "--f", "1", "--b", "2", "--w", "1"]) == 0
        assert re.search(rf"busy per rank +{busy}, the model {4 if name == '1f1b' else 8} stages of --f", capsys.readouterr().out)


def test_the_python_api_reads_one_value_as_one_value_and_checks_workers(v3):
    """D14: `twin.sweep(grid="plan.pp=8,16")` read the string by character ("--grid: got 'p'"), as did
    `overrides="cluster.gpu='h200'"`; `twin.plan(sc, ..., pp=16)` was refused ("a list of integer") where
    `gpu="h200"` means one GPU type; `workers=-1` raised multiprocessing's ValueError, `workers=0`
    ran on every CPU (the command line refuses both, naming --workers)."""
    swept = twin.sweep(grid="plan.schedule=dualpipe", overrides="cluster.gpu='h200'", workers=1)
    assert swept.num_points == 1 and swept.rows[0]["status"] == "ok"
    planned = twin.plan(v3, tokens=1e12, days=30, gpu="h200", num_gpus=2048, pp=16, schedule="dualpipe", workers=1)
    assert planned.evaluated == 1 and planned.best.label.startswith("2048xh200 TP1 PP16")
    for call in (lambda w: twin.sweep(grid=["plan.pp=16"], workers=w), lambda w: twin.plan(v3, tokens=1e12, days=30, workers=w)):
        for bad in (-1, 0, 2.5):
            with pytest.raises(ScenarioError, match=r"workers"):
                call(bad)


def test_the_plan_names_the_peak_its_mfu_is_of(v3):
    """D15: `twin step` says 'MFU (BF16 peak)'; `twin plan` said 'MFU 75.4%' of an FP8 plan, which a planner
    reads against the FP8 peak (twice BF16's)."""
    out = twin.plan(v3, tokens=1e12, days=30, num_gpus=[2048], pp=[16], workers=1)
    text = summary.plan_summary(out)
    assert "% of BF16 peak" in text and "MFU (BF16)" in text
    assert text.startswith("1 candidate screened, 1 fit")   # not "1 candidates" (the README's test follows)
    assert "MFU (BF16 peak)" in build_page(page_result(out)).markdown()


def test_the_model_summary_separates_thousands(capsys):
    """D16: `twin model llama3-405b` printed '2473.2 GFLOP at 4096 tokens' (summaries elsewhere: 2,048 GPUs)."""
    assert main(["model", "llama3-405b"]) == 0
    assert "2,473.2 GFLOP at 4,096 tokens" in capsys.readouterr().out


def test_a_base_plan_the_workload_refuses_is_searched_when_the_lists_can_fix_it(capsys):
    """D17: planning V3's 32K context extension (1,920 sequences a step) with `--tp 1,2,4,8 --vary cp=1,2,4,8`
    was refused before any candidate ran: the base plan (TP1 CP1) has 15 micro-batches, under DualPipe's
    32. Every candidate is checked like a scenario, so a base the lists may fix is searched: here TP2 x CP4
    and others run; one refused whatever its lists (the question's candidates all invalid) exits 3 naming why."""
    argv = ["plan", "--set", "workload.seq_len=32768", "--set", "workload.global_batch_seqs=1920", "--tokens", "63e9",
            "--days", "30", "--gpu", "h800", "--num-gpus", "2048", "--tp", "1,2", "--vary", "cp=1,4", "--quiet",
            "--workers", "1", "--simulate", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "invalid: workload.global_batch_seqs" in capsys.readouterr().out
    assert main(argv[:-9] + ["--tp", "1", "--vary", "cp=1", "--quiet", "--workers", "1"]) == 3
    assert "invalid: workload.global_batch_seqs" in capsys.readouterr().err


def test_the_unchecked_base_of_a_plan_scenario_is_checked_before_a_step_simulates_it():
    """D17's base may not hold (the search checks each candidate): `twin.simulate_step(sc.base())` refuses it
    as `twin step` would, naming the field, rather than simulating a plan the loader refuses."""
    sc = load_scenario(ROOT / "scenarios" / "v3_plan.toml", ["workload.global_batch_seqs=1920", "search.tp=[1, 2]"])
    with pytest.raises(ScenarioError, match=r"workload.global_batch_seqs.*got 1920"):
        twin.simulate_step(sc.base())


def test_the_model_summary_gives_a_small_model_units_that_fit(capsys):
    """D18: `twin model tiny` printed '0.0 GFLOP' and '0.1 KiB' (summaries give units by size since s21walk)."""
    assert main(["model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "0.0 GFLOP" not in out and "0.1 KiB" not in out
    assert re.search(r"training FLOPs per token +[\d.]+ MFLOP at 4,096 tokens", out)
    assert re.search(r"KV cache per token \(BF16\) +\d+ B\n", out + "\n")
    assert main(["model", "deepseek-v3"]) == 0
    out = capsys.readouterr().out
    assert "250.5 GFLOP at 4,096 tokens" in out and "68.6 KiB" in out


def test_a_sweep_over_gpu_types_prices_each_as_the_plan_search_does():
    """D19: sweeping cluster.gpu=h800,h200 from a scenario that names its price (v3_on_h200.toml: $3.50)
    costed the H800 points at $3.50 too; `twin plan` prices another GPU type at its catalog price
    (space.apply), so the two commands costed the same plan apart. A point that changes the GPU type
    without setting a price takes the catalog's."""
    rows = {r["cluster.gpu"]: r for r in twin.sweep(ROOT / "scenarios" / "v3_on_h200.toml", grid=["cluster.gpu=h800,h200"],
                                                  workers=1).rows}
    for gpu, price in (("h800", 2.0), ("h200", 3.5)):
        assert rows[gpu]["usd_per_million_tokens"] == pytest.approx(rows[gpu]["gpu_hours_per_trillion_tokens"] * price / 1e6)


def test_a_sweep_none_of_whose_points_runs_says_why_on_the_terminal(tmp_path, capsys):
    """D21: 'infeasible: no point of the sweep can run (see the reasons in the report)': the reasons only in
    a file; the line now names the first point's."""
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    assert main(["sweep", str(scenario), "--quiet", "--workers", "1", "--grid", "plan.pp=3,5", "--out", str(tmp_path / "sw")]) == 3
    assert re.search(r"no point of the sweep can run: e\.g\. plan\.pp=3: invalid: cluster\.num_gpus in .*: got 8; allowed: a multiple",
                     capsys.readouterr().err)


def test_a_summary_names_the_model_a_scenario_name_does_not(capsys):
    """D22: `twin replay --set model.name=llama3-8b ...` headed its summary 'deepseek-v3-pretrain: 14.9T tokens
    on 256 H800 ...' (the default scenario's name), `twin step` likewise: the run's model is named beside."""
    dense = ["--set", "model.name=llama3-8b", "--set", "plan.ep=1", "--set", "plan.comm_sms=0", "--set", "cluster.num_gpus=256"]
    assert main(["step", "--quiet", *dense]) == 0
    assert capsys.readouterr().out.startswith("deepseek-v3-pretrain (model llama3-8b): one dualpipe step on 256 GPUs")
    assert main(["step", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("deepseek-v3-pretrain: one dualpipe step")


def test_a_dense_model_is_planned_from_the_default_scenario_in_one_go():
    """D23: `twin plan --set model.name=llama3-70b --tokens ... --days ...` (no list: the full space) was refused
    for the default scenario's EP64, then for its 20 communication SMs, before D1's dense space could run: the
    full space replaces every plan axis, so the base is searched as the lists would be."""
    sc = load_scenario(None, ["model.name='llama3-70b'", "search.tokens=1e12", "search.days=30"], kind="plan")
    space = _full_space(sc.base())
    assert space["plan.ep"] == (1,) and space["plan.comm_sms"] == (None,)
    sc = apply(sc.base(), next(candidates([(k, v) for k, v in space.items()])))
    assert sc.plan.ep == 1 and sc.plan.held_comm_sms == 0
