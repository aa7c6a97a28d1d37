"""Benchmark harness and calibration campaign for `real/`.

    python -m real.bench --out DIR [--quick] [--only gemm,grouped,...] [--budget-s 450]

Writes one CSV per family (gemm.csv, attention.csv, memory.csv, moe_layer.csv, model.csv,
expert_load.csv) plus env.json, appending and flushing row by row so a run cut short still leaves
its data. Every row: the shape columns of its bench, `time_s` (median), `time_p10_s`,
`time_p90_s`, `reps`, `flops`, `bytes`, achieved rates, and the environment (GPU name, SM and
memory clocks read right after the timed loop, average board power over the loop and the energy
of one timed repetition (= power_w * time_s), torch and CUDA versions, UTC timestamp). NVML's
energy counter advances in ~0.1 s steps, so power and energy are left empty for timed loops
shorter than ENERGY_MIN_WINDOW_S; the `power` section times a representative subset for >= 2 s
each to give reliable figures.

Timing (column `timing`): single kernels (gemm, grouped, memory, attention forward) are timed as
GPU time per call: n calls captured in one CUDA graph, replayed several times with one CUDA event
pair around each replay (`cuda_graph`; `batched_events` = n eager calls between one event pair
where capture fails), so host dispatch is not measured. Layers, steps and backward passes (which
need an untimed forward) keep warm-up calls, then CUDA events around each repetition
(`per_rep_events`): what eager PyTorch achieves, host dispatch included. On the CPU: the host
clock (`host_clock`). The repetition count is chosen so each configuration runs at least
`min_time_s`. Shapes come from the
DeepSeek-V3 / V2-Lite catalog entries; FLOP and byte formulas from `twin/costs/flops.py`.
`--quick` shrinks every shape so the whole campaign runs on a CPU in a minute (a dry run).
Sections outside the default list (`--only`): `power` (board power of representative kernels),
`sustained` (30 s of back-to-back replays per kernel with NVML clock, power and temperature:
sustained.csv), `kernels` (torch-profiler kernel times of MoE/MLA layers: kernels.csv) and `ep`
(expert parallelism under torchrun). `grouped_wgrad`, `grouped_small` and `topk` are in the
default list. `twin calibrate` runs every section but power, kernels and ep.
Targets printed (never asserted): FP8 expert GEMMs at V3 shapes >= 1000 TFLOP/s and BF16 dense
>= 650 TFLOP/s on an H100.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from real import fp8
from real.configs import get_spec
from real.fp8 import Precision
from real.model import MLA, MoE, build_model, building, route, rope_tables
from real.telemetry import Telemetry
from twin.costs.flops import (CAST_BYTES_PER_ELEM, attention_bwd_flops, attention_flops, attention_ops,
                              forward_flops_per_token, gemm_bytes, gemm_flops,
                              kv_cache_bytes_per_token, matmul_params_per_token, param_counts,
                              train_flops_per_token)

# Dense tensor-core peaks (FLOP/s), NVIDIA H100/H200 SXM datasheets (sparsity figures halved);
# used only for the MFU column.
PEAK_FLOPS_PER_S = {"H100": {"bf16": 989.4e12, "fp8": 1978.9e12},
                    "H200": {"bf16": 989.4e12, "fp8": 1978.9e12}}

ENERGY_MIN_WINDOW_S = 0.5  # shortest timed loop whose NVML energy delta we trust (see Timer)
STAT_COLS = ["time_s", "time_p10_s", "time_p90_s", "reps", "timing", "flops", "bytes",
             "achieved_flops_per_s", "achieved_bytes_per_s"]
ENV_COLS = ["gpu_name", "sm_clock_mhz", "mem_clock_mhz", "power_w", "energy_j",
            "torch_version", "cuda_version", "timestamp_utc"]
SHAPE_COLS = {
    "gemm": ["bench", "m", "n", "k", "groups", "tokens_per_group", "precision", "shape_tag"],
    "attention": ["bench", "model", "batch", "seq_len", "num_heads", "qk_head_dim", "v_head_dim",
                  "causal", "precision"],
    "memory": ["bench", "op", "tokens", "width", "bytes_moved"],
    "moe_layer": ["bench", "model", "hidden_size", "moe_intermediate_size", "tokens",
                  "num_experts", "top_k", "num_shared_experts", "skew", "max_expert_tokens",
                  "mean_expert_tokens", "tokens_per_expert", "precision"],
    "model": ["bench", "model", "batch", "seq_len", "prompt_len", "gen_len", "precision",
              "tokens_per_s", "mfu", "peak_memory_bytes", "loss"],
    "power": ["bench", "config", "precision"],
    "sustained": ["bench", "config", "precision", "phase", "window", "elapsed_s", "temperature_c"],
    "kernels": ["bench", "config", "precision", "kernel", "calls"],
    "ep": ["bench", "world_size", "tokens_per_rank", "num_experts", "top_k", "hidden_size", "skew",
           "max_rank_rows", "bytes_per_rank", "precision"],
    "fp8_stack": ["bench", "op", "m", "n", "k", "precision", "out_dtype", "bytes_moved"],
    "sm_reserve": ["bench", "mode", "reserved_sms", "m", "n", "k", "precision", "trial", "time_solo_s",
                   "replays_inside", "gemm_start_s", "holder_s", "holder_solo_s", "holder_bytes", "holder_covered"],
    "expert_load": ["bench", "model", "step", "layer", "bias_update_rate", "num_experts",
                    "max_over_mean", "tokens_per_expert"],
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Recorder:
    """Appends rows to DIR/<family>.csv (header first), flushing each row."""

    def __init__(self, out_dir: Path, env: dict):
        self.out_dir, self.env, self.files = out_dir, env, {}

    def row(self, family: str, **values) -> None:
        if family not in self.files:
            f = open(self.out_dir / f"{family}.csv", "w", newline="")
            cols = SHAPE_COLS[family] + ([] if family == "expert_load" else STAT_COLS) + ENV_COLS
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="raise")
            w.writeheader()
            self.files[family] = (f, w)
        f, w = self.files[family]
        row = {k: self.env.get(k, "") for k in ENV_COLS}
        row["timestamp_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        row.update(values)
        w.writerow({k: _fmt(v) for k, v in row.items()})
        f.flush()

    def close(self):
        for f, _ in self.files.values():
            f.close()


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


class Timer:
    """Warm-up, then per-repetition timing with CUDA events (or the host clock on CPU)."""

    def __init__(self, device: torch.device, telemetry: Telemetry, min_time_s: float,
                 max_reps: int = 100, warmup: int = 3):
        self.device, self.tel = device, telemetry
        self.min_time_s, self.max_reps, self.warmup = min_time_s, max_reps, warmup

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _once(self, fn, setup):
        state = setup() if setup else None
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(state) if setup else fn()
            end.record()
            return (start, end)
        self.sync()
        t0 = time.perf_counter()
        fn(state) if setup else fn()
        return time.perf_counter() - t0

    def _elapsed(self, handle) -> float:
        if isinstance(handle, float):
            return handle
        handle[1].synchronize()
        return handle[0].elapsed_time(handle[1]) * 1e-3

    def measure(self, fn, setup=None, flops: float = math.nan, bytes_: float = math.nan,
                reps: int | None = None, batched: bool = False) -> dict:
        """fn() (or fn(setup()) with setup outside the timed region) -> timing statistics.

        Per-repetition (default, and always with `setup`): CUDA events around each call; a call
        shorter than its host dispatch then measures the host (`timing` per_rep_events).
        `batched`: the GPU time of one call, from many back-to-back calls between one event pair
        (`measure_batched`)."""
        if batched and setup is None and reps is None:
            return self.measure_batched(fn, flops, bytes_)
        for _ in range(self.warmup):
            last = self._once(fn, setup)
        self.sync()
        t_est = max(self._elapsed(last), 1e-6)
        if reps is None:
            reps = int(min(self.max_reps, max(3, math.ceil(self.min_time_s / t_est))))
        e0, w0 = self.tel.energy_j(), time.perf_counter()
        handles = [self._once(fn, setup) for _ in range(reps)]
        self.sync()
        wall = time.perf_counter() - w0
        e1 = self.tel.energy_j()
        times = sorted(self._elapsed(h) for h in handles)
        return self._stats(times, reps, wall, e0, e1, flops, bytes_,
                           "per_rep_events" if self.device.type == "cuda" else "host_clock")

    def _stats(self, times, reps, wall, e0, e1, flops, bytes_, timing) -> dict:
        sm, mem = self.tel.sm_clock_mhz(), self.tel.mem_clock_mhz()
        med = statistics.median(times)
        # NVML's energy counter advances in steps of ~0.1 s: shorter windows give no power figure
        power = (e1 - e0) / wall if wall >= ENERGY_MIN_WINDOW_S else math.nan
        q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [med] * 9
        return {"time_s": med, "time_p10_s": q[0], "time_p90_s": q[-1], "reps": reps,
                "flops": flops, "bytes": bytes_,
                "achieved_flops_per_s": flops / med, "achieved_bytes_per_s": bytes_ / med,
                "sm_clock_mhz": sm, "mem_clock_mhz": mem, "power_w": power,
                "energy_j": power * med, "timing": timing}

    def measure_batched(self, fn, flops: float = math.nan, bytes_: float = math.nan) -> dict:
        """GPU time of one call of fn, free of host dispatch: n calls captured in one CUDA graph
        (`timing` cuda_graph; n such that a replay holds >= BATCH_WINDOW_S of work, at most
        BATCH_MAX_CALLS calls), replayed >= BATCH_MIN_WINDOWS times with one event pair around
        each replay. time_s = median over replays of replay time / n; p10/p90 over replays. If fn
        cannot be captured, the n calls are issued eagerly between one event pair (`timing`
        batched_events: the GPU time where the GPU is slower than the host's dispatch, else the
        host's). On CPU: the host clock around n calls (`timing` host_clock)."""
        for _ in range(self.warmup):
            last = self._once(fn, None)
        self.sync()
        t_est = max(self._elapsed(last), 1e-7)
        n = int(min(BATCH_MAX_CALLS, max(1, math.ceil(BATCH_WINDOW_S / t_est))))
        windows = int(min(BATCH_MAX_WINDOWS, max(BATCH_MIN_WINDOWS, math.ceil(self.min_time_s / (n * t_est)))))
        if self.device.type != "cuda":
            times = []
            w0 = time.perf_counter()
            for _ in range(windows):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append((time.perf_counter() - t0) / n)
            return self._stats(sorted(times), n * windows, time.perf_counter() - w0, math.nan, math.nan,
                               flops, bytes_, "host_clock")
        graph, timing = None, "cuda_graph"
        try:
            graph = _capture(fn, n, self.device)
        except Exception as e:  # not capturable (host sync, CPU tensors): eager back-to-back calls
            log(f"cuda graph capture failed ({type(e).__name__}: {str(e)[:80]}); batched eager events")
            torch.cuda.synchronize(self.device)
            graph, timing = None, "batched_events"

        def window():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            if graph is not None:
                graph.replay()
            else:
                for _ in range(n):
                    fn()
            end.record()
            return start, end

        window()  # first replay uploads the graph
        self.sync()
        e0, w0 = self.tel.energy_j(), time.perf_counter()
        handles = [window() for _ in range(windows)]
        self.sync()
        wall = time.perf_counter() - w0
        e1 = self.tel.energy_j()
        times = sorted(self._elapsed(h) / n for h in handles)
        del graph
        return self._stats(times, n * windows, wall, e0, e1, flops, bytes_, timing)


# measure_batched: a timed window holds >= 20 ms of work or BATCH_MAX_CALLS calls (the one event
# pair's few-microsecond overhead is then < 0.1% of the window)
BATCH_WINDOW_S = 0.02
BATCH_MAX_CALLS = 500
BATCH_MIN_WINDOWS, BATCH_MAX_WINDOWS = 5, 20


def _capture(fn, n: int, device: torch.device):
    """n calls of fn captured into one CUDA graph (warmed up on a side stream first, as
    torch.cuda.graphs requires); outputs of each call are freed inside the graph's pool."""
    s = torch.cuda.Stream(device)
    s.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream(device).wait_stream(s)
    torch.cuda.synchronize(device)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    return g


class Deadline:
    """Cumulative time shares per section: a section ends early when its share is spent."""

    def __init__(self, budget_s: float):
        self.t0, self.budget_s, self.used_share = time.perf_counter(), budget_s, 0.0
        self.until = self.t0

    def start(self, share: float):
        self.used_share += share
        self.until = self.t0 + self.budget_s * self.used_share

    def over(self) -> bool:
        return time.perf_counter() > self.until


def environment(device: torch.device, tel: Telemetry) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    env = {"gpu_name": gpu, "torch_version": torch.__version__,
           "cuda_version": torch.version.cuda or "", "python_version": sys.version.split()[0],
           "hostname": platform.node(), "nvml": tel.available, **tel.static_info()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(sm_count=p.multi_processor_count, total_memory_bytes=p.total_memory,
                   cudnn_version=torch.backends.cudnn.version())
    env["fp8_blockwise_kernel"] = fp8.blockwise_kernel_available(device)
    return env


def peak_flops(env: dict, precision: str) -> float:
    for key, peaks in PEAK_FLOPS_PER_S.items():
        if key in env["gpu_name"]:
            return peaks["fp8" if precision.startswith("fp8") else "bf16"]
    return math.nan


def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------
# GEMMs
# ------------------------------------------------------------------------------------------

V3_PROJECTIONS_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168),
                     (7168, 2048)]


def _fp8_gemm_callable(a_MK, w_NK, kind: str):
    """Pre-quantized operands and the kernel call, so only the GEMM is timed."""
    if kind == "fp8-tensor":
        aq, bq = a_MK.to(fp8.FP8_DTYPE), w_NK.to(fp8.FP8_DTYPE)
        one = torch.ones((), device=a_MK.device)
        return lambda: torch._scaled_mm(aq, bq.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    if kind == "fp8-rowwise":
        aq, sa = fp8.quantize_rowwise(a_MK)
        bq, sb = fp8.quantize_rowwise(w_NK)
        return lambda: torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb.t(), out_dtype=torch.bfloat16)
    aq, sa = fp8.quantize_1x128(a_MK)  # fp8-blockwise
    bq, sb = fp8.quantize_128x128(w_NK)
    variant = fp8._BLOCKWISE_VARIANT[a_MK.device.type]
    return lambda: fp8._blockwise_call(aq, sa, bq, sb, torch.bfloat16, variant)


def bench_gemm(rec, timer, dev, deadline, quick, env):
    ms = [128, 512, 2048] if quick else [128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144,
                                         8192, 12288, 16384]
    shapes = [(128, 448), (1536, 96), (448, 128)] if quick else V3_PROJECTIONS_NK
    squares = [256] if quick else [512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384]
    kinds = ["bf16", "fp8-rowwise", "fp8-tensor"]
    if env["fp8_blockwise_kernel"]:
        kinds.append("fp8-blockwise")
    cases = [(m, n, k, "v3_proj") for n, k in shapes for m in ms] + [(s, s, s, "square") for s in squares]
    best = {}
    for m, n, k, tag in cases:
        if deadline.over():
            log("gemm: time share spent, skipping the rest")
            break
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        for kind in kinds:
            if kind == "fp8-blockwise" and not fp8.blockwise_shape_ok(k, n):
                continue
            fn = (lambda: F.linear(a, w)) if kind == "bf16" else _fp8_gemm_callable(a, w, kind)
            in_bytes = 2 if kind == "bf16" else 1
            r = timer.measure(fn, flops=gemm_flops(m, n, k), bytes_=gemm_bytes(m, n, k, in_bytes), batched=True)
            rec.row("gemm", bench="gemm", m=m, n=n, k=k, groups=1, tokens_per_group=m,
                    precision=kind, shape_tag=tag, **r)
            best[kind] = max(best.get(kind, 0), r["achieved_flops_per_s"])
        del a, w
    for kind, v in best.items():
        log(f"gemm best {kind}: {v / 1e12:.0f} TFLOP/s" + ("  (target BF16 >= 650)" if kind == "bf16" else ""))
    _free()


GROUPED_SHAPES_NK = [(4096, 7168), (7168, 2048), (2816, 2048), (2048, 1408)]
GROUPED_GROUPS = [4, 8, 16, 32, 64]
GROUPED_TPGS = [128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192]
# below one 128-row tile per expert and 128 experts: MoE layers at 512-2048 tokens and serving run
# there (added 2026-11-24, section grouped_small)
GROUPED_SMALL_TPGS = [16, 32, 64]
GROUPED_SMALL_GROUPS = [128]
GROUPED_MAX_ROWS = 262144


def _small_grid(quick: bool):
    """(groups, rows per group, keep) of section grouped_small: the combinations outside the main
    grid, with fewer than 128 rows per group or 128 groups."""
    if quick:
        return [16], [8, 16], lambda e, tpg: True
    return (GROUPED_GROUPS + GROUPED_SMALL_GROUPS, GROUPED_SMALL_TPGS + GROUPED_TPGS,
            lambda e, tpg: tpg in GROUPED_SMALL_TPGS or e in GROUPED_SMALL_GROUPS)


def bench_grouped_small(rec, timer, dev, deadline, quick, env):
    groups, tpgs, keep = _small_grid(quick)
    bench_grouped(rec, timer, dev, deadline, quick, env, groups, tpgs, keep)
    bench_grouped_wgrad(rec, timer, dev, deadline, quick, env, groups, tpgs, keep)


def bench_grouped(rec, timer, dev, deadline, quick, env, groups=None, tpgs=None, keep=None):
    """Grouped (expert) GEMMs, forward form, BF16 and row-wise FP8, over (groups, rows per group)."""
    groups = groups or ([4, 8] if quick else GROUPED_GROUPS)
    tpgs = tpgs or ([32, 64] if quick else GROUPED_TPGS)
    shapes = [(256, 448), (448, 128)] if quick else GROUPED_SHAPES_NK
    max_rows = 4096 if quick else GROUPED_MAX_ROWS
    keep = keep or (lambda e, tpg: True)
    best = {}
    for n, k in shapes:
        for e in groups:
            w_EKN = torch.randn(e, n, k, device=dev, dtype=torch.bfloat16).transpose(-2, -1)
            w_EKN_q = None
            for tpg in tpgs:
                if e * tpg > max_rows or not keep(e, tpg):
                    continue
                if deadline.over():
                    break
                x = torch.randn(e * tpg, k, device=dev, dtype=torch.bfloat16)
                offs = torch.arange(1, e + 1, device=dev, dtype=torch.int32) * tpg
                for kind in ["bf16", "fp8-rowwise"]:
                    if kind == "bf16":
                        fn = lambda: torch._grouped_mm(x, w_EKN, offs=offs)
                    elif dev.type == "cuda":
                        xq, sx = fp8.quantize_rowwise(x)
                        if w_EKN_q is None:
                            wq, sw = fp8.quantize_rowwise(w_EKN.transpose(-2, -1).reshape(e * n, k))
                            w_EKN_q = (wq.view(e, n, k).transpose(-2, -1), sw.view(e, n))
                        fn = lambda: torch._scaled_grouped_mm(xq, w_EKN_q[0], sx.squeeze(-1), w_EKN_q[1],
                                                              offs=offs, out_dtype=torch.bfloat16)
                    else:  # CPU dry run: the emulated path of the seam
                        fn = lambda: fp8.grouped_mm(x, w_EKN, offs, Precision("fp8", "emulated"))
                    fl = e * gemm_flops(tpg, n, k)
                    by = e * gemm_bytes(tpg, n, k, 2 if kind == "bf16" else 1)
                    r = timer.measure(fn, flops=fl, bytes_=by, batched=True)
                    rec.row("gemm", bench="grouped_gemm", m=e * tpg, n=n, k=k, groups=e,
                            tokens_per_group=tpg, precision=kind, shape_tag="expert", **r)
                    key = (kind, n, k)
                    best[key] = max(best.get(key, 0), r["achieved_flops_per_s"])
                del x
            del w_EKN, w_EKN_q
            _free()
    for (kind, n, k), v in sorted(best.items()):
        tgt = "  (target FP8 >= 1000 on H100)" if kind.startswith("fp8") and (n, k) in V3_PROJECTIONS_NK else ""
        log(f"grouped best {kind} N={n} K={k}: {v / 1e12:.0f} TFLOP/s{tgt}")


# ------------------------------------------------------------------------------------------
# Memory-bound ops
# ------------------------------------------------------------------------------------------


def bench_grouped_wgrad(rec, timer, dev, deadline, quick, env, groups=None, tpgs=None, keep=None):
    """Grouped GEMMs in the weight-gradient form real/ runs in the MoE backward (real/fp8.py
    _Fp8GroupedMM: dW_EKN = x_TK^T g_TN per expert, contracted over the expert's rows): BF16
    torch._grouped_mm on a transposed left operand, the same (n, k), group and rows-per-group grid as
    bench_grouped. Rows: bench `grouped_gemm_wgrad`, output n x k per group (n = g's width, k = x's)."""
    groups = groups or ([4, 8] if quick else GROUPED_GROUPS)
    tpgs = tpgs or ([32, 64] if quick else GROUPED_TPGS)
    shapes = [(256, 448), (448, 128)] if quick else GROUPED_SHAPES_NK
    max_rows = 4096 if quick else GROUPED_MAX_ROWS
    keep = keep or (lambda e, tpg: True)
    for n, k in shapes:
        for e in groups:
            for tpg in tpgs:
                if e * tpg > max_rows or deadline.over() or not keep(e, tpg):
                    continue
                x = torch.randn(e * tpg, k, device=dev, dtype=torch.bfloat16)
                g = torch.randn(e * tpg, n, device=dev, dtype=torch.bfloat16)
                offs = torch.arange(1, e + 1, device=dev, dtype=torch.int32) * tpg
                if dev.type == "cuda":
                    fn = lambda: torch._grouped_mm(x.t(), g, offs=offs)
                else:  # CPU dry run: per-group matmuls
                    fn = lambda: [x[i * tpg:(i + 1) * tpg].t() @ g[i * tpg:(i + 1) * tpg] for i in range(e)]
                r = timer.measure(fn, flops=e * gemm_flops(tpg, n, k), bytes_=e * gemm_bytes(tpg, n, k, 2), batched=True)
                rec.row("gemm", bench="grouped_gemm_wgrad", m=e * tpg, n=n, k=k, groups=e, tokens_per_group=tpg,
                        precision="bf16", shape_tag="expert_wgrad", **r)
                del x, g
        log(f"grouped wgrad N={n} K={k}: done")
    _free()


def bench_memory(rec, timer, dev, deadline, quick, env):
    D = 256 if quick else 7168
    tokens_list = [64, 256] if quick else [1024, 4096, 16384, 65536]
    best = 0.0
    for T in tokens_list:
        if deadline.over():
            break
        x = torch.randn(T, D, device=dev, dtype=torch.bfloat16)
        w = torch.ones(D, device=dev, dtype=torch.bfloat16)
        F2 = 2 * (128 if quick else 2048)
        h = torch.randn(T, F2, device=dev, dtype=torch.bfloat16)
        E = 256
        logits = torch.randn(T, E, device=dev, dtype=torch.float32)
        bias = torch.zeros(E, device=dev)
        y = torch.empty_like(x)

        def swiglu():
            a, b = h.chunk(2, dim=-1)
            return F.silu(a) * b

        H, P, R = (4, 32, 16) if quick else (128, 128, 64)   # V3's MLA heads and head dims
        q = torch.randn(T, H, P + R, device=dev, dtype=torch.bfloat16)
        q_pe = torch.randn(T, H, R, device=dev, dtype=torch.bfloat16)
        kv = torch.randn(T, H, 2 * P, device=dev, dtype=torch.bfloat16)
        kpe = torch.randn(T, R, device=dev, dtype=torch.bfloat16)

        def mla_qk_cat():
            # real/model.py MLA._attend_expanded: q and k built by cat of strided split views
            q_nope, k_nope = q[..., :P], kv[..., :P]
            return (torch.cat([q_nope, q_pe], dim=-1),
                    torch.cat([k_nope, kpe[:, None, :].expand(T, H, R)], dim=-1))

        # each input read once (q_nope, q_pe; k_nope, kpe), each output written once, 2 B each
        cat_bytes = 2 * (T * H * (P + R) + T * H * (P + R) + T * H * P + T * R + T * H * (P + R))
        ops = [
            ("copy", lambda: y.copy_(x), 2 * x.numel() * 2, D),
            ("mla_qk_cat", mla_qk_cat, cat_bytes, H * (P + R)),
            ("rmsnorm", lambda: F.rms_norm(x, (D,), w, 1e-6), 2 * x.numel() * 2, D),
            ("swiglu", swiglu, h.numel() * 2 + h.numel() // 2 * 2, F2),
            ("softmax", lambda: torch.softmax(logits, dim=-1), 2 * logits.numel() * 4, E),
            ("router_topk", lambda: route(torch.sigmoid(logits), bias, 8, 8, 4, 2.5),
             logits.numel() * 4 + T * 8 * 12, E),
            ("fp8_quant_1x128", lambda: fp8.quantize_1x128(x), x.numel() * 3 + x.numel() // 128 * 4, D),
            ("fp8_quant_rowwise", lambda: fp8.quantize_rowwise(x), x.numel() * 3 + T * 4, D),
        ]
        for name, fn, nbytes, width in ops:
            r = timer.measure(fn, bytes_=float(nbytes), batched=True)
            rec.row("memory", bench="memory", op=name, tokens=T, width=width, bytes_moved=nbytes, **r)
            if name == "copy":
                best = max(best, r["achieved_bytes_per_s"])
        del x, h, logits, y, q, q_pe, kv, kpe
        _free()
    log(f"memory: best copy {best / 1e9:.0f} GB/s (read + write)")


def bench_topk(rec, timer, dev, deadline, quick, env):
    """torch.topk as real/model.py route() calls it (memory.csv, op `topk<k>`, `width` = the
    reduced dimension, `tokens` = rows): the group top-2 over 32 experts per group, the top-4 of 8
    groups and the top-8 of 256 experts, on float32 scores. A routing step is several of these
    kernels (radix select), which the bandwidth roofline of one streaming kernel does not describe."""
    tokens_list = [64, 256] if quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    for T in tokens_list:
        if deadline.over():
            break
        for rows, width, k in ((T * 8, 32, 2), (T, 8, 4), (T, 256, 8)):
            scores = torch.randn(rows, width, device=dev, dtype=torch.float32)
            nbytes = rows * width * 4 + rows * k * 12   # read the scores, write values and indices
            r = timer.measure(lambda: scores.topk(k, dim=-1), bytes_=float(nbytes), batched=True)
            rec.row("memory", bench="memory", op=f"topk{k}", tokens=rows, width=width, bytes_moved=nbytes, **r)
            del scores
    log("topk: done")


# ------------------------------------------------------------------------------------------
# Attention core and MLA layer
# ------------------------------------------------------------------------------------------


def bench_attention(rec, timer, dev, deadline, quick, env):
    heads_list = [2, 4] if quick else [16, 32, 64, 128]
    seqs = [128, 256] if quick else [512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384]
    qk, vd = (48, 32) if quick else (192, 128)
    best = {}
    for H in heads_list:
        for S in seqs:
            if deadline.over():
                break
            tokens = 512 if quick else (16384 if H <= 32 else 8192)
            B = max(1, tokens // S)
            q = torch.randn(B, H, S, qk, device=dev, dtype=torch.bfloat16, requires_grad=True)
            k = torch.randn(B, H, S, qk, device=dev, dtype=torch.bfloat16, requires_grad=True)
            v = torch.randn(B, H, S, vd, device=dev, dtype=torch.bfloat16, requires_grad=True)
            sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
            fl = attention_flops(B, S, H, qk, vd, True)
            by = (q.numel() + k.numel() + 2 * v.numel()) * 2.0  # read q, k, v; write o (BF16)
            r = timer.measure(sdpa, flops=fl, bytes_=by, batched=True)
            common = dict(model="", batch=B, seq_len=S, num_heads=H, qk_head_dim=qk, v_head_dim=vd,
                          causal=True, precision="bf16")
            rec.row("attention", bench="attn_fwd", **common, **r)
            best["fwd"] = max(best.get("fwd", 0), r["achieved_flops_per_s"])
            g = torch.randn(B, H, S, vd, device=dev, dtype=torch.bfloat16)

            def setup():
                return sdpa()

            def bwd(o):
                torch.autograd.grad(o, (q, k, v), g)

            r = timer.measure(bwd, setup=setup, flops=attention_bwd_flops(B, S, H, qk, vd, True),
                              bytes_=2 * by)
            rec.row("attention", bench="attn_bwd", **common, **r)
            best["bwd"] = max(best.get("bwd", 0), r["achieved_flops_per_s"])
            del q, k, v, g
            _free()
    for kk, v in best.items():
        log(f"attention best {kk}: {v / 1e12:.0f} TFLOP/s")
    # whole MLA layer (projections + core), forward and backward
    for name in (["tiny"] if quick else ["v3-slice-1l", "v2-lite-slice"]):
        spec = get_spec(name)
        for S, B in ([(64, 2)] if quick else [(1024, 4), (4096, 1), (4096, 4)]):
            if deadline.over():
                break
            for prec in _precisions(dev, env):
                with building(dev):
                    mla = MLA(spec)
                    cos, sin = rope_tables(spec.qk_rope_head_dim, S)
                x = torch.randn(B, S, spec.hidden_size, device=dev, dtype=torch.bfloat16,
                                requires_grad=True)
                g = torch.randn_like(x)
                fl_fwd = sum(op.flops for op in attention_ops(spec, B, S))
                common = dict(model=name, batch=B, seq_len=S, num_heads=spec.num_heads,
                              qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim,
                              v_head_dim=spec.v_head_dim, causal=True, precision=prec.label)
                r = timer.measure(lambda: mla(x, cos, sin, prec), flops=fl_fwd)
                rec.row("attention", bench="mla_layer_fwd", **common, **r)
                r = timer.measure(lambda o: torch.autograd.grad(o, [x, *mla.parameters()], g),
                                  setup=lambda: mla(x, cos, sin, prec), flops=2 * fl_fwd)
                rec.row("attention", bench="mla_layer_bwd", **common, **r)
                del mla, x, g
                _free()


def _spec_replace(spec, **kw):
    import dataclasses
    return dataclasses.replace(spec, **kw)


def _precisions(dev, env) -> list[Precision]:
    return [fp8.BF16, Precision("fp8", "blockwise" if env["fp8_blockwise_kernel"] else "rowwise")]


# ------------------------------------------------------------------------------------------
# MoE layer under controlled routing skew
# ------------------------------------------------------------------------------------------


def skewed_routing(T: int, E: int, K: int, skew: float, route_scale: float, device, generator):
    """topk_ids_TK with expert popularity ~ rank^-skew (Zipf; 0 = exactly balanced round-robin),
    K distinct experts per token, uniform weights summing to route_scale."""
    if skew == 0:
        ids_TK = (torch.arange(T * K) % E).view(T, K)
    else:
        p_E = torch.arange(1, E + 1, dtype=torch.float64) ** -skew
        p_E = p_E[torch.randperm(E, generator=generator)]
        ids_TK = torch.multinomial(p_E.float().expand(T, E), K, replacement=False, generator=generator)
    w_TK = torch.full((T, K), route_scale / K)
    return w_TK.to(device, torch.bfloat16), ids_TK.to(device)


def bench_moe(rec, timer, dev, deadline, quick, env):
    if quick:
        cases = [("tiny", [8], [256], [0.0, 1.0])]
    else:
        cases = [("v3-slice-1l", [16, 32, 64, 128], [512, 1024, 2048, 4096, 8192, 16384, 32768],
                  [0.0, 0.5, 1.0, 1.5]),
                 ("v2-lite-slice", [64], [1024, 4096, 16384], [0.0, 0.5, 1.0, 1.5])]
    g = torch.Generator().manual_seed(0)
    for name, experts, token_counts, skews in cases:
        base = get_spec(name)
        for E in experts:
            if deadline.over():
                break
            groups = base.num_expert_groups if E % base.num_expert_groups == 0 else 1
            spec = _spec_replace(base, num_routed_experts=E, num_expert_groups=groups,
                                 top_k_groups=min(base.top_k_groups, groups))
            with building(dev):
                moe = MoE(spec)
            D, Fe, K = spec.hidden_size, spec.moe_intermediate_size, spec.top_k
            for T in token_counts:
                x = torch.randn(T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
                gy = torch.randn(T, D, device=dev, dtype=torch.bfloat16)
                for skew in skews:
                    if deadline.over():
                        break
                    routing = skewed_routing(T, E, K, skew, spec.route_scale, dev, g)
                    counts = torch.bincount(routing[1].flatten(), minlength=E)
                    fl = (gemm_flops(T * K, 3 * Fe, D)
                          + gemm_flops(T, 3 * Fe * spec.num_shared_experts, D))
                    by = (E + spec.num_shared_experts) * 3 * D * Fe * 2.0 + 4 * T * K * D * 2.0
                    for prec in _precisions(dev, env):
                        common = dict(model=name, hidden_size=D, moe_intermediate_size=Fe, tokens=T,
                                      num_experts=E, top_k=K, num_shared_experts=spec.num_shared_experts,
                                      skew=skew, max_expert_tokens=int(counts.max()),
                                      mean_expert_tokens=T * K / E,
                                      tokens_per_expert=json.dumps(counts.tolist()), precision=prec.label)
                        r = timer.measure(lambda: moe(x, prec, routing), flops=fl, bytes_=by)
                        rec.row("moe_layer", bench="moe_layer_fwd", **common, **r)
                        r = timer.measure(lambda o: torch.autograd.grad(o, [x, *moe.parameters()], gy,
                                                                        allow_unused=True),
                                          setup=lambda: moe(x, prec, routing), flops=2 * fl,
                                          bytes_=2 * by)
                        rec.row("moe_layer", bench="moe_layer_bwd", **common, **r)
                del x, gy
                _free()
            log(f"moe {name} E={E}: done")
            del moe
            _free()


# ------------------------------------------------------------------------------------------
# Whole training step, prefill and decode
# ------------------------------------------------------------------------------------------


def bench_train(rec, timer, dev, deadline, quick, env):
    from real.train import MasterAdamW, train_step

    cases = ([("tiny", 64, [2, 4])] if quick else
             [("v2-lite-slice", 4096, [1, 2, 4]), ("v2-lite-slice", 2048, [1, 4]),
              ("v3-slice-1l", 4096, [1, 2, 4]), ("v3-slice-1l", 2048, [1, 4, 8]),
              ("v3-slice-2l", 4096, [1, 2, 3])])
    for name, S, batches in cases:
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=S)
        opt = MasterAdamW(model.parameters())
        for B in batches:
            for prec in _precisions(dev, env):
                if deadline.over():
                    break
                tokens = torch.randint(0, spec.vocab_size, (B, S), device=dev)
                targets = torch.roll(tokens, -1, 1)
                losses = []
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                try:
                    r = timer.measure(lambda: losses.append(train_step(model, opt, tokens, targets, prec)[0]),
                                      flops=train_flops_per_token(spec, S) * B * S, reps=3 if quick else 5)
                except torch.OutOfMemoryError:
                    log(f"train {name} B={B} {prec.label}: out of memory")
                    opt.zero_grad()
                    _free()
                    continue
                peak_mem = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else math.nan
                mfu = r["achieved_flops_per_s"] / peak_flops(env, "bf16")
                rec.row("model", bench="train_step", model=name, batch=B, seq_len=S, prompt_len="",
                        gen_len="", precision=prec.label, tokens_per_s=B * S / r["time_s"], mfu=mfu,
                        peak_memory_bytes=peak_mem, loss=losses[-1], **r)
                log(f"train {name} B={B} S={S} {prec.label}: {r['time_s'] * 1e3:.1f} ms, "
                    f"MFU {mfu:.3f} (BF16 peak basis), peak mem {peak_mem / 2**30:.1f} GiB")
        del model, opt
        _free()


def bench_serve(rec, timer, dev, deadline, quick, env):
    from real.infer import decode_step, prefill

    cases = ([("tiny", 32, 8, [1, 4], [1, 4])] if quick else
             [("v2-lite-slice", 1024, 32, [1, 4, 16, 64], [1, 8, 32, 128, 256]),
              ("v3-slice-2l", 1024, 32, [1, 4, 16], [1, 8, 32, 64, 128, 256])])
    for name, P, G, prefill_batches, decode_batches in cases:
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G)
        model.eval()
        fwd_tok = forward_flops_per_token(spec, P)
        for B in prefill_batches:
            if deadline.over():
                break
            prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
            caches = model.new_caches(B, P + G)
            r = timer.measure(lambda: prefill(model, prompt, caches), flops=fwd_tok * B * P,
                              reps=3 if B >= 16 else None)
            rec.row("model", bench="prefill", model=name, batch=B, seq_len="", prompt_len=P, gen_len=0,
                    precision="bf16", tokens_per_s=B * P / r["time_s"], mfu="", peak_memory_bytes="",
                    loss="", **r)
            del caches
        for B in decode_batches:
            if deadline.over():
                break
            prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
            caches = model.new_caches(B, P + G)
            token = prefill(model, prompt, caches, max_batch=16)
            pos = [P]

            def step():
                nonlocal token
                token = decode_step(model, token, caches, pos[0])
                pos[0] += 1

            timer_ = Timer(dev, timer.tel, 0.0, max_reps=G - 4, warmup=3)
            L = P + G / 2  # mean cached length over the timed steps
            r = timer_.measure(step, flops=_decode_flops(spec, B, L),
                               bytes_=kv_cache_bytes_per_token(spec) * B * L + _weight_bytes(spec, B),
                               reps=G - 4)
            rec.row("model", bench="decode", model=name, batch=B, seq_len="", prompt_len=P, gen_len=G,
                    precision="bf16", tokens_per_s=B / r["time_s"], mfu="", peak_memory_bytes="",
                    loss="", **r)
            log(f"decode {name} B={B}: {B / r['time_s']:.0f} tok/s ({r['time_s'] * 1e3:.2f} ms/step)")
            del caches
            _free()
        del model
        _free()


def _decode_flops(spec, batch: int, cached_len: float) -> float:
    """One decode step: 2 x activated matmul weights per token, plus absorbed MLA attention over
    the cache: scores on C + R dims and values on C dims, per head and cached token."""
    per_key = 2 * spec.num_heads * (2 * spec.kv_lora_rank + spec.qk_rope_head_dim)
    return batch * (2.0 * matmul_params_per_token(spec) + spec.num_layers * per_key * cached_len)


def _weight_bytes(spec, batch: int) -> float:
    """BF16 weights one decode step reads: all but unvisited routed experts (at most batch*K)."""
    pc = param_counts(spec)
    total = pc["total_params"] - pc["embedding_params"]
    if spec.num_routed_experts:
        expert = 3 * spec.hidden_size * spec.moe_intermediate_size
        n_moe = spec.num_layers - spec.num_dense_layers
        untouched = max(0, spec.num_routed_experts - batch * spec.top_k)
        total -= n_moe * untouched * expert
    return 2.0 * total


def bench_expert_load(rec, timer, dev, deadline, quick, env):
    """Per-layer, per-step routed-token counts of a short training run, with and without the
    auxiliary-loss-free bias update (V3 uses rate 0.001)."""
    from real.train import MasterAdamW, synthetic_batch, train_step

    name, steps, B, S = ("tiny", 6, 4, 32) if quick else ("bench-small", 60, 8, 512)
    spec = get_spec(name)
    for rate in [0.0, 1e-3, 1e-2]:
        if deadline.over():
            break
        torch.manual_seed(0)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=S)
        opt = MasterAdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        for step in range(steps):
            tokens, targets = synthetic_batch(spec.vocab_size, B, S, generator=gen, device=dev)
            _, loads = train_step(model, opt, tokens, targets, bias_update_rate=rate)
            for layer, load in enumerate(loads):
                load = load.cpu()
                rec.row("expert_load", bench="expert_load", model=name, step=step, layer=layer,
                        bias_update_rate=rate, num_experts=load.numel(),
                        max_over_mean=float(load.max() / load.mean()),
                        tokens_per_expert=" ".join(str(int(v)) for v in load.tolist()))
        log(f"expert_load rate={rate}: last step max/mean per layer "
            + ", ".join(f"{float(l.max() / l.mean()):.2f}" for l in loads))
        del model, opt
        _free()


def bench_power(rec, timer, dev, deadline, quick, env):
    """Board power of representative kernels, each looped for >= 2 s (power.csv)."""
    from real.infer import decode_step, prefill
    from real.train import MasterAdamW, train_step

    t = Timer(dev, timer.tel, 0.2 if quick else 2.0, max_reps=100000, warmup=timer.warmup)

    def pw(config, precision, fn, setup=None, flops=math.nan, bytes_=math.nan):
        if deadline.over():
            return
        r = t.measure(fn, setup=setup, flops=flops, bytes_=bytes_)
        rec.row("power", bench="power", config=config, precision=precision, **r)
        log(f"power {config} {precision}: {r['power_w']:.0f} W, {r['time_s'] * 1e3:.3f} ms")

    if dev.type == "cuda":  # idle board power over 2 s
        e0 = timer.tel.energy_j()
        time.sleep(2.0)
        idle = (timer.tel.energy_j() - e0) / 2.0
        rec.row("power", bench="power", config="idle", precision="", time_s=2.0, reps=1,
                power_w=idle, energy_j=2 * idle)
    sc = 16 if quick else 1
    for m, n, k in [(8192, 4096, 7168), (512, 7168, 2048), (8192, 8192, 8192)]:
        m, n, k = m // sc, n // sc, k // sc
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        fl, cfg = gemm_flops(m, n, k), f"gemm m={m} n={n} k={k}"
        pw(cfg, "bf16", lambda: F.linear(a, w), flops=fl)
        pw(cfg, "fp8-rowwise", _fp8_gemm_callable(a, w, "fp8-rowwise"), flops=fl)
        if env["fp8_blockwise_kernel"] and fp8.blockwise_shape_ok(k, n):
            pw(cfg, "fp8-blockwise", _fp8_gemm_callable(a, w, "fp8-blockwise"), flops=fl)
    x = torch.randn(2**29 // sc**2, device=dev, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    pw(f"copy bytes={4 * x.numel()}", "bf16", lambda: y.copy_(x), bytes_=4.0 * x.numel())
    del x, y
    B, H, S = (1, 4, 256) if quick else (2, 128, 4096)
    q = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k_ = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, H, S, 128, device=dev, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(B, H, S, 128, device=dev, dtype=torch.bfloat16)
    sdpa = lambda: F.scaled_dot_product_attention(q, k_, v, is_causal=True)
    cfg = f"attention b={B} h={H} s={S}"
    pw(cfg + " fwd", "bf16", sdpa, flops=attention_flops(B, S, H, 192, 128, True))
    pw(cfg + " bwd", "bf16", lambda o: torch.autograd.grad(o, (q, k_, v), g), setup=sdpa,
       flops=attention_bwd_flops(B, S, H, 192, 128, True))
    del q, k_, v, g
    _free()
    name = "tiny" if quick else "v3-slice-1l"
    spec = get_spec(name)
    E, T = (8, 256) if quick else (64, 16384)
    spec = _spec_replace(spec, num_routed_experts=E)
    with building(dev):
        moe = MoE(spec)
    xm = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    routing = skewed_routing(T, E, spec.top_k, 0.0, spec.route_scale, dev, None)
    fl = gemm_flops(T * spec.top_k, 3 * spec.moe_intermediate_size, spec.hidden_size)
    for prec in _precisions(dev, env):
        cfg = f"moe_layer {name} E={E} T={T} balanced"
        pw(cfg + " fwd", prec.label, lambda: moe(xm, prec, routing), flops=fl)
        pw(cfg + " bwd", prec.label, lambda o: torch.autograd.grad(o, [xm, *moe.parameters()],
                                                                   torch.ones_like(o), allow_unused=True),
           setup=lambda: moe(xm, prec, routing), flops=2 * fl)
    del moe, xm
    _free()
    Bt, St = (2, 64) if quick else (2, 4096)
    model = build_model(spec if quick else get_spec(name), dev, torch.bfloat16, max_seq_len=St)
    opt = MasterAdamW(model.parameters())
    tokens = torch.randint(0, model.spec.vocab_size, (Bt, St), device=dev)
    pw(f"train_step {name} b={Bt} s={St}", "bf16",
       lambda: train_step(model, opt, tokens, torch.roll(tokens, -1, 1)),
       flops=train_flops_per_token(model.spec, St) * Bt * St)
    del model, opt
    _free()
    name, Bd, P, G = ("tiny", 4, 16, 400) if quick else ("v3-slice-2l", 64, 512, 1200)
    spec = get_spec(name)
    model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G).eval()
    caches = model.new_caches(Bd, P + G)
    token = [prefill(model, torch.randint(0, spec.vocab_size, (Bd, P), device=dev), caches)]
    pos = [P]

    def step():
        if pos[0] < P + G:  # past the cache end, keep decoding at the last position
            token[0] = decode_step(model, token[0], caches, pos[0])
        else:
            token[0] = decode_step(model, token[0], caches, P + G - 1)
        pos[0] += 1

    pw(f"decode {name} b={Bd} prompt={P}", "bf16", step, flops=_decode_flops(spec, Bd, P + G / 2))
    del model, caches
    _free()


class _NoRecorder:
    def row(self, *args, **kwargs):
        pass

    def close(self):
        pass


def bench_ep(rec, timer, dev, deadline, quick, env):
    """Expert parallelism over the torchrun world (NCCL on GPUs): raw all-to-all, and an MoE
    layer's dispatch, combine, forward and backward with E/W experts per rank. Fixed repetition
    counts so every rank issues the same collectives; rank 0 writes ep.csv."""
    import torch.distributed as dist

    from real.ep import combine, dispatch

    group = dist.group.WORLD
    world = dist.get_world_size()
    t = Timer(dev, timer.tel, 0.0, warmup=3)
    reps = 3 if quick else 20
    for mib in ([1] if quick else [1, 4, 16, 64, 256, 1024]):
        x = torch.randn(mib * 2**20 // 2, device=dev, dtype=torch.bfloat16)
        out = torch.empty_like(x)
        sent = mib * 2**20 * (world - 1) / world
        r = t.measure(lambda: dist.all_to_all_single(out, x, group=group), bytes_=sent, reps=reps)
        rec.row("ep", bench="all_to_all", world_size=world, tokens_per_rank="", num_experts="",
                top_k="", hidden_size="", skew="", max_rank_rows="", bytes_per_rank=sent,
                precision="bf16", **r)
        log(f"all_to_all {mib} MiB/rank: {r['achieved_bytes_per_s'] / 1e9:.0f} GB/s sent per rank")
    name = "tiny" if quick else "v3-slice-1l"
    spec = get_spec(name)
    E = 8 if quick else 32
    spec = _spec_replace(spec, num_routed_experts=E)
    torch.manual_seed(0)
    with building(dev):
        moe = MoE(spec, ep_group=group)
    gen = torch.Generator().manual_seed(dist.get_rank())
    D, K = spec.hidden_size, spec.top_k
    for T in ([64] if quick else [1024, 4096, 16384]):
        for skew in [0.0, 1.0]:
            w, ids = skewed_routing(T, E, K, skew, spec.route_scale, dev, gen)
            x = torch.randn(T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
            rows = torch.zeros(world, dtype=torch.int64, device=dev).scatter_add_(
                0, ids.flatten() // (E // world), torch.ones(T * K, dtype=torch.int64, device=dev))
            dist.all_reduce(rows, group=group)
            common = dict(world_size=world, tokens_per_rank=T, num_experts=E, top_k=K, hidden_size=D,
                          skew=skew, max_rank_rows=int(rows.max()), bytes_per_rank=T * K * D * 2.0)
            fl = gemm_flops(T * K, 3 * spec.moe_intermediate_size, D)
            state = {}

            def do_dispatch():
                state["d"] = dispatch(x.detach(), ids, E, group)

            r = t.measure(do_dispatch, bytes_=T * K * D * 2.0, reps=reps)
            rec.row("ep", bench="ep_dispatch", precision="bf16", **common, **r)
            y_local = state["d"][0]
            r = t.measure(lambda: combine(y_local, state["d"][3], group), bytes_=T * K * D * 2.0,
                          reps=reps)
            rec.row("ep", bench="ep_combine", precision="bf16", **common, **r)
            for prec in _precisions(dev, env):
                r = t.measure(lambda: moe(x, prec, (w, ids)), flops=fl, reps=reps)
                rec.row("ep", bench="moe_layer_ep_fwd", precision=prec.label, **common, **r)
                r = t.measure(lambda o: torch.autograd.grad(o, [x, *moe.parameters()], torch.ones_like(o),
                                                            allow_unused=True),
                              setup=lambda: moe(x, prec, (w, ids)), flops=2 * fl, reps=reps)
                rec.row("ep", bench="moe_layer_ep_bwd", precision=prec.label, **common, **r)
            log(f"ep T={T} skew={skew}: done")


# bench_sustained: seconds each kernel is replayed back to back, and the NVML sampling window
SUSTAIN_S, SUSTAIN_WINDOW_S = 30.0, 1.0


def bench_sustained(rec, timer, dev, deadline, quick, env):
    """How much slower compute-bound kernels run under sustained load than in the short CUDA-graph
    timing of the other sections (sustained.csv). Each kernel is timed as `gemm`/`attention` time
    it (phase `burst`), then its graph is replayed back to back for SUSTAIN_S seconds, the way a
    training step keeps the GPU busy for hours at its power limit; every SUSTAIN_WINDOW_S window
    is one row (phase `sustained`) with the time per call, SM clock, board power and temperature.
    Analysis (calibration.fit.sustained_compute_ratio) compares the burst time with the mean of the
    windows in the second half."""
    sc = 16 if quick else 1
    hold_s = 0.3 if quick else SUSTAIN_S
    kernels = []
    m, n, k = 8192 // sc, 4096 // sc, 7168 // sc   # a V3 expert up-projection on 8 experts' rows
    a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    fl = gemm_flops(m, n, k)
    kernels.append((f"gemm m={m} n={n} k={k}", "bf16", lambda: F.linear(a, w), fl))
    if dev.type == "cuda":
        kernels.append((f"gemm m={m} n={n} k={k}", "fp8-rowwise", _fp8_gemm_callable(a, w, "fp8-rowwise"), fl))
        if env["fp8_blockwise_kernel"] and fp8.blockwise_shape_ok(k, n):
            kernels.append((f"gemm m={m} n={n} k={k}", "fp8-blockwise", _fp8_gemm_callable(a, w, "fp8-blockwise"), fl))
    e, tpg = 8, 4096 // sc
    xg = torch.randn(e * tpg, k, device=dev, dtype=torch.bfloat16)
    wg = torch.randn(e, n, k, device=dev, dtype=torch.bfloat16).transpose(-2, -1)
    offs = torch.arange(1, e + 1, device=dev, dtype=torch.int32) * tpg
    if dev.type == "cuda":
        kernels.append((f"grouped_gemm g={e}x{tpg} n={n} k={k}", "bf16",
                        lambda: torch._grouped_mm(xg, wg, offs=offs), e * gemm_flops(tpg, n, k)))
    B, H, S = (1, 4, 256) if quick else (2, 128, 4096)
    q = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16)
    kk = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, H, S, 128, device=dev, dtype=torch.bfloat16)
    kernels.append((f"attention b={B} h={H} s={S} fwd", "bf16",
                    lambda: F.scaled_dot_product_attention(q, kk, v, is_causal=True),
                    attention_flops(B, S, H, 192, 128, True)))
    x = torch.randn(2**28 // sc**2, device=dev, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    kernels.append((f"copy bytes={4 * x.numel()}", "bf16", lambda: y.copy_(x), math.nan))
    for config, prec, fn, flops in kernels:
        if deadline.over():
            break
        burst = timer.measure(fn, flops=flops, batched=True)
        rec.row("sustained", bench="sustained", config=config, precision=prec, phase="burst", window=0,
                elapsed_s=0.0, temperature_c=timer.tel.temperature_c(), **burst)
        _hold(rec, timer, dev, config, prec, fn, flops, hold_s, burst["time_s"])
        log(f"sustained {config} {prec}: burst {burst['time_s'] * 1e3:.3f} ms")
    del a, w, xg, wg, q, kk, v, x, y
    _free()


def _hold(rec, timer, dev, config, prec, fn, flops, hold_s, t_call):
    """Replay fn back to back for hold_s seconds; one row per SUSTAIN_WINDOW_S window."""
    n = int(min(BATCH_MAX_CALLS, max(1, math.ceil(BATCH_WINDOW_S / max(t_call, 1e-7)))))
    graph = _capture(fn, n, dev) if dev.type == "cuda" else None
    run = graph.replay if graph is not None else (lambda: [fn() for _ in range(n)])
    t0 = time.perf_counter()
    window = 0
    while time.perf_counter() - t0 < hold_s:
        window += 1
        w0, e0 = time.perf_counter(), timer.tel.energy_j()
        calls = 0
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        while time.perf_counter() - w0 < min(SUSTAIN_WINDOW_S, hold_s):
            run()
            calls += n
            if dev.type == "cuda" and calls % (8 * n) == 0:
                torch.cuda.current_stream(dev).synchronize()  # keep the host within a few replays
        if dev.type == "cuda":
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) * 1e-3 / calls
        else:
            t = (time.perf_counter() - w0) / calls
        wall = time.perf_counter() - w0
        power = (timer.tel.energy_j() - e0) / wall
        rec.row("sustained", bench="sustained", config=config, precision=prec, phase="sustained",
                window=window, elapsed_s=time.perf_counter() - t0, temperature_c=timer.tel.temperature_c(),
                time_s=t, time_p10_s=t, time_p90_s=t, reps=calls, flops=flops, bytes=math.nan,
                achieved_flops_per_s=flops / t, achieved_bytes_per_s=math.nan,
                sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz(),
                power_w=power, energy_j=power * t,
                timing="cuda_graph" if graph is not None else "host_clock")
    del graph


def bench_kernels(rec, timer, dev, deadline, quick, env):
    """Per-kernel GPU time of MoE and MLA layers (kernels.csv): the torch profiler's CUDA kernel
    records over KERNEL_REPS eager repetitions, summed per kernel name and divided by the
    repetitions (`time_s` per repetition, `calls` per repetition). Tells which kernels of a
    composed layer the twin mispredicts, which the layer's total cannot."""
    from torch.profiler import ProfilerActivity, profile
    cases = ([("tiny", 8, 256, 1.0)] if quick else
             [("v3-slice-1l", 128, 1024, 0.0), ("v3-slice-1l", 128, 1024, 1.5), ("v3-slice-1l", 64, 16384, 0.0),
              ("v3-slice-1l", 32, 4096, 1.0), ("v2-lite-slice", 64, 1024, 0.0), ("v2-lite-slice", 64, 16384, 0.0)])
    g = torch.Generator().manual_seed(0)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])

    def trace(config, prec_label, fn, setup=None):
        for _ in range(3):
            fn(setup()) if setup else fn()
        timer.sync()
        with profile(activities=acts) as prof:
            for _ in range(KERNEL_REPS):
                state = setup() if setup else None
                timer.sync()
                fn(state) if setup else fn()
                timer.sync()
        totals = {}
        for ev in prof.events():
            if dev.type == "cuda" and ev.device_type.name != "CUDA":
                continue
            t = ev.device_time if dev.type == "cuda" else ev.cpu_time
            n, s_ = totals.get(ev.name, (0, 0.0))
            totals[ev.name] = (n + 1, s_ + t * 1e-6)
        for name, (n, tot) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            rec.row("kernels", bench="kernels", config=config, precision=prec_label, kernel=name if len(name) <= 240 else name[:120] + "..." + name[-117:],
                    calls=n / KERNEL_REPS, time_s=tot / KERNEL_REPS, reps=KERNEL_REPS,
                    timing="profiler", sm_clock_mhz=timer.tel.sm_clock_mhz())

    for name, E, T, skew in cases:
        if deadline.over():
            break
        base = get_spec(name)
        groups = base.num_expert_groups if E % base.num_expert_groups == 0 else 1
        spec = _spec_replace(base, num_routed_experts=E, num_expert_groups=groups,
                             top_k_groups=min(base.top_k_groups, groups))
        with building(dev):
            moe = MoE(spec)
        x = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
        gy = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16)
        routing = skewed_routing(T, E, spec.top_k, skew, spec.route_scale, dev, g)
        for prec in _precisions(dev, env):
            cfg = f"moe_layer {name} t{T} e{E} skew{skew:g}"
            trace(cfg + " fwd", prec.label, lambda: moe(x, prec, routing))
            trace(cfg + " bwd", prec.label,
                  lambda o: torch.autograd.grad(o, [x, *moe.parameters()], gy, allow_unused=True),
                  setup=lambda: moe(x, prec, routing))
        log(f"kernels {name} E={E} T={T} skew={skew}: done")
        del moe, x, gy
        _free()
    for name, B, S in ([("tiny", 1, 64)] if quick else [("v2-lite-slice", 4, 1024), ("v3-slice-1l", 1, 4096)]):
        spec = get_spec(name)
        with building(dev):
            mla = MLA(spec)
            cos, sin = rope_tables(spec.qk_rope_head_dim, S)
        x = torch.randn(B, S, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
        gx = torch.randn(B, S, spec.hidden_size, device=dev, dtype=torch.bfloat16)
        for prec in _precisions(dev, env):
            cfg = f"mla_layer {name} b{B} s{S}"
            trace(cfg + " fwd", prec.label, lambda: mla(x, cos, sin, prec))
            trace(cfg + " bwd", prec.label, lambda o: torch.autograd.grad(o, [x, *mla.parameters()], gx),
                  setup=lambda: mla(x, cos, sin, prec))
        log(f"kernels mla {name}: done")
        del mla, x, gx
        _free()


KERNEL_REPS = 5


# ------------------------------------------------------------------------------------------
# DeepSeek's FP8 stack: weight-gradient GEMMs with 1x128 scales on both operands, and the
# separate single-pass cast kernels the V3 report describes (§3.3.3, §3.5.2)
# ------------------------------------------------------------------------------------------

WGRAD_TOKENS = [1024, 2048, 4096, 8192, 16384]
CAST_SHAPES_MK = [(4096, 7168), (32768, 7168), (32768, 2048)]


def _cast_fns(quick: bool):
    """(op name, cast kind of CAST_BYTES_PER_ELEM, fn) of the three cast kernels of the stack, each
    compiled by torch.compile into fused kernels on a GPU (eager on a CPU dry run):
    cast_1x128: BF16 -> FP8 with 1x128 scales along the row (the forward and dgrad operand cast);
    cast_transpose: BF16 -> the transposed FP8 tensor with 128x1 scales (the wgrad operand of an
    output gradient); requant_transpose: a cached 1x128 FP8 activation read back, dequantized,
    transposed and re-quantized to 128x1 (V3 §3.5.2, "Support for Transposed GEMM Operations")."""
    def cast_transpose(x):
        return fp8.quantize_1x128(x.t())

    def requant_transpose(q, s):
        M, K = q.shape
        x = (q.float().view(M, K // fp8.BLOCK, fp8.BLOCK) * s.unsqueeze(-1)).view(M, K)
        return fp8.quantize_1x128(x.t())

    fns = [("cast_1x128", "cast", fp8.quantize_1x128), ("cast_transpose", "cast_transpose", cast_transpose),
           ("requant_transpose", "requant_transpose", requant_transpose)]
    return fns if quick else [(name, kind, torch.compile(fn, dynamic=False)) for name, kind, fn in fns]


def bench_fp8_stack(rec, timer, dev, deadline, quick, env):
    """fp8_stack.csv. (1) Weight-gradient GEMMs of the V3 projections in their real form,
    dW (n_out x k_in) = dY^T X contracted over T tokens, by kernel: `fp8-1d1d` (1x128 scales along
    T on both operands, V3's wgrad recipe; `-f32` with an FP32 output as V3's FP32 gradients take
    it), `fp8-blockwise` (1x128 x 128x128, the forward recipe at the same shape), `fp8-rowwise`,
    `bf16`. m = n_out, n = k_in, k = T. (2) The cast kernels (bench `cast`), bytes_moved at the
    twin's bytes per element of their kind (twin.costs.flops.CAST_BYTES_PER_ELEM)."""
    variant = fp8.wgrad_1d1d_variant(dev)
    env["fp8_wgrad_1d1d_variant"] = variant
    log(f"fp8_stack: 1x128 x 1x128 kernel variant {variant}")
    shapes = [(256, 384), (384, 256)] if quick else V3_PROJECTIONS_NK
    tokens = [256, 512] if quick else WGRAD_TOKENS
    for n_out, k_in in shapes:
        for T in tokens:
            if deadline.over():
                break
            dyt = torch.randn(n_out, T, device=dev, dtype=torch.bfloat16)
            xt = torch.randn(k_in, T, device=dev, dtype=torch.bfloat16)
            kinds = [("bf16", torch.bfloat16), ("fp8-rowwise", torch.bfloat16)]
            if env["fp8_blockwise_kernel"] and fp8.blockwise_shape_ok(T, k_in):
                kinds.append(("fp8-blockwise", torch.bfloat16))
            if variant is not None:
                kinds += [("fp8-1d1d", torch.bfloat16), ("fp8-1d1d-f32", torch.float32)]
            for kind, out_dtype in kinds:
                if kind == "bf16":
                    fn = lambda: dyt @ xt.t()
                elif kind.startswith("fp8-1d1d"):
                    aq, sa = fp8.quantize_1x128(dyt)
                    bq, sb = fp8.quantize_1x128(xt)
                    fn = (lambda aq=aq, sa=sa, bq=bq, sb=sb, o=out_dtype:
                          fp8._wgrad_1d1d_call(aq, sa, bq, sb, o, variant))
                else:
                    fn = _fp8_gemm_callable(dyt, xt, kind)
                try:
                    r = timer.measure(fn, flops=gemm_flops(n_out, k_in, T),
                                      bytes_=gemm_bytes(n_out, k_in, T, 2 if kind == "bf16" else 1), batched=True)
                except RuntimeError as e:  # e.g. an FP32 output the kernel refuses: the log says so
                    log(f"fp8_stack: {kind} {n_out}x{k_in}x{T} failed: {e}")
                    continue
                rec.row("fp8_stack", bench="gemm_wgrad", op="dW=dY^T X", m=n_out, n=k_in, k=T, precision=kind,
                        out_dtype=str(out_dtype).removeprefix("torch."), bytes_moved=r["bytes"], **r)
            del dyt, xt
            _free()
    log("fp8_stack: wgrad GEMMs done")
    cast_shapes = [(256, 384)] if quick else CAST_SHAPES_MK
    for name, kind, fn in _cast_fns(quick):
        for M, K in cast_shapes:
            if deadline.over():
                break
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            args = (x,) if kind != "requant_transpose" else fp8.quantize_1x128(x)
            nbytes = M * K * CAST_BYTES_PER_ELEM[kind]
            try:
                fn(*args)  # compile outside the timed region
                r = timer.measure(lambda: fn(*args), bytes_=float(nbytes), batched=True)
            except Exception as e:  # a compiler failure must not end the campaign
                log(f"fp8_stack: {name} {M}x{K} failed: {type(e).__name__}: {e}")
                continue
            rec.row("fp8_stack", bench="cast", op=name, m=M, n=0, k=K, precision="fp8", out_dtype="float8_e4m3fn",
                    bytes_moved=nbytes, **r)
            log(f"fp8_stack: {name} {M}x{K}: {r['achieved_bytes_per_s'] / 1e9:.0f} GB/s")
            del x, args
            _free()


# ------------------------------------------------------------------------------------------
# SMs held by communication kernels
# ------------------------------------------------------------------------------------------

RESERVED_SMS = [8, 20, 32, 66]      # V3 holds 20 (V3 §3.2.2), DeepEP's benchmark 24
HOLDER_TARGET_S = 0.04              # one holder launch: ~40 ms alone
HOLD_COPY_BYTES = 2**28             # the copy holder's buffer (256 MiB), streamed `passes` times
# elements per program and iteration: 32 FP32 chains (16 BF16 values) a thread keep each program's
# registers high enough that no GEMM CTA fits beside it on its SM (n_regs goes to env.json)
HOLD_SPIN_BLOCK, HOLD_COPY_BLOCK = 32768, 16384
SLEEP_CYCLES = 400_000              # ~0.2 ms: the holder's CTAs take their SMs before the GEMMs
SM_RESERVE_TRIALS = 3


def _holder(mode: str, sms: int, dev, target_s: float):
    """(launch, bytes moved per launch, seconds per launch alone) of a kernel holding `sms` SMs
    for about target_s (real/sm_hold_kernels.py)."""
    from real import sm_hold_kernels as hk

    if mode == "copy":
        n = HOLD_COPY_BYTES // 2
        src = torch.empty(n, device=dev, dtype=torch.bfloat16).normal_()
        dst = torch.empty_like(src)

        def run(units):
            return hk.hold_copy[(sms,)](src, dst, n, units, BLOCK=HOLD_COPY_BLOCK, num_warps=hk.HOLD_WARPS)
        per_unit_bytes = 2.0 * HOLD_COPY_BYTES
    else:
        out = torch.empty(sms * HOLD_SPIN_BLOCK, device=dev, dtype=torch.float32)

        def run(units):
            return hk.hold_spin[(sms,)](out, units * 10_000, BLOCK=HOLD_SPIN_BLOCK, num_warps=hk.HOLD_WARPS)
        per_unit_bytes = 0.0

    def timed(units) -> float:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        run(units)
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) * 1e-3

    compiled = run(1)  # compile
    torch.cuda.synchronize(dev)
    regs = getattr(compiled, "n_regs", None)
    units = max(1, round(target_s / timed(1)))
    alone_s = statistics.median(timed(units) for _ in range(3))
    return (lambda: run(units)), per_unit_bytes * units, alone_s, regs


def _gemm_beside_holder(graph, calls: int, replays: int, launch_holder, dev) -> dict:
    """Launch the holder (if any) on one stream and, on another, `replays` replays of a graph of
    `calls` GEMMs. With a holder: the median GEMM time of the replays that ran wholly inside the
    holder's span, the span, and whether the GEMMs covered it all (so it ran beside GEMMs).
    Without: the median over all replays (the paired solo time, same clocks and method)."""
    hold_stream, gemm_stream = torch.cuda.Stream(dev), torch.cuda.Stream(dev)
    torch.cuda.synchronize(dev)
    h0, h1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    marks = [torch.cuda.Event(enable_timing=True) for _ in range(replays + 1)]
    with torch.cuda.stream(hold_stream):
        h0.record()
        if launch_holder is not None:
            launch_holder()
        h1.record()
    with torch.cuda.stream(gemm_stream):
        torch.cuda._sleep(SLEEP_CYCLES)
        marks[0].record()
        for i in range(replays):
            graph.replay()
            marks[i + 1].record()
    torch.cuda.synchronize(dev)
    at = [h0.elapsed_time(m) * 1e-3 for m in marks]
    per_call = [(at[i + 1] - at[i]) / calls for i in range(replays)]
    if launch_holder is None:
        return {"gemm_s": statistics.median(per_call), "replays_inside": replays, "holder_s": math.nan,
                "covered": False, "gemm_start_s": at[0]}
    hold_end = h0.elapsed_time(h1) * 1e-3
    inside = [t for i, t in enumerate(per_call) if at[i] >= 0 and at[i + 1] <= hold_end]
    return {"gemm_s": statistics.median(inside) if inside else math.nan, "replays_inside": len(inside),
            "holder_s": hold_end, "covered": at[0] <= 0.001 and at[-1] >= hold_end, "gemm_start_s": at[0]}


def _set_carveout(sms):
    """cuBLAS(Lt) told to leave `sms` SMs free (None: no carveout)."""
    setter = getattr(torch._C, "_set_sm_carveout_experimental", None)
    if setter is None:
        raise RuntimeError("this torch has no _set_sm_carveout_experimental")
    setter(sms)


def bench_sm_reserve(rec, timer, dev, deadline, quick, env):
    """sm_reserve.csv: what holding SMs for communication costs the GEMMs beside it, and the
    reverse. For the V3 projections at 4,096 tokens, by precision, each GEMM is timed alone
    (CUDA graph) and then, per reserved SM count:
      mode `spin`: beside a kernel holding that many SMs without memory traffic;
      mode `copy`: beside a kernel holding them and streaming HBM -> HBM (a comm kernel's SM work);
        the holder's own span beside the GEMMs against alone (holder_s, holder_solo_s) is the
        comm side: how much slower an SM-bound data mover runs while GEMMs share the GPU;
      mode `carveout`: alone, with cuBLAS told to leave that many SMs free
        (torch._C._set_sm_carveout_experimental), as DeepGEMM is told its SM count.
    CUDA only (Triton holder kernels); a CPU run records nothing."""
    if dev.type != "cuda":
        log("sm_reserve: needs CUDA (Triton holder kernels); nothing recorded")
        return
    env["sm_reserve_modes"] = ["spin", "copy", "carveout"]
    shapes = V3_PROJECTIONS_NK[:2] if quick else V3_PROJECTIONS_NK
    precisions = ["bf16", "fp8-rowwise"] + (["fp8-blockwise"] if env["fp8_blockwise_kernel"] else [])
    m = 4096
    holders = {}
    for n, k in shapes:
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        for prec in precisions:
            if deadline.over():
                break
            if prec == "fp8-blockwise" and not fp8.blockwise_shape_ok(k, n):
                continue
            fn = (lambda: F.linear(a, w)) if prec == "bf16" else _fp8_gemm_callable(a, w, prec)
            solo = timer.measure(fn, flops=gemm_flops(m, n, k), batched=True)
            calls = max(1, math.ceil(0.004 / solo["time_s"]))          # ~4 ms a replay
            graph = _capture(fn, calls, dev)
            for sms in RESERVED_SMS:
                for mode in ("spin", "copy"):
                    if (mode, sms) not in holders:
                        holders[(mode, sms)] = _holder(mode, sms, dev, HOLDER_TARGET_S)
                        env[f"sm_reserve_holder_regs_{mode}"] = holders[(mode, sms)][3]
                    launch, hbytes, alone_s, _ = holders[(mode, sms)]
                    # the GEMMs must outlast the holder even at 2x their solo time
                    replays = math.ceil(2.5 * alone_s / (calls * solo["time_s"])) + 2
                    for trial in range(SM_RESERVE_TRIALS):
                        # solo and beside back to back: the ratio is taken at one clock state
                        alone = _gemm_beside_holder(graph, calls, max(3, replays // 3), None, dev)
                        r = _gemm_beside_holder(graph, calls, replays, launch, dev)
                        t = r["gemm_s"]
                        if not r["replays_inside"]:
                            log(f"sm_reserve: {mode} {sms}: no GEMM replay inside the holder "
                                f"(GEMMs began {r['gemm_start_s'] * 1e3:.2f} ms after it, it lasted {r['holder_s'] * 1e3:.1f} ms)")
                        rec.row("sm_reserve", bench="sm_reserve", mode=mode, reserved_sms=sms, m=m, n=n, k=k,
                                precision=prec, trial=trial, time_solo_s=alone["gemm_s"],
                                replays_inside=r["replays_inside"], gemm_start_s=r["gemm_start_s"],
                                holder_s=r["holder_s"], holder_solo_s=alone_s, holder_bytes=hbytes,
                                holder_covered=r["covered"], time_s=t, time_p10_s=t, time_p90_s=t,
                                reps=r["replays_inside"] * calls, timing="cuda_graph_beside_holder",
                                flops=gemm_flops(m, n, k), bytes=math.nan,
                                achieved_flops_per_s=gemm_flops(m, n, k) / t, achieved_bytes_per_s=math.nan,
                                sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz())
                told = None
                try:
                    _set_carveout(sms)
                    told = timer.measure(fn, flops=gemm_flops(m, n, k), batched=True)
                except Exception as e:  # no carveout in this torch, or the kernel refuses it
                    log(f"sm_reserve: carveout {sms} failed: {type(e).__name__}: {e}")
                finally:
                    try:
                        _set_carveout(None)
                    except Exception:
                        pass
                if told is not None:
                    rec.row("sm_reserve", bench="sm_reserve", mode="carveout", reserved_sms=sms, m=m, n=n, k=k,
                            precision=prec, trial=0, time_solo_s=solo["time_s"], replays_inside=0,
                            gemm_start_s=math.nan, holder_s=math.nan,
                            holder_solo_s=math.nan, holder_bytes=0.0, holder_covered=False, **told)
            log(f"sm_reserve: {prec} {m}x{n}x{k} alone {solo['time_s'] * 1e6:.0f} us")
            del graph
        del a, w
        _free()


SECTIONS = {  # name -> (function, share of the time budget)
    "gemm": (bench_gemm, 0.12), "grouped": (bench_grouped, 0.12), "memory": (bench_memory, 0.03),
    "attention": (bench_attention, 0.1), "moe": (bench_moe, 0.25), "train": (bench_train, 0.2),
    "serve": (bench_serve, 0.12), "expert_load": (bench_expert_load, 0.06),
    "power": (bench_power, 0.2),  # not in the default list: --only power
    "sustained": (bench_sustained, 0.5),  # not in the default list: --only sustained
    "kernels": (bench_kernels, 0.3),  # not in the default list: --only kernels
    "grouped_wgrad": (bench_grouped_wgrad, 0.12), "grouped_small": (bench_grouped_small, 0.1),
    "topk": (bench_topk, 0.03),
    "fp8_stack": (bench_fp8_stack, 0.15),
    "sm_reserve": (bench_sm_reserve, 0.15),
    "ep": (bench_ep, 0.5),  # under torchrun with >= 2 ranks: --only ep
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="real/ benchmark campaign")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a CPU dry run")
    ap.add_argument("--only", default="", help=f"comma list of {','.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=450.0, help="whole-campaign time budget")
    ap.add_argument("--min-time-s", type=float, default=0.1, help="timed time per configuration")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # torchrun: expert parallel over all ranks
        import torch.distributed as dist

        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    tel = Telemetry(local_rank)
    env = environment(dev, tel)
    env["sections"] = args.only or "all"
    env["world_size"] = int(os.environ.get("WORLD_SIZE", 1))
    if rank == 0:
        (args.out / "env.json").write_text(json.dumps(env, indent=2, default=str))
        log(f"env: {json.dumps(env, default=str)}")
    rec = Recorder(args.out, env) if rank == 0 else _NoRecorder()
    timer = Timer(dev, tel, args.min_time_s if not args.quick else 0.0,
                  max_reps=100 if not args.quick else 3, warmup=3 if not args.quick else 1)
    deadline = Deadline(args.budget_s)
    names = [s for s in args.only.split(",") if s] or [s for s in SECTIONS if s not in ("power", "ep", "sustained", "kernels")]
    failures = []
    for name in names:
        fn, share = SECTIONS[name]
        deadline.start(share if len(names) > 1 else 1.0)
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            fn(rec, timer, dev, deadline, args.quick, env)
        except Exception as e:  # keep the campaign going; the log says what broke
            import traceback
            traceback.print_exc()
            failures.append(f"{name}: {type(e).__name__}: {e}")
            _free()
        log(f"== {name} done in {time.perf_counter() - t0:.1f} s")
    rec.close()
    env["failures"] = failures
    env["elapsed_s"] = time.perf_counter() - deadline.t0
    if rank == 0:
        (args.out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    log(f"failures: {failures}" if failures else "all sections ran")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
