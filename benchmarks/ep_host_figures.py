"""The issue-13 figures an EP-step host change is judged by (s13ep's rule, docs/notes/s13ep_rule.md),
on the committed records, with calibration's EP flags as they are or as named. Diagnostics only.

    PYTHONPATH=. .venv/bin/python benchmarks/ep_host_figures.py [FLAG=0|1 ...] [--fit-only]
        [--folder PATH:GPU:NUM_GPUS ...]                                             (about a minute)

Prints, per multi-GPU folder (2xH200, 2xH100, 4xH100, 4xH200): ep_step, pipeline_step, moe_layer
and ep_comm (dispatch and combine alone) held-out median / P90 |error| (signed median), each
ep_step row's error, and the ranks whose simulated idle misses the measured beyond
tests/calibration/test_whole_runs.py's tolerance.
FLAG: a module-level ADOPT_* name of calibration.pipeline or calibration.whole_step.
--fit-only: only the fitting split's ep_step rows (what may be looked at before a rule is committed).
--folder: other records folders (a campaign's fresh run) in place of the committed four.
--kernel-classes: only s14epl's clause 5 (fitting split, 2xH200): the twin / profiled kernel time of
the EP2 steps' forward memory and forward and backward grouped-GEMM classes (mean over ranks and
micro-batch counts) beside the PP2 fitting steps' median ratio of the same class.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import calibration.pipeline as pipe
import calibration.whole_step as whole
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.validate import load_fitted_profile, predict_multi_gpu

FOLDERS = {"h200x2": ("h200", 2), "h100x2": ("h100", 2), "h100x4": ("h100", 4), "h200x4": ("h200", 4)}
IDLE_TOL, IDLE_FLOOR_OF_STEP = 0.10, 0.01   # tests/calibration/test_whole_runs.py


def _set_flags(argv: list[str]) -> None:
    for a in argv:
        if "=" not in a:
            raise SystemExit(f"not a FLAG=0|1: {a}")
        name, value = a.split("=")
        mod = pipe if hasattr(pipe, name) else whole
        if not hasattr(mod, name):
            raise SystemExit(f"unknown flag {name}")
        setattr(mod, name, value == "1")


def _summary(cases: list[dict], kind: str) -> str:
    sub = [c for c in cases if c["kind"] == kind and c["held_out"]]
    if not sub:
        return f"{kind}: none"
    err = np.abs([c["rel_error"] for c in sub])
    signed = np.median([c["rel_error"] for c in sub])
    return (f"{kind}: median {np.median(err):.2%} P90 {np.percentile(err, 90):.2%} (signed {signed:+.2%}, "
            f"n={len(sub)})")


def _idle_misses(pipelines: list[dict]) -> tuple[int, int]:
    miss = total = 0
    for p in pipelines:
        sim = p["idle_simulated_s"]
        for r, meas in p["idle_measured_s"].items():
            if not sim:
                continue
            total += 1
            s = sim[int(r) % len(sim)]
            miss += abs(s - meas) > max(IDLE_TOL * meas, IDLE_FLOOR_OF_STEP * p["measured_s"])
    return miss, total


def kernel_class_ratios(cases: list[dict]) -> dict:
    """(layout "ep" | "pp", side "F" | "B", component) -> [twin / profiled] per fitting case and rank
    (calibration.pipeline.op_components; B sums the BW, B and W ops)."""
    ratios: dict = {}
    for c in cases:
        r = c["row"]
        if str(r.get("split")) != "fit" or c.get("measured_kernels") is None or not len(c["measured_kernels"]):
            continue
        layout = "ep" if int(r.get("ep", 1) or 1) > 1 else "pp"
        sums: dict = {}
        for x in pipe.op_components(c):
            side = "F" if x["kind"] == "F" else "B" if x["kind"] in ("BW", "B", "W") else None
            if side is None or x["component"] not in ("memory", "grouped_gemm"):
                continue
            m, t = sums.get((x["rank"], side, x["component"]), (0.0, 0.0))
            sums[x["rank"], side, x["component"]] = (m + x["measured_s"], t + x["twin_s"])
        for (_, side, comp), (m, t) in sums.items():
            if m > 0:
                ratios.setdefault((layout, side, comp), []).append(t / m)
    return ratios


def print_kernel_classes(profile) -> None:
    ratios = kernel_class_ratios(pipe.predict_folder(rec.MEASUREMENTS_DIR / "h200x2", "h200", profile))
    for side, comp in (("F", "memory"), ("F", "grouped_gemm"), ("B", "grouped_gemm")):
        ep, pp = ratios.get(("ep", side, comp), []), ratios.get(("pp", side, comp), [])
        if ep and pp:
            print(f"  {side} {comp}: EP2 {np.mean(ep):.3f}, PP2 median {np.median(pp):.3f} "
                  f"(distance {abs(np.mean(ep) - np.median(pp)):.3f})")


def main(argv: list[str]) -> int:
    fit_only = "--fit-only" in argv
    folders = {rec.MEASUREMENTS_DIR / f: g for f, g in FOLDERS.items()}
    extra = [argv[i + 1] for i, a in enumerate(argv) if a == "--folder"]
    if extra:
        folders = {Path(p): (g, int(n)) for p, g, n in (x.split(":") for x in extra)}
    _set_flags([a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--folder")])
    if "--kernel-classes" in argv:
        prof, _ = load_fitted_profile("h200", rec.load_records("h200"), PROFILES_DIR)
        print_kernel_classes(prof)
        return 0
    profiles: dict = {}
    for path, (gpu, n) in folders.items():
        if not path.is_dir():
            continue
        if gpu not in profiles:
            profiles[gpu], _ = load_fitted_profile(gpu, rec.load_records(gpu), PROFILES_DIR)
        cases, pipelines = predict_multi_gpu(Path(path), gpu, n, profiles[gpu])
        print(f"== {path}")
        for c in cases:
            if c["kind"] == "ep_step" and (c["held_out"] is False or not fit_only):
                print(f"    {c['name']}: {c['rel_error']:+.2%} ({'held out' if c['held_out'] else 'fit'})")
        if fit_only:
            continue
        for kind in ("ep_step", "pipeline_step", "moe_layer", "ep_comm"):
            print("  " + _summary(cases, kind))
        miss, total = _idle_misses(pipelines)
        print(f"  idle: {total - miss} of {total} ranks within tolerance")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
