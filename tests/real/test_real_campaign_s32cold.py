"""real/campaigns/s32cold.sh and real/serve/coldtrace.py (docs/notes/s32cold.md): the probe of a serving process's first
prompt steps. Without a GPU the campaign runs nothing; its CPU dry run profiles the tiny model's plan; the trace's
per-iteration summary reads kineto's raw events (faked here as a GPU would give them)."""

import csv
from types import SimpleNamespace

from real.serve.coldtrace import TAG, summarize
from real.serve.plans import (PLANS, S31Q_IN, S31Q_OUT, S31Q_WARM_TOKENS, S32C_PLANS, S32C_WARM_W, S32K_IN, S32K_MODELS,
                              S32K_OUT, S32K_PLANS, S32K_WARM_TOKENS)
from tests.campaigns import dry_run, without_gpus
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.engine import IDLE_WAKE_AFTER_S
from twin.serving.pipeline import eager_ops


def test_s32cold_without_a_gpu_runs_nothing(tmp_path):
    d, log = without_gpus("s32cold", tmp_path)
    assert "skipped: no GPU" in log and "s32cold end" in log and (d / "host.txt").exists()
    assert "parts trace:gpu1-s32c-bench timed:gpu1-s32c-bench eager:gpu1-s32c-bench trace-eager:gpu1-s32c-bench" in log


def test_s32cold_cpu_dry_run_traces_the_tiny_plan(tmp_path):
    d, log = dry_run("s32cold", tmp_path, timeout_s=240, scale=2)
    assert "trace tiny-new exit 0" in log and "s32cold end" in log, log[-2000:]
    with (d / "trace" / "tiny" / "serve_kernels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    phases = {r["phase"] for r in rows}
    assert phases == {"warmup", "warm_pass", "run"}
    assert all(r["gpu_name"] and r["torch_version"] and r["module_loading"] for r in rows)
    assert any(int(r["gemm_calls"]) > 0 for r in rows if r["phase"] == "run")


def _ev(name, kind, start_ns, dur_ns, corr=0, linked=0):
    return SimpleNamespace(name=lambda: name, device_type=lambda: f"DeviceType.{kind}", start_ns=lambda: start_ns,
                           duration_ns=lambda: dur_ns, correlation_id=lambda: corr, linked_correlation_id=lambda: linked)


def test_summarize_counts_first_launches_slow_calls_and_mallocs_per_range():
    events = [_ev(f"{TAG}0", "CPU", 0, 1000), _ev(f"{TAG}1", "CPU", 2000, 300_000),
              _ev("aten::mm", "CPU", 100, 500, corr=11), _ev("cudaLaunchKernel", "CPU", 200, 300, corr=901, linked=11),
              _ev("gemm_a", "CUDA", 600, 50, corr=901, linked=11),
              _ev("aten::mm", "CPU", 2100, 2500, corr=12), _ev("cudaMalloc", "CPU", 2150, 400, linked=12),
              _ev("cudaLaunchKernel", "CPU", 2200, 250_000, corr=902, linked=12),   # a 250 us launch: slow
              _ev("gemm_a", "CUDA", 4700, 50, linked=12), _ev("gemm_b", "CUDA", 4800, 60, linked=12),
              _ev("cudaStreamSynchronize", "CPU", 4700, 200, linked=13)]
    index = [{"phase": "warmup", "run_id": "", "iteration": 0}, {"phase": "run", "run_id": "r", "iteration": 0}]
    rows, slow = summarize(events, index)
    a, b = rows
    assert (a["num_kernels"], a["new_kernels"], a["launch_calls"], a["slow_launches"]) == (1, 1, 1, 0)
    assert (b["num_kernels"], b["new_kernels"], b["new_kernel_names"]) == (2, 1, "gemm_b")
    assert b["slow_launches"] == 1 and abs(b["slow_launch_s"] - 250e-6) < 1e-12 and b["malloc_calls"] == 1
    assert b["gemm_calls"] == 1 and b["sync_s"] > 0 and b["launch_calls"] == 1
    assert [s["name"] for s in slow] == ["cudaLaunchKernel"] and slow[0]["op_name"] == "aten::mm"


def test_s32c_plans_fit_records_of_set_q_regime_cold_fresh_again():
    seeds, _, _ = _seen(("gpu1-s32c-", "gpu1-s32k-"))
    for name, plan in S32C_PLANS.items():
        assert PLANS[name] is plan and len(plan.runs) == 3
        cold, fresh, again = plan.runs
        assert all(r.split == "fit" and (r.input_len, r.output_len) == (S31Q_IN, S31Q_OUT) and r.rate_per_s == 2.5
                   for r in plan.runs)
        assert cold.seed == again.seed != fresh.seed and not {cold.seed, fresh.seed} & seeds
        assert cold.warm_shapes == (S32C_WARM_W if name.endswith("w1024") else S31Q_WARM_TOKENS)
        assert fresh.warm_shapes == again.warm_shapes == 0


def test_s32cold2_without_a_gpu_runs_nothing(tmp_path):
    d, log = without_gpus("s32cold2", tmp_path)
    assert "skipped: no GPU" in log and "s32cold2 end" in log and (d / "host.txt").exists()
    assert "parts " + " ".join(f"set:gpu1-s32k-{s}" for s in S32K_MODELS.values()) in log


def test_s32k_plans_are_fresh_their_prompts_above_the_pass_poisson_around_a_loop():
    seeds, lengths, loads = _seen(("gpu1-s32k-", "gpu1-s32c-"))
    lo, hi = (int(x) for x in S32K_IN.split(":")[1].split("-"))
    assert S32K_WARM_TOKENS < lo and not set(S32K_MODELS) & {"bench-small", "v2-lite-slice"}   # the probe's models
    run_ids = [r.name for p in S32K_PLANS.values() for r in p.runs]
    assert len(set(run_ids)) == len(run_ids)
    for model, short in S32K_MODELS.items():
        plan = PLANS[f"gpu1-s32k-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S32K_IN, S32K_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S32K_WARM_TOKENS, 0, 0]
        assert [r.arrival for r in plan.runs] == ["poisson", "closed", "poisson"]
        assert hi + plan.runs[1].concurrency < plan.token_budget
        assert all(1.0 / r.rate_per_s >= 2 * IDLE_WAKE_AFTER_S for r in plan.runs if r.arrival == "poisson")
        assert not {r.seed for r in plan.runs} & seeds and (model, S32K_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
