"""The power law's exponent below a kernel's own clock at our limit, from campaign s15ttpw
(real/bench/copy_load.py; rule: docs/notes/s15tt_rule.md part C).

A kernel runs back to back at our 700 W limit while n side streams of device-to-device copies (copy
engines) draw C(n) watts above idle; the SM side is left D(n) = P_board(n) - P_idle - C(n), below
what the kernel alone gets, and runs at a lower speed s(n). The law calibration.power_cap applies,
with speed in place of clock since the twin applies its factor to speed:

    D ~ s^k,   so under a limit W:  s_W / s_700 = ((W - P_idle) / (P_700 - P_idle))^(1/k)

k is fitted on the BF16 GEMM (the kernel clock_frac is derived from) by least squares of
log D = c + k log s over its settled windows; the FP8 tensorwise GEMM and FA2 are held out.

    python -m calibration.copy_load calibration/measurements/h100/copy_load.csv
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.records_io import read_csv

COPY_LOAD_RECORDS = "copy_load.csv"
SETTLED_WINDOW = 2                 # a 4 s point's windows from the 2nd second on
POWER_CAP_REASON = 0x4             # nvmlClocksEventReasonSwPowerCap
LAW_KERNEL = ("gemm m=8192", "bf16")        # clock_frac's kernel (sustained.csv's BF16 GEMM)
FP8_KERNEL = ("gemm m=", "fp8-tensor")      # torchtitan's 8B w1, FP8 tensorwise
FA2_KERNEL = ("attention flash", "bf16")    # FA2's causal 8K forward


@dataclass(frozen=True)
class KernelPoint:
    """One kernel at one copy-stream count: medians over its settled windows."""
    copy_streams: int
    power_w: float
    speed_per_s: float     # 1 / time per call
    clock_mhz: float
    copy_bytes_per_s: float
    capped_frac: float     # share of its settled windows with the power-cap reason


def _capped(reasons) -> np.ndarray:
    r = np.nan_to_num(np.asarray(reasons, dtype=float), nan=0.0).astype(np.int64)
    return (r & POWER_CAP_REASON) != 0


def settled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["window"] >= SETTLED_WINDOW]


def idle_w(df: pd.DataFrame) -> float:
    """The board's idle power in this file (its `idle` row)."""
    return float(df.loc[df["kernel"] == "idle", "power_w"].median())


def copies_alone(df: pd.DataFrame, idle: float | None = None) -> dict[int, tuple[float, float, float]]:
    """copy streams -> (draw above idle W, copy bytes/s, share of windows power-capped) of the copies alone
    (idle: the static part, default the file's idle row)."""
    idle = idle_w(df) if idle is None else idle
    alone = settled(df[df["kernel"] == "copies only"])
    return {int(n): (float(g["power_w"].median()) - idle, float(g["copy_bytes_per_s"].median()),
                     float(_capped(g["clock_event_reasons"]).mean()))
            for n, g in alone.groupby("copy_streams")}


def kernel_points(df: pd.DataFrame, kernel: tuple[str, str]) -> list[KernelPoint]:
    """A kernel's (name prefix, precision) points, by copy-stream count."""
    prefix, precision = kernel
    rows = settled(df[df["kernel"].astype(str).str.startswith(prefix) & (df["precision"] == precision)])
    out = []
    for n, g in rows.groupby("copy_streams"):
        out.append(KernelPoint(int(n), float(g["power_w"].median()), 1.0 / float(g["time_s"].median()),
                               float(g["sm_clock_mhz"].median()), float(g["copy_bytes_per_s"].median()),
                               float(_capped(g["clock_event_reasons"]).mean())))
    return sorted(out, key=lambda p: p.copy_streams)


def sm_budget_w(point: KernelPoint, idle: float, alone: dict) -> float:
    """D(n): the board power left to the SMs beside n copy streams."""
    return point.power_w - idle - (alone[point.copy_streams][0] if point.copy_streams else 0.0)


def fit_exponent(df: pd.DataFrame, kernel: tuple[str, str] = LAW_KERNEL, on: str = "speed",
                 idle: float | None = None) -> tuple[float, float]:
    """(k, rms of log D) of log D = c + k log s over the kernel's settled windows (on="clock": the SM
    clock in place of the speed, a diagnostic)."""
    idle = idle_w(df) if idle is None else idle
    alone = copies_alone(df, idle)
    prefix, precision = kernel
    rows = settled(df[df["kernel"].astype(str).str.startswith(prefix) & (df["precision"] == precision)])
    copy_w = rows["copy_streams"].map(lambda n: alone[int(n)][0] if n else 0.0).to_numpy(float)
    d = rows["power_w"].to_numpy(float) - idle - copy_w
    s = 1.0 / rows["time_s"].to_numpy(float) if on == "speed" else rows["sm_clock_mhz"].to_numpy(float)
    if len(d) < 3 or (d <= 0).any():
        raise ValueError(f"copy_load: {len(d)} usable windows of {kernel!r}")
    a = np.vstack([np.ones(len(s)), np.log(s)]).T
    coef, *_ = np.linalg.lstsq(a, np.log(d), rcond=None)
    rms = float(np.sqrt(np.mean((a @ coef - np.log(d)) ** 2)))
    return float(coef[1]), rms


def predicted_speed_ratio(points: list[KernelPoint], idle: float, alone: dict, k: float) -> tuple[float, float]:
    """(predicted, measured) s(n_max) / s(0) of a kernel under exponent k, from its own D(0), D(n_max)."""
    p0, pn = points[0], points[-1]
    pred = (sm_budget_w(pn, idle, alone) / sm_budget_w(p0, idle, alone)) ** (1.0 / k)
    return pred, pn.speed_per_s / p0.speed_per_s


def criteria(df: pd.DataFrame, idle: float | None = None) -> dict:
    """docs/notes/s15tt_rule.md part C, M1-M6: {name: (holds, figures)} (idle: the law's static part,
    default the file's idle row)."""
    idle = idle_w(df) if idle is None else idle
    alone = copies_alone(df, idle)
    n_max = max(alone) if alone else 0
    bf16, fp8, fa2 = (kernel_points(df, k) for k in (LAW_KERNEL, FP8_KERNEL, FA2_KERNEL))
    out = {}
    b0 = settled(df[df["kernel"].astype(str).str.startswith(LAW_KERNEL[0]) & (df["precision"] == LAW_KERNEL[1])
                    & (df["copy_streams"] == 0)])
    m1 = (len(b0) > 0 and bool(((b0["power_w"] >= 680) & (b0["power_w"] <= 720)).all())
          and bool(_capped(b0["clock_event_reasons"]).all())
          and bool(b0["gpu_name"].astype(str).str.contains("H100").all()))
    out["M1 H100 at 700 W, capped"] = (m1, {"power_w": [round(float(p), 1) for p in b0["power_w"]]})
    draw = alone.get(n_max, (math.nan, math.nan, 1.0))
    out["M2 copies draw >= 60 W, uncapped"] = (draw[0] >= 60.0 and draw[2] == 0.0,
                                               {"copy_streams": n_max, "draw_w": draw[0], "capped_frac": draw[2]})
    m3, m4, f3, f4 = True, True, {}, {}
    for name, pts in (("bf16", bf16), ("fp8", fp8)):
        ok = len(pts) >= 2 and all(p.capped_frac == 1.0 for p in pts) and pts[-1].speed_per_s <= 0.97 * pts[0].speed_per_s
        m3 &= ok
        f3[name] = {"capped": [p.capped_frac for p in pts], "speed_ratio": pts[-1].speed_per_s / pts[0].speed_per_s if pts else math.nan}
        rel = [p.copy_bytes_per_s / alone[p.copy_streams][1] - 1.0 for p in pts if p.copy_streams]
        m4 &= bool(rel) and max(abs(r) for r in rel) <= 0.15
        f4[name] = [round(r, 3) for r in rel]
    out["M3 GEMMs capped, slowed >= 3%"] = (m3, f3)
    out["M4 copy rate beside GEMMs within 15%"] = (m4, f4)
    k, rms = fit_exponent(df, idle=idle)
    out["M5 BF16 fit"] = (1.0 <= k <= 4.0 and rms <= 0.03, {"k": k, "rms_log": rms})
    f6, m6 = {}, True
    for name, pts, tol in (("fp8", fp8, 0.03), ("fa2", fa2, 0.05)):
        if len(pts) < 2:
            m6, f6[name] = False, "no points"
            continue
        pred, meas = predicted_speed_ratio(pts, idle, alone, k)
        m6 &= abs(pred / meas - 1.0) <= tol
        f6[name] = {"predicted": pred, "measured": meas, "error": pred / meas - 1.0}
    out["M6 held out FP8 / FA2"] = (m6, f6)
    return out


def measured_exponent(path: Path | str, idle: float | None = None) -> float:
    """The law's exponent from a copy_load.csv (the BF16 GEMM's fit, static part `idle`)."""
    return fit_exponent(read_csv(path), idle=idle)[0]


def static_power_w(gpu: str = "h100") -> float:
    """The law's static part: the measured idle power of gpu/power.csv (config `idle`), as
    calibration.power_cap.idle_power_w reads it (not imported: power_cap reads this module)."""
    p = read_csv(Path(rec.MEASUREMENTS_DIR) / gpu / "power.csv")
    return float(p.loc[p["config"] == "idle", "power_w"].median())


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.copy_load", __doc__)
    ap.add_argument("csv", type=entry.csv_file, metavar="COPY_LOAD_CSV", help="a copy_load.csv of campaign s15ttpw")
    args = ap.parse_args(argv)
    with entry.user_inputs("COPY_LOAD_CSV", args.csv, "a copy_load.csv as real/bench/copy_load.py writes it"):
        return _report(read_csv(args.csv), str(args.csv))


def _report(df: pd.DataFrame, name: str) -> int:
    idle = static_power_w()   # the law's static part (power.csv: a clocked idle board, s14tt)
    alone = copies_alone(df, idle)
    clk = settled(df[df["kernel"] == "copies only"]).groupby("copy_streams")["sm_clock_mhz"].median().to_dict()
    print(f"{name}: static part {idle:.0f} W (h100/power.csv; this file's idle row {idle_w(df):.0f} W); "
          f"copies-only SM clock by streams {clk}; copies alone (streams: W above idle, GB/s, capped share): "
          + ", ".join(f"{n}: {w:.0f} W {b / 1e9:.0f} GB/s {c:.2f}" for n, (w, b, c) in sorted(alone.items())))
    for name, kernel in (("BF16 GEMM", LAW_KERNEL), ("FP8 GEMM", FP8_KERNEL), ("FA2 fwd 8K", FA2_KERNEL)):
        for p in kernel_points(df, kernel):
            print(f"  {name:10s} x{p.copy_streams}: {p.power_w:5.0f} W, SM budget {sm_budget_w(p, idle, alone):5.0f} W, "
                  f"{p.clock_mhz:5.0f} MHz, speed {p.speed_per_s:8.2f}/s, copies {p.copy_bytes_per_s / 1e9:5.0f} GB/s, "
                  f"capped {p.capped_frac:.2f}")
    for name, kernel in (("BF16 GEMM", LAW_KERNEL), ("FP8 GEMM", FP8_KERNEL), ("FA2 fwd 8K", FA2_KERNEL)):
        try:
            (ks, rs), (kc, rc) = fit_exponent(df, kernel, idle=idle), fit_exponent(df, kernel, on="clock", idle=idle)
            print(f"  {name}: k on speed {ks:.2f} (rms {rs:.3f}), on clock {kc:.2f} (rms {rc:.3f})")
        except ValueError as e:
            print(f"  {name}: {e}")
    ok = True
    for name, (holds, figures) in criteria(df, idle).items():
        ok &= holds
        print(f"{name}: {'holds' if holds else 'FAILS'} {figures}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
