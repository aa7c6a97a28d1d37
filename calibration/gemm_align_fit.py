"""The alignment-class factors of dense BF16 GEMMs (session s23align; the rule, split and adoption
criteria: docs/notes/s23align_rule.md, committed before the records existed).

Records: calibration/measurements/<gpu>/s23align/gemm_align.csv(.gz) (real/bench/gemm_align.py): the
three GEMMs of a linear layer (O outputs, I inputs) at T tokens, BF16, aligned and misaligned widths.
A row's alignment class is min(align(O), align(I)) (twin.costs.gemm_alignment.align_class). Its
measured **ratio** is its time per FLOP over that of its aligned neighbour (NEIGHBOUR: the same
role at the nearest width that is a multiple of 8) at the same T and pass. The factors are the
median ratios of the fitting rows, per class (form "class") or per class and pass ("class_pass");
"rounded" prices the GEMM at its widths rounded up to 8 (the ratio of padded to true FLOPs). The form
is chosen by leave-one-layer-out on the fitting rows; the held-out rows are then scored (ratio and
the twin's absolute time). Writes twin/data/gemm_alignment.json.

    python -m calibration.gemm_align_fit [--write]
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import prereg
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from twin.core import atomic
from twin.costs import compute
from twin.costs.gemm_alignment import align_class
from twin.costs.profile import load_profile
from twin.core.specs import get_gpu

TABLE = Path(__file__).resolve().parents[1] / "twin" / "data" / "gemm_alignment.json"
RECORDS = Path("s23align") / "gemm_align.csv"
GPUS = ("h100", "h200")
FORMS = ("class", "class_pass", "rounded")
# the rule's margin: the per-pass form is taken only if it beats the per-class form by 2 points
CLASS_PASS_MARGIN = 0.02
# each misaligned layer's aligned neighbour (same role, nearest width that is a multiple of 8)
NEIGHBOUR = {
    **{f"gpt1.7b_{r}_f{f}": f"gpt1.7b_{r}_f5456" for r in ("up", "down") for f in (5456, 5460, 5462, 5461)},
    **{f"gpt7.1b_{r}_f{f}": f"gpt7.1b_{r}_f10920" for r in ("up", "down") for f in (10920, 10924, 10922, 10923)},
    "square_2048": "square_2048", "square_out2049": "square_2048", "square_in2049": "square_2048",
    "vocab_50257": "vocab_50304", "vocab_50304": "vocab_50304",
}


def records(gpu: str, relpath: Path = RECORDS, neighbours: dict | None = None) -> pd.DataFrame:
    """The BF16 rows that measured a time, with their class and ratio to the aligned neighbour
    (`neighbours`: layer -> its neighbour's layer, NEIGHBOUR where None; `relpath`: the campaign's
    records under the GPU's folder)."""
    neighbours = NEIGHBOUR if neighbours is None else neighbours
    path = rec.records_root() / gpu / relpath   # calibration/measurements, or --records DIR
    if not csv_exists(path):
        return pd.DataFrame()
    df = read_csv(path, keep_default_na=False)
    df = df[(df["precision"] == "bf16") & (df["status"] == "ok")].copy()
    for c in ("tokens", "outputs", "inputs", "m", "n", "k"):
        df[c] = df[c].astype(int)
    df["time_s"] = df["time_s"].astype(float)
    df["flops"] = df["flops"].astype(float)
    df["cls"] = [align_class(o, i) for o, i in zip(df["outputs"], df["inputs"])]
    per_flop = {(r.layer, r.tokens, r["pass"]): r.time_s / r.flops for _, r in df.iterrows()}
    df["ratio"] = [df_ratio(per_flop, neighbours.get(r.layer, ""), r.tokens, r["pass"], r.time_s / r.flops)
                   for _, r in df.iterrows()]
    return df


def df_ratio(per_flop: dict, neighbour: str, tokens: int, pass_: str, mine: float) -> float:
    nb = per_flop.get((neighbour, tokens, pass_))
    return mine / nb if nb else math.nan


def padded_ratio(outputs: int, inputs: int) -> float:
    """FLOPs of the widths rounded up to 8 over the true ones (the 'rounded' form's ratio)."""
    up = lambda x: -(-x // 8) * 8  # noqa: E731
    return up(outputs) * up(inputs) / (outputs * inputs)


def fit_factors(rows: pd.DataFrame, form: str) -> dict:
    """Median ratio per class ("1", "2", "4") or per class and pass ("1/fwd", ...); {} for rounded."""
    if form == "rounded":
        return {}
    mis = rows[(rows["cls"] < 8) & rows["ratio"].notna()]
    keys = mis["cls"].astype(str) if form == "class" else mis["cls"].astype(str) + "/" + mis["pass"]
    return {k: float(np.median(g["ratio"])) for k, g in mis.groupby(keys)}


def predicted_ratio(row, form: str, factors: dict) -> float:
    """A row's predicted ratio under a form: its class's factor (the nearest class with one, coarser
    first, where its own has none: the leave-one-layer-out of a class with one fitting layer)."""
    if row["cls"] >= 8:
        return 1.0
    if form == "rounded":
        return padded_ratio(int(row["outputs"]), int(row["inputs"]))
    order = sorted((1, 2, 4), key=lambda c: (c > row["cls"], abs(c - row["cls"])))
    for c in order:
        key = str(c) if form == "class" else f"{c}/{row['pass']}"
        if key in factors:
            return factors[key]
    return 1.0


def errors(rows: pd.DataFrame, form: str, factors: dict) -> np.ndarray:
    """predicted / measured ratio - 1 over the misaligned rows."""
    mis = rows[(rows["cls"] < 8) & rows["ratio"].notna()]
    return np.array([predicted_ratio(r, form, factors) / r["ratio"] - 1.0 for _, r in mis.iterrows()])


def summary(err: np.ndarray) -> dict:
    a = np.abs(err)
    if not len(a):
        return {"rows": 0}
    return {"rows": int(len(a)), "median_abs_error": float(np.median(a)), "p90_abs_error": float(np.quantile(a, 0.9)),
            "within_5pct": int((a <= 0.05).sum()), "within_10pct": int((a <= 0.10).sum())}


def leave_one_layer_out(fit: pd.DataFrame, form: str) -> dict:
    """Each misaligned fitting layer's rows predicted by the factors of the other fitting layers."""
    errs = []
    for layer in sorted(fit.loc[fit["cls"] < 8, "layer"].unique()):
        factors = fit_factors(fit[fit["layer"] != layer], form)
        errs.append(errors(fit[fit["layer"] == layer], form, factors))
    return summary(np.concatenate(errs) if errs else np.array([]))


def choose_form(lolo: dict) -> str:
    """The rule's choice: per class, unless per class and pass beats it by the margin; rounded only
    if it beats both."""
    med = {f: lolo[f].get("median_abs_error", math.inf) for f in FORMS}
    form = "class_pass" if med["class_pass"] <= med["class"] - CLASS_PASS_MARGIN else "class"
    return "rounded" if med["rounded"] < min(med["class"], med["class_pass"]) else form


def twin_errors(rows: pd.DataFrame, gpu: str, form: str, factors: dict) -> dict:
    """The twin's time (gemm_time_s as today, aligned) against measured, without and with the
    factor (aligned time x the row's predicted ratio), per class group."""
    spec, prof = get_gpu(gpu), load_profile(gpu)
    aligned = np.array([compute.gemm_time_s(int(r.m), int(r.n), int(r.k), "bf16", spec, prof) for _, r in rows.iterrows()])
    factor = np.array([predicted_ratio(r, form, factors) for _, r in rows.iterrows()])
    meas = rows["time_s"].to_numpy()
    mis = (rows["cls"] < 8).to_numpy()
    return {"misaligned_without": summary(aligned[mis] / meas[mis] - 1.0),
            "misaligned_with": summary(aligned[mis] * factor[mis] / meas[mis] - 1.0),
            "aligned": summary(aligned[~mis] / meas[~mis] - 1.0)}


def fit_gpu(gpu: str) -> dict | None:
    df = records(gpu)
    if df.empty:
        return None
    fit, held = df[df["split"] == "fit"], df[df["split"] == "heldout"]
    lolo = {f: leave_one_layer_out(fit, f) for f in FORMS}
    form = choose_form(lolo)
    factors = fit_factors(fit, form)
    return {"form": form, "factors": factors, "fit_rows": int(len(fit)),
            "fit_leave_one_layer_out": lolo,
            "held_out_ratio": summary(errors(held, form, factors)),
            "held_out_twin": twin_errors(held, gpu, form, factors),
            "fit_twin": twin_errors(fit, gpu, form, factors),
            "gpu_name": str(df["gpu_name"].iloc[0]), "torch_version": str(df["torch_version"].iloc[0])}


# the rule's criterion 3: s23hrate's fresh H100 runs (and the same-host repeat, reported)
HRATE_RUNS = ("s23hrate", "s23hrate_b", "s23hrate_c", "s23hrate_repeat")


def s23hrate_rows(adopt: bool, tmp_dir: Path, switch: str = "ADOPT_GEMM_ALIGNMENT") -> dict:
    """The step-input twin's rows and issue-13 groups on s23hrate's runs with the switch `switch`
    of twin.costs.compute set to `adopt`: the registered cases' host grid recomputed under the switch
    (the committed grid is the switch-off one), read by prereg.step_section as `twin validate` reads it."""
    saved = getattr(compute, switch)
    setattr(compute, switch, adopt)
    try:
        reg = prereg.REGISTRATIONS["s23hrate"]
        grid = prereg.predict_host_grid(prereg.case_rows(reg), hosts_s=prereg.GRID_FILES[reg.name][1])
        path = Path(tmp_dir) / f"s23hrate_grid_{switch}_{'on' if adopt else 'off'}.csv"
        grid.to_csv(path, index=False)
        out = {}
        for name in HRATE_RUNS:
            sec = prereg.step_section(reg=prereg.REGISTRATIONS[name], grid_path=path, sync_grid_path=None,
                                      occupancy_grid_path=None)
            out[name] = {"by_gpu": sec["step_input"]["by_gpu"], "rows": sec["step_input"]["rows"]}
        return out
    finally:
        setattr(compute, switch, saved)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.gemm_align_fit", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {TABLE.name}")
    args = ap.parse_args(argv)
    fits = {g: f for g in GPUS if (f := fit_gpu(g)) is not None}
    print(json.dumps(fits, indent=1))
    if args.write:
        table = json.loads(TABLE.read_text())
        table["fits"] = fits
        atomic.write_text(TABLE, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
