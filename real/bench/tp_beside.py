"""Section tp_beside (s11tpo, tp_beside.csv, two GPUs under torchrun): a TP GEMM with an NCCL
collective running beside it on a second stream, the way TransformerEngine's userbuffers overlap
runs its 'bulk' and 'pipeline' kernels beside Megatron's GEMMs (twin/costs/tp_overlap.py). It
checks the twin's charge for that overlap on a real communication kernel: the GEMM's slowdown
beside it (the twin takes the untold slowdown measured beside an SM-holding kernel,
Profile.sm_reserve, at TE's 16 SMs) and the collective's own slowdown beside the GEMM (not charged).
The campaign runs it with NCCL's default channels and with 16 (NCCL_MIN/MAX_NCHANNELS = 16, one
SM a channel: TE's num_sm = 16).

Per case (a GEMM of Megatron's GPT 177B TP8 rank at 2,048 tokens, BF16; the collective's buffer
2,048 x 12,288 BF16, or a quarter for the pipeline chunk), one row per op:
  mm                 the GEMM alone;
  collective         the collective alone (one call);
  mm_beside          the GEMM's span from a common start with `collective_repeats` back-to-back
                     collectives on a second stream, enough to outlast it (so the GEMM runs
                     beside communication all along);
  collective_beside  the second stream's span in those same runs (all repeats).
Timing: CUDA events per run, the slowest rank's, median and p10/p90 over runs, both streams held
by a GPU sleep until everything is issued (timing 'cuda_events_after_sleep'; the first campaign's rows,
'cuda_events', were timed without it, so their GEMM spans include the host's issue of the collectives
before the GEMM: upper bounds). The CPU dry run on gloo: host clock, the two in sequence. All rows
held out (validation, never a fit).
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.distributed as dist

from real.bench.device import free_memory
from real.bench.nccl import agreed_over, distributed_env, log, stats, time_windows

RUNS, QUICK_RUNS = 12, 2
SLEEP_CYCLES = 4_000_000   # ~2 ms at H100's 1,980 MHz: longer than the host takes to issue a run
TIMING = "cuda_events_after_sleep"   # rows of the first s11tpo campaign say 'cuda_events' (see _beside_runs)
# (tag, collective kind, GEMM m, k, n, collective buffer rows, cols): Megatron GPT 177B (h 12,288,
# FFN 49,152, 96 heads) on a TP8 rank, micro-batch 1 of 2,048 tokens
CASES = (
    ("gpt177b-tp8/qkv_dgrad+ag_ln_out", "all_gather", 2048, 4608, 12288, 2048, 12288),
    ("gpt177b-tp8/fc1_wgrad+rs_dgrad", "reduce_scatter", 12288, 2048, 6144, 2048, 12288),
    ("gpt177b-tp8/fc2_fprop_chunk+rs", "reduce_scatter", 512, 6144, 12288, 512, 12288),
)
QUICK_CASES = (("tiny/bulk_ag", "all_gather", 64, 32, 48, 64, 32), ("tiny/pipe_rs", "reduce_scatter", 16, 48, 32, 16, 32))


def nccl_channels() -> str:
    return os.environ.get("NCCL_MAX_NCHANNELS", "default")


def _calls(kind: str, m: int, k: int, n: int, cm: int, cn: int, world: int, dev) -> tuple:
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a = torch.randn(m, k, device=dev, dtype=dt)
    b = torch.randn(k, n, device=dev, dtype=dt) / k ** 0.5
    out = torch.empty(m, n, device=dev, dtype=dt)
    full = torch.randn(cm, cn, device=dev, dtype=dt)
    shard = torch.randn(cm // world, cn, device=dev, dtype=dt)
    mm = lambda: torch.mm(a, b, out=out)
    if kind == "all_gather":
        coll = lambda: dist.all_gather_into_tensor(full, shard)
    else:
        coll = lambda: dist.reduce_scatter_tensor(shard, full)
    return mm, coll


def _beside_runs(mm, coll, repeats: int, dev, runs: int) -> tuple[list[float], list[float]]:
    """Per run: (the GEMM's span, the collectives' span) from a common start, the slowest rank's."""
    gemm_s, comm_s = [], []
    cuda = dev.type == "cuda"
    side = torch.cuda.Stream(device=dev) if cuda else None
    for _ in range(runs + 2):   # two warm-up runs
        if cuda:
            main = torch.cuda.current_stream(dev)
            e0, ec, em = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            # a GPU sleep holds both streams while the host issues every collective and the GEMM,
            # so both start at e0 (the first campaign, timing 'cuda_events', issued the collectives
            # first with nothing holding the GPU: the GEMM's span then held their host issue time)
            torch.cuda._sleep(SLEEP_CYCLES)
            e0.record(main)
            side.wait_event(e0)
            with torch.cuda.stream(side):
                for _ in range(repeats):
                    coll()
                ec.record(side)
            mm()
            em.record(main)
            main.wait_stream(side)
            torch.cuda.synchronize(dev)
            g, c = e0.elapsed_time(em) * 1e-3, e0.elapsed_time(ec) * 1e-3
        else:   # gloo: no second stream; the dry run times them in sequence
            t0 = time.perf_counter()
            for _ in range(repeats):
                coll()
            c = time.perf_counter() - t0
            t1 = time.perf_counter()
            mm()
            g = time.perf_counter() - t1
        both = torch.tensor([g, c], device=dev, dtype=torch.float64)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        gemm_s.append(float(both[0]))
        comm_s.append(float(both[1]))
    return gemm_s[2:], comm_s[2:]


def bench_tp_beside(rec, timer, dev, deadline, quick, env):
    world = dist.get_world_size()
    distributed_env(env, dev)
    env["nccl_channels"] = nccl_channels()
    runs = QUICK_RUNS if quick else RUNS
    precision = "bf16" if dev.type == "cuda" else "fp32"
    timing = TIMING if dev.type == "cuda" else "host_clock"
    for tag, kind, m, k, n, cm, cn in QUICK_CASES if quick else CASES:
        if agreed_over(deadline, dev):
            log("tp_beside: budget spent")
            break
        mm, coll = _calls(kind, m, k, n, cm, cn, world, dev)
        clocks = dict(sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz())   # NaN on CPU: ""
        base = dict(**clocks, bench="tp_beside", shape_tag=tag, kind=kind, m=m, n=n, k=k, coll_m=cm, coll_n=cn, world_size=world,
                    nccl_channels=nccl_channels(), precision=precision, split="holdout")
        alone = {}
        for op, fn in (("mm", mm), ("collective", coll)):
            times, calls = time_windows(fn, dev, 4 if quick else 8)
            alone[op] = stats(times)
            rec.row("tp_beside", op=op, collective_repeats=1, status="ok", timing="batched_events" if dev.type == "cuda"
                    else "host_clock", flops=2.0 * m * n * k if op == "mm" else 0.0, **base, **alone[op])
            log(f"tp_beside {tag} {op}: {alone[op]['time_s'] * 1e3:.3f} ms")
        # enough collectives to outlast the GEMM even if each runs 1.5x slower beside it... and at least 2
        repeats = torch.tensor([max(2, math.ceil(1.5 * alone["mm"]["time_s"] / max(alone["collective"]["time_s"], 1e-9)))],
                               device=dev, dtype=torch.float64)
        dist.all_reduce(repeats, op=dist.ReduceOp.MAX)
        repeats = int(min(64, repeats.item()))
        gemm_s, comm_s = _beside_runs(mm, coll, repeats, dev, runs)
        for op, times in (("mm_beside", gemm_s), ("collective_beside", comm_s)):
            st = stats(times)
            rec.row("tp_beside", op=op, collective_repeats=repeats, status="ok", timing=timing,
                    flops=2.0 * m * n * k if op == "mm_beside" else 0.0, **base, **st)
            log(f"tp_beside {tag} {op} (x{repeats}): {st['time_s'] * 1e3:.3f} ms")
        del mm, coll
        free_memory()
