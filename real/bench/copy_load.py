"""Section copy_load (one GPU, opt-in; campaign s15ttpw): a compute kernel's SM clock under our power
limit while copy-engine traffic beside it takes part of the board's power.

Why: torchtitan's H100s ran at a 500 W limit; the twin takes their clock from our 700 W records
through an assumed law (calibration/power_cap.py: idle power as the static part, dynamic power
~ f^3). The lent boards' limit cannot be set, and a kernel run at our limit holds the clock the
limit leaves it (the FP8 GEMM ~1,260 MHz, the BF16 one ~1,395 MHz), never the lower clocks a 500 W
limit gives. s14tt's duty sweep could only raise the clock. Here the kernel runs back to back (no
duty window) while `copy_streams` side streams copy device buffers with cudaMemcpyAsync (tensor
copy_ of one dtype, contiguous, one device: the copy engines, not the SMs): their HBM traffic draws
power the limit takes from the SMs, so the kernel's clock falls below its continuous one. With the
copies' own draw measured alone (copy_streams > 0, no kernel), each point reads the kernel's clock
at an SM power budget below the one our limit gives it alone: a 500 W-like budget if the copies
draw enough.

Rows (`copy_load`, one per COPY_WINDOW_S window of a COPY_HOLD_S hold): the kernel ('idle', 'copies
only' or the kernel's config), its precision, copy_streams, the window, time per kernel call (CUDA
events on the kernel's stream), the copies' achieved bytes per second (read + write, all streams),
board power (energy counter), the median SM clock sampled each period, memory clock, temperature
and NVML's clock-event reasons (0x4: software power cap).

Kernels: the BF16 GEMM of sustained.csv (m=8192 n=4096 k=7168: clock_frac's record), the FP8
tensorwise GEMM of torchtitan's 8B w1 (cp_sustained's), and FA2's causal 8K forward (batch 8, 32
heads of 128: torchtitan's attention), each at COPY_STREAMS side streams.
"""

from __future__ import annotations

import math
import time

import torch

from real.bench.cp_sustained import LLAMA_8B, QUICK_8B, fa2_pass_fns, gemm_cases
from real.bench.device import free_memory
from real.bench.duty_sweep import calls_for
from real.bench.records import log
from real.sync import synchronize

COPY_HOLD_S, COPY_WINDOW_S = 4.0, 1.0   # seconds a point is held, and one row's window
COPY_ALONE_HOLD_S = 3.0                 # the copies' own draw, no kernel
COPY_STREAMS = (0, 1, 2, 4)             # side streams of back-to-back device-to-device copies
COPY_BYTES = 256 * 2**20                # one copy: 256 MiB read, 256 MiB written
PERIOD_BUSY_S = 0.01                    # GPU time a period aims at on each stream
FA2_LEN, FA2_BATCH = 8192, 8            # as duty_sweep's FA2 kernel


def copy_buffers(dev, streams: int, nbytes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A (source, destination) pair of uint8 buffers per side stream, the source filled with random
    bytes (so the traffic is not a constant pattern)."""
    return [(torch.randint(0, 256, (nbytes,), device=dev, dtype=torch.uint8),
             torch.empty(nbytes, device=dev, dtype=torch.uint8)) for _ in range(streams)]


def copies_per_period(dev, pair, busy_s: float) -> int:
    """Copies of one pair that fill about busy_s of one stream (at least one), timed alone."""
    src, dst = pair
    dst.copy_(src)
    synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(3):
        dst.copy_(src)
    synchronize(dev)
    per = (time.perf_counter() - t0) / 3
    return max(1, round(busy_s / per)) if per > 0 else 1


class CopyStreams:
    """Side streams kept busy with device-to-device copies independently of the kernel: each is topped
    up to QUEUED_BATCHES batches of `copies` copies whenever the host passes (`top_up`), so a stream
    never runs dry while the host waits on the kernel. `done_bytes` counts the bytes (read + write) of
    the batches found finished."""

    QUEUED_BATCHES = 2

    def __init__(self, dev, pairs, copies: int):
        self.cuda = dev.type == "cuda"
        self.pairs, self.copies = pairs, copies
        self.streams = [torch.cuda.Stream() for _ in pairs] if self.cuda else [None] * len(pairs)
        self.pending = [[] for _ in pairs]
        self.done_bytes = 0.0

    def _batch(self, i: int):
        src, dst = self.pairs[i]
        if not self.cuda:
            for _ in range(self.copies):
                dst.copy_(src)
            self.done_bytes += 2.0 * src.numel() * self.copies
            return
        with torch.cuda.stream(self.streams[i]):
            for _ in range(self.copies):
                dst.copy_(src)
            end = torch.cuda.Event()
            end.record()
        self.pending[i].append(end)

    def top_up(self) -> None:
        for i, (src, _) in enumerate(self.pairs):
            while self.pending[i] and self.pending[i][0].query():
                self.pending[i].pop(0)
                self.done_bytes += 2.0 * src.numel() * self.copies
            while self.cuda and len(self.pending[i]) < self.QUEUED_BATCHES:
                self._batch(i)
            if not self.cuda:
                self._batch(i)

    def wait_oldest(self) -> None:
        """Block on the oldest queued batch of the first stream (the host's pace without a kernel)."""
        if self.cuda and self.pending and self.pending[0]:
            self.pending[0][0].synchronize()

    def drain(self) -> None:
        for i, (src, _) in enumerate(self.pairs):
            for end in self.pending[i]:
                end.synchronize()
                self.done_bytes += 2.0 * src.numel() * self.copies
            self.pending[i] = []


def hold_with_copies(rec, timer, dev, kernel: str, precision: str, fn, flops: float, calls: int,
                     pairs, copies: int, hold_s: float, window_s: float = COPY_WINDOW_S) -> int:
    """Run fn back to back, `calls` calls a period, one period kept queued ahead (none where fn is
    None), while CopyStreams keeps each side stream busy, for hold_s seconds; one copy_load row per
    window (the copies' bytes/s: batches finished in the window over its wall time)."""
    cuda = dev.type == "cuda"
    side = CopyStreams(dev, pairs, copies)
    t0 = time.perf_counter()
    window = 0
    prev = None
    while time.perf_counter() - t0 < hold_s:
        window += 1
        w0, e0, b0 = time.perf_counter(), timer.tel.energy_j(), side.done_bytes
        clocks, kernel_s, periods = [], 0.0, 0
        while time.perf_counter() - w0 < min(window_s, hold_s):
            side.top_up()
            if fn is None:
                side.wait_oldest()
                clocks.append(timer.tel.sm_clock_mhz())
                continue
            h0 = time.perf_counter()
            if cuda:
                k = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                k[0].record()
            for _ in range(calls):
                fn()
            if cuda:
                k[1].record()
                clocks.append(timer.tel.sm_clock_mhz())
                if prev is not None:   # the period before this one: this one is still queued
                    prev[1].synchronize()
                    kernel_s += prev[0].elapsed_time(prev[1]) * 1e-3
                    periods += 1
                prev = k
            else:
                kernel_s += time.perf_counter() - h0
                periods += 1
        wall = time.perf_counter() - w0
        power = (timer.tel.energy_j() - e0) / wall
        t = kernel_s / (periods * calls) if fn is not None and periods else math.nan
        copy_rate = (side.done_bytes - b0) / wall
        clock = sorted(clocks)[len(clocks) // 2] if clocks else timer.tel.sm_clock_mhz()
        rec.row("copy_load", bench="copy_load", kernel=kernel, precision=precision, copy_streams=len(pairs),
                window=window, elapsed_s=time.perf_counter() - t0, temperature_c=timer.tel.temperature_c(),
                copies_per_period=copies, calls_per_period=calls if fn is not None else 0,
                copy_bytes_per_s=copy_rate, clock_event_reasons=timer.tel.clock_event_reasons(),
                time_s=t, time_p10_s=t, time_p90_s=t, reps=periods * (calls if fn is not None else 0),
                timing="period_events" if cuda else "host_clock", flops=flops if fn is not None else 0.0,
                bytes=math.nan, achieved_flops_per_s=flops / t if fn is not None and t > 0 else math.nan,
                achieved_bytes_per_s=copy_rate, sm_clock_mhz=clock, mem_clock_mhz=timer.tel.mem_clock_mhz(),
                power_w=power, energy_j=power * wall)
    synchronize(dev)
    side.drain()
    return window


def idle_row(rec, timer, idle_s: float) -> None:
    """The board's idle power over idle_s seconds (no kernel, no copy)."""
    e0, w0 = timer.tel.energy_j(), time.perf_counter()
    time.sleep(idle_s)
    wall = time.perf_counter() - w0
    power = (timer.tel.energy_j() - e0) / wall
    rec.row("copy_load", bench="copy_load", kernel="idle", precision="", copy_streams=0, window=1,
            elapsed_s=wall, temperature_c=timer.tel.temperature_c(), copies_per_period=0, calls_per_period=0,
            copy_bytes_per_s=0.0, clock_event_reasons=timer.tel.clock_event_reasons(), time_s=wall,
            time_p10_s=wall, time_p90_s=wall, reps=0, timing="host_clock", flops=0.0, bytes=math.nan,
            achieved_flops_per_s=math.nan, achieved_bytes_per_s=math.nan, sm_clock_mhz=timer.tel.sm_clock_mhz(),
            mem_clock_mhz=timer.tel.mem_clock_mhz(), power_w=power, energy_j=power * wall)


def bench_copy_load(rec, timer, dev, deadline, quick, env):
    """The idle power, the copies alone at each stream count, then each kernel at each stream count
    (module docstring); rows in copy_load.csv."""
    hold_s = 0.15 if quick else COPY_HOLD_S
    alone_s = 0.1 if quick else COPY_ALONE_HOLD_S
    window_s = 0.05 if quick else COPY_WINDOW_S
    busy_s = 0.002 if quick else PERIOD_BUSY_S
    idle_row(rec, timer, 0.05 if quick else 3.0)
    nbytes = 2**16 if quick else COPY_BYTES
    pairs_all = copy_buffers(dev, max(COPY_STREAMS), nbytes)
    copies = copies_per_period(dev, pairs_all[0], busy_s)
    for n in COPY_STREAMS[1:]:
        if deadline.over():
            log("copy_load: time share spent, skipping the rest")
            return
        hold_with_copies(rec, timer, dev, "copies only", "", None, 0.0, 0, pairs_all[:n], copies, alone_s, window_s)
        log(f"copy_load copies only x{n}: {copies} copies of {nbytes} B a period")
    d = QUICK_8B if quick else LLAMA_8B
    length, batch = (64, 2) if quick else (FA2_LEN, FA2_BATCH)
    fa2_fn, fa2_flops = fa2_pass_fns(length, batch, d["heads"], d["head_dim"], dev)["fwd"]
    kernels = [*gemm_cases(dev, quick),
               (f"attention flash h={d['heads']} d={d['head_dim']} b={batch} q={length} kv={length} causal fwd",
                "bf16", fa2_fn, fa2_flops)]
    for config, precision, fn, flops in kernels:
        calls = calls_for(fn, dev, busy_s)
        for n in COPY_STREAMS:
            if deadline.over():
                log("copy_load: time share spent, skipping the rest")
                return
            w = hold_with_copies(rec, timer, dev, config, precision, fn, flops, calls, pairs_all[:n], copies,
                                 hold_s, window_s)
            log(f"copy_load {config} x{n} copy streams: {calls} calls a period, {w} windows")
    del kernels, pairs_all
    free_memory()
