"""real/campaigns/s33train.sh and section train_trace (session s33train): the CPU dry run writes both families with
their environment columns, the trace parser places a GPU trace's kernels (synthetic events: the dry run has none),
the kernel names' categories, and without a GPU the campaign runs nothing."""

import csv

from real.bench.kernel_names import CATEGORIES, kernel_category
from tests.campaigns import dry_run, without_gpus


def test_s33train_cpu_dry_run(tmp_path):
    """~3 s: the tiny model, one warm-up, two timed steps, one step a profiled mode."""
    d, log = dry_run("s33train", tmp_path, 120)
    assert "s33train part trace rc=0" in log and "s33train done" in log, log[-2000:]
    with (d / "trace" / "train_trace_steps.csv").open(newline="") as f:
        steps = list(csv.DictReader(f))
    assert [r["mode"] for r in steps] == ["timed", "cuda_only", "with_host"]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] and "driver_version" in r
               for r in steps)
    prof = steps[1]
    assert float(prof["busy_s"]) <= float(prof["gpu_span_s"]) and int(prof["kernels"]) > 0
    with (d / "trace" / "train_kernels.csv").open(newline="") as f:
        ks = list(csv.DictReader(f))
    assert {k["mode"] for k in ks} == {"cuda_only", "with_host"}
    # the with_host step's activities fall in the four phases, in order
    phases = [k["phase"] for k in ks if k["mode"] == "with_host"]
    assert phases[0] == "fwd" and "bwd" in phases and "opt" in phases
    assert phases.index("bwd") < phases.index("opt")


def test_step_kernels_places_a_gpu_trace():
    from real.bench.train_trace import step_kernels, step_summary   # lazy: torch, for this test only
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "fwd", "ts": 100, "dur": 50},
        {"ph": "X", "cat": "user_annotation", "name": "opt", "ts": 160, "dur": 40},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 110, "dur": 5, "args": {"correlation": 1}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 170, "dur": 5, "args": {"correlation": 2}},
        {"ph": "X", "cat": "kernel", "name": "nvjet_tst_128x256_64x4", "ts": 1000, "dur": 30,
         "args": {"correlation": 1, "stream": 7}},
        {"ph": "X", "cat": "kernel", "name": "void at::native::multi_tensor_apply_kernel<FusedAdam>", "ts": 1040,
         "dur": 10, "args": {"correlation": 2, "stream": 7}},
    ]
    ks = step_kernels(ev, with_host=True)
    assert [(k["category"], k["phase"], k["start_us"], k["end_us"], k["launch_us"]) for k in ks] == [
        ("gemm", "fwd", 0.0, 30.0, 0.0), ("optimizer", "opt", 40.0, 50.0, 60.0)]
    s = step_summary(ks)
    assert abs(s["gap_s"] - 10e-6) < 1e-12 and abs(s["busy_s"] - 40e-6) < 1e-12 and s["kernels"] == 2


def test_kernel_categories():
    names = {"sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "gemm",
             "void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<>": "attention",
             "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>": "fill",
             "void at::native::(anonymous namespace)::CatArrayBatchedCopy<>": "copy",
             "void at::native::reduce_kernel<512, 1>": "reduce",
             "void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel>": "elementwise"}
    assert {n: kernel_category(n) for n in names} == names
    assert set(names.values()) <= set(CATEGORIES)


def test_s33train_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s33train", tmp_path)
    assert "no GPU: nothing to run" in log and "s33train done" in log
    assert not (d / "trace").exists()
