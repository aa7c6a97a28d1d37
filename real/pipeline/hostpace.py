"""A host-pace probe between the cycles of an interleaved run (s18probe, issue 13): how fast this
rank's host issues work, measured apart from the timed steps.

Why: s18reg found the 4xH200 8-micro-batch part ran with pipeline rank 0's host at another pace (30 us
a forward launch) than either half of the 4-micro-batch fitting part (41, then 22 us), but it could
read that pace only from the judged steps' own host marks, whose host-paced ops last about as long as
their issue. A probe that issues no op of any step gives the pace as a condition of the run, per
cycle and rank (as real/serve/hostspeed.py's launch chains do for serving).

Two measures, on every rank, between one cycle's last step and the next cycle's first:
  launch  LAUNCHES small element-wise kernels (x * 1.0001 on 256 elements, no grad) issued back to
          back while the stream is held by a sleep kernel queued first, so each launch is the host's
          issue time alone (the GPU neither runs them nor makes the host wait): host seconds over the
          launches (mean) and the median launch; `stream_blocked` says whether the sleep still held
          the stream after the last launch (0: the host was slower than the sleep, the later launches
          ran as issued, and the figure may include the GPU's pace). On the CPU (the dry run) the
          same ops run at once, unblocked.
  python  PY_PASSES passes of a fixed pure-Python loop (real/serve/hostprobe.py's CPU_PROBE_LOOPS
          iterations of integer arithmetic): the interpreter's pace with no CUDA call at all.
The device is synchronised at the end, so the next step starts from an idle GPU as it does without
the probe (its own barrier and synchronisation come first: engine.PipelineRunner.step).
"""

from __future__ import annotations

import statistics
import threading
import time

import torch

from real.serve.hostprobe import cpu_probe
from real.sync import synchronize

LAUNCHES = 128             # small kernels a launch probe (~4 ms of host at 30 us a launch)
SLEEP_S_PER_LAUNCH = 1e-4  # the sleep kernel covers 100 us a launch: 3x the slowest pace s18reg read (41 us)
SLEEP_CYCLES_PER_S = 2.0e9  # torch.cuda._sleep counts SM cycles; 2 GHz >= the H100 / H200 boost clock
                            # (1980 MHz, NVIDIA's H100 / H200 data sheets): the sleep lasts at least its seconds
PY_PASSES = 8              # pure-Python passes a probe (~0.1 ms each on a server core)


def launch_probe(dev: torch.device, launches: int = LAUNCHES) -> dict:
    """Host seconds a small kernel launch with the stream held (see the module docstring)."""
    x = torch.ones(256, device=dev)
    each = []
    with torch.no_grad():
        synchronize(dev)
        if dev.type == "cuda":
            torch.cuda._sleep(int(launches * SLEEP_S_PER_LAUNCH * SLEEP_CYCLES_PER_S))
        t0 = time.perf_counter()
        y = x
        for _ in range(launches):
            t = time.perf_counter()
            y = y * 1.0001
            each.append(time.perf_counter() - t)
        total_s = time.perf_counter() - t0
        # still behind the sleep after the last launch: every launch was issued with nothing running
        blocked = int(not torch.cuda.current_stream(dev).query()) if dev.type == "cuda" else 0
        synchronize(dev)
    return dict(probe="launch", calls=launches, us_per_call=total_s / launches * 1e6,
                us_per_call_p50=statistics.median(each) * 1e6, stream_blocked=blocked)


def python_probe(passes: int = PY_PASSES) -> dict:
    """Seconds a pass of the pure-Python loop (mean over `passes`, and the median)."""
    each = [cpu_probe() for _ in range(passes)]
    return dict(probe="python", calls=passes, us_per_call=sum(each) / passes * 1e6,
                us_per_call_p50=statistics.median(each) * 1e6, stream_blocked="")


def host_probe(dev: torch.device) -> list[dict]:
    """Both measures, each a dict of PIPELINE_HOST_PROBE_COLS' probe columns plus its duration_s."""
    rows = []
    for one in (lambda: launch_probe(dev), python_probe):
        t = time.perf_counter()
        row = one()
        row["duration_s"] = time.perf_counter() - t
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# s26eprate round 2: the host's pace *during* a timed step, from a companion thread
SAMPLE_INTERVAL_S = 2e-3   # a sample every ~2 ms (Event.wait between samples; the GIL may delay a wake-up)
SAMPLE_LOOPS = 256         # iterations of the sample's pure-Python loop (~10-20 us on a server core)


def _pace_loop(loops: int = SAMPLE_LOOPS) -> int:
    """The sample's fixed pure-Python work (integer arithmetic, no allocation beyond small ints)."""
    x = 1
    for i in range(loops):
        x = (x * 31 + i) & 0xFFFF
    return x


class PaceSampler:
    """A daemon thread of this rank's process that, while a timed step runs, times a fixed pure-Python loop
    (_pace_loop) every SAMPLE_INTERVAL_S: the pace of this process's host at that moment, taken beside the step,
    never from the step's own ops. Each sample holds the GIL for its whole loop (so nothing of the step's Python
    can interleave with it and its wall time is the host's pace alone: the interpreter on a core of this host, with
    any preemption of the thread); between samples the thread waits on an Event, GIL released.
    What it costs the step: the step's main thread (and the autograd engine's thread, in Python code) can be held
    off the GIL for at most one sample plus a GIL hand-over per sample, so a step is lengthened by at most the sum
    of its samples' walls plus those hand-overs (`duty` in the rows: sample wall over the step's wall, per rank);
    torch's op bindings release the GIL while an op is dispatched, so the sampler mostly runs while the main thread
    is in C++. It runs on another core than the main thread when one is free (the OS's choice: no pinning).
    samples: (perf_counter at the sample's start, its wall seconds)."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S, loops: int = SAMPLE_LOOPS):
        self.interval_s, self.loops = interval_s, loops
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pace-sampler", daemon=True)

    def _run(self) -> None:
        loops, out, clock, stop = self.loops, self.samples, time.perf_counter, self._stop
        while not stop.wait(self.interval_s):
            t = clock()
            _pace_loop(loops)
            out.append((t, clock() - t))

    def __enter__(self) -> "PaceSampler":
        _pace_loop(self.loops)   # first call outside the samples
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
