"""s26walk: `twin scenario from-bench` turns a configuration real/ ran into the twin's scenario of it (the nine
--set overrides s25walk wrote by hand to open real/'s pipeline trace beside `twin trace`'s). Each test reads
committed records or a small file it writes; a few CPU-seconds in all."""

import json
import re
from pathlib import Path

import pytest

from calibration import bench_scenario as bs
from calibration import pipeline as pipe
from calibration import prereg
from calibration.predict import Eager, gpu_spec
from twin.cli.main import main
from twin.core.scenario import SERVING, from_dict, load_scenario
from twin.core.schedules import build_schedule
from twin.costs.profile import load_profile
from twin.training.step import StepCosts, autograd_accumulate_s, real_reductions_s

ROOT = Path(__file__).resolve().parents[2]
PIPE = ROOT / "calibration/measurements/h200x4/s25idle/mixtral-mla-slice"     # pp2ep2 and pp4, four schedules
SERVE = ROOT / "calibration/measurements/h100/s24stall_host3/qwen2moe"          # three real/serve load runs


def test_a_folder_of_several_configurations_is_refused_naming_what_tells_them_apart(capsys):
    assert main(["scenario", "from-bench", str(PIPE)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(r"^error: --where: got '\(none\)'; allowed: one configuration of 8: add --where with "
                     r"schedule in \{1f1b, zb1p, dualpipe, dualpipev\}; pp in \{2, 4\}", err), err


def test_a_pipeline_row_becomes_the_scenario_of_its_shape_and_the_step_twin_runs_it(tmp_path, capsys):
    out = tmp_path / "b.toml"
    assert main(["scenario", "from-bench", str(PIPE), "--where", "schedule=dualpipev", "--where", "pp=4",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert str(ROOT) not in text and "# measured step: 0.557636 s" in text and "no optimizer step" in text
    sc = load_scenario(str(out))
    p, w = sc.plan, sc.workload
    assert (sc.model.name, sc.model.num_layers, sc.model.num_mtp_modules) == ("mixtral-mla-slice", 8, 0)
    assert (sc.cluster.gpu, sc.cluster.num_gpus, p.pp, p.ep, p.tp, p.schedule) == ("h200", 4, 4, 1, 1, "dualpipev")
    assert (w.seq_len, p.micro_batch_seqs, sc.num_microbatches) == (2048, 1, 12)   # the row's 12 micro-batches
    assert (p.kernels, p.recompute, p.zero_stage, p.gemm_precision) == ("eager", "none", 0, "bf16")
    capsys.readouterr()
    assert main(["step", str(out)]) == 0 and "one dualpipev step on 4 GPUs" in capsys.readouterr().out


def test_an_ep_layout_keeps_the_twins_communication_sms_and_says_so(tmp_path):
    out = tmp_path / "ep.toml"
    assert main(["scenario", "from-bench", str(PIPE), "--where", "schedule=zb1p", "--where", "pp=2",
                 "--out", str(out)]) == 0
    sc = load_scenario(str(out))
    assert (sc.plan.pp, sc.plan.ep, sc.workload.global_batch_seqs) == (2, 2, 12)   # 6 micro-batches x dp 2
    assert "NCCL's all-to-all" in out.read_text()


def test_a_cpu_dry_runs_command_line_needs_a_gpu_named_and_gives_every_configuration_it_asked(tmp_path, capsys):
    env = {"gpu_name": "cpu", "num_gpus": 2, "config": {
        "model": "tiny", "num_layers": 4, "seq_len": 16, "mb_seqs": 2, "layouts": "pp2,ep2", "schedules": "1f1b,dualpipev",
        "microbatches": "4,8", "ep_microbatches": "1,2", "layout_microbatches": "", "precision": "bf16"}}
    src = tmp_path / "env_pipeline_pp2_ep2.json"
    src.write_text(json.dumps(env))
    assert main(["scenario", "from-bench", str(tmp_path), "--where", "schedule=dualpipev", "--where",
                 "num_microbatches=4"]) == 2
    assert "--gpu: got None; allowed: a catalog GPU for a record that ran on 'cpu'" in capsys.readouterr().err
    assert main(["scenario", "from-bench", str(src), "--where", "ep=2"]) == 2   # pp=1: 1f1b at 1 and 2 micro-batches
    assert "num_microbatches in {1, 2}" in capsys.readouterr().err
    out = tmp_path / "tiny.toml"
    assert main(["scenario", "from-bench", str(src), "--where", "schedule=dualpipev", "--where", "num_microbatches=4",
                 "--gpu", "h100", "--out", str(out)]) == 0
    sc = load_scenario(str(out))
    # s25walk's nine overrides: tiny x4 layers, 2 GPUs, PP2, EP1, DualPipeV, seq 16, batch 8 of 2-sequence micro-batches
    assert (sc.model.name, sc.model.num_layers, sc.cluster.num_gpus, sc.plan.pp, sc.plan.ep, sc.plan.schedule,
            sc.workload.seq_len, sc.workload.global_batch_seqs, sc.plan.micro_batch_seqs) == \
        ("tiny", 4, 2, 2, 1, "dualpipev", 16, 8, 2)


def test_a_serving_load_run_becomes_a_serving_scenario_with_its_loads_lengths(tmp_path, capsys):
    out = tmp_path / "s.toml"
    assert main(["scenario", "from-bench", str(SERVE), "--where", "run_id=n23-qwen2moe-poisson-r12-mid",
                 "--out", str(out)]) == 0
    sc = load_scenario(str(out), kind=SERVING)
    t = sc.traffic
    assert (sc.model.name, sc.cluster.gpu, t.arrival, t.rate_per_s, t.num_requests) == ("qwen2moe-mla-slice", "h100", "poisson", 12.0, 25)
    assert (sc.serve.input_len, t.input_dist, sc.serve.output_len, t.output_dist) == (480, "uniform", 96, "uniform")
    assert t.input_cv == pytest.approx(288 / (3 ** 0.5 * 480))   # uniform 192-768: half-width 288 = sqrt(3) cv mean
    assert sc.serve.engine_costs == "real-serve-h100-ep1" and "has no table of its own" in out.read_text()
    capsys.readouterr()
    assert main(["serve", str(out), "--quiet"]) == 0


@pytest.mark.parametrize("argv, pattern", [
    (["nope"], r"SOURCE: got 'nope'; allowed: an existing file or folder"),
    ([str(PIPE / "pipeline_trace_1f1b.json.xz")], r"SOURCE: got .*pipeline_trace_1f1b\.json\.xz'; allowed: pipeline_step\.csv"),
    ([str(PIPE), "--where", "bogus=1"], r"--where: got 'bogus=1'; allowed: a column of the source: model, num_layers"),
    ([str(PIPE), "--where", "schedule"], r"--where: got 'schedule'; allowed: COLUMN=VALUE"),
    ([str(PIPE), "--where", "schedule=gpipe"], r"--where: got 'schedule=gpipe'; allowed: values the source holds: schedule in"),
    ([str(PIPE), "--where", "schedule=1f1b", "--where", "pp=4", "--gpu", "a100"], r"cluster\.gpu .*got 'a100'"),
])
def test_bad_input_is_one_line_naming_the_argument(argv, pattern, capsys, tmp_path):
    assert main(["scenario", "from-bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err


def test_a_garbled_record_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "pipeline_step.csv").write_bytes(b"\xff\xfe\x00garbage\n\x00\x01")
    assert main(["scenario", "from-bench", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: SOURCE: got "), err


# s26unify (docs/notes/s26unify.md): the converted scenario's header gives both predictions of the configuration,
# part by part; calibration.pipeline's is the one `twin validate` makes of such a row, by construction
@pytest.fixture(scope="module")
def pp4_1f1b():
    kind, _, configs = bs.configurations(PIPE)
    cfg = bs.pick(configs, ["pp=4", "schedule=1f1b", "num_microbatches=12"], kind)
    raw = bs.pipeline_tables(cfg)
    return cfg, raw, bs.step_comparison(cfg, raw)


def test_the_headers_calibration_figure_is_validates_prediction_of_the_row_and_its_twin_figure_twin_steps(pp4_1f1b, tmp_path, capsys):
    cfg, raw, cmp = pp4_1f1b
    row = {**{k: cfg[k] for k in ("model", "num_layers", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches",
                                  "micro_batch_seqs", "seq_len", "precision")}, "bench": "pipeline_step", "gpu": "h200"}
    inputs = {"h200": bs._INPUTS[("h200", str(bs.rec.MEASUREMENTS_DIR), 4)]}   # prereg.two_gpu_inputs, computed once
    validated = float(prereg.predict_ep([row], num_gpus=4, inputs=inputs)["predicted_s"].iloc[0])   # the s21pp4 path validate prices
    assert cmp["folder"] == "h200x4" and cmp["calibration"]["step_s"] == pytest.approx(validated, rel=1e-9)
    out = tmp_path / "b.toml"
    assert main(["scenario", "from-bench", str(PIPE), "--where", "schedule=1f1b", "--where", "pp=4",
                 "--where", "num_microbatches=12", "--out", str(out)]) == 0
    text = out.read_text()
    assert f"calibration.pipeline predicts {validated * 1e3:.1f} ms (h200x4's inputs" in text
    capsys.readouterr()
    assert main(["step", str(out), "--json", str(tmp_path / "s.json")]) == 0
    twin_s = json.loads((tmp_path / "s.json").read_text())["step_time_s"]
    assert cmp["twin_step"]["step_s"] == pytest.approx(twin_s, rel=1e-9)
    assert f"`twin step` of this scenario gives {twin_s * 1e3:.1f} ms" in text
    # the parts add up on both sides: makespan + what runs after it = the step
    for side in ("calibration", "twin_step"):
        c = cmp[side]
        assert c["makespan_s"] + c["after_s"] == pytest.approx(c["step_s"], rel=1e-9)
    assert cmp["twin_step"]["after_s"] == pytest.approx(cmp["twin_step"]["dp_reduce_scatter_s"] + cmp["twin_step"]["optimizer_s"],
                                                        rel=1e-6)


@pytest.mark.xfail(strict=True, reason="s26unify: `twin step` of a converted real/pipeline run is calibration.pipeline's "
                                       "prediction part by part but for the twin's own eager op costs, real/'s host-led "
                                       "issue and the measured AccumulateGrad rates (+2.8% here): docs/notes/s26unify.md")
def test_twin_step_of_a_converted_run_is_within_1pct_of_validates_prediction(pp4_1f1b):
    _, _, cmp = pp4_1f1b
    twin_s, calib_s = cmp["twin_step"]["step_s"], cmp["calibration"]["step_s"]
    print(f"twin step {twin_s * 1e3:.1f} ms vs calibration.pipeline {calib_s * 1e3:.1f} ms ({twin_s / calib_s - 1:+.1%})")
    assert twin_s == pytest.approx(calib_s, rel=0.01)



def test_the_twins_autograd_accumulation_is_calibration_pipelines_and_from_bench_asks_for_it(pp4_1f1b):
    """plan.grad_accumulate = 'autograd' prices real/'s AccumulateGrad with calibration.pipeline.accumulate_grads'
    sums (its profile path: no measured AccumulateGrad rates), stage by stage, and the share of adds per stage
    copy is one function (twin.core.schedules.backwards_per_copy) on both sides."""
    _, raw, _ = pp4_1f1b
    assert raw["plan"]["grad_accumulate"] == "autograd" and raw["plan"]["optimizer_kernel"] == "none"
    kind, _, configs = bs.configurations(PIPE)
    sc = from_dict(bs.pipeline_tables(bs.pick(configs, ["pp=2", "schedule=zb1p", "num_microbatches=6"], kind)))
    gpu = gpu_spec("h200")
    profile = bs._INPUTS.get(("h200", str(bs.rec.MEASUREMENTS_DIR), 4)) or prereg.two_gpu_inputs("h200", num_gpus=4)
    profile = profile[0]
    for first, last, layers in ((True, False, range(0, 4)), (False, True, range(4, 8))):
        b = Eager(gpu, profile, split_weight_grads=True)
        pipe.accumulate_grads(b, sc.model, layers, first, last, 2, "bf16", 5 / 6, None)
        want = (sum(g for _, g in b.ops), sum(g for _, g in b.w_ops))
        assert autograd_accumulate_s(sc, layers, first, last, 5 / 6, gpu, profile) == pytest.approx(want, rel=1e-12)
        assert want[1] > 0.015   # ~20 ms a micro-batch: mostly the experts' transposed copy
    for name, n in (("dualpipe", 4), ("dualpipev", 6), ("zb1p", 6)):
        assert pipe.accumulate_fracs(build_schedule(name, 2, n))[0] == pytest.approx(
            {"dualpipe": 1 / 2, "dualpipev": 5 / 6, "zb1p": 5 / 6}[name])



def test_the_twins_by_group_reductions_are_calibration_pipelines_and_the_tail_matches(tmp_path):
    """plan.grad_reduce_groups = 'by_group': real/'s all-reduces per rank (DualPipe's copy pair, dense over dp, experts
    over dp / ep: none at PP2 x EP2 on 4 GPUs) as calibration.pipeline.rank_reductions_s prices them; the twin's
    step then ends as calibration.pipeline's does after its makespan (no optimizer: plan.optimizer_kernel 'none')."""
    kind, _, configs = bs.configurations(PIPE)
    cfg = bs.pick(configs, ["pp=2", "schedule=dualpipe"], kind)
    raw = bs.pipeline_tables(cfg)
    assert raw["plan"]["grad_reduce_groups"] == "by_group"
    sc = from_dict(raw)
    gpu, profile = gpu_spec("h200"), load_profile("h200")
    schedule = build_schedule("dualpipe", 2, cfg["num_microbatches"])
    costs = StepCosts(sc, schedule, profile, 1.0, 1.0)
    twin = real_reductions_s(sc, costs, schedule, gpu, profile)
    stages = pipe.stage_layers(8, schedule.num_model_stages)
    calib = pipe.rank_reductions_s(sc.model, schedule, stages, 2, 2, gpu, profile)
    assert [p for p, _ in twin] == pytest.approx([p for p, _ in calib], rel=1e-3)   # the copies' host lead aside
    assert [d for _, d in twin] == pytest.approx([d for _, d in calib], rel=1e-3)
    assert twin[0][0] > 0.03 and twin[0][1] > 0.0   # the pair's ~50 ms; the dense all-reduce over dp 2
    cmp = bs.step_comparison(cfg, raw)
    assert cmp["twin_step"]["after_s"] == pytest.approx(cmp["calibration"]["after_s"], rel=0.02)
