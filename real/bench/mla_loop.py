"""The host's time per repetition of an MLA layer record's loop, beside the host time of the timed
call and of its setup alone (issue 13, session s11mla; calibration.mla_traces, layer_gaps).

A layer record (real/bench/attention.py bench_mla_layers, real/bench/timing.py Timer) repeats
`setup()` (the backward's untimed forward), two CUDA events and the timed call back to back, with
no synchronisation. The twin simulates that loop (calibration.predict timed_window_s) with the
host running only the setup's and the call's ops, at the host time per kernel that
host_dispatch.csv measured on each call alone (GPU idle at its start). Whether the GPU still runs
the setup forward's last kernels when the backward starts (the s10mla traces: ~0.15 ms of the
V2-Lite forward's SDPA and output projection after its host returns) or waits for the host
depends on what else the host does each repetition: the events, the Python loop, the release of
the last repetition's graph and tensors. This measures it, per case and phase (BF16 and FP8
block-wise MLA layers, the records' shapes), in ROUNDS rounds of:
  host_setup_s  the setup call alone (synchronised before), host clock
  host_call_s   the timed call alone (its setup run and synchronised before), host clock
  loop          REPS repetitions exactly as Timer.measure runs them (Timer._once), the host clock
                around the whole loop (nothing in it waits for the GPU) and each repetition's
                CUDA-event time
and writes, per case and phase, the medians over rounds: time_s (the events, the record's
quantity), host_loop_s (loop host time per repetition), host_setup_s, host_call_s, and
host_other_s = host_loop_s - host_setup_s - host_call_s: the host's time per repetition outside
both calls, which the twin's loop does not have. For a backward, inside the loop: engine_start_s
(host seconds from the timed call's start to the autograd engine's first node: FirstNode's
pre-hook) and start_wait_s (GPU seconds from the start event to an event the first node records:
whether, in the record's own loop, the GPU waits for the engine's start or is still running the
setup forward's kernels; its P90 start_wait_p90_s). V3-slice shapes are the fitting split's, V2-Lite
the held-out records' (a diagnostic: a fresh measure of the held-out records beside the loop).

    python -m real.bench.mla_loop --out DIR [--device cpu --quick]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

from real import fp8
from real.bench.aten_count import _env, mla_call, precision_of
from real.bench.timing import Timer
from real.telemetry import Telemetry
from real.sync import synchronize

# the records' MLA layer shapes (real/bench/attention.py): fitting split first, then held out
CASES = (("v3-slice-1l", 1, 1024), ("v3-slice-1l", 1, 4096),
         ("v2-lite-slice", 4, 1024), ("v2-lite-slice", 1, 4096))
QUICK_CASES = (("tiny", 1, 32),)
HOLDOUT_MODELS = {"v2-lite-slice"}   # calibration/split.py's held-out MLA family
ROUNDS, REPS, WARMUP = 5, 8, 3
COLUMNS = ("bench", "model", "batch", "seq_len", "phase", "precision", "split", "rounds", "reps", "time_s",
           "time_p10_s", "time_p90_s", "host_loop_s", "host_setup_s", "host_call_s", "host_other_s",
           "engine_start_s", "start_wait_s", "start_wait_p90_s",
           "device", "gpu_name", "sm_clock_mhz", "mem_clock_mhz", "torch_version", "cuda_version", "timestamp_utc")


def _host_of(fn, dev) -> float:
    synchronize(dev)
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    synchronize(dev)
    return t1 - t0


class FirstNode:
    """Marks where a backward's first autograd node starts: a pre-hook on the forward output's
    grad_fn (the engine's first node) takes the host clock and records a CUDA event; `call` takes
    the host clock as the timed call begins. Per repetition: engine_start (host seconds from the
    call's start to its first node: the autograd engine's start) and, with the repetition's start
    event, start_wait (GPU seconds from the start event to the first node's event: zero while the
    GPU still runs the setup forward's kernels when the engine reaches its first node, the GPU's
    wait for the engine's start otherwise)."""

    def __init__(self, dev):
        self.dev = dev
        self.clear()

    def clear(self) -> None:
        self.calls, self.nodes, self.events = [], [], []

    def hook(self, y):
        y.grad_fn.register_prehook(self._mark)
        return y

    def _mark(self, grad_outputs):
        self.nodes.append(time.perf_counter())
        if self.dev.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.events.append(ev)

    def call(self) -> None:
        self.calls.append(time.perf_counter())

    def per_rep(self, handles) -> tuple[list[float], list[float]]:
        engine = [n - c for c, n in zip(self.calls, self.nodes)]
        wait = [h[0].elapsed_time(ev) * 1e-3 for h, ev in zip(handles, self.events)
                if isinstance(h, tuple)]
        return engine, wait


def loop_round(timer: Timer, fn, setup, dev, reps: int = REPS, marks: FirstNode | None = None) -> dict:
    """One round: the setup and the call each alone, then `reps` repetitions as Timer.measure runs
    them (its own _once: setup, events, the call, no synchronisation), timed on the host clock as a
    whole and each by its events. `setup` None: a forward record's fn() alone. `marks`: the
    backward's first node per repetition (FirstNode)."""
    if setup is None:   # a forward record: Timer calls fn() alone
        host_setup, host_call = 0.0, _host_of(fn, dev)
    else:
        host_setup = _host_of(setup, dev)
        state = setup()
        host_call = _host_of(lambda: fn(state), dev)
    synchronize(dev)
    if marks:
        marks.clear()
    t0 = time.perf_counter()
    handles = [timer._once(fn, setup) for _ in range(reps)]   # the record's own repetition code
    t1 = time.perf_counter()
    times = [timer._elapsed(h) for h in handles]
    engine, wait = marks.per_rep(handles) if marks else ([], [])
    return {"host_loop_s": (t1 - t0) / reps, "host_setup_s": host_setup, "host_call_s": host_call, "times": times,
            "engine": engine, "wait": wait}


def _median(values) -> float:
    return statistics.median(values) if values else float("nan")


def case_rows(model: str, batch: int, seq: int, label: str, dev, timer: Timer, rounds: int = ROUNDS,
              reps: int = REPS) -> list[dict]:
    """Rows of one MLA layer shape and precision: phase fwd (setup: nothing) and bwd (setup: the
    forward, its output's first backward node marked: FirstNode), each the medians over `rounds`
    rounds."""
    prec = precision_of(label)
    mla, cos, sin, x, gx = mla_call(model, batch, seq, dev)
    marks = FirstNode(dev)

    def backward(y):
        marks.call()
        torch.autograd.grad(y, [x, *mla.parameters()], gx)

    phases = {"fwd": (None, lambda: mla(x, cos, sin, prec), None),
              "bwd": (lambda: marks.hook(mla(x, cos, sin, prec)), backward, marks)}
    rows = []
    for phase, (setup, fn, m) in phases.items():
        for _ in range(WARMUP):
            fn() if setup is None else fn(setup())
        synchronize(dev)
        got = [loop_round(timer, fn, setup, dev, reps, m) for _ in range(rounds)]
        times = sorted(t for g in got for t in g["times"])
        q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
        med = {k: statistics.median(g[k] for g in got) for k in ("host_loop_s", "host_setup_s", "host_call_s")}
        rows.append({"bench": f"mla_loop_{phase}", "model": model, "batch": batch, "seq_len": seq, "phase": phase,
                     "precision": label, "split": "holdout" if model in HOLDOUT_MODELS else "fit", "rounds": rounds,
                     "reps": reps, "time_s": statistics.median(times), "time_p10_s": q[0], "time_p90_s": q[-1], **med,
                     "host_other_s": med["host_loop_s"] - med["host_setup_s"] - med["host_call_s"],
                     "engine_start_s": _median([e for g in got for e in g["engine"]]),
                     "start_wait_s": _median([w for g in got for w in g["wait"]]),
                     "start_wait_p90_s": (statistics.quantiles([w for g in got for w in g["wait"]], n=10,
                                                               method="inclusive")[-1]
                                          if sum(len(g["wait"]) for g in got) > 1 else float("nan")),
                     "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for mla_loop.csv (rows flushed one by one)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="one tiny case, BF16, 1 round of 2 (a CPU dry run)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("mla_loop: --device cuda: no CUDA device", file=sys.stderr)
        return 2
    cases = QUICK_CASES if args.quick else CASES
    labels = ["bf16"] + (["fp8-blockwise"] if dev.type == "cuda" and fp8.blockwise_kernel_available(dev) else [])
    rounds, reps = (1, 2) if args.quick else (ROUNDS, REPS)
    env = {"device": dev.type, **_env(dev)}
    timer = Timer(dev, Telemetry(dev.index or 0), 0.0, warmup=WARMUP)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "mla_loop.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for model, batch, seq in cases:
            for label in labels:
                rows = case_rows(model, batch, seq, label, dev, timer, rounds, reps)
                if dev.type == "cuda":   # the case's layer and tensors are released with case_rows' frame
                    torch.cuda.empty_cache()
                for row in rows:
                    w.writerow({**row, **env})
                    f.flush()
                    print(f"mla_loop {model} {batch}x{seq} {label} {row['phase']}: events {row['time_s'] * 1e3:.3f} ms, "
                          f"host per repetition {row['host_loop_s'] * 1e3:.3f} ms = setup {row['host_setup_s'] * 1e3:.3f} "
                          f"+ call {row['host_call_s'] * 1e3:.3f} + other {row['host_other_s'] * 1e3:+.3f} ms; "
                          f"engine start {row['engine_start_s'] * 1e6:.0f} us, GPU waits {row['start_wait_s'] * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
