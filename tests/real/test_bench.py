"""The benchmark harness: a CPU dry run of some sections writes well-formed records."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import real.bench
from real.bench.cli import SECTIONS, main
from real.bench.moe_layer import skewed_routing
from real.bench.timing import BATCH_MAX_CALLS, BATCH_MAX_WINDOWS, BATCH_MIN_WINDOWS, Timer, batch_shape
from real.telemetry import Telemetry


def test_quick_campaign_writes_records(tmp_path):
    rc = main(["--out", str(tmp_path), "--quick", "--only", "gemm,memory,moe,serve"])
    assert rc == 0
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and env["torch_version"] == torch.__version__
    for family, benches in [("gemm", {"gemm"}), ("memory", {"memory"}),
                            ("moe_layer", {"moe_layer_fwd", "moe_layer_bwd"}),
                            ("model", {"prefill", "decode"})]:
        rows = list(csv.DictReader((tmp_path / f"{family}.csv").open()))
        assert {r["bench"] for r in rows} == benches
        for r in rows:
            t, p10, p90 = float(r["time_s"]), float(r["time_p10_s"]), float(r["time_p90_s"])
            assert 0 < p10 <= t <= p90, r
            assert r["gpu_name"] and r["timestamp_utc"]
    # single kernels are timed batched (host clock on the CPU), layers per repetition
    assert {r["timing"] for r in csv.DictReader((tmp_path / "gemm.csv").open())} == {"host_clock"}
    moe = list(csv.DictReader((tmp_path / "moe_layer.csv").open()))
    for r in moe:  # exact routed rows per expert, summing to tokens * top_k
        tpe = json.loads(r["tokens_per_expert"])
        assert len(tpe) == int(r["num_experts"]) and max(tpe) == int(r["max_expert_tokens"])
        assert sum(tpe) == int(r["tokens"]) * int(r["top_k"])
    balanced = [r for r in moe if float(r["skew"]) == 0]
    # round-robin routing: every expert gets exactly tokens * top_k / experts rows
    assert all(int(r["max_expert_tokens"]) == float(r["mean_expert_tokens"]) for r in balanced)


def test_skewed_routing_is_balanced_at_zero_and_skewed_otherwise():
    g = torch.Generator().manual_seed(0)
    _, ids = skewed_routing(256, 16, 4, 0.0, 1.0, "cpu", g)
    assert torch.bincount(ids.flatten(), minlength=16).tolist() == [64] * 16
    _, ids = skewed_routing(256, 16, 4, 1.5, 1.0, "cpu", g)
    counts = torch.bincount(ids.flatten(), minlength=16)
    assert counts.max() > 2 * counts.float().mean()
    assert all(len(set(row)) == 4 for row in ids.tolist())  # distinct experts per token


def test_timer_reports_median_and_spread_on_cpu():
    # min_time_s asks for more reps than max_reps allows: 5 reps
    timer = Timer(torch.device("cpu"), Telemetry(), min_time_s=10.0, max_reps=5, warmup=1)
    r = timer.measure(lambda: torch.ones(64, 64) @ torch.ones(64, 64), flops=2 * 64**3)
    assert r["reps"] == 5 and r["time_p10_s"] <= r["time_s"] <= r["time_p90_s"]
    assert r["achieved_flops_per_s"] == pytest.approx(2 * 64**3 / r["time_s"])
    assert math.isnan(r["power_w"])  # no NVML here


def test_telemetry_without_gpu_reads_nan():
    tel = Telemetry()
    if not tel.available:
        assert math.isnan(tel.energy_j()) and math.isnan(tel.sm_clock_mhz())
        assert tel.static_info() == {}


def test_batch_shape_fills_windows_within_the_caps():
    # a 10 us call: 20 ms / 10 us = 2,000 calls, capped at BATCH_MAX_CALLS = 500 per window;
    # 0.1 s of timing at 5 ms a window = 20 windows (the cap)
    assert batch_shape(10e-6, 0.1) == (BATCH_MAX_CALLS, BATCH_MAX_WINDOWS)
    # a 4 ms call: 5 calls fill 20 ms; no minimum time -> the minimum of 5 windows
    assert batch_shape(4e-3, 0.0) == (5, BATCH_MIN_WINDOWS)
    # a call longer than a window: one call per window, windows to cover 1 s of 0.1 s calls
    assert batch_shape(0.1, 1.0) == (1, 10)


def test_batched_timer_on_cpu_counts_every_call_it_times():
    # the logic, not the clock: however long a call takes on a busy machine, every timed call is
    # counted once, in whole windows of equal size
    calls = []

    def fn():
        calls.append(1)
        return torch.ones(64, 64) @ torch.ones(64, 64)
    timer = Timer(torch.device("cpu"), Telemetry(), min_time_s=0.0, warmup=1)
    r = timer.measure(fn, flops=2 * 64**3, batched=True)
    assert r["timing"] == "host_clock"
    assert len(calls) == 1 + r["reps"]                # one warm-up call, then the timed ones
    # whole windows of equal size: reps = calls per window x windows, within the caps
    assert any(r["reps"] == n * w for w in range(BATCH_MIN_WINDOWS, BATCH_MAX_WINDOWS + 1)
               for n in range(1, BATCH_MAX_CALLS + 1))
    assert r["time_p10_s"] <= r["time_s"] <= r["time_p90_s"]
    # a setup-based measurement (backward after an untimed forward) stays per repetition
    r = timer.measure(lambda x: x.sum(), setup=lambda: torch.ones(8), batched=True)
    assert r["timing"] == "host_clock" and r["reps"] >= 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_timing_excludes_host_dispatch():
    timer = Timer(torch.device("cuda"), Telemetry(), min_time_s=0.01)
    x = torch.randn(256, 256, device="cuda")
    r = timer.measure(lambda: x.mul(2.0), batched=True)
    assert r["timing"] == "cuda_graph" and r["time_s"] < 20e-6  # a tiny kernel: no host time


def test_quick_calibration_extras_write_records(tmp_path):
    """The sections added for the second calibration campaign, as a CPU dry run."""
    rc = main(["--out", str(tmp_path), "--quick", "--only", "grouped_small,topk,sustained,kernels"])
    assert rc == 0
    assert json.loads((tmp_path / "env.json").read_text())["failures"] == []
    gemm = list(csv.DictReader((tmp_path / "gemm.csv").open()))
    assert {r["bench"] for r in gemm} == {"grouped_gemm", "grouped_gemm_wgrad"}
    assert {r["op"] for r in csv.DictReader((tmp_path / "memory.csv").open())} == {"topk2", "topk4", "topk8"}
    sustained = list(csv.DictReader((tmp_path / "sustained.csv").open()))
    for config in {r["config"] for r in sustained}:
        phases = [r["phase"] for r in sustained if r["config"] == config]
        assert phases[0] == "burst" and phases.count("sustained") >= 1
    kernels = list(csv.DictReader((tmp_path / "kernels.csv").open()))
    assert any(r["config"].startswith("moe_layer") for r in kernels) and all(float(r["time_s"]) > 0 for r in kernels)


def test_quick_fp8_stack_section_writes_records(tmp_path):
    """Section fp8_stack as a CPU dry run: weight-gradient GEMMs by kernel (no block-scaled FP8
    kernel on a CPU, so BF16 and row-wise only) and the three cast kernels with their bytes."""
    rc = main(["--out", str(tmp_path), "--quick", "--only", "fp8_stack"])
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "fp8_stack.csv").open()))
    wgrad = [r for r in rows if r["bench"] == "gemm_wgrad"]
    assert {r["precision"] for r in wgrad} == {"bf16", "fp8-rowwise"}
    assert all(float(r["flops"]) == pytest.approx(2.0 * int(r["m"]) * int(r["n"]) * int(r["k"]), rel=1e-5) for r in wgrad)
    casts = {r["op"]: r for r in rows if r["bench"] == "cast"}
    assert set(casts) == {"cast_1x128", "cast_transpose", "requant_transpose"}
    m, k = int(casts["cast_1x128"]["m"]), int(casts["cast_1x128"]["k"])
    assert float(casts["cast_1x128"]["bytes_moved"]) == pytest.approx(m * k * 3 + m * k // 128 * 4, rel=1e-5)


def test_sm_reserve_section_needs_cuda_and_records_nothing_on_a_cpu(tmp_path):
    assert "sm_reserve" in SECTIONS
    assert main(["--out", str(tmp_path), "--quick", "--only", "sm_reserve"]) == 0
    assert not (tmp_path / "sm_reserve.csv").exists()


def test_package_lists_sections_without_torch_and_reexports_lazily():
    # `twin calibrate` reads the section names on machines without torch: importing real.bench
    # (and its names, budget shares and ENERGY_MIN_WINDOW_S) must not import torch
    code = ("import sys; import real.bench as b; "
            "assert 'torch' not in sys.modules, 'real.bench imported torch'; "
            "print(','.join(b.SECTION_NAMES), b.ENERGY_MIN_WINDOW_S)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2]).stdout
    assert out.split() == [",".join(SECTIONS), "0.5"]
    # the torch-dependent names come from real.bench.cli on first use
    assert real.bench.SECTIONS is SECTIONS and real.bench.main is main
    assert tuple(SECTIONS) == real.bench.SECTION_NAMES


def test_quick_wgrad_accum_section_times_both_accumulate_paths(tmp_path):
    """The pipeline's expert dW reaches .grad through the transposed view as real/wgrad.py routes
    it: the first call leaves a .grad in the parameter's strides (AccumulateGrad's clone), a later
    one adds in place; the section records both paths."""
    import torch

    from real.bench.wgrad_accum import accumulate_fn
    w = torch.zeros(3, 8, 5, dtype=torch.bfloat16, requires_grad=True)
    accumulate_fn(w, (3, 5, 8), "first")()
    assert w.grad.stride() == w.stride()
    add = accumulate_fn(w, (3, 5, 8), "add")
    grad = w.grad
    add()
    add()
    assert w.grad is grad and w.grad.abs().sum() > 0      # in place, into the existing .grad
    assert main(["--out", str(tmp_path), "--quick", "--only", "wgrad_accum"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "wgrad_accum.csv")))
    assert {r["op"] for r in rows} == {"first", "add"}
    assert all(float(r["time_s"]) > 0 and int(r["elements"]) > 0 for r in rows)
