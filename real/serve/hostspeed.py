"""The host's speed, measured right before and right after each load run in the engine's own
process (issue 15, session s13srv): a short fixed workload of what the engine's host does per
iteration, so a run's record carries the speed of the host that ran it (the serving twin takes it
as an input, as it takes the GPU's clock).

Why: real/serve's eager iterations are host-bound (Python launching ~200 kernels a forward, ~21 us
each, real/serve/hostprobe.py), and machines of one kind run the same configuration at different
levels (CUDA-graph decode 2.56 vs 2.33 ms on the H200 across sessions, 3.33 vs 2.71 ms on the
H100; within a run, slow phases run a fixed pure-Python workload 1.2-1.7x slower: h100x2/s9srv).
The host CPU's clock is not exposed on these VMs (cpufreq absent), so the speed is measured.

Three measures, each over a fixed window (at least PROBE_WINDOW_S of work, so a core shared in
time slices reads its average share, not its fastest slice):
  launch_s  host time per small kernel launched from Python: chains of PROBE_CHAIN element-wise
            multiplies of a small tensor, no grad (the s9mla probe's `mul` `nograd` class), the
            device synchronised between chains, outside the timed part;
  graph_s   host time of one CUDA-graph replay of such a chain (the one-GPU engine's decode
            iterations; NaN on the CPU);
  py_s      one pass of real/serve/hostprobe.cpu_probe's pure-Python loop (the engine's own
            bookkeeping, no kernels).
Each is the window's total host time over its count (a mean: a time-sliced core's stalls count),
with the median of the chains beside it (`*_p50_s`).

`CoRunner` (the campaign's controlled dose of host slowness): a busy-loop process sharing the
engine main thread's CPUs at a given nice level, so the thread gets a fixed share of its core
(nice 3: weight 1024 / (1024 + 526), ~66%: a host ~1.5x slower, within the 1.2-1.7x slow phases).
"""

from __future__ import annotations

import math
import platform
import statistics
import subprocess
import sys
import time

import torch

from real.serve.hostprobe import cpu_probe
from real.serve.records import PAUSE_KEYS, PAUSE_TRACE_KEYS, PROBE_KEYS
from real.sync import synchronize

PROBE_CHAIN = 64          # kernels per chain (the s9mla host probe's chains)
PROBE_WINDOW_S = 0.04     # each measure runs at least this long (a 3 ms time slice is under 10% of it)
PROBE_MAX_REPS = 2000     # and at most this many chains / passes (bounded on any host)


def run_window(one, window_s: float, max_reps: int = PROBE_MAX_REPS) -> tuple[float, float]:
    """Run `one()` (returns the host seconds of one repetition) until window_s of them have passed
    (at most max_reps): (total / count, median)."""
    times, total = [], 0.0
    while total < window_s and len(times) < max_reps:
        t = one()
        times.append(t)
        total += t
    return total / len(times), statistics.median(times)


def _chain(x: torch.Tensor) -> torch.Tensor:
    for _ in range(PROBE_CHAIN):
        x = x * 1.0001
    return x


def launch_probe(dev: torch.device, window_s: float = PROBE_WINDOW_S) -> tuple[float, float]:
    """(mean, median) host seconds per small kernel launch on an idle device."""
    x = torch.ones(256, device=dev)

    def one() -> float:
        t = time.perf_counter()
        _chain(x)
        t = time.perf_counter() - t
        synchronize(dev)
        return t
    with torch.no_grad():
        _chain(x)   # first calls out of the window
        synchronize(dev)
        mean, p50 = run_window(one, window_s)
    return mean / PROBE_CHAIN, p50 / PROBE_CHAIN


_GRAPHS: dict = {}   # device -> (graph, its input), captured once per process


def _chain_graph(dev: torch.device):
    """A CUDA graph of one chain, captured on first use ('thread_local' capture: other threads of
    the process, e.g. NCCL's watchdog under EP, may call CUDA meanwhile)."""
    if dev not in _GRAPHS:
        x = torch.ones(256, device=dev)
        s = torch.cuda.Stream(dev)
        s.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(s):
            _chain(x)   # the kernels run once before capture
        torch.cuda.current_stream(dev).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, capture_error_mode="thread_local"):
            _chain(x)
        _GRAPHS[dev] = (g, x)
    entry = _GRAPHS[dev]
    return entry[0] if entry else None   # None: an earlier capture failed


def graph_probe(dev: torch.device, window_s: float = PROBE_WINDOW_S) -> tuple[float, float]:
    """(mean, median) host seconds of one CUDA-graph replay of a chain; NaN off CUDA or where the
    capture fails (the probe never stops a load run)."""
    if dev.type != "cuda":
        return math.nan, math.nan
    try:
        with torch.no_grad():
            g = _chain_graph(dev)
    except RuntimeError as e:
        print(f"hostspeed: graph probe off ({type(e).__name__}: {e})", file=sys.stderr)
        _GRAPHS[dev] = None
        return math.nan, math.nan
    if g is None:
        return math.nan, math.nan

    def one() -> float:
        t = time.perf_counter()
        g.replay()
        t = time.perf_counter() - t
        synchronize(dev)
        return t
    g.replay()
    synchronize(dev)
    return run_window(one, window_s)


def py_probe(window_s: float = PROBE_WINDOW_S) -> tuple[float, float]:
    """(mean, median) seconds of one pass of hostprobe.cpu_probe's pure-Python loop."""
    cpu_probe()
    return run_window(cpu_probe, window_s)


def probe(dev: torch.device, window_s: float = PROBE_WINDOW_S) -> dict:
    """All three measures (PROBE_KEYS), about 3 x window_s of host time."""
    launch = launch_probe(dev, window_s)
    graph = graph_probe(dev, window_s)
    py = py_probe(window_s)
    return dict(zip(PROBE_KEYS, (*launch, *graph, *py)))


# The pause probe (issue 15, session s23srvh): sporadic host stalls of 10-50 ms on eager iterations (s22ttft's
# H100: 22 iterations over ~7 s of eager iterations, none over ~15 s of CUDA-graph replays) set a Poisson run's
# TTFT P99. The probe launches eager chains (launch_probe's) for PAUSE_WINDOW_S of launch time right before a
# run, the device synchronised between chains outside the timed part, and keeps every chain that took
# PAUSE_MIN_S or more over the window's median chain: the host's rate and sizes of pauses per second of eager
# launching, an input the serving twin is given (as it is given launch_s).
PAUSE_WINDOW_S = 2.0      # seconds of timed launching (s22ttft's H100 rate, ~3 a second of eager work: ~6 seen)
PAUSE_MIN_S = 2e-3        # a chain this much over the median is a pause (a chain takes ~0.5-1 ms)


def pause_probe(dev: torch.device, window_s: float = PAUSE_WINDOW_S, counters=None) -> dict:
    """The host's pauses while launching (PAUSE_KEYS): the timed window, its chains and their median, and
    the pauses (each chain's excess over the median, PAUSE_MIN_S or more; ';'-joined seconds).
    `counters` (() -> (thread CPU s, run delay s, involuntary, voluntary switches): real/serve/stalltrace.py, under
    --stall-trace) is read around each chain, outside its timed part, and each pause's change of them is returned
    too (PAUSE_TRACE_KEYS, ';'-joined like the sizes): what the thread was doing while the chain paused."""
    x = torch.ones(256, device=dev)
    times, deltas, total = [], [], 0.0
    with torch.no_grad():
        _chain(x)
        synchronize(dev)
        while total < window_s:
            c0 = counters() if counters else None
            t = time.perf_counter()
            _chain(x)
            t = time.perf_counter() - t
            if counters:
                deltas.append(tuple(b - a for a, b in zip(c0, counters())))
            synchronize(dev)
            times.append(t)
            total += t
    p50 = statistics.median(times)
    paused = [i for i, t in enumerate(times) if t - p50 >= PAUSE_MIN_S]
    out = dict(zip(PAUSE_KEYS, (total, len(times), p50, len(paused), ";".join(f"{times[i] - p50:.6g}" for i in paused))))
    if counters:
        for k, key in enumerate(PAUSE_TRACE_KEYS):
            out[key] = ";".join(f"{deltas[i][k]:.6g}" for i in paused)
    return out


def cpu_info() -> dict:
    """The host CPU's model and the clock /proc/cpuinfo reports for its first CPU (on these VMs the
    nominal or last-read value, cpufreq being absent): '' / NaN where unreadable."""
    found = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu MHz") and key not in found:
                    found[key] = val.strip()
                if len(found) == 2:
                    break
    except OSError:
        pass
    try:
        mhz = float(found.get("cpu MHz", "nan"))
    except ValueError:
        mhz = math.nan
    return {"cpu_model": found.get("model name", platform.processor() or ""), "cpu_mhz": mhz}


_BUSY = ("import os, sys\n"
         "os.sched_setaffinity(0, [int(c) for c in sys.argv[2:]])\n"
         "os.nice(int(sys.argv[1]))\n"
         "print('ready', flush=True)\n"
         "while True:\n"
         "    pass\n")


class CoRunner:
    """A busy-loop process on `cpus` at nice `nice` for the duration of a `with` block (None: no
    process). It prints 'ready' once pinned and reniced; entering waits for that (at most 10 s)."""

    def __init__(self, cpus: list[int], nice: int | None):
        if nice is not None and not 0 <= nice <= 19:
            raise ValueError(f"co-runner nice {nice!r}: expected 0..19")
        self.cpus, self.nice, self.proc = list(cpus), nice, None

    def __enter__(self):
        if self.nice is None or not self.cpus:
            return self
        self.proc = subprocess.Popen([sys.executable, "-c", _BUSY, str(self.nice), *map(str, self.cpus)],
                                     stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10.0
        line = ""
        while time.monotonic() < deadline and not line:
            line = self.proc.stdout.readline().strip()
            if self.proc.poll() is not None:
                break
        if line != "ready":
            self.__exit__(None, None, None)
            raise RuntimeError(f"co-runner on CPUs {self.cpus} did not start (got {line!r})")
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc.stdout.close()
            self.proc = None
        return False
