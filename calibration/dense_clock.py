"""The dense BF16 curve's timing conventions and the sustained ratio taken against the curve (session
s25dense, issue 13; rule, change and criteria: docs/notes/s25dense_rule.md, committed before campaign
s25dense ran).

Three timings of one dense BF16 GEMM give three speeds: a burst (s24align3's 3 replays of >= 5 ms after a
pause) at boost clocks, the curve's own loops (gemm.csv: >= 0.1 s a shape, shapes back to back) lower, a
hold at the 700 W limit lowest. Validation predicts real records on the fitted profile (the loops' curve);
the twin plans with the simulation profile (twin.costs.profile.load_profile: the curves at sustained load).
The change judged here: the simulation profile's BF16 curve scaled by the curve's own time at
sustained.csv's held shape over the held time (Profile.sustained_vs_curve, calibration.fit
.sustained_vs_curve) instead of the burst row's time over it, for the GPUs
twin.costs.profile.ADOPT_SUSTAINED_VS_CURVE names.

Campaign s25dense (real/bench/dense_clock.py, calibration/measurements/<gpu>/s25dense/dense_clock.csv):
fresh GEMMs and linear-layer triples each as a burst, a loop and a 3 s hold; an eager SwiGLU MLP step held
3 s, its kernels profiled at the end of the hold. Here: each case's steady held time (windows from
STEADY_FROM_S on) against the simulation profile with the switch off and on (criteria 1-3), and the
burst and loop rows against the fitted profile (reported).

    python -m calibration.dense_clock [--gpu h100] [--write]   (--write: the profiles' sustained_vs_curve)
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.fit import sustained_ratios, sustained_vs_curve
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv
from twin.core.atomic import write_text
from twin.costs import compute
from twin.costs import profile as profile_mod
from twin.costs.profile import fitted_profile, load_profile, profile_from_json

RECORDS = Path("s25dense") / "dense_clock.csv"
RECORDS2 = Path("s25dense2") / "dense_clock.csv"   # round 2 (the rule's "Round 2": report only)
STEADY_FROM_S = 1.5          # the rule: the hold windows that start at or after 1.5 s
GEMM_KERNEL = re.compile(r"nvjet|gemm|cutlass", re.IGNORECASE)   # the rule's GEMM kernels of the MLP step
TRIPLE_PASSES = ("fwd", "dgrad", "wgrad")


def vs_curve_terms(gpu: str, root: Path | str | None = None) -> dict:
    """The GPU's sustained_vs_curve from its sustained.csv and its committed (fitted) profile."""
    root = rec.records_root() if root is None else root
    _, per_kernel = sustained_ratios(Path(root) / gpu / "sustained.csv")
    return sustained_vs_curve(per_kernel, fitted_profile(gpu), gpu_spec(gpu))


def write_vs_curve(gpu: str, root: Path | str | None = None, profiles_dir=profile_mod.PROFILES) -> dict:
    """Write `sustained_vs_curve` into the committed profile JSON (beside sustained_curves; nothing else
    changes, no refit) and return it."""
    root = rec.records_root() if root is None else root
    path = Path(str(profiles_dir)) / f"{gpu}.json"
    data = json.loads(path.read_text())
    terms = vs_curve_terms(gpu, root)
    out = {}
    for key, value in data.items():
        if key != "sustained_vs_curve":
            out[key] = value
        if key == "sustained_curves":
            out["sustained_vs_curve"] = terms
    profile_from_json(out)   # still a profile
    write_text(path, json.dumps(out, indent=1, sort_keys=False) + "\n")
    return terms


@contextmanager
def vs_curve(on: bool, gpu: str):
    """The twin with ADOPT_SUSTAINED_VS_CURVE naming `gpu` (on) or nothing (off); restored after. s28tt2's
    ADOPT_SUSTAINED_FROM_HELD (adopted later) is held off inside, so s25dense's off / on stay what it judged."""
    saved = profile_mod.ADOPT_SUSTAINED_VS_CURVE, profile_mod.ADOPT_SUSTAINED_FROM_HELD
    profile_mod.ADOPT_SUSTAINED_VS_CURVE = (gpu,) if on else ()
    profile_mod.ADOPT_SUSTAINED_FROM_HELD = False
    try:
        yield
    finally:
        profile_mod.ADOPT_SUSTAINED_VS_CURVE, profile_mod.ADOPT_SUSTAINED_FROM_HELD = saved


def load(gpu: str, root: Path | str | None = None, records: Path = RECORDS) -> pd.DataFrame:
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / records
    return read_csv(path) if csv_exists(path) else pd.DataFrame()


def case_gemms(r) -> list[tuple[int, int, int]]:
    """The (m, n, k) of each GEMM a case runs: a GEMM's own; a triple's forward (T, O, I), input
    gradient (T, I, O), weight gradient (O, I, T); the SwiGLU MLP step's 9 (w1 and w3 forward (T, F, D),
    w2 forward (T, D, F); w2's input gradient (T, F, D) and weight gradient (D, F, T); w1's and w3's input
    gradients (T, D, F) and weight gradients (F, D, T))."""
    if r["kind"] == "gemm":
        return [(int(r["m"]), int(r["n"]), int(r["k"]))]
    if r["kind"] == "triple":
        o, i, t = int(r["outputs"]), int(r["inputs"]), int(r["tokens"])
        return [(t, o, i), (t, i, o), (o, i, t)]
    t, d, f = int(r["tokens"]), int(r["hidden"]), int(r["ffn"])
    return [(t, f, d)] * 3 + [(t, d, f)] * 3 + [(d, f, t)] + [(f, d, t)] * 2


def twin_s(r, gpu: str, prof) -> float:
    """The twin's GEMM seconds of a case's row on a profile: the sum of its GEMMs' gemm_time_s."""
    spec = gpu_spec(gpu)
    return sum(compute.gemm_time_s(m, n, k, "bf16", spec, prof) for m, n, k in case_gemms(r))


def case_table(df: pd.DataFrame, gpu: str) -> pd.DataFrame:
    """Per case: the burst, loop and steady held seconds (the held MLP step's GEMM kernels a step
    beside its whole step), the clocks they ran at, and the twin's GEMM seconds on the fitted profile
    and on the simulation profile with the switch off and on."""
    rows = []
    fitted = fitted_profile(gpu)
    with vs_curve(False, gpu):
        sim_off = load_profile(gpu)
    with vs_curve(True, gpu):
        sim_on = load_profile(gpu)
    for case, g in df.groupby("case", sort=False):
        first = g.iloc[0]
        hold = steady_windows(g[g["phase"] == "hold"])
        out = {"case": case, "kind": first["kind"], "flops": float(first["flops"]),
               "held_s": float(pd.to_numeric(hold["time_s"]).mean()) if len(hold) else np.nan,
               "held_clock_mhz": float(pd.to_numeric(hold["sm_clock_mhz"]).mean()) if len(hold) else np.nan,
               "held_power_w": float(pd.to_numeric(hold["power_w"]).mean()) if len(hold) else np.nan}
        for phase in ("burst", "loop"):
            p = g[g["phase"] == phase]
            out[f"{phase}_s"] = float(p["time_s"].iloc[0]) if len(p) else np.nan
            out[f"{phase}_clock_mhz"] = float(p["sm_clock_mhz"].iloc[0]) if len(p) else np.nan
        kernels = g[g["phase"] == "step_kernel"]
        out["step_gemm_kernels_s"] = (float(pd.to_numeric(kernels.loc[kernels["kernel"].astype(str).str.contains(
            GEMM_KERNEL), "time_s"]).sum()) if len(kernels) else np.nan)
        out.update(twin_fitted_s=twin_s(first, gpu, fitted), twin_sim_off_s=twin_s(first, gpu, sim_off),
                   twin_sim_on_s=twin_s(first, gpu, sim_on))
        rows.append(out)
    return pd.DataFrame(rows)


def steady_windows(hold: pd.DataFrame) -> pd.DataFrame:
    """The hold windows that start at or after STEADY_FROM_S (a window starts where the one before it
    ended: its elapsed_s is its end)."""
    hold = hold.sort_values("window")
    start = pd.to_numeric(hold["elapsed_s"]).shift(1, fill_value=0.0)
    return hold[start >= STEADY_FROM_S - 1e-9]


def summary(errors) -> dict:
    e = np.abs(np.asarray(errors, float))
    e = e[np.isfinite(e)]
    if not len(e):
        return {"n": 0, "median": None, "p90": None}
    return {"n": int(len(e)), "median": float(np.median(e)), "p90": float(np.quantile(e, 0.9))}


def judge(gpu: str, root: Path | str | None = None) -> dict:
    """The rule's criteria 1-3 on a GPU's s25dense rows, and the reported conventions."""
    root = rec.records_root() if root is None else root
    df = load(gpu, root)
    if df.empty:
        return {}
    t = case_table(df, gpu)
    out = {"gpu_name": str(df["gpu_name"].iloc[0]), "cases": t}
    for kind in ("gemm", "triple"):
        k = t[t["kind"] == kind]
        out[kind] = {f"sim_{s}": summary(k[f"twin_sim_{s}_s"] / k["held_s"] - 1) for s in ("off", "on")}
        out[kind]["loop_fitted"] = summary(k["twin_fitted_s"] / k["loop_s"] - 1)
        out[kind]["burst_fitted"] = summary(k["twin_fitted_s"] / k["burst_s"] - 1)
    mlp = t[t["kind"] == "mlp_step"]
    out["mlp_step"] = {s: [float(x) for x in (mlp[f"twin_sim_{s}_s"] / mlp["step_gemm_kernels_s"] - 1)]
                       for s in ("off", "on")}
    g, tr = out["gemm"], out["triple"]
    out["criteria"] = {
        "1_held_gemms": bool(g["sim_on"]["n"] and g["sim_on"]["median"] <= 0.05 and g["sim_on"]["p90"] <= 0.10
                             and g["sim_on"]["median"] < g["sim_off"]["median"]),
        "2_held_triples": bool(tr["sim_on"]["n"] and tr["sim_on"]["median"] <= 0.05
                               and tr["sim_on"]["median"] < tr["sim_off"]["median"]),
        "3_mlp_step_gemm_kernels": bool(out["mlp_step"]["on"] and all(
            abs(a) < abs(b) for a, b in zip(out["mlp_step"]["on"], out["mlp_step"]["off"]))),
    }
    return out


def in_hold_step_s(g: pd.DataFrame, gemm: bool) -> float:
    """Round 2: one MLP step's GEMM (or other) kernel seconds inside its hold: each kernel's in-hold mean
    per call (step_kernel_held rows) times its calls a step (the after-hold profile, step_kernel rows);
    NaN where a kernel of the step has no in-hold mean."""
    after = g[g["phase"] == "step_kernel"]
    held = g[g["phase"] == "step_kernel_held"].set_index("kernel")["time_s"]
    pick = after["kernel"].astype(str).str.contains(GEMM_KERNEL)
    after = after[pick if gemm else ~pick]
    if not len(after) or not set(after["kernel"]) <= set(held.index):
        return np.nan
    return float(sum(held[k] * c for k, c in zip(after["kernel"], pd.to_numeric(after["calls"]))))


def round2(gpu: str, root: Path | str | None = None) -> dict:
    """Round 2's report: the MLP steps' GEMM seconds a step inside the hold and after it against the
    twin (fitted, simulation off / on), and each GEMM's held / curve ratio beside round 1's."""
    root = rec.records_root() if root is None else root
    df = load(gpu, root, RECORDS2)
    if df.empty:
        return {}
    t = case_table(df, gpu)
    steps = []
    for case, g in df[df["kind"] == "mlp_step"].groupby("case", sort=False):
        row = t[t["case"] == case].iloc[0]
        steps.append({"case": case, "held_step_s": row["held_s"], "held_clock_mhz": row["held_clock_mhz"],
                      "in_hold_gemm_s": in_hold_step_s(g, True), "in_hold_other_s": in_hold_step_s(g, False),
                      "after_hold_gemm_s": row["step_gemm_kernels_s"], "twin_fitted_s": row["twin_fitted_s"],
                      "twin_sim_off_s": row["twin_sim_off_s"], "twin_sim_on_s": row["twin_sim_on_s"]})
    first = judge(gpu, root)
    g2 = t[t["kind"] == "gemm"].set_index("case")
    ratios = pd.DataFrame({"round2": g2["twin_fitted_s"] / g2["held_s"]})
    if first:
        g1 = first["cases"][first["cases"]["kind"] == "gemm"].set_index("case")
        ratios["round1"] = g1["twin_fitted_s"] / g1["held_s"]
    return {"gpu_name": str(df["gpu_name"].iloc[0]), "cases": t, "steps": pd.DataFrame(steps),
            "curve_over_held": ratios}


def format_cases(t: pd.DataFrame) -> str:
    cols = ["case", "burst_s", "loop_s", "held_s", "step_gemm_kernels_s", "burst_clock_mhz", "loop_clock_mhz",
            "held_clock_mhz", "held_power_w", "twin_fitted_s", "twin_sim_off_s", "twin_sim_on_s"]
    show = t[cols].copy()
    for c in cols:
        if c.endswith("_s"):
            show[c] = show[c] * 1e3
    return show.rename(columns={c: c[:-2] + "_ms" for c in cols if c.endswith("_s")}).to_string(
        index=False, float_format=lambda x: f"{x:.3f}")


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.dense_clock", __doc__)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--write", action="store_true", help="write sustained_vs_curve into the h100 and h200 profiles")
    args = ap.parse_args(argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.write:
        for gpu in ("h100", "h200"):
            print(gpu, "sustained_vs_curve", write_vs_curve(gpu, root))
    print(args.gpu, "sustained_vs_curve", vs_curve_terms(args.gpu, root))
    out = judge(args.gpu, root)
    if not out:
        print(f"no {RECORDS} for {args.gpu}")
        return 0
    print(out["gpu_name"])
    print(format_cases(out["cases"]))
    for kind in ("gemm", "triple"):
        print(kind, json.dumps(out[kind]))
    print("mlp_step GEMM kernels: twin error off / on", out["mlp_step"])
    print("criteria", out["criteria"])
    second = round2(args.gpu, root)
    if second:
        print("round 2:", second["gpu_name"])
        print(format_cases(second["cases"]))
        print(second["steps"].to_string(index=False, float_format=lambda x: f"{x * 1e3:.3f}" if x < 1 else f"{x:.0f}"))
        print("curve / held time, per GEMM:")
        print(second["curve_over_held"].to_string(float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
