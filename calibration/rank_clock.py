"""A pipeline rank's SM clock under the card's power limit, from its own predicted duty and kernel mix (s31clk, issue 13).

s30fb (docs/notes/s30fb.md §2) measured DualPipeV at pp 2 on 2xH200: the rank holding both end stages (no bubbles)
sits at the 700 W limit at ~1,695 MHz while the other runs ~1,920 MHz, and one kernel takes the same cycles on both
(cuDNN SDPA forward 2,237 / 2,244 thousand cycles), so the capped rank's compute-bound kernels run ~13% long. 1F1B and
ZB1P ranks (bubbles on both) draw ~480-520 W at 1,980 MHz. The twin priced every rank at one rate.

The law (the board-power model of calibration.power_cap, its assumption stated there: a static part, the measured
idle power, plus a dynamic part that grows as (f / f_max)^k, k = DYNAMIC_POWER_EXPONENT = 3):

    P_r(f) = P_s + (f / f_max)^k x (u_compute(f) x D_compute + u_memory x D_memory)

u_c: the fraction of the step the rank's GPU runs kernels of class c (the twin's own kernel seconds of the rank's ops,
calibration.pipeline's stage_kernel_s summed over its program, over the step's makespan); compute = GEMM, grouped GEMM
and attention kernels, memory = every other kernel (elementwise, copies, fills, launch-bound kernels); D_c: a class's
dynamic power at f_max per unit of duty (fitted: calibration.s31clk fit, on s30fb's clock records only). A rank runs at
f_r = f_max where P_r(f_max) <= P_limit, else at the f_r with P_r(f_r) = P_limit.

What the clock does to the rank's kernels: compute-bound kernels take the same cycles (s30fb §2), so they stretch by
f_max / f_r, which stretches u_compute as well: u_compute(f) = t_compute x (f_max / f) / max(T, t_compute x f_max / f
+ t_memory) (T, the twin's makespan at f_max; a rank whose own kernel time outgrows it sets the step). Memory-bound
kernels are held at their rate: the HBM clock does not move with the SM clock (s30fb measured dsv2's memory kernels
1.07-1.08x on the capped rank against a 1.13 clock ratio, mixtral's 1.01 against 1.07: partly, not fitted here; the
rule states it). The twin's kernel rates are taken as an uncapped rank's (f_max = the card's maximum SM clock,
1,980 MHz on H100 / H200 SXM: env.json max_sm_clock_mhz); a rank below the limit is not moved.

Pure functions only; calibration.pipeline applies the factors (ADOPT_RANK_POWER_CLOCK).
"""

from __future__ import annotations

from calibration.power_cap import DYNAMIC_POWER_EXPONENT, MAX_SM_CLOCK_MHZ

COMPUTE_COMPONENTS = ("gemm", "grouped_gemm", "attention")
CLOCK_TOL_MHZ = 0.01
# GPU name -> the law's inputs: static_w (the card's measured idle power, calibration/measurements/h200/power.csv row
# `idle`: 124.2 W), compute_w / memory_w (D_compute, D_memory: `python -m calibration.s31clk fit` on s30fb's records,
# h200x2/s30fb_20261128_2153, fitting set; a test keeps these equal to the live fit)
RANK_POWER: dict[str, dict] = {"NVIDIA H200 SXM5 141GB": {"static_w": 124.2, "compute_w": 1082.2, "memory_w": 299.3}}


def rank_kernel_s(schedule, stage_kernel_s: dict) -> list[dict]:
    """Per pipeline rank, its kernels' GPU seconds per class over one step: {"compute": s, "memory": s}, from each
    model stage's per-micro-batch kernel seconds by op kind ({stage: {"F" | "B" | "W": {component: s}}},
    calibration.pipeline.simulate_row's stage_kernel_s) and the rank's program (an FB pair: F of its chunk, B of its
    b_chunk, W too unless split; BW: B and W)."""
    out = []
    for rank, program in enumerate(schedule.programs):
        acc = {"compute": 0.0, "memory": 0.0}
        for op in program:
            if op.kind == "FB":
                parts = [("F", op.chunk), ("B", op.b_chunk)] + ([] if op.b_split else [("W", op.b_chunk)])
            elif op.kind == "BW":
                parts = [("B", op.chunk), ("W", op.chunk)]
            elif op.kind in ("F", "B", "W"):
                parts = [(op.kind, op.chunk)]
            else:
                parts = []
            for kind, chunk in parts:
                for c, s in stage_kernel_s[schedule.stage_of(rank, chunk)][kind].items():
                    if c == "nccl":
                        continue
                    acc["compute" if c in COMPUTE_COMPONENTS else "memory"] += float(s)
        out.append(acc)
    return out


def power_w(clock_mhz: float, compute_s: float, memory_s: float, makespan_s: float, law: dict,
            exponent: float = DYNAMIC_POWER_EXPONENT) -> float:
    """The rank's board power at `clock_mhz` (the law above; compute_s / memory_s its kernel seconds at f_max)."""
    stretch = MAX_SM_CLOCK_MHZ / clock_mhz
    span = max(makespan_s, compute_s * stretch + memory_s)
    u_compute, u_memory = compute_s * stretch / span, memory_s / span
    x = clock_mhz / MAX_SM_CLOCK_MHZ
    return law["static_w"] + x ** exponent * (u_compute * law["compute_w"] + u_memory * law["memory_w"])


def rank_clock_mhz(compute_s: float, memory_s: float, makespan_s: float, law: dict, limit_w: float,
                   exponent: float = DYNAMIC_POWER_EXPONENT) -> float:
    """The clock the rank settles at under `limit_w`: f_max where it draws no more there, else the root of
    power_w(f) = limit_w (bisection; power_w rises with f). A limit at or below the static part: nan."""
    if makespan_s <= 0 or power_w(MAX_SM_CLOCK_MHZ, compute_s, memory_s, makespan_s, law, exponent) <= limit_w:
        return MAX_SM_CLOCK_MHZ
    if limit_w <= law["static_w"]:
        return float("nan")
    lo, hi = 1.0, MAX_SM_CLOCK_MHZ
    while hi - lo > CLOCK_TOL_MHZ:
        mid = 0.5 * (lo + hi)
        if power_w(mid, compute_s, memory_s, makespan_s, law, exponent) > limit_w:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def clock_scale(clock_mhz: float) -> dict:
    """calibration.predict.stage_kernel_scale's factors for a rank at `clock_mhz`: its compute-bound kernels (both
    directions, "fb" and "w") at f_max / f; memory-bound kernels unscaled. {} at f_max."""
    k = MAX_SM_CLOCK_MHZ / clock_mhz
    if abs(k - 1.0) < 1e-12:
        return {}
    return {(d, c): k for d in ("fb", "w") for c in COMPUTE_COMPONENTS}
