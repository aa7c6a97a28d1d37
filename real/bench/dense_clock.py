"""Dense BF16 GEMMs timed three ways, and held at the power limit (session s25dense, issue 13; rule:
docs/notes/s25dense_rule.md).

The twin's dense BF16 curve is fitted on gemm.csv: CUDA-graph loops of one GEMM (windows of >= 20 ms,
>= 0.1 s a shape, real.bench.timing.Timer.measure_batched) run one shape after another. s24align3's
aligned rows (3 replays of >= 5 ms after a pause: real.bench.gemm_align.time_gpu) ran ~7% faster than
that curve; sustained.csv's 30 s hold of one shape ran ~5% slower (the power limit). This bench times
fresh shapes each way, so the convention and the clock each row ran at are in the record:

  burst    gemm_align's timing after an idle pause (s24align3's rows)
  loop     Timer.measure_batched with min_time 0.1 s (gemm.csv's rows, the curve's)
  hold     the loop's graph replayed back to back for HOLD_S, one row per HOLD_WINDOW_S window
           (sustained.csv's protocol, shorter: the power-limited clock settles within 1 s there)

Cases: dense GEMMs (m x n x k: y_MN = a_MK @ w_NK^T), linear-layer training triples (forward, input
gradient, weight gradient back to back in one captured call), and an eager SwiGLU MLP training step
(x_TD -> w1, w3: D -> F, w2: F -> D; autograd backward) held the same way, whose kernels are profiled in
two steps at the end of its hold (`step_kernel` rows: each kernel's time per step).
Every row carries the GPU name, SM clock (mean of the samples taken while it ran), board power,
temperature, driver, torch and CUDA versions. Imports torch only (runs on the GPU image).

    python -m real.bench.dense_clock --out DIR [--budget-s 70] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from real.bench.gemm_align import MAX_GRAPH_CALLS, REPLAY_WINDOW_S, REPLAYS, WARMUP, Nvml, environment
from real.bench.host_dispatch import ANNOTATION
from real.bench.timing import BATCH_MAX_CALLS, BATCH_WINDOW_S, Timer, capture_graph
from real.telemetry import Telemetry

# (name, m, n, k): aligned BF16 shapes no record holds (gemm.csv, s23align*, s24align3): a 5120-wide
# model's FFN at 6,144 tokens (up, down, weight gradient), an 18,944-wide FFN at 1,536 tokens, a small
# m (640), a contraction of 1,024 tokens (weight gradient), a long m at k 2,560
GEMMS = [("h5120_up_t6144", 6144, 13824, 5120), ("h5120_down_t6144", 6144, 5120, 13824),
         ("h5120_upw_t6144", 13824, 5120, 6144), ("h3584_up_t1536", 1536, 18944, 3584),
         ("h4096_m640", 640, 12288, 4096), ("h3584_upw_t1024", 18944, 3584, 1024),
         ("h2560_m12288", 12288, 6144, 2560), ("h6144_sq_t4096", 4096, 6144, 6144)]
# (name, outputs O, inputs I, tokens T): a linear layer's three GEMMs, fwd m=T n=O k=I, dgrad m=T n=I
# k=O, wgrad m=O n=I k=T
TRIPLES = [("lin_13824x5120_t6144", 13824, 5120, 6144), ("lin_3584x18944_t1536", 3584, 18944, 1536),
           ("lin_4096x4096_t1024", 4096, 4096, 1024)]
# (name, tokens T, hidden D, FFN F): Llama-2-7B's MLP widths at 8,192 tokens
MLPS = [("mlp_d4096_f11008_t8192", 8192, 4096, 11008)]
# round 2 (docs/notes/s25dense_rule.md, "Round 2"): that step again and a 5,120-wide one at 4,096 tokens,
# their kernels profiled inside the hold as well as after it
MLPS2 = [("mlp_d4096_f11008_t8192", 8192, 4096, 11008), ("mlp_d5120_f13824_t4096", 4096, 5120, 13824)]
QUICK_GEMMS = [("q_gemm", 64, 96, 32)]
QUICK_TRIPLES = [("q_lin", 48, 32, 16)]
QUICK_MLPS = [("q_mlp", 32, 16, 48)]
HOLD_S, HOLD_WINDOW_S, IDLE_S = 3.0, 0.5, 0.5
QUICK_HOLD_S, QUICK_WINDOW_S, QUICK_IDLE_S = 0.1, 0.05, 0.0
LOOP_MIN_TIME_S = 0.1    # real.bench.cli --min-time-s default: gemm.csv's campaign

COLUMNS = ["campaign", "timestamp_utc", "case", "kind", "phase", "window", "elapsed_s", "m", "n", "k",
           "outputs", "inputs", "tokens", "hidden", "ffn", "kernel", "time_s", "time_p10_s", "time_p90_s",
           "calls", "flops", "achieved_flops_per_s", "timing", "sm_clock_mhz", "sm_clock_samples",
           "power_w", "temperature_c", "gpu_name", "sm_clock_max_mhz", "mem_clock_mhz", "driver_version",
           "torch_version", "cuda_version", "hostname"]


def gemm_call(m: int, n: int, k: int, dev) -> tuple:
    """(callable, flops) of y_MN = a_MK @ w_NK^T into a preallocated output."""
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(m, k, device=dev, dtype=torch.bfloat16, generator=g)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16, generator=g)
    y = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
    return (lambda: torch.mm(a, w.t(), out=y)), 2.0 * m * n * k


def triple_call(outputs: int, inputs: int, tokens: int, dev) -> tuple:
    """(callable, flops) of one linear layer's forward, input gradient and weight gradient."""
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(tokens, inputs, device=dev, dtype=torch.bfloat16, generator=g)
    w = torch.randn(outputs, inputs, device=dev, dtype=torch.bfloat16, generator=g)
    dy = torch.randn(tokens, outputs, device=dev, dtype=torch.bfloat16, generator=g)
    y, dx = torch.empty(tokens, outputs, device=dev, dtype=torch.bfloat16), torch.empty_like(x)
    dw = torch.empty_like(w)

    def triple():
        torch.mm(x, w.t(), out=y)
        torch.mm(dy, w, out=dx)
        torch.mm(dy.t(), x, out=dw)
    return triple, 3 * 2.0 * tokens * outputs * inputs


def mlp_step(tokens: int, hidden: int, ffn: int, dev) -> tuple:
    """(callable, flops) of one eager SwiGLU MLP training step: 3 forward GEMMs, 6 backward (an input
    and a weight gradient of each), gradients set to None before each step (no accumulation kernels)."""
    g = torch.Generator(device=dev).manual_seed(0)
    x_TD = torch.randn(tokens, hidden, device=dev, dtype=torch.bfloat16, generator=g).requires_grad_()
    w1_FD, w3_FD = (torch.randn(ffn, hidden, device=dev, dtype=torch.bfloat16, generator=g).div_(hidden ** 0.5)
                    .requires_grad_() for _ in range(2))
    w2_DF = torch.randn(hidden, ffn, device=dev, dtype=torch.bfloat16, generator=g).div_(ffn ** 0.5).requires_grad_()
    gy_TD = torch.randn(tokens, hidden, device=dev, dtype=torch.bfloat16, generator=g)

    def step():
        for t in (x_TD, w1_FD, w3_FD, w2_DF):
            t.grad = None
        h_TF = F.silu(x_TD @ w1_FD.t()) * (x_TD @ w3_FD.t())
        (h_TF @ w2_DF.t()).backward(gy_TD)
    return step, 9 * 2.0 * tokens * hidden * ffn


class Clock:
    """NVML samples of the SM clock taken while the GPU works (mean and count), with power and temperature."""

    def __init__(self, tel: Telemetry):
        self.tel, self.samples = tel, []

    def sample(self):
        v = self.tel.sm_clock_mhz()
        if not math.isnan(v):
            self.samples.append(v)

    def fields(self) -> dict:
        mean = statistics.fmean(self.samples) if self.samples else math.nan
        return {"sm_clock_mhz": mean, "sm_clock_samples": len(self.samples), "power_w": self.tel.power_w(),
                "temperature_c": self.tel.temperature_c(), "mem_clock_mhz": self.tel.mem_clock_mhz()}


def burst(fn, dev, tel: Telemetry) -> dict:
    """real.bench.gemm_align.time_gpu's timing (s24align3's rows: WARMUP calls, n calls >= 5 ms in one
    graph, REPLAYS replays, median per call), with the SM clock sampled while each replay runs."""
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize(dev)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    n = int(min(MAX_GRAPH_CALLS, max(1, math.ceil(REPLAY_WINDOW_S / max(s.elapsed_time(e) * 1e-3, 1e-6)))))
    graph = capture_graph(fn, n, dev)
    graph.replay()
    torch.cuda.synchronize(dev)
    clock, times = Clock(tel), []
    for _ in range(REPLAYS):
        s.record()
        graph.replay()
        e.record()
        clock.sample()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e-3 / n)
    del graph
    times.sort()
    return {"time_s": statistics.median(times), "time_p10_s": times[0], "time_p90_s": times[-1],
            "calls": n * REPLAYS, "timing": "cuda_graph", **clock.fields()}


def loop(fn, timer: Timer, clock: Clock) -> dict:
    """gemm.csv's timing (Timer.measure_batched at min_time LOOP_MIN_TIME_S), clock sampled before and after."""
    clock.sample()
    r = timer.measure_batched(fn)
    clock.sample()
    return {k: r[k] for k in ("time_s", "time_p10_s", "time_p90_s", "timing")} | {"calls": r["reps"], **clock.fields()}


def hold(fn, dev, tel: Telemetry, call_s: float, hold_s: float, window_s: float, graphed: bool = True):
    """Yield one row a window while fn is replayed back to back for hold_s (a graph of >= 20 ms of calls
    where `graphed`, else eager calls); the clock sampled every few replays."""
    n = int(min(BATCH_MAX_CALLS, max(1, math.ceil(BATCH_WINDOW_S / max(call_s, 1e-7))))) if graphed else 1
    graph = capture_graph(fn, n, dev) if graphed and dev.type == "cuda" else None
    run = graph.replay if graph is not None else (lambda: [fn() for _ in range(n)])
    t0, window = time.perf_counter(), 0
    while time.perf_counter() - t0 < hold_s:
        window += 1
        clock, calls, w0 = Clock(tel), 0, time.perf_counter()
        if dev.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
        while time.perf_counter() - w0 < window_s:
            run()
            calls += n
            if dev.type == "cuda" and calls % (4 * n) == 0:
                clock.sample()
                torch.cuda.current_stream(dev).synchronize()   # the host stays within a few replays
        if dev.type == "cuda":
            e.record()
            e.synchronize()
            t = s.elapsed_time(e) * 1e-3 / calls
        else:
            t = (time.perf_counter() - w0) / calls
        yield {"window": window, "elapsed_s": time.perf_counter() - t0, "time_s": t, "time_p10_s": t,
               "time_p90_s": t, "calls": calls, "timing": "cuda_graph" if graph is not None else "eager_events",
               **clock.fields()}
    del graph


def step_kernels(fn, dev, steps: int = 2) -> list[tuple[str, float, int]]:
    """(kernel name, seconds per step, calls per step) of `steps` profiled calls of fn."""
    if dev.type != "cuda":
        return []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize(dev)
    return kernel_totals(prof.events(), steps)


def held_step_kernels(fn, dev, tel: Telemetry, steps: int = 2, ahead: int = 32, settle: int = 6):
    """(kernel name, mean seconds per call, calls recorded) of the kernels the profiler saw over `steps`
    calls of fn, profiled without letting the GPU idle (round 2), and the clock fields: `ahead` calls are
    queued with no synchronisation (~0.3 s of work at the round's shapes), then the profiler starts on a
    schedule that records only after `settle` more calls, so its start-up runs while the GPU drains the
    queue; the last recorded call synchronises before the trace stops. The recorded window may hold kernels
    of more than `steps` calls (whatever ran in it): hence a mean per call of each kernel, which the step's
    calls per step (step_kernels, after the hold) turn into seconds a step."""
    if dev.type != "cuda":
        return [], {}
    for _ in range(ahead):
        fn()
    clock, kept = Clock(tel), []
    sched = torch.profiler.schedule(wait=settle // 2, warmup=settle - settle // 2, active=steps, repeat=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA], schedule=sched,
                                on_trace_ready=lambda p: kept.append(p.events())) as prof:
        for i in range(settle + steps):
            fn()
            clock.sample()
            if i == settle + steps - 1:
                torch.cuda.synchronize(dev)   # the recorded calls' kernels finish inside the trace
            prof.step()
    torch.cuda.synchronize(dev)
    per_call = kernel_totals(kept[0], 1) if kept else []
    return [(name, sec / calls, calls) for name, sec, calls in per_call if calls], clock.fields()


def kernel_totals(events, steps: int) -> list[tuple[str, float, int]]:
    """(kernel name, seconds per step, calls per step) from profiler events of `steps` calls."""
    total: dict[str, list] = {}
    for ev in events:
        if ev.device_type.name == "CUDA" and not ANNOTATION.fullmatch(ev.name):   # kernels, not ranges
            acc = total.setdefault(ev.name[:160], [0.0, 0])
            acc[0] += ev.device_time * 1e-6
            acc[1] += 1
    return [(name, s / steps, calls // steps) for name, (s, calls) in sorted(total.items(), key=lambda x: -x[1][0])]


def cases(quick: bool, round_: int = 1) -> list[tuple]:
    """(kind, name, dims) in run order: GEMMs, triples, MLP steps (round 2: the GEMMs again, no triples,
    the MLP steps of MLPS2)."""
    gemms, triples, mlps = (QUICK_GEMMS, QUICK_TRIPLES, QUICK_MLPS) if quick else (GEMMS, TRIPLES, MLPS)
    if round_ == 2:
        triples, mlps = [], (QUICK_MLPS if quick else MLPS2)
    return ([("gemm", n, {"m": m, "n": nn, "k": k}) for n, m, nn, k in gemms]
            + [("triple", n, {"outputs": o, "inputs": i, "tokens": t}) for n, o, i, t in triples]
            + [("mlp_step", n, {"tokens": t, "hidden": d, "ffn": f}) for n, t, d, f in mlps])


def run_case(case, dev, tel, timer, quick: bool, round_: int = 1):
    """Yield the rows of one case: burst, loop and hold windows (GEMMs and triples), hold windows and
    step kernels (MLP steps)."""
    kind, name, dims = case
    if kind == "gemm":
        fn, flops = gemm_call(dims["m"], dims["n"], dims["k"], dev)
    elif kind == "triple":
        fn, flops = triple_call(dims["outputs"], dims["inputs"], dims["tokens"], dev)
    else:
        fn, flops = mlp_step(dims["tokens"], dims["hidden"], dims["ffn"], dev)
    base = {"case": name, "kind": kind, **dims, "flops": flops}
    hold_s, window_s, idle_s = ((QUICK_HOLD_S, QUICK_WINDOW_S, QUICK_IDLE_S) if quick
                                else (HOLD_S, HOLD_WINDOW_S, IDLE_S))
    time.sleep(idle_s)   # the bursts start from an idle GPU, as s24align3's cases did between their host work
    call_s = 0.0
    if kind != "mlp_step":
        if dev.type == "cuda":
            yield {**base, "phase": "burst", **burst(fn, dev, tel)}
        lp = loop(fn, timer, Clock(tel))
        yield {**base, "phase": "loop", **lp}
        call_s = lp["time_s"]
    else:   # an eager step, held without a graph: one warm-up step
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    for w in hold(fn, dev, tel, call_s, hold_s, window_s, graphed=kind != "mlp_step"):
        yield {**base, "phase": "hold", **w}
    if kind == "mlp_step" and round_ == 2:   # inside the hold first: no idle before the profiled steps
        rows, clock = held_step_kernels(fn, dev, tel)
        for kname, sec, calls in rows:   # time_s: mean per call; calls: how many the trace held
            yield {**base, "phase": "step_kernel_held", "kernel": kname, "time_s": sec, "calls": calls,
                   "timing": "profiler_per_call", **clock}
    if kind == "mlp_step":
        for kname, sec, calls in step_kernels(fn, dev):
            yield {**base, "phase": "step_kernel", "kernel": kname, "time_s": sec, "calls": calls,
                   "timing": "profiler"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=70.0, help="no case starts after this")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and holds (a CPU dry run)")
    ap.add_argument("--round", type=int, default=1, choices=(1, 2), dest="round_",
                    help="2: the GEMMs again and two MLP steps profiled inside their holds")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = torch.cuda.current_device() if dev.type == "cuda" else 0
    nvml, tel = Nvml(index), Telemetry(index)
    env = environment(dev, nvml)
    (out / "env.json").write_text(json.dumps({**env, **tel.static_info()}, indent=1))
    timer = Timer(dev, tel, 0.0 if args.quick else LOOP_MIN_TIME_S)
    t0, done, todo = time.perf_counter(), 0, cases(args.quick, args.round_)
    with (out / "dense_clock.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for case in todo:
            if time.perf_counter() - t0 > args.budget_s:
                print(f"budget spent: {len(todo) - done} of {len(todo)} cases not run", flush=True)
                break
            for row in run_case(case, dev, tel, timer, args.quick, args.round_):
                row.update(env, campaign="s25dense" if args.round_ == 1 else "s25dense2", achieved_flops_per_s=row["flops"] / row["time_s"]
                           if row.get("time_s") and row["phase"] != "step_kernel" else "",
                           timestamp_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
                writer.writerow(row)
                f.flush()   # a run cut by timeout keeps its rows
            done += 1
            print(f"{case[1]}: done at {time.perf_counter() - t0:.1f} s", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    print(f"dense_clock: {done} cases in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
