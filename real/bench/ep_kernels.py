"""Section ep_kernels (s14epl, issue 13): the EP2 MoE layer's kernels per rank, at sizes the
held-out ep.csv rows do not use, beside the layer's own grouped GEMMs run back to back.

Why: the twin's kernel classes are offset against the profiler's kernels in every eager layer and
step (docs/notes/s14epl_rule.md: grouped GEMMs 9-15% faster in a layer than the profile's curves,
fitted from CUDA-graph loops that hold the GPU at its power limit; memory kernels slower than the
layer fit's blended gather_eff). This section measures, on one host, in one process:
  ep          the layer forward and backward timed as real/bench/ep.py times ep.csv's (CUDA events
              per repetition, HostMarks), dispatch and combine alone: the FITTING split of the EP2
              layer cases (tokens_per_rank 2,048 and 8,192: ep.csv holds 1,024, 4,096, 16,384)
  ep_kernels  the same calls under the torch profiler, per rank (all_gather_object to rank 0): each
              kernel name's calls and GPU seconds per repetition, the part of them spent while an
              NCCL kernel ran on the same GPU (SMs shared with a collective), and the median SM
              clock sampled by NVML (every 2 ms, a thread) while the profiled repetitions ran
  ep_grouped  the layer's two forward grouped GEMMs (BF16, its own received rows and offsets) timed
              as calibration's gemm.csv rows are (CUDA graph of back-to-back calls, `batched`) and
              profiled back to back (kernel seconds per call), each with its NVML clock: the in-layer
              kernel against the same kernel alone, on the same rows.
Every row carries GPU name, clocks, torch/CUDA/NCCL versions (Recorder's env columns)."""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from real.bench.device import free_memory, precisions_to_bench
from real.bench.ep import HostMarks, ep_case, measure_dispatch
from real.bench.nccl import distributed_env
from real.bench.records import log
from real.bench.timing import Timer
from real.configs import get_spec
from real.fp8 import grouped_mm
from real.model import MoE, building, group_offsets

PROFILED_REPS = 3


def gemm_flops(m: float, n: float, k: float) -> float:
    """2 m n k: a GEMM's multiply-adds (kept here: the GPU image runs real/ alone)."""
    return 2.0 * m * n * k
CLOCK_SAMPLE_S = 0.002


class ClockSampler:
    """NVML SM clock read every CLOCK_SAMPLE_S on a thread while the block runs; `median_mhz`."""

    def __init__(self, tel):
        self.tel, self.samples, self._stop = tel, [], threading.Event()

    def __enter__(self):
        def run():
            while not self._stop.is_set():
                v = self.tel.sm_clock_mhz()
                if v == v:   # NaN where NVML is absent (CPU dry run)
                    self.samples.append(v)
                time.sleep(CLOCK_SAMPLE_S)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def median_mhz(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")


def overlap_s(start: float, end: float, intervals: list[tuple[float, float]]) -> float:
    """Seconds of [start, end) covered by the (sorted, possibly overlapping) intervals."""
    covered, reach = 0.0, start
    for s, e in intervals:
        if e <= reach:
            continue
        if s >= end:
            break
        lo, hi = max(s, reach), min(e, end)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return covered


def kernel_table(events, on_gpu: bool, reps: int) -> dict[str, list[float]]:
    """Profiler events -> {kernel name: [calls, seconds, seconds beside an NCCL kernel]} per
    repetition. On a CPU run (no device events) the CPU ops stand in (a dry run's shape only)."""
    ks = []
    for ev in events:
        if on_gpu and ev.device_type.name != "CUDA":
            continue
        tr = ev.time_range
        ks.append((ev.name, tr.start * 1e-6, tr.end * 1e-6))
    nccl = sorted((s, e) for n, s, e in ks if "nccl" in n.lower())
    out: dict[str, list[float]] = {}
    for name, s, e in ks:
        row = out.setdefault(name, [0.0, 0.0, 0.0])
        row[0] += 1.0 / reps
        row[1] += (e - s) / reps
        if "nccl" not in name.lower():
            row[2] += overlap_s(s, e, nccl) / reps
    return out


def profiled(timer: Timer, fn, setup=None, reps: int = PROFILED_REPS):
    """(kernel_table, median SM clock) of `reps` calls of fn, or of fn(state) where `setup` makes
    each call's state (the backward's forward) before the profile starts."""
    dev = timer.device
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    for _ in range(2):
        fn(setup()) if setup else fn()
    timer.sync()
    states = [setup() for _ in range(reps)] if setup else [None] * reps
    timer.sync()
    with ClockSampler(timer.tel) as clock, profile(activities=acts) as prof:
        for s in states:
            fn(s) if setup else fn()
        timer.sync()
    return kernel_table(prof.events(), dev.type == "cuda", reps), clock.median_mhz


def _safe_profile(timer: Timer, fn, setup, reps: int = PROFILED_REPS):
    """profiled(), or ({}, NaN) where the profiler fails (logged): the timed rows keep coming and
    every rank still reaches the same collectives."""
    try:
        return profiled(timer, fn, setup, reps)
    except Exception as e:  # a profiler failure must not end the section
        log(f"ep_kernels: profile failed ({type(e).__name__}: {str(e)[:120]})")
        timer.sync()
        return {}, float("nan")


def _kernel_rows(rec, table_by_rank: list, config: dict, clocks: list[float]) -> None:
    for rank, (table, clock) in enumerate(zip(table_by_rank, clocks)):
        for name, (calls, secs, beside) in sorted(table.items(), key=lambda kv: -kv[1][1]):
            rec.row("ep_kernels", **config, rank=rank, kernel=name if len(name) <= 240 else name[:120] + "..." + name[-117:],
                    calls=calls, time_s=secs, nccl_overlap_s=beside, reps=PROFILED_REPS, timing="profiler",
                    sampled_sm_clock_mhz=clock)


def _gather(obj):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def layer_rows(rec, marks: HostMarks, t: Timer, moe, spec, case, env, reps: int) -> None:
    """The layer forward and backward of one case (ep_case's (w, ids, x, common); `moe` built from
    `spec`) in each benched precision: its ep rows timed as ep.csv's (CUDA events, host marks), then
    the same calls under the profiler on every rank (ep_kernels rows)."""
    w, ids, x, common = case
    T, D, K = int(common["tokens_per_rank"]), spec.hidden_size, spec.top_k
    gy = torch.ones(T, D, device=x.device, dtype=torch.bfloat16)
    fl = gemm_flops(T * K, 3 * spec.moe_intermediate_size, D)
    for prec in precisions_to_bench(env):
        fwd = lambda: moe(x, prec, (w, ids))
        bwd = lambda o: torch.autograd.grad(o, [x, *moe.parameters()], gy, allow_unused=True)
        r = marks.measure(t, fwd, flops=fl, reps=reps)
        rec.row("ep", bench="moe_layer_ep_fwd", precision=prec.label, **common, **r)
        r = marks.measure(t, bwd, setup=fwd, flops=2 * fl, reps=reps)
        rec.row("ep", bench="moe_layer_ep_bwd", precision=prec.label, **common, **r)
        for direction, fn, setup in (("fwd", fwd, None), ("bwd", bwd, fwd)):
            tables = _gather(_safe_profile(t, fn, setup))
            cfg = dict(bench=f"moe_layer_ep_{direction}", **common, precision=prec.label)
            _kernel_rows(rec, [tb for tb, _ in tables], cfg, [c for _, c in tables])


def bench_ep_kernels(rec, timer, dev, deadline, quick, env):
    """See the module docstring. Fixed repetition counts so every rank issues the same collectives;
    rank 0 writes the rows (ep.csv rows with split `fit`, ep_kernels.csv, ep_grouped.csv)."""
    distributed_env(env, dev)
    marks = HostMarks()
    group = dist.group.WORLD
    t = Timer(dev, timer.tel, 0.0, warmup=3)
    reps = 3 if quick else 10
    name = "tiny" if quick else "v3-slice-1l"
    spec = dataclasses.replace(get_spec(name), num_routed_experts=8 if quick else 32)
    torch.manual_seed(0)
    with building(dev):
        moe = MoE(spec, ep_group=group)
    gen = torch.Generator().manual_seed(dist.get_rank())
    D = spec.hidden_size
    for T in ([32] if quick else [2048, 8192]):
        for skew in [0.0, 1.0]:
            if deadline.over():
                log("ep_kernels: budget spent")
                return
            w, ids, x, common = ep_case(spec, T, skew, dev, gen, group, "fit")
            dispatched = measure_dispatch(rec, marks, t, x, ids, group, common, reps)
            layer_rows(rec, marks, t, moe, spec, (w, ids, x, common), env, reps)
            # the local experts' forward grouped GEMMs alone, on this rank's received rows
            x_ND, expert_R, counts_e, _ = dispatched
            pos, offs, cap = group_offsets(expert_R, counts_e)
            x_NpD = x_ND.new_zeros(cap, D).index_copy(0, pos, x_ND)
            a = torch.randn(cap, spec.moe_intermediate_size, device=dev, dtype=torch.bfloat16)
            cases = (("w13", lambda: grouped_mm(x_NpD, moe.w13_E2FD.detach().transpose(-2, -1), offs), 2),
                     ("w2", lambda: grouped_mm(a, moe.w2_EDF.detach().transpose(-2, -1), offs), 1))
            for which, fn, mult in cases:
                fl_g = gemm_flops(x_ND.shape[0], mult * spec.moe_intermediate_size if which == "w13" else D,
                                  D if which == "w13" else spec.moe_intermediate_size)
                with ClockSampler(t.tel) as clock:
                    r = t.measure(fn, flops=fl_g, batched=True)
                table, pclock = _safe_profile(t, fn, None, reps=20 if not quick else 2)
                per_call = sum(v[1] for n, v in table.items() if "nccl" not in n.lower())
                out = _gather(dict(r, sampled_sm_clock_mhz=clock.median_mhz, profiled_kernel_s=per_call,
                                   profiled_sm_clock_mhz=pclock, rows=int(x_ND.shape[0])))
                for rank, o in enumerate(out):
                    rec.row("ep_grouped", bench=f"grouped_alone_{which}", rank=rank, precision="bf16",
                            **{k: v for k, v in common.items() if k != "split"}, **o)
            del x_ND, x_NpD, a, dispatched
            free_memory()
            log(f"ep_kernels T={T} skew={skew}: done")
