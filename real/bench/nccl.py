"""Section nccl (nccl.csv): a message-size sweep of the collectives under torchrun (>= 2 ranks).

Ops and sizes follow nccl-tests (github.com/NVIDIA/nccl-tests, doc/PERFORMANCE.md):
`message_bytes` is nccl-tests' "size" (all_reduce: the buffer; all_gather: the gathered output;
reduce_scatter: the input being reduced; all_to_all: each rank's send buffer; send_recv: the
bytes one rank sends), algbw = message_bytes / time, busbw = algbw x bus_factor with bus_factor
2(n-1)/n for all_reduce, (n-1)/n for all_gather, reduce_scatter and all_to_all, 1 for send_recv.
  send_recv        one direction: even ranks send to the next odd rank, which receives;
  send_recv_bidir  every rank sends to the next and receives from the previous (nccl-tests'
                   sendrecv), both directions of each link busy.
BF16 tensors, sizes 4 KiB .. 1 GiB in powers of 2. Timing as nccl-tests: a window of n
back-to-back calls between one CUDA event pair (n so a window holds >= WINDOW_S of work, the
same n on every rank), several windows; a window's time is the slowest rank's (all-reduce MAX
of the windows' times after the sweep point), time_s the median over windows of window / n.
Split: sizes 2^even are fit rows, 2^odd held out (`nccl_split`).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.distributed as dist

from real.bench.device import nccl_version
from real.bench.records import log as _log_all
from real.sync import synchronize

WINDOW_S = 2e-3  # a timed window holds at least this much work ...
MAX_CALLS = 200  # ... or this many calls
WINDOWS, QUICK_WINDOWS = 8, 2
SIZES_LOG2 = range(12, 31)  # 4 KiB .. 1 GiB
QUICK_SIZES_LOG2 = range(12, 15)
OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv", "send_recv_bidir")


def log(msg: str) -> None:
    """Rank 0 speaks for the world."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        _log_all(msg)


def bus_factor(op: str, world: int) -> float:
    """nccl-tests' busbw / algbw."""
    if op == "all_reduce":
        return 2 * (world - 1) / world
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (world - 1) / world
    return 1.0


def nccl_split(message_bytes: int) -> str:
    """fit for sizes 2^even (4 KiB, 16 KiB, ..., 1 GiB), holdout for 2^odd."""
    return "fit" if round(math.log2(message_bytes)) % 2 == 0 else "holdout"


def distributed_env(env: dict, dev: torch.device) -> dict:
    """nccl_version and num_gpus (the ranks' GPUs; 0 on a CPU run) into the environment."""
    if dev.type == "cuda":
        env["nccl_version"] = nccl_version()
        env["num_gpus"] = dist.get_world_size()
    else:
        env["nccl_version"], env["num_gpus"] = "", 0
    return env


def agreed_over(deadline, dev) -> bool:
    """True on every rank once any rank's deadline passed (ranks must run the same collectives)."""
    flag = torch.tensor([1.0 if deadline.over() else 0.0], device=dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _call(op: str, size: int, world: int, rank: int, dev):
    """A function issuing one `op` of nccl-tests size `size` bytes (BF16), its buffers bound."""
    n = size // 2

    def ones(numel):
        return torch.ones(numel, device=dev, dtype=torch.bfloat16)

    if op == "all_reduce":
        x = ones(n)
        return lambda: dist.all_reduce(x)
    if op == "all_gather":
        x, out = ones(n // world), ones(n)
        return lambda: dist.all_gather_into_tensor(out, x)
    if op == "reduce_scatter":
        x, out = ones(n), ones(n // world)
        return lambda: dist.reduce_scatter_tensor(out, x)
    if op == "all_to_all":
        x, out = ones(n), ones(n)
        return lambda: dist.all_to_all_single(out, x)
    x, buf = ones(n), ones(n)
    if op == "send_recv":
        peer = rank + 1 if rank % 2 == 0 else rank - 1
        if peer >= world:  # odd world: the last rank idles
            return lambda: None
        kind = dist.isend if rank % 2 == 0 else dist.irecv
        ops = [dist.P2POp(kind, x if kind is dist.isend else buf, peer)]
    else:
        ops = [dist.P2POp(dist.isend, x, (rank + 1) % world), dist.P2POp(dist.irecv, buf, (rank - 1) % world)]

    def p2p():
        for r in dist.batch_isend_irecv(ops):
            r.wait()
    return p2p


class _Clock:
    """CUDA events on a GPU, the host clock on a CPU."""

    def __init__(self, dev):
        self.cuda = dev.type == "cuda"
        self.dev = dev

    def start(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def stop(self, start):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return (start, e)
        return time.perf_counter() - start

    def seconds(self, handle) -> float:
        if self.cuda:
            handle[1].synchronize()
            return handle[0].elapsed_time(handle[1]) * 1e-3
        return handle

    def sync(self):
        synchronize(self.dev)


def time_windows(fn, dev, windows: int, warmup: int = 3) -> tuple[list[float], int]:
    """Per-call seconds of each window (the slowest rank's) and the calls per window."""
    clock = _Clock(dev)
    est = []
    for _ in range(warmup):
        s = clock.start()
        fn()
        est.append(clock.stop(s))
    clock.sync()
    call_s = max(min(clock.seconds(h) for h in est), 1e-7)
    n = torch.tensor([min(MAX_CALLS, max(1, math.ceil(WINDOW_S / call_s)))], device=dev, dtype=torch.float64)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    n = int(n.item())
    dist.barrier()
    handles = []
    for _ in range(windows):
        s = clock.start()
        for _ in range(n):
            fn()
        handles.append(clock.stop(s))
    clock.sync()
    times = torch.tensor([clock.seconds(h) / n for h in handles], device=dev, dtype=torch.float64)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    return times.tolist(), n


def stats(times: list[float]) -> dict:
    times = sorted(times)
    med = statistics.median(times)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [med] * 9
    return {"time_s": med, "time_p10_s": q[0], "time_p90_s": q[-1], "reps": len(times)}


def bench_nccl(rec, timer, dev, deadline, quick, env):
    world, rank = dist.get_world_size(), dist.get_rank()
    distributed_env(env, dev)
    windows = QUICK_WINDOWS if quick else WINDOWS
    sizes = [2**e for e in (QUICK_SIZES_LOG2 if quick else SIZES_LOG2)]
    timing = "batched_events" if dev.type == "cuda" else "host_clock"
    for op in OPS:
        for size in sizes:
            if agreed_over(deadline, dev):
                log(f"nccl: deadline reached before {op} {size} B")
                return
            fn = _call(op, size, world, rank, dev)
            times, n = time_windows(fn, dev, windows)
            st = stats(times)
            factor = bus_factor(op, world)
            algbw = size / st["time_s"]
            rec.row("nccl", bench="nccl", op=op, message_bytes=size, world_size=world, dtype="bf16",
                    calls_per_window=n, bus_factor=factor, algbw_bytes_per_s=algbw,
                    busbw_bytes_per_s=algbw * factor, split=nccl_split(size), **st, timing=timing,
                    flops=math.nan, bytes=float(size), achieved_flops_per_s=math.nan,
                    achieved_bytes_per_s=algbw, sm_clock_mhz=timer.tel.sm_clock_mhz(),
                    mem_clock_mhz=timer.tel.mem_clock_mhz())
            del fn
            if size >= 2**26 or size == sizes[-1]:
                log(f"nccl {op} {size / 2**20:.0f} MiB: {st['time_s'] * 1e6:.0f} us, "
                    f"busbw {algbw * factor / 1e9:.1f} GB/s")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
