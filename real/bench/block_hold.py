"""The torchtitan Llama-3.1-8B long-context rows' own block, timed in a burst and held at the board's power
limit, beside FlashAttention-2 alone (session s30tt, issue 14; rule docs/notes/s30tt_rule.md).

Why: the twin slows FlashAttention-2 on torchtitan's 500 W H100s by FA2's own factor (twin/data/hardware.toml
h100-hbm2e-500w attention_clock_fracs, calibration/power_cap.py fa2_catalog_entry: FA2 held *alone* for 10 s,
burst/steady 0.954-0.984, and the f^3 law from its own steady draw). Inside a training block FA2 alternates
with GEMMs and casts under one power controller; no record holds FA2's speed *inside a held block*. The rows'
block is one compiled, fully checkpointed Llama block with tensorwise Float8 linears and flash SDPA
(torchtitan 9dec370's Table 2: FSDP + compile + Float8, full AC), real.bench.cp_block.block_fns.

Cases, in run order (each from an idle GPU):
  block32k  that block at 32K positions (tt-8b-cp1-32k's block; every 8B CP rank's diagonal call)
  block8k   the same block at 8K positions, batch 1
  fa2_32k   flash SDPA alone, causal 32K, 32 heads of 128 (K/V repeated, as torchtitan's repeat_kv): the
            forward, its recomputation and the backward of one call (cp_sustained.full_ac_attention_fn)
  fa2_8k    the same at 8K
  gemm_fp8  the block's largest GEMM alone: w1 over 32K tokens (m 32768, n 14336, k 4096) in tensorwise FP8
            (torch._scaled_mm, torchao Float8Linear's), GEMM_CALLS back to back a call
Per case: IDLE_S idle; `burst`: BURST_CALLS calls, each timed with CUDA events (median); `burst_kernel`: one
call profiled after another IDLE_S idle (each kernel's mean seconds a kernel call, and its calls in the call); `hold`: calls back to back for
HOLD_S, one row per WINDOW_S window (time per call, mean board power from the energy counter, median SM clock
sampled while a call runs, temperature); `held_kernel`: the kernels of HELD_PROFILED calls profiled at the end
of the hold without letting the GPU idle (dense_clock.held_step_kernels: each kernel's mean seconds a kernel
call; kernel_calls the calls the trace held). A class's seconds a call: sum of time_s x burst kernel_calls.
Rows: block_hold.csv (every row: GPU name, clocks, power, driver, torch, CUDA, NCCL versions). Imports torch
only (the GPU image).

    python -m real.bench.block_hold --out DIR [--quick] [--cases block32k,fa2_32k]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from real.bench.cp_block import block_fns
from real.bench.cp_sustained import full_ac_attention_fn
from real.bench.dense_clock import held_step_kernels, kernel_totals
from real.bench.gemm import fp8_gemm_callable
from real.bench.gemm_align import Nvml, environment
from real.telemetry import Telemetry

# case: (kind, positions); the tiny sizes of the CPU dry run beside
CASES = {"block32k": ("block", 32768), "block8k": ("block", 8192), "fa2_32k": ("fa2", 32768), "fa2_8k": ("fa2", 8192),
         "gemm_fp8": ("gemm", 32768)}
QUICK = {"block32k": 64, "block8k": 32, "fa2_32k": 64, "fa2_8k": 32, "gemm_fp8": 64}
GEMM_CALLS = 8   # gemm_fp8: one call is this many back-to-back GEMMs (~25 ms on an H200)
IDLE_S, BURST_CALLS, HOLD_S, WINDOW_S, HELD_PROFILED = 2.0, 3, 12.0, 1.0, 2
QUICK_TIMES = (0.0, 2, 0.3, 0.1, 1)

COLUMNS = ["campaign", "timestamp_utc", "case", "kind", "seq_len", "precision", "phase", "window", "elapsed_s",
           "kernel", "kernel_calls", "time_s", "time_p10_s", "time_p90_s", "calls", "timing", "sm_clock_mhz",
           "sm_clock_samples", "power_w", "temperature_c", "mem_clock_mhz", "gpu_name", "sm_clock_max_mhz",
           "driver_version", "torch_version", "cuda_version", "nccl_version", "hostname", "power_limit_w", "error"]


def case_fn(case: str, dev, quick: bool):
    """fn(): one call of the case (a block's forward + backward with its recomputation, or FA2's three
    calls); `kind` 'block' or 'fa2'."""
    kind, seq_len = CASES[case]
    s = QUICK[case] if quick else seq_len
    if kind == "block":
        torch._dynamo.reset()   # each block compiled afresh for its own length (no automatic dynamic shapes)
        fwd, bwd, _ = block_fns(s, dev, quick, compiled=True, float8=True)
        return lambda: bwd(fwd())
    if kind == "gemm":
        n, k = (128, 32) if quick else (14336, 4096)   # the 8B FFN (hidden 4096, FFN 14336)
        a_MK = torch.randn(s, k, device=dev, dtype=torch.bfloat16)
        w_NK = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        one = fp8_gemm_callable(a_MK, w_NK, "fp8-tensor") if dev.type == "cuda" else (lambda: F.linear(a_MK, w_NK))

        def gemms():
            for _ in range(GEMM_CALLS):
                one()
        return gemms
    heads, head_dim = (4, 16) if quick else (32, 128)
    fn, _ = full_ac_attention_fn(s, s, True, heads, head_dim, dev)
    return fn


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed_call(fn, dev) -> float:
    """One call's seconds (CUDA events on a GPU, else the host clock)."""
    if dev.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) * 1e-3


def burst_rows(fn, dev, tel: Telemetry, idle_s: float, calls: int):
    """The burst: `calls` calls from an idle GPU, each timed; then one call profiled after another idle."""
    time.sleep(idle_s)
    times, clocks = [], []
    for _ in range(calls):
        times.append(timed_call(fn, dev))
        clocks.append(tel.sm_clock_mhz())
    times.sort()
    yield {"phase": "burst", "time_s": statistics.median(times), "time_p10_s": times[0], "time_p90_s": times[-1],
           "calls": calls, "timing": "per_call_events", "sm_clock_mhz": statistics.median(clocks),
           "power_w": tel.power_w(), "temperature_c": tel.temperature_c(), "mem_clock_mhz": tel.mem_clock_mhz()}
    time.sleep(idle_s)
    if dev.type == "cuda":
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            _sync(dev)
        for name, sec, n in kernel_totals(prof.events(), 1):   # as held_kernel's: mean seconds a kernel call
            yield {"phase": "burst_kernel", "kernel": name, "kernel_calls": n, "time_s": sec / max(n, 1),
                   "calls": 1, "timing": "profiler_per_kernel_call"}


def hold_rows(fn, dev, tel: Telemetry, hold_s: float, window_s: float):
    """Calls back to back for hold_s, one in flight; a row a window (time per call, power from the energy
    counter over the window's wall time, median SM clock sampled while the next call runs)."""
    t0, window = time.perf_counter(), 0
    while time.perf_counter() - t0 < hold_s:
        window += 1
        w0, e0, calls, clocks, prev = time.perf_counter(), tel.energy_j(), 0, [], None
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        while time.perf_counter() - w0 < window_s:
            fn()
            calls += 1
            if dev.type == "cuda":
                done = torch.cuda.Event()
                done.record()
                if prev is not None:
                    prev.synchronize()   # the call before this one: this one is still running
                clocks.append(tel.sm_clock_mhz())
                prev = done
        if dev.type == "cuda":
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) * 1e-3 / calls
        else:
            t = (time.perf_counter() - w0) / calls
        wall = time.perf_counter() - w0
        clocks = [c for c in clocks if c == c]
        yield {"phase": "hold", "window": window, "elapsed_s": time.perf_counter() - t0, "time_s": t,
               "time_p10_s": t, "time_p90_s": t, "calls": calls,
               "timing": "window_events" if dev.type == "cuda" else "host_clock",
               "sm_clock_mhz": statistics.median(clocks) if clocks else tel.sm_clock_mhz(),
               "sm_clock_samples": len(clocks), "power_w": (tel.energy_j() - e0) / wall,
               "temperature_c": tel.temperature_c(), "mem_clock_mhz": tel.mem_clock_mhz()}


def run_case(case: str, dev, tel: Telemetry, quick: bool):
    """Yield the rows of one case (module docstring)."""
    idle_s, burst_calls, hold_s, window_s, profiled = QUICK_TIMES if quick else (
        IDLE_S, BURST_CALLS, HOLD_S, WINDOW_S, HELD_PROFILED)
    fn = case_fn(case, dev, quick)
    for _ in range(2):   # compile (block cases) and warm up
        fn()
    _sync(dev)
    yield from burst_rows(fn, dev, tel, idle_s, burst_calls)
    yield from hold_rows(fn, dev, tel, hold_s, window_s)
    if dev.type == "cuda":
        rows, clock = held_step_kernels(fn, dev, tel, steps=profiled, ahead=2, settle=2)
        for name, sec, n in rows:   # dense_clock's reading: mean seconds per kernel call, and the calls traced
            yield {"phase": "held_kernel", "kernel": name, "kernel_calls": n, "time_s": sec,
                   "calls": profiled, "timing": "profiler_per_kernel_call", **clock}
    _sync(dev)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny shapes and holds (a CPU dry run)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, of " + ", ".join(CASES))
    ap.add_argument("--campaign", default="s30tt")
    args = ap.parse_args(argv)
    todo = [c for c in args.cases.split(",") if c]
    bad = [c for c in todo if c not in CASES]
    if bad:
        print(f"error: --cases {bad[0]!r}: one of {', '.join(CASES)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = torch.cuda.current_device() if dev.type == "cuda" else 0
    nvml, tel = Nvml(index), Telemetry(index)
    env = environment(dev, nvml)
    static = tel.static_info()
    env.update(nccl_version=".".join(map(str, torch.cuda.nccl.version())) if dev.type == "cuda" else "",
               power_limit_w=static.get("power_limit_w", ""))
    (out / "env_block_hold.json").write_text(json.dumps({**env, **static}, indent=1, default=str))
    t0 = time.perf_counter()
    path = out / "block_hold.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        for case in todo:
            kind, seq_len = CASES[case]
            base = {"case": case, "kind": kind, "seq_len": QUICK[case] if args.quick else seq_len,
                    "precision": "fp8-tensorwise" if kind == "block" else "bf16", **env, "campaign": args.campaign}
            try:
                for row in run_case(case, dev, tel, args.quick):
                    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                    writer.writerow({**base, **row, "timestamp_utc": stamp, "error": ""})
                    f.flush()   # a run cut by timeout keeps its rows
            except Exception as exc:   # one case's failure is recorded, the next case still runs
                writer.writerow({**base, "phase": "error", "error": f"{type(exc).__name__}: {exc}"[:300]})
                f.flush()
            print(f"block_hold {case}: done at {time.perf_counter() - t0:.1f} s", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
