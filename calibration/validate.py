"""Validation rung 2: the twin predicts every measured case; errors are judged on held-out cases.

For each GPU with records: the profile is twin/data/profiles/<gpu>.json (fitted by `twin fit`),
or, if none is committed, a profile fitted in memory from the fitting split. Every record row the
twin can predict becomes a case {name, gpu, bench, measured_s, predicted_s, rel_error, held_out};
rel_error = predicted / measured - 1. Targets (DESIGN.md rung 2): held-out median |rel_error|
<= 5% and P90 <= 10% per GPU. Transfer: the H100 profile predicts the H200 records with the H200's
own peaks and bandwidths (DESIGN: same Hopper SMs, faster HBM).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration.fit import PROFILES_DIR, fit_profile
from calibration.predict import gpu_spec, predict_s
from calibration.split import split
from twin.costs.profile import Profile, profile_from_json

MEDIAN_TARGET = 0.05
P90_TARGET = 0.10


def load_fitted_profile(gpu: str, df: pd.DataFrame, profiles_dir: Path | str = PROFILES_DIR) -> tuple[Profile, str]:
    path = Path(profiles_dir) / f"{gpu}.json"
    if path.is_file():
        return profile_from_json(json.loads(path.read_text())), str(path)
    prof, _ = fit_profile(df, gpu)
    return prof, "fitted in memory (no committed profile)"


def predict_cases(df: pd.DataFrame, gpu: str, profile: Profile) -> tuple[list[dict], list[str]]:
    spec = gpu_spec(gpu)
    held = split(df)
    cases, skipped = [], []
    for (_, r), h in zip(df.iterrows(), held):
        pred = predict_s(r, spec, profile)
        if pred is None:
            skipped.append(r["name"])
            continue
        meas = float(r["time_s"])
        cases.append({"name": r["name"], "gpu": gpu, "bench": r["bench"], "measured_s": meas,
                      "predicted_s": float(pred), "rel_error": float(pred / meas - 1.0), "held_out": bool(h)})
    return cases, skipped


def summarize(cases: list[dict], held_only: bool = True) -> dict:
    errs = np.array([abs(c["rel_error"]) for c in cases if c["held_out"] or not held_only])
    if errs.size == 0:
        return {"num_cases": 0, "median_abs_rel_error": None, "p90_abs_rel_error": None}
    return {"num_cases": int(errs.size), "median_abs_rel_error": float(np.median(errs)),
            "p90_abs_rel_error": float(np.percentile(errs, 90))}


def by_bench(cases: list[dict]) -> dict:
    out = {}
    for b in sorted({c["bench"] for c in cases}):
        sub = [c for c in cases if c["bench"] == b]
        out[b] = {"all": summarize(sub, held_only=False), "held_out": summarize(sub)}
    return out


def validate(root: Path | str = rec.MEASUREMENTS_DIR, profiles_dir: Path | str = PROFILES_DIR,
             gpus: list[str] | None = None) -> dict:
    gpus = gpus or rec.gpu_dirs(root)
    out = {"targets": {"median_abs_rel_error": MEDIAN_TARGET, "p90_abs_rel_error": P90_TARGET},
           "gpus": {}, "cases": [], "not_predicted": {}}
    frames, profiles = {}, {}
    for gpu in gpus:
        df = rec.load_records(gpu, root)
        prof, source = load_fitted_profile(gpu, df, profiles_dir)
        frames[gpu], profiles[gpu] = df, prof
        cases, skipped = predict_cases(df, gpu, prof)
        s = summarize(cases)
        s.update(profile=source, num_predicted=len(cases), by_bench=by_bench(cases),
                 meets_targets=bool(s["median_abs_rel_error"] is not None and s["median_abs_rel_error"] <= MEDIAN_TARGET
                                    and s["p90_abs_rel_error"] <= P90_TARGET))
        out["gpus"][gpu] = s
        out["cases"] += cases
        out["not_predicted"][gpu] = sorted(set(skipped))
    if "h100" in frames and "h200" in frames:
        cases, _ = predict_cases(frames["h200"], "h200", profiles["h100"])
        out["h100_to_h200"] = {"all": summarize(cases, held_only=False), "held_out": summarize(cases),
                               "by_bench": by_bench(cases),
                               "note": "H100-fitted profile, H200 peaks/bandwidth, all H200 records"}
    return out


def failures(result: dict) -> list[str]:
    """Human-readable list of GPUs missing a target (empty when all pass)."""
    msgs = []
    for gpu, s in result["gpus"].items():
        if s["median_abs_rel_error"] is None:
            msgs.append(f"{gpu}: no held-out cases")
            continue
        if s["median_abs_rel_error"] > MEDIAN_TARGET:
            msgs.append(f"{gpu}: held-out median |error| {s['median_abs_rel_error']:.1%} > {MEDIAN_TARGET:.0%}")
        if s["p90_abs_rel_error"] > P90_TARGET:
            msgs.append(f"{gpu}: held-out P90 |error| {s['p90_abs_rel_error']:.1%} > {P90_TARGET:.0%}")
    return msgs


def format_table(result: dict) -> str:
    lines = [f"{'gpu':6} {'bench':16} {'n_held':>6} {'median':>8} {'p90':>8}   (all: n, median)"]
    for gpu, s in result["gpus"].items():
        for b, v in s["by_bench"].items():
            h, a = v["held_out"], v["all"]
            med = f"{h['median_abs_rel_error']:.1%}" if h["num_cases"] else "-"
            p90 = f"{h['p90_abs_rel_error']:.1%}" if h["num_cases"] else "-"
            lines.append(f"{gpu:6} {b:16} {h['num_cases']:>6} {med:>8} {p90:>8}   ({a['num_cases']}, {a['median_abs_rel_error']:.1%})")
        lines.append(f"{gpu:6} {'HELD-OUT TOTAL':16} {s['num_cases']:>6} {s['median_abs_rel_error'] or 0:>8.1%} "
                     f"{s['p90_abs_rel_error'] or 0:>8.1%}   targets 5% / 10%: {'met' if s['meets_targets'] else 'NOT met'}")
    t = result.get("h100_to_h200")
    if t:
        lines.append(f"H100 profile -> H200 records: all median {t['all']['median_abs_rel_error']:.1%}, "
                     f"P90 {t['all']['p90_abs_rel_error']:.1%} (n={t['all']['num_cases']}); held-out median "
                     f"{t['held_out']['median_abs_rel_error'] or 0:.1%}")
    return "\n".join(lines)
