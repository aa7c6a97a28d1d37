"""How the campaign times: Timer (CUDA graphs or events, the host clock on a CPU) and Deadline
(each section's share of the time budget). See real/bench/__init__.py for the timing methods."""

from __future__ import annotations

import math
import statistics
import time

import torch

from real.bench.records import ENERGY_MIN_WINDOW_S, log
from real.sync import synchronize
from real.telemetry import Telemetry

# measure_batched: a timed window holds >= 20 ms of work or BATCH_MAX_CALLS calls (the one event
# pair's few-microsecond overhead is then < 0.1% of the window)
BATCH_WINDOW_S = 0.02
BATCH_MAX_CALLS = 500
BATCH_MIN_WINDOWS, BATCH_MAX_WINDOWS = 5, 20


class Timer:
    """Warm-up, then per-repetition timing with CUDA events (or the host clock on CPU)."""

    def __init__(self, device: torch.device, telemetry: Telemetry, min_time_s: float,
                 max_reps: int = 100, warmup: int = 3):
        self.device, self.tel = device, telemetry
        self.min_time_s, self.max_reps, self.warmup = min_time_s, max_reps, warmup

    def sync(self):
        synchronize(self.device)

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
        n, windows = batch_shape(self._elapsed(last), self.min_time_s)
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
            graph = capture_graph(fn, n, self.device)
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


def batch_shape(call_s: float, min_time_s: float) -> tuple[int, int]:
    """(calls per timed window, windows) for a call estimated at `call_s`: enough calls that a
    window holds BATCH_WINDOW_S of work (at most BATCH_MAX_CALLS), and enough windows to cover
    `min_time_s` (between BATCH_MIN_WINDOWS and BATCH_MAX_WINDOWS).
    E.g. a 10 us call: 2,000 calls would fill 20 ms, capped at 500; min_time 0.1 s / 5 ms = 20 windows."""
    call_s = max(call_s, 1e-7)
    n = int(min(BATCH_MAX_CALLS, max(1, math.ceil(BATCH_WINDOW_S / call_s))))
    windows = int(min(BATCH_MAX_WINDOWS, max(BATCH_MIN_WINDOWS, math.ceil(min_time_s / (n * call_s)))))
    return n, windows


def capture_graph(fn, n: int, device: torch.device):
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
