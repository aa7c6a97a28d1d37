"""The fit's stage 1 row by row (predict_s, as before s26fitvec) against in arrays
(calibration.predict_vec), in one run of this tree, and a check that both give the same floats.

For the committed H100 and H200 records and the synthetic H100 records of tests/calibration, it
prints CPU milliseconds per evaluation of the stage-1 residuals (all fitting rows under one trial
profile) both ways, then a row-tile screen's solve (SCREEN_NFEV evaluations of least_squares from
the base profile) both ways; with --full, `twin fit`'s fit_profile both ways. Each line ends with
old / new and whether the results are equal (==, every float). Not a test: no test asserts a time.

Run: PYTHONPATH=. python benchmarks/fit_speed.py [--evals N] [--full]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from calibration import fit
from calibration import records as rec


def cpu(fn, *args):
    t0 = time.process_time()
    out = fn(*args)
    return time.process_time() - t0, out


def line(what: str, old_s: float, new_s: float, same: bool, unit: str = "s", scale: float = 1.0) -> None:
    print(f"{what:<44} old {old_s * scale:9.2f} {unit}  new {new_s * scale:9.2f} {unit}  "
          f"old/new {old_s / new_s:5.1f}  {'same' if same else 'DIFFERENT'}")


def sets() -> list[tuple[str, str, Path]]:
    # lazy: the synthetic records are tests/calibration's generator (the repository's tests package)
    from tests.calibration.conftest import synthetic_records
    synthetic = synthetic_records(Path(tempfile.mkdtemp(prefix="fit_speed_")))
    return [("h100 committed", "h100", rec.MEASUREMENTS_DIR), ("h200 committed", "h200", rec.MEASUREMENTS_DIR),
            ("h100 synthetic (tests/calibration)", "h100", synthetic)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evals", type=int, default=50, help="residual evaluations per set and way (default 50)")
    ap.add_argument("--full", action="store_true", help="also fit_profile both ways (minutes)")
    args = ap.parse_args()
    one, five, _ = os.getloadavg()
    print(f"load {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs; CPU time of this process")
    for name, gpu, root in sets():
        df = rec.load_records(gpu, root)
        rows, _, _, layout = fit._select_primitive_rows(df, gpu)
        new = fit._PrimitiveProblem.build(gpu, rows, layout, fit.default_profile())
        old = dataclasses.replace(new, vectorized=False)
        new.residuals(new.x0)   # the blocks are built on the first evaluation
        old_s, a = cpu(lambda: [old.residuals(old.x0) for _ in range(args.evals)])
        new_s, b = cpu(lambda: [new.residuals(new.x0) for _ in range(args.evals)])
        line(f"{name}: one evaluation, {len(rows)} rows", old_s / args.evals, new_s / args.evals,
             all(np.array_equal(x, y) for x, y in zip(a, b)), "ms", 1e3)
        old_s, sa = cpu(old.solve, old.x0, {}, fit.SCREEN_NFEV)
        new_s, sb = cpu(new.solve, new.x0, {}, fit.SCREEN_NFEV)
        line(f"{name}: screen solve, {sb.nfev} evaluations", old_s, new_s,
             np.array_equal(sa.x, sb.x) and sa.cost == sb.cost)
        if args.full:
            full = {}
            build = fit._PrimitiveProblem.__dict__["build"]   # the classmethod itself, put back after
            for way in (False, True):
                fit._PrimitiveProblem.build = classmethod(
                    lambda cls, *a, v=way: dataclasses.replace(build.__func__(cls, *a), vectorized=v))
                try:
                    full[way] = cpu(fit.fit_profile, df, gpu)
                finally:
                    fit._PrimitiveProblem.build = build
            same = (json.dumps(full[False][1][0].to_json()) == json.dumps(full[True][1][0].to_json())
                    and full[False][1][1]["parameters"] == full[True][1][1]["parameters"])
            line(f"{name}: fit_profile", full[False][0], full[True][0], same)


if __name__ == "__main__":
    main()
