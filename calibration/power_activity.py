"""The board's dynamic power against the SM clock below a GEMM's own capped clock, from the same GEMM
on data of different activity (campaign s22tt, real/bench/power_activity.py; the rule:
docs/notes/s22tt_rule.md, written before the records).

Dynamic power = activity x h(f), h the chip's voltage-frequency curve (C V(f)^2 f), common to every
kernel; the activity depends on the data the tensor cores multiply. At one power limit P_limit a
kernel of dynamic power D_p at the maximum clock (read in the free regime, low duty, P = P_s + d D_p)
settles, run continuously, at the clock f_p where P_s + D_p h(f_p) = P_limit. So every kernel that the
limit holds gives a point of h:

    h(f_p) = (P_p - P_s) / D_p        (P_p: its continuous board power, at the limit)

and the local exponent k of h, log h = c + k log f over the lower clocks, is what a lower limit does to
a kernel's clock: f_cap / f_limit = ((P_cap - P_s) / (P_limit - P_s))^(1/k) (calibration.power_cap).

This module reads a duty_sweep.csv-schema file (the idle row first, then each kernel at duty 1.0 and at
free duties), and gives each kernel's capped point, free line and h, the fit with the rule's held-out
kernel left out, the held-out prediction and the rule's criteria. `python -m calibration.power_cap
--activity FILE` prints them with the 500 W card's figures under the fitted law.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

ACTIVITY_RECORDS = "power_activity.csv"   # calibration/measurements/<gpu>/, the campaign's duty_sweep.csv
SETTLED_WINDOW = 2                        # a 4 s point's windows from the 2nd second on
MAX_CLOCK_MHZ = 1980.0                    # H100/H200 SXM maximum SM clock (env.json max_sm_clock_mhz)
FREE_CLOCK_MHZ = 1975.0                   # a window at or above this is at the maximum clock
FREE_MAX_DUTY = 0.35                      # free-regime points (s14tt: the GEMM is free at duty <= 0.42)
FIT_MAX_CLOCK_MHZ = 1700.0                # the local fit's clocks: where the 500 W clocks of GEMMs and FA2 lie
HELD_OUT = ("data=randn", "bf16")         # the BF16 GEMM on Gaussian data: clock_frac's kernel, held out
POWER_CAP_REASON = 0x4                    # nvmlClocksEventReasonSwPowerCap
GPU_NAME = "NVIDIA H100 80GB HBM3"


def capped_bits(reasons) -> np.ndarray:
    """NVML's clock-event reasons (floats, NaN where unread) -> whether the software power cap is set."""
    r = np.nan_to_num(np.asarray(reasons, dtype=float), nan=0.0).astype(np.int64)
    return (r & POWER_CAP_REASON) != 0


def idle_w(df: pd.DataFrame) -> float:
    """The campaign's idle board power (its `idle` row)."""
    rows = df[df["kernel"] == "idle"]
    if rows.empty:
        raise ValueError("power_activity records: no idle row")
    return float(rows["power_w"].median())


def is_held_out(kernel: str, precision: str) -> bool:
    return kernel.endswith(HELD_OUT[0]) and precision == HELD_OUT[1]


def kernel_point(g: pd.DataFrame, static_w: float) -> dict:
    """One kernel's figures from its settled windows: the capped point (medians at duty 1.0), the free
    line through P_s (D, rms), the unconstrained free line's intercept, and h = (P - P_s) / D."""
    g = g[g["window"] >= SETTLED_WINDOW]
    full = g[g["duty_target"] >= 1.0]
    caps = capped_bits(full["clock_event_reasons"])
    point = {"power_w": float(full["power_w"].median()) if len(full) else math.nan,
             "clock_mhz": float(full["sm_clock_mhz"].median()) if len(full) else math.nan,
             "time_s": float(full["time_s"].median()) if len(full) else math.nan,
             "capped_windows": int(caps.sum()), "full_windows": int(len(full))}
    point["capped"] = bool(len(full) and caps.sum() * 2 > len(full) and point["clock_mhz"] < FREE_CLOCK_MHZ)
    free = g[(g["duty_target"] <= FREE_MAX_DUTY) & ~capped_bits(g["clock_event_reasons"])
             & (g["sm_clock_mhz"] >= FREE_CLOCK_MHZ)]
    d, p = free["duty_frac"].to_numpy(float), free["power_w"].to_numpy(float)
    point.update(free_windows=int(len(free)), free_targets=int(free["duty_target"].nunique()))
    if len(free) >= 2:
        dyn = float(np.sum(d * (p - static_w)) / np.sum(d * d))
        point["dynamic_w"] = dyn
        point["free_rms_w"] = float(np.sqrt(np.mean((static_w + d * dyn - p) ** 2)))
        slope, intercept = np.polyfit(d, p, 1) if free["duty_target"].nunique() >= 2 else (math.nan, math.nan)
        point["free_intercept_w"] = float(intercept)
        point["h"] = (point["power_w"] - static_w) / dyn if dyn > 0 else math.nan
    else:
        point.update(dynamic_w=math.nan, free_rms_w=math.nan, free_intercept_w=math.nan, h=math.nan)
    return point


def kernel_points(df: pd.DataFrame) -> list[dict]:
    """Every kernel's figures (kernel_point), in the records' order, with its name and precision."""
    static_w = idle_w(df)
    out = []
    for (kernel, precision), g in df[df["kernel"] != "idle"].groupby(["kernel", "precision"], sort=False):
        out.append({"kernel": str(kernel), "precision": str(precision),
                    "held_out": is_held_out(str(kernel), str(precision)), **kernel_point(g, static_w)})
    return out


def fit_points(points: list[dict]) -> list[dict]:
    """The points the rule fits: capped, with an h, at or below FIT_MAX_CLOCK_MHZ, not held out."""
    return [p for p in points if p["capped"] and not p["held_out"] and p["clock_mhz"] <= FIT_MAX_CLOCK_MHZ
            and p["h"] > 0 and not math.isnan(p["h"])]


def fit_local_exponent(points: list[dict]) -> dict:
    """Least squares of log h = c + k log f over fit_points: {c, k, n, span_mhz, rms (of log h)}."""
    pts = fit_points(points)
    if len(pts) < 2:
        return {"c": math.nan, "k": math.nan, "n": len(pts), "span_mhz": 0.0, "rms": math.nan}
    x = np.log([p["clock_mhz"] for p in pts])
    y = np.log([p["h"] for p in pts])
    k, c = np.polyfit(x, y, 1)
    rms = float(np.sqrt(np.mean((c + k * x - y) ** 2))) if len(pts) >= 3 else math.nan
    clocks = [p["clock_mhz"] for p in pts]
    return {"c": float(c), "k": float(k), "n": len(pts), "span_mhz": max(clocks) - min(clocks), "rms": rms}


def predicted_clock_mhz(fit: dict, h: float) -> float:
    """The clock at which the fitted curve reaches h: exp((log h - c) / k)."""
    return float(math.exp((math.log(h) - fit["c"]) / fit["k"]))


def criteria(df: pd.DataFrame, points: list[dict] | None = None, fit: dict | None = None) -> dict:
    """The rule's M1-M3 and H1: name -> (holds, figures)."""
    points = points if points is not None else kernel_points(df)
    fit = fit if fit is not None else fit_local_exponent(points)
    static_w = idle_w(df)
    held = next((p for p in points if p["held_out"]), None)
    fp8 = next((p for p in points if p["precision"].startswith("fp8")), None)
    out = {}
    names = set(df["gpu_name"].astype(str))
    m1 = names == {GPU_NAME} and held is not None and fp8 is not None and all(
        p["full_windows"] > 0 and p["capped_windows"] == p["full_windows"] and 680.0 <= p["power_w"] <= 720.0
        for p in (held, fp8))
    out["M1"] = (m1, {"gpus": sorted(names), "held_out": held and (held["power_w"], held["capped_windows"], held["full_windows"]),
                      "fp8": fp8 and (fp8["power_w"], fp8["capped_windows"], fp8["full_windows"])})
    used = fit_points(points) + ([held] if held else [])
    m2 = bool(held) and all(p["free_windows"] >= 2 and p["free_targets"] >= 2 and p["free_rms_w"] <= 20.0
                            and abs(p["free_intercept_w"] - static_w) <= 25.0 for p in used)
    out["M2"] = (m2, {p["kernel"] + " " + p["precision"]: (p["free_windows"], p["free_targets"],
                                                           round(p["free_rms_w"], 1), round(p["free_intercept_w"], 1))
                      for p in used})
    below = held is not None and any(p["clock_mhz"] < held["clock_mhz"] for p in fit_points(points))
    m3 = (fit["n"] >= 2 and fit["span_mhz"] >= 150.0 and below and 1.0 <= fit["k"] <= 4.0
          and (fit["n"] < 3 or fit["rms"] <= 0.05))
    out["M3"] = (bool(m3), {"n": fit["n"], "span_mhz": fit["span_mhz"], "k": fit["k"], "rms": fit["rms"],
                            "a point below the held-out clock": below})
    if held is not None and held["h"] > 0 and not math.isnan(fit["k"]):
        f = predicted_clock_mhz(fit, held["h"])
        err = f / held["clock_mhz"] - 1.0
        out["H1"] = (abs(err) <= 0.03, {"measured_mhz": held["clock_mhz"], "predicted_mhz": f, "error": err})
    else:
        out["H1"] = (False, {"held_out": None if held is None else held["h"]})
    return out


def law_exponent(df: pd.DataFrame) -> float:
    """The fitted local exponent k (calibration.power_cap.power_law uses it where the rule adopted it)."""
    return fit_local_exponent(kernel_points(df))["k"]
