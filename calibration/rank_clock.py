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


def rank_component_s(schedule, stage_kernel_s: dict) -> list[dict]:
    """Per pipeline rank, its kernels' GPU seconds per component over one step ({component: s}, NCCL left out), from
    each model stage's per-micro-batch kernel seconds by op kind ({stage: {"F" | "B" | "W": {component: s}}},
    calibration.pipeline.simulate_row's stage_kernel_s) and the rank's program (an FB pair: F of its chunk, B of its
    b_chunk, W too unless split; BW: B and W)."""
    out = []
    for rank, program in enumerate(schedule.programs):
        acc: dict[str, float] = {}
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
                for c, sec in stage_kernel_s[schedule.stage_of(rank, chunk)][kind].items():
                    if c != "nccl":
                        acc[c] = acc.get(c, 0.0) + float(sec)
        out.append(acc)
    return out


def rank_kernel_s(schedule, stage_kernel_s: dict) -> list[dict]:
    """Per pipeline rank, its kernels' GPU seconds per class over one step: {"compute": s, "memory": s}
    (rank_component_s, compute = COMPUTE_COMPONENTS)."""
    return [{"compute": sum(s for c, s in acc.items() if c in COMPUTE_COMPONENTS),
             "memory": sum(s for c, s in acc.items() if c not in COMPUTE_COMPONENTS)}
            for acc in rank_component_s(schedule, stage_kernel_s)]


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


# s31clk2 (round 2, docs/notes/s31clk2_rule.md): the twin's compute-bound kernel rates describe the clock their fitting
# records ran at, not f_max. Per GPU and kernel class, that reference clock (the time-weighted median SM clock of the
# fitting split's BF16 rows of the class's records: gemm.csv `gemm`; gemm.csv `grouped_gemm` + `grouped_gemm_wgrad`;
# attention.csv `attn_fwd` + `attn_bwd`; `python -m calibration.s31clk2 refs`, a test keeps these equal to the live
# figures). A rank at clock f runs a class's kernels at ref / f of the twin's time, both ways (faster above ref).
REF_CLOCK_MHZ: dict[str, dict] = {"NVIDIA H200 SXM5 141GB": {"gemm": 1545.0, "grouped_gemm": 1485.0,
                                                             "attention": 1755.0}}
# GPU name -> the factor on a pipeline rank's memory-bound kernels (component `memory`; launch-bound kernels keep
# launch_s) beside the reference clocks: least squares of each rank's measured compute-op seconds per step (F / B / W
# / BW / FB spans, median over timed steps) = sum_class twin seconds x ref / f_measured + factor x twin memory seconds
# (+ the rest as priced) over s30fb's and s31clk's PP2 rank-rows (`python -m calibration.s31clk2 fit`; a test keeps it
# equal to the live fit). Left free, the three reference clocks come out 1,536 / 1,397 / 1,831 MHz beside the
# records' 1,545 / 1,485 / 1,755 (docs/notes/s31clk2.md).
MEMORY_SCALE: dict[str, float] = {"NVIDIA H200 SXM5 141GB": 1.258}
# the power law's classes (round 2): dense GEMM, grouped GEMM with attention, memory (every other kernel)
POWER_CLASS = {"gemm": "gemm", "grouped_gemm": "grouped", "attention": "grouped"}
POWER_CLASSES = ("gemm", "grouped", "memory")
# GPU name -> static_w (h200/power.csv `idle`, 124.2 W) and each class's dynamic power at f_max per unit of duty
# (<class>_w: `python -m calibration.s31clk2 fit` on s30fb + s31clk + s31clk1's clock records; a test keeps these equal
# to the live fit)
RANK_POWER_REF: dict[str, dict] = {"NVIDIA H200 SXM5 141GB": {"static_w": 124.2, "gemm_w": 1431.4, "grouped_w": 1637.7,
                                                              "memory_w": 168.6}}


def class_seconds(clock_mhz: float, component_s: dict, ref: dict, memory_scale: float = 1.0) -> dict:
    """Each power class's kernel seconds at `clock_mhz`: compute components at ref[c] / f of the twin's time, the
    `memory` component at memory_scale x, the rest as priced."""
    t = {k: 0.0 for k in POWER_CLASSES}
    for c, sec in component_s.items():
        t[POWER_CLASS.get(c, "memory")] += sec * (ref[c] / clock_mhz if c in ref else
                                                  memory_scale if c == "memory" else 1.0)
    return t


def class_duty(clock_mhz: float, component_s: dict, span_s: float, ref: dict, memory_scale: float = 1.0) -> dict:
    """Each power class's duty at `clock_mhz`: class_seconds over max(span_s, the rank's own kernel seconds there)."""
    t = class_seconds(clock_mhz, component_s, ref, memory_scale)
    span = max(span_s, sum(t.values()))
    return {k: v / span if span > 0 else 0.0 for k, v in t.items()}


def power_ref_w(clock_mhz: float, component_s: dict, span_s: float, law: dict, ref: dict,
                memory_scale: float = 1.0, exponent: float = DYNAMIC_POWER_EXPONENT) -> float:
    """The rank's board power at `clock_mhz` (round 2's law: P_s + (f / f_max)^k x sum_class u_class D_class)."""
    u = class_duty(clock_mhz, component_s, span_s, ref, memory_scale)
    x = clock_mhz / MAX_SM_CLOCK_MHZ
    return law["static_w"] + x ** exponent * sum(u[k] * law[f"{k}_w"] for k in POWER_CLASSES)


def rank_ref_clock_mhz(component_s: dict, span_s: float, law: dict, ref: dict, limit_w: float,
                       memory_scale: float = 1.0, exponent: float = DYNAMIC_POWER_EXPONENT) -> float:
    """The clock the rank settles at under `limit_w` by round 2's law: f_max where it draws no more there, else the
    root of power_ref_w(f) = limit_w (bisection); a limit at or below the static part: nan."""
    p = lambda f: power_ref_w(f, component_s, span_s, law, ref, memory_scale, exponent)   # noqa: E731
    if span_s <= 0 or p(MAX_SM_CLOCK_MHZ) <= limit_w:
        return MAX_SM_CLOCK_MHZ
    if limit_w <= law["static_w"]:
        return float("nan")
    lo, hi = 1.0, MAX_SM_CLOCK_MHZ
    while hi - lo > CLOCK_TOL_MHZ:
        mid = 0.5 * (lo + hi)
        if p(mid) > limit_w:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def ref_clock_scale(clock_mhz: float, ref: dict, memory_scale: float = 1.0) -> dict:
    """calibration.predict.stage_kernel_scale's factors for a rank at `clock_mhz` (round 2): each compute class's
    kernels (both directions) at ref[c] / f, memory-bound kernels at memory_scale."""
    out = {(d, c): ref[c] / clock_mhz for d in ("fb", "w") for c in COMPUTE_COMPONENTS if c in ref}
    return out | ({(d, "memory"): memory_scale for d in ("fb", "w")} if memory_scale != 1.0 else {})
