"""Section duty_sweep (one GPU, opt-in; campaign s14tt): how the board power of a kernel grows with
the SM clock, measured at our own power limit by running the kernel at a range of duty cycles.

Why: the twin slows torchtitan's H100s (500 W limit) by a clock fraction derived from our records at
700 W under an assumed law, P = P_idle + D (f / f_ref)^3 (calibration/power_cap.py: the idle power
as the static part, dynamic power ~ f^3). Neither the static part at a high clock nor the exponent
has been measured; with f^2 the 500 W clock would be 0.80 of the 700 W one instead of 0.86. The
power limit cannot be changed on the lent machines, but the law can be traced under the limit we
have: a kernel run a fraction d of the time (the rest a one-thread sleep kernel) holds the board
at the limit with a clock f_d that rises as d falls, P_s(f_d) + d D(f_d) = P_limit, until the
clock reaches its maximum, after which the power falls with d at that clock,
P = P_s(f_max) + d D(f_max). Both regimes together give the static part at the maximum clock, the
dynamic power there, and how the dynamic power falls with the clock (calibration.power_cap
.fit_power_law).

Each kernel runs periods of `calls` back-to-back calls followed by torch.cuda._sleep (a spin kernel
of one thread: the GPU stays in its clocked state with next to no dynamic power) sized for the
target duty at the clock just read; the host keeps one period ahead of the GPU (each period's end
event is waited for before the next but one is issued), so NVML's energy counter and clock
readings cover the GPU time they are divided by. Per point, DUTY_HOLD_S seconds, one `duty_sweep`
row per DUTY_WINDOW_S window: the duty measured by CUDA events (busy time over period time), the
time per call, mean board power (energy counter), the median SM clock sampled each period, the
temperature and NVML's clock-event reasons (bit 0x4: software power cap).

Kernels: the BF16 GEMM of sustained.csv (m=8192 n=4096 k=7168, the record the twin's clock_frac is
derived from) over DUTY_TARGETS_GEMM, then causal FlashAttention-2's forward at 8K (batch 8, 32 heads
of 128: torchtitan's attention) over DUTY_TARGETS_FA2, a second kernel of another activity to test
that one law serves both. First the idle board power (IDLE_S seconds, no kernel).
"""

from __future__ import annotations

import math
import time

import torch

from real.bench.cp_sustained import LLAMA_8B, QUICK_8B, fa2_pass_fns, gemm_cases
from real.bench.device import free_memory
from real.bench.records import log
from real.sync import synchronize

DUTY_HOLD_S, DUTY_WINDOW_S = 5.0, 1.0   # seconds a duty point is held, and one row's window
IDLE_S = 3.0                            # idle board power read first (energy counter)
PERIOD_BUSY_S = 0.008                   # busy time a period aims at: ~12 GEMM calls, one 8K FA2 forward
DUTY_TARGETS_GEMM = (1.0, 0.85, 0.7, 0.6, 0.5, 0.42, 0.35, 0.28, 0.2, 0.1)
DUTY_TARGETS_FA2 = (1.0, 0.8, 0.6, 0.45, 0.3, 0.15)
FA2_LEN, FA2_BATCH = 8192, 8            # 64K query tokens a call, as section fa2_sustained's 8K row
POWER_CAP_BIT = 0x4                     # nvmlClocksEventReasonSwPowerCap


def duty_config(kernel: str, target: float) -> str:
    """The config of a duty point: kernel name and its target duty (the measured one is a column)."""
    return f"{kernel} duty={target:.2f}"


def sleep_cycles(busy_s: float, target: float, clock_mhz: float) -> int:
    """Spin-kernel cycles for a gap of busy_s (1 - d) / d at the SM clock just read (1,980 MHz if unread)."""
    if target >= 1.0:
        return 0
    mhz = clock_mhz if clock_mhz and not math.isnan(clock_mhz) else 1980.0
    return int(busy_s * (1.0 - target) / target * mhz * 1e6)


def hold_duty(rec, timer, dev, kernel: str, precision: str, fn, flops: float, calls: int, target: float,
              hold_s: float, window_s: float = DUTY_WINDOW_S) -> int:
    """Run periods of `calls` calls of fn plus a sleep kernel sized for duty `target` for hold_s
    seconds; one duty_sweep row per window. Returns the windows written."""
    cuda = dev.type == "cuda"
    busy_s = None
    t0 = time.perf_counter()
    window = 0
    while time.perf_counter() - t0 < hold_s:
        window += 1
        w0, e0 = time.perf_counter(), timer.tel.energy_j()
        clocks, periods, prev = [], [], None
        while time.perf_counter() - w0 < min(window_s, hold_s):
            if cuda:
                ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
                ev[0].record()
            else:
                h0 = time.perf_counter()
            for _ in range(calls):
                fn()
            if cuda:
                ev[1].record()
                clock = timer.tel.sm_clock_mhz()
                clocks.append(clock)
                cycles = sleep_cycles(busy_s if busy_s else PERIOD_BUSY_S, target, clock)
                if cycles:
                    torch.cuda._sleep(cycles)
                ev[2].record()
                if prev is not None:
                    prev[2].synchronize()   # the period before this one: this one is still queued
                periods.append(ev)
                prev = ev
            else:
                h1 = time.perf_counter()
                periods.append((h0, h1, h1))
        if cuda:
            prev[2].synchronize()
            spans = [(p[0].elapsed_time(p[1]) * 1e-3, p[0].elapsed_time(p[2]) * 1e-3) for p in periods]
        else:
            spans = [(h1 - h0, h2 - h0) for h0, h1, h2 in periods]
        wall = time.perf_counter() - w0
        busy, total = sum(b for b, _ in spans), sum(t for _, t in spans)
        busy_s = busy / len(spans)
        t = busy / (len(spans) * calls)
        power = (timer.tel.energy_j() - e0) / wall
        clock = sorted(clocks)[len(clocks) // 2] if clocks else timer.tel.sm_clock_mhz()
        rec.row("duty_sweep", bench="duty_sweep", kernel=kernel, precision=precision, duty_target=target,
                window=window, elapsed_s=time.perf_counter() - t0, temperature_c=timer.tel.temperature_c(),
                duty_frac=busy / total if total > 0 else math.nan, period_s=total / len(spans),
                calls_per_period=calls, clock_event_reasons=timer.tel.clock_event_reasons(),
                time_s=t, time_p10_s=t, time_p90_s=t, reps=len(spans) * calls,
                timing="period_events" if cuda else "host_clock", flops=flops, bytes=math.nan,
                achieved_flops_per_s=flops / t if t > 0 else math.nan, achieved_bytes_per_s=math.nan,
                sm_clock_mhz=clock, mem_clock_mhz=timer.tel.mem_clock_mhz(), power_w=power,
                energy_j=power * wall)
    return window


def idle_row(rec, timer, idle_s: float) -> None:
    """The board's idle power over idle_s seconds (no kernel), as a duty 0 row."""
    e0, w0 = timer.tel.energy_j(), time.perf_counter()
    time.sleep(idle_s)
    wall = time.perf_counter() - w0
    power = (timer.tel.energy_j() - e0) / wall
    rec.row("duty_sweep", bench="duty_sweep", kernel="idle", precision="", duty_target=0.0, window=1,
            elapsed_s=wall, temperature_c=timer.tel.temperature_c(), duty_frac=0.0, period_s=wall,
            calls_per_period=0, clock_event_reasons=timer.tel.clock_event_reasons(), time_s=wall,
            time_p10_s=wall, time_p90_s=wall, reps=0, timing="host_clock", flops=0.0, bytes=math.nan,
            achieved_flops_per_s=math.nan, achieved_bytes_per_s=math.nan, sm_clock_mhz=timer.tel.sm_clock_mhz(),
            mem_clock_mhz=timer.tel.mem_clock_mhz(), power_w=power, energy_j=power * wall)


def calls_for(fn, dev, busy_s: float) -> int:
    """Calls of fn that fill about busy_s of GPU time (at least one), from a short timed run."""
    fn()
    synchronize(dev)
    t0 = time.perf_counter()
    n = 3
    for _ in range(n):
        fn()
    synchronize(dev)
    per_call = (time.perf_counter() - t0) / n
    return max(1, round(busy_s / per_call)) if per_call > 0 else 1


def bench_duty_sweep(rec, timer, dev, deadline, quick, env):
    """The idle power, then the BF16 reference GEMM and FA2's 8K forward over their duty targets
    (module docstring); rows in duty_sweep.csv."""
    hold_s = 0.15 if quick else DUTY_HOLD_S
    window_s = 0.05 if quick else DUTY_WINDOW_S
    idle_row(rec, timer, 0.05 if quick else IDLE_S)
    d = QUICK_8B if quick else LLAMA_8B
    gemm_config, prec, gemm_fn, gemm_flops = gemm_cases(dev, quick)[0]
    length, batch = (64, 2) if quick else (FA2_LEN, FA2_BATCH)
    fa2_fn, fa2_flops = fa2_pass_fns(length, batch, d["heads"], d["head_dim"], dev)["fwd"]
    kernels = [(gemm_config, prec, gemm_fn, gemm_flops, DUTY_TARGETS_GEMM),
               (f"attention flash h={d['heads']} d={d['head_dim']} b={batch} q={length} kv={length} causal fwd",
                "bf16", fa2_fn, fa2_flops, DUTY_TARGETS_FA2)]
    for kernel, precision, fn, flops, targets in kernels:
        calls = calls_for(fn, dev, PERIOD_BUSY_S)
        for target in targets:
            if deadline.over():
                log("duty_sweep: time share spent, skipping the rest")
                return
            n = hold_duty(rec, timer, dev, kernel, precision, fn, flops, calls, target, hold_s, window_s)
            log(f"duty_sweep {duty_config(kernel, target)}: {calls} calls a period, {n} windows")
    del kernels
    free_memory()
