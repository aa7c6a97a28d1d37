"""The layer bias (issue 13): kernels real/'s eager layers launch beyond the op lists, measured
from the profiler's kernel records on the fitting split, and the host time per kernel from
host_dispatch.csv."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from calibration import layer_gaps as lg
from calibration import records as rec
from calibration.records_io import read_csv
from calibration.fit import PROFILES_DIR
from calibration.validate import predict_cases
from twin.costs.profile import profile_from_json


def test_config_names_parse_to_the_layer_records_shapes():
    assert lg.parse_config("moe_layer v3-slice-1l t1024 e128 skew1.5 bwd") == {
        "bench": "moe_layer_bwd", "model": "v3-slice-1l", "tokens": 1024, "num_experts": 128, "skew": 1.5,
        "direction": "bwd"}
    assert lg.parse_config("mla_layer v2-lite-slice b4 s1024 fwd")["seq_len"] == 1024
    assert lg.parse_config("something else") is None


def test_backward_configurations_are_net_of_their_forward():
    k = pd.DataFrame([("mla_layer v3-slice-1l b1 s64 fwd", "bf16", "gemm", 2, 1e-3),
                      ("mla_layer v3-slice-1l b1 s64 bwd", "bf16", "gemm", 6, 4e-3),
                      ("mla_layer v3-slice-1l b1 s64 bwd", "bf16", "copy", 1, 5e-4)],
                     columns=["config", "precision", "kernel", "calls", "time_s"])
    layers = lg.profiled_layers(k).set_index("direction")
    assert layers.loc["bwd", "calls"] == 5 and layers.loc["bwd", "kernel_s"] == pytest.approx(3.5e-3)
    assert not layers.loc["fwd", "held_out"]


@pytest.fixture(scope="module", params=["h100", "h200"])
def gpu_state(request):
    gpu = request.param
    prof = profile_from_json(json.loads((PROFILES_DIR / f"{gpu}.json").read_text()))
    return gpu, prof, rec.load_records(gpu)


def test_committed_profiles_carry_the_measured_terms(gpu_state):
    gpu, prof, df = gpu_state
    assert prof.eager["extra_kernels"] == lg.eager_terms(gpu, prof, df)["extra_kernels"]
    # a MoE layer launches dozens of kernels the op list does not name (argsort passes, bookkeeping)
    assert prof.eager["extra_kernels"]["moe_layer_fwd/bf16"] > 30
    assert 0 <= prof.eager["extra_kernels"]["mla_layer_fwd/bf16"] < prof.eager["extra_kernels"]["moe_layer_fwd/bf16"]


def test_held_out_layers_move_toward_zero_and_kernels_stay(gpu_state):
    gpu, prof, df = gpu_state
    with_terms, _ = predict_cases(df, gpu, prof)
    without, _ = predict_cases(df, gpu, dataclasses.replace(prof, eager={}))

    def stats(cases, kinds):
        e = np.array([c["rel_error"] for c in cases if c["held_out"] and c["kind"] in kinds])
        return abs(float(np.median(e))), float(np.percentile(np.abs(e), 90))

    layers = ("mla_layer", "moe_layer")
    # the signed median: toward zero, or (since the op lists carry the backward's strided
    # elementwise kernels, 2026-11-26, both sit within 1%) kept within 1% of it
    assert stats(with_terms, layers)[0] <= max(stats(without, layers)[0], 0.01)
    assert stats(with_terms, layers)[1] < stats(without, layers)[1]
    kernels = ("gemm", "grouped_gemm", "attention", "memory")
    assert stats(with_terms, kernels) == stats(without, kernels)


def test_measured_host_time_per_kernel_comes_from_fitting_rows_only(tmp_path):
    (tmp_path / "h100").mkdir()
    pd.DataFrame([("moe_layer a", "fwd", "fit", 1.0e-3, 100), ("moe_layer b", "fwd", "fit", 3.0e-3, 100),
                  ("moe_layer c", "fwd", "holdout", 9.0e-3, 10), ("mla_layer a", "bwd", "fit", 2.0e-3, 50),
                  ("train_step a", "train_fwd", "holdout", 5.0e-3, 100)],
                 columns=["config", "phase", "split", "host_s", "kernels"]).assign(precision="bf16").to_csv(tmp_path / "h100" / "host_dispatch.csv")
    host = lg.measured_host_s("h100", tmp_path)
    assert host == {"fwd": pytest.approx(2e-5), "bwd": pytest.approx(4e-5)}
    assert lg.measured_host_s("h200", tmp_path) == {}


def test_optimizer_rates_are_its_kernels_measured_bandwidth(tmp_path):
    from calibration.predict import gpu_spec
    from twin.costs.flops import param_counts
    from twin.core.specs import get_model
    (tmp_path / "h100").mkdir()
    params = param_counts(get_model("v3-slice-1l"))["total_params"]
    hbm = gpu_spec("h100").hbm_bytes_per_s
    cfg = "train_step v3-slice-1l b1 s2048 train_opt"
    pd.DataFrame([(cfg, "bf16", "Optimizer.step#AdamW.step", 1, 9.0),      # a range annotation, not a kernel
                  (cfg, "bf16", "multi_tensor_apply_kernel<FusedOptimizerTensorListMetadata, ADAM_MODE>", 40,
                   params * 28.0 / (0.5 * hbm)),
                  (cfg, "bf16", "unrolled_elementwise_kernel<direct_copy_kernel_cuda LoadWithCast>", 25,
                   params * 6.0 / (0.25 * hbm)),
                  (cfg, "bf16", "multi_tensor_apply_kernel<CopyFunctor<BFloat16, float>>", 40, params * 6.0 / (0.75 * hbm)),
                  ("train_step v3-slice-1l b1 s2048 train_fwd", "bf16", "nvjet gemm", 10, 5e-3)],
                 columns=["config", "precision", "kernel", "calls", "time_s"]).to_csv(tmp_path / "h100" / "step_kernels.csv")
    eff = lg.measured_optimizer_eff("h100", tmp_path)
    assert eff == {"adamw": pytest.approx(0.5), "grad_cast": pytest.approx(0.25), "copy_back": pytest.approx(0.75)}
    assert lg.measured_optimizer_eff("h200", tmp_path) is None


def test_host_time_per_kernel_nets_out_the_profiled_setup(tmp_path):
    """A backward's profiled region also ran its forward: its own kernels are the difference."""
    (tmp_path / "h100").mkdir()
    pd.DataFrame([("moe_layer a", "fwd", "bf16", "fit", 1.0e-3, 50), ("moe_layer a", "bwd", "bf16", "fit", 3.0e-3, 150)],
                 columns=["config", "phase", "precision", "split", "host_s", "kernels"]).to_csv(tmp_path / "h100" / "host_dispatch.csv")
    assert lg.measured_host_s("h100", tmp_path) == {"fwd": pytest.approx(2e-5), "bwd": pytest.approx(3e-5)}


def test_small_sorts_launch_no_radix_passes():
    """Decode-sized MoE layers (<= 4,096 routed rows) sort in place: fewer kernels than training ones."""
    from calibration.predict import gpu_spec, moe_layer_ops
    from calibration.whole_step import balanced_counts
    from twin.core.specs import get_model
    prof, spec = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text())), get_model("v3-slice-1l")
    small, _ = moe_layer_ops(spec, 8, balanced_counts(spec, 8), "bf16", gpu_spec("h200"), prof)
    large, _ = moe_layer_ops(spec, 1024, balanced_counts(spec, 1024), "bf16", gpu_spec("h200"), prof)
    assert len(large.ops) - len(small.ops) == prof.eager["radix_sort_kernels"]["moe_layer_fwd"] - 6


def test_host_time_per_kernel_leaves_out_the_radix_passes_of_large_sorts(tmp_path):
    """cub's radix-sort passes are launched from inside one sort dispatch: a MoE row whose routed
    rows exceed 4,096 is divided by its kernels less those passes; a small-sort row is not."""
    (tmp_path / "h100").mkdir()
    pd.DataFrame([("moe_layer v3-slice-1l t2048 e128 skew0", "infer", "bf16", "fit", "v3-slice-1l", 2048, 44e-5, 85),
                  ("moe_layer v3-slice-1l t512 e128 skew0", "infer", "bf16", "fit", "v3-slice-1l", 512, 50e-5, 50),
                  ("mla_layer v3-slice-1l b1 s1024", "infer", "bf16", "fit", "v3-slice-1l", 1024, 30e-5, 30)],
                 columns=["config", "phase", "precision", "split", "model", "tokens", "host_s", "kernels"]
                 ).to_csv(tmp_path / "h100" / "host_dispatch.csv")
    radix = {"moe_layer_fwd": 41.0, "moe_layer_bwd": 29.0}
    assert lg.measured_host_s("h100", tmp_path, radix) == {"infer": pytest.approx(1e-5)}
    assert lg.measured_host_s("h100", tmp_path)["infer"] == pytest.approx(10e-6)     # 44/85, 10, 10: median


def test_radix_passes_have_no_host_time_of_their_own():
    from calibration.predict import gpu_spec, moe_layer_ops
    from calibration.whole_step import balanced_counts
    from twin.core.specs import get_model
    prof, spec = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text())), get_model("v3-slice-1l")
    large, _ = moe_layer_ops(spec, 1024, balanced_counts(spec, 1024), "bf16", gpu_spec("h200"), prof)
    small, _ = moe_layer_ops(spec, 8, balanced_counts(spec, 8), "bf16", gpu_spec("h200"), prof)
    radix = prof.eager["radix_sort_kernels"]["moe_layer_fwd"]
    assert sum(1 for h, _ in large.ops if h == 0.0) == radix
    assert not any(h == 0.0 for h, _ in small.ops)
    host = prof.eager["host_s"]["fwd"]
    assert sum(h for h, _ in large.ops) == pytest.approx((len(large.ops) - radix) * host)
    # a whole step that re-times every op at its phase's host keeps them free
    large.use_eager_host("infer")
    assert sum(1 for h, _ in large.ops if h == 0.0) == radix


def _rates_profile(gpu: str, fwd: float, bwd: float, infer: float):
    prof = profile_from_json(json.loads((PROFILES_DIR / f"{gpu}.json").read_text()))
    return dataclasses.replace(prof, eager={**prof.eager, "host_s": {"fwd": fwd, "bwd": bwd, "infer": infer}})


def test_ops_inside_autograd_functions_dispatch_at_the_no_grad_rate():
    """real/fp8.py's FP8 GEMMs run inside autograd.Functions (grad mode off): their quantizations,
    transposed copies and GEMMs take the no-grad (`infer`) host rate; the layer's other ops, and
    every op of a BF16 layer, take the phase's (autograd recording forward, engine backward)."""
    from calibration.predict import NoGradHost, gpu_spec, mla_layer_ops
    from twin.core.specs import get_model
    prof, spec, g = _rates_profile("h200", 3e-5, 5e-5, 1e-5), get_model("v2-lite-slice"), gpu_spec("h200")
    f8, b8 = mla_layer_ops(spec, 1, 1024, "fp8-blockwise", g, prof)
    f16, b16 = mla_layer_ops(spec, 1, 1024, "bf16", g, prof)
    assert {h for h, _ in f16.ops if h} == {3e-5} and {h for h, _ in b16.ops if h} == {5e-5}
    linears = 4          # V2-Lite's MLA: q, kv_a, kv_b, o projections (no q LoRA)
    fn_f = [op for op in f8.ops if isinstance(op, NoGradHost)]
    fn_b = [op for op in b8.ops if isinstance(op, NoGradHost)]
    # forward: quantize x and w (9 kernels each) and the GEMM; backward: W^T copy, dX's 19, g^T and
    # x^T copies, dW's 19
    assert len(fn_f) == 19 * linears and len(fn_b) == 41 * linears
    assert {h for h, _ in fn_f + fn_b} == {1e-5}
    assert {op[0] for op in b8.ops if op[0] and not isinstance(op, NoGradHost)} == {5e-5}
    # the same kernels either way: only their host time differs
    assert sum(gs for _, gs in b8.ops) == pytest.approx(sum(gs for _, gs in
                                                        mla_layer_ops(spec, 1, 1024, "fp8-blockwise", g,
                                                                      _rates_profile("h200", 1, 1, 1))[1].ops))


def test_function_kernels_count_the_fp8_layers_no_grad_ops():
    prof = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    hd = pd.DataFrame([("mla_layer v3-slice-1l b1 s1024", p, prec, "v3-slice-1l", 1, 1024, 1024, None)
                       for p in ("fwd", "infer", "bwd") for prec in ("bf16", "fp8-blockwise")]
                      + [("moe_layer v3-slice-1l t512 e128 skew0", "bwd", "fp8-blockwise", "v3-slice-1l", None, None,
                          512, 128)],
                      columns=["config", "phase", "precision", "model", "batch", "seq_len", "tokens", "num_experts"])
    n = dict(zip(zip(hd.config.str[:3], hd.phase, hd.precision), lg.function_kernels(hd, "h100", prof)))
    assert n["mla", "fwd", "fp8-blockwise"] == 19 * 5 and n["mla", "bwd", "fp8-blockwise"] == 41 * 5
    assert n["mla", "infer", "fp8-blockwise"] == 0 and n["mla", "bwd", "bf16"] == 0
    # the MoE layer's FP8 backward: the routed experts' two BF16 grouped GEMMs and their dW inside
    # _Fp8GroupedMM.backward, and the shared expert's two FP8 linears' backward
    assert n["moe", "bwd", "fp8-blockwise"] == 4 + 2 * 41


def test_phase_host_rates_come_from_rows_of_one_class(tmp_path):
    """With the op lists at hand, the forward and backward rates are measured on the rows whose
    kernels autograd records or runs all of (BF16 layers); an FP8 row, mostly kernels inside
    autograd.Functions, leaves them as they are, and the no-grad rate is every infer row's."""
    (tmp_path / "h100").mkdir()
    cfg = "mla_layer v3-slice-1l b1 s1024"
    rows = [(cfg, "bwd", "bf16", 47, 47 * 36e-6), (cfg, "bwd", "fp8-blockwise", 234, 234 * 21e-6),
            (cfg, "fwd", "bf16", 30, 30 * 23e-6), (cfg, "fwd", "fp8-blockwise", 117, 117 * 20e-6),
            (cfg, "infer", "bf16", 30, 30 * 19e-6), (cfg, "infer", "fp8-blockwise", 117, 117 * 19e-6)]
    pd.DataFrame(rows, columns=["config", "phase", "precision", "kernels", "host_s"]).assign(
        split="fit", profiled="phase", model="v3-slice-1l", batch=1, seq_len=1024, tokens=1024).to_csv(
        tmp_path / "h100" / "host_dispatch.csv")
    prof = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    by_class = lg.measured_host_s("h100", tmp_path, profile=prof)
    assert by_class == {"fwd": pytest.approx(23e-6), "bwd": pytest.approx(36e-6), "infer": pytest.approx(19e-6)}
    one_rate = lg.measured_host_s("h100", tmp_path)      # without op lists: the median over both
    assert one_rate["bwd"] == pytest.approx((36e-6 + 21e-6) / 2)


def test_mla_records_sit_beside_their_host_rows(gpu_state):
    """The breakdown of each MLA record with a host_dispatch row of its shape: the twin's window is
    at least its GPU sum, and a host-bound record's twin host sum sets the prediction."""
    gpu, prof, df = gpu_state
    rows = lg.host_decomposition(gpu, prof, df)
    assert rows and all(r["held_out"] for r in rows if "v2-lite" in r["config"])
    for r in rows:
        assert r["predicted_s"] >= r["twin_gpu_s"] * (1 - 1e-9)
        assert r["kernels"] > 0 and r["host_s"] > 0 and r["twin_ops"] >= r["kernels"] * 0.9


def test_aten_operator_counts_are_cuda_counts_of_each_configuration(tmp_path):
    """The operators one layer call dispatches, per direction and model: the host_dispatch rows'
    CUDA counts (any split: a property of the code path); a configuration whose rows disagree is
    left out."""
    hd = pd.DataFrame([("mla_layer v2-lite-slice b1 s1024", "fwd", "bf16", "v2-lite-slice", "holdout", 54, 6e-4),
                       ("mla_layer v2-lite-slice b4 s4096", "fwd", "bf16", "v2-lite-slice", "holdout", 54, 7e-4),
                       ("mla_layer v3-slice-1l b1 s1024", "fwd", "bf16", "v3-slice-1l", "fit", 60, 7.5e-4),
                       ("mla_layer v3-slice-1l b1 s1024", "bwd", "bf16", "v3-slice-1l", "fit", 83, 1.1e-3),
                       ("mla_layer v3-slice-1l b4 s4096", "bwd", "bf16", "v3-slice-1l", "fit", 84, 1.2e-3),
                       ("mla_layer v3-slice-1l b1 s1024", "fwd", "fp8-blockwise", "v3-slice-1l", "fit", 197, 2e-3)],
                      columns=["config", "phase", "precision", "model", "split", "aten_ops", "host_s"])
    assert lg.aten_op_counts(hd) == {"mla_layer_fwd/bf16/v2-lite-slice": 54, "mla_layer_fwd/bf16/v3-slice-1l": 60}
    # the rates: fitting rows only, host seconds over operators
    assert lg.measured_host_s_per_op(hd) == {"mla_layer_fwd/bf16": pytest.approx(7.5e-4 / 60),
                                             "mla_layer_bwd/bf16": pytest.approx((1.1e-3 / 83 + 1.2e-3 / 84) / 2)}


def test_committed_cuda_counts_are_those_of_both_gpus():
    counts = {gpu: lg.aten_op_counts(read_csv(rec.MEASUREMENTS_DIR / gpu / "host_dispatch.csv"))
              for gpu in ("h100", "h200")}
    assert counts["h100"] == counts["h200"]
    # V2-Lite's MLA has no query LoRA: fewer operators than V3-slice's, more of them per kernel
    assert counts["h100"]["mla_layer_bwd/bf16/v2-lite-slice"] < counts["h100"]["mla_layer_bwd/bf16/v3-slice-1l"]


def test_host_per_operator_sets_a_bf16_mla_layers_host_time():
    """With Profile.eager host_s_per_op and aten_ops, a BF16 MLA layer's host time is their product,
    spread over its dispatched launches; a whole step's per-kernel host leaves it; FP8 layers and
    profiles without the terms keep the per-kernel host."""
    from calibration.predict import PerOpHost, gpu_spec, mla_layer_ops
    from twin.core.specs import get_model
    prof = _rates_profile("h100", 3e-5, 5e-5, 1e-5)
    spec, g = get_model("v2-lite-slice"), gpu_spec("h100")
    per_op = dataclasses.replace(prof, eager={**prof.eager, "host_s_per_op": {"mla_layer_fwd/bf16": 1e-5,
                                                                              "mla_layer_bwd/bf16": 2e-5},
                                              "aten_ops": {"mla_layer_fwd/bf16/v2-lite-slice": 54,
                                                           "mla_layer_bwd/bf16/v2-lite-slice": 73}})
    f, b = mla_layer_ops(spec, 1, 1024, "bf16", g, per_op)
    assert sum(h for h, _ in f.ops if h) == pytest.approx(54 * 1e-5)
    assert sum(h for h, _ in b.ops if h) == pytest.approx(73 * 2e-5)
    assert all(isinstance(op, PerOpHost) for op in f.ops if op[0])
    f.use_eager_host("fwd")
    assert sum(h for h, _ in f.ops if h) == pytest.approx(54 * 1e-5)
    f0, _ = mla_layer_ops(spec, 1, 1024, "bf16", g, prof)
    assert [gs for _, gs in f.ops] == [gs for _, gs in f0.ops]
    assert {h for h, _ in f0.ops if h} == {3e-5}
    f8, _ = mla_layer_ops(spec, 1, 1024, "fp8-blockwise", g, per_op)
    assert not any(isinstance(op, PerOpHost) for op in f8.ops)


def test_the_committed_profiles_leave_the_per_operator_rule_out(gpu_state):
    """s10mla tested the rule on the held-out records and did not adopt it (calibration.layer_gaps
    ADOPT_HOST_PER_OP): the committed profiles hold the per-kernel host terms only, as eager_terms
    writes them."""
    gpu, prof, df = gpu_state
    assert "host_s_per_op" not in prof.eager and "host_s_per_op" not in lg.eager_terms(gpu, prof, df)
    assert "host_s_per_op" in lg.eager_terms(gpu, prof, df, per_op=True)


def test_mla_timeline_summary_places_the_longest_kernel_on_the_host_axis(tmp_path):
    from calibration import mla_timeline as mt
    trace = {"traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 100.0, "dur": 50.0},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 120.0, "dur": 5.0, "args": {"correlation": 1}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 300.0, "dur": 5.0, "args": {"correlation": 2}},
        {"ph": "X", "cat": "kernel", "name": "small", "ts": 130.0, "dur": 10.0, "args": {"correlation": 1}},
        {"ph": "X", "cat": "kernel", "name": "attention", "ts": 310.0, "dur": 400.0, "args": {"correlation": 2}}]}
    s = mt.summarize(trace)
    assert s["longest_kernel"] == "attention" and s["longest_gpu_s"] == pytest.approx(400e-6)
    assert s["longest_launched_s"] == pytest.approx(200e-6) and s["longest_start_s"] == pytest.approx(210e-6)
    assert s["gpu_busy_s"] == pytest.approx(410e-6) and s["gpu_end_s"] == pytest.approx(610e-6)
    assert s["host_span_s"] == pytest.approx(205e-6) and s["busy_before_longest_s"] == pytest.approx(10e-6)
    # a CPU dry run's trace has no kernels: host figures only
    cpu = mt.summarize({"traceEvents": trace["traceEvents"][:1]})
    assert cpu["kernels"] == 0 and cpu["gpu_busy_s"] is None
    (tmp_path / "t.json").write_text(json.dumps(trace))
    (tmp_path / "mla_timeline.csv").write_text("model,batch,seq_len,phase,time_s,trace\nm,1,64,bwd,0.0007,t.json\n")
    assert mt.summarize_folder(tmp_path)[0]["longest_kernel"] == "attention"
    assert mt.main([str(tmp_path)]) == 0
