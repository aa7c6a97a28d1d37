"""One-off clean-up of the 2026-11-24 campaign CSVs (calibration/measurements/h100, h200).

That campaign's harness divided NVML's energy-counter delta by every timed loop's wall time, but
the counter advances in ~0.1 s steps, so loops shorter than ~0.5 s gave 0 W or several kW. The
harness now leaves those cells empty (real.bench.ENERGY_MIN_WINDOW_S); this script applies the
same rule to the recorded files, using reps * time_s as the loop length:

    python benchmarks/real_blank_short_power.py calibration/measurements/h100 calibration/measurements/h200
"""

import csv
import sys
from pathlib import Path

from real.bench import ENERGY_MIN_WINDOW_S


def clean(path: Path) -> int:
    rows = list(csv.DictReader(path.open()))
    if not rows or "power_w" not in rows[0] or "reps" not in rows[0]:
        return 0
    blanked = 0
    for r in rows:
        window_s = float(r["reps"] or 0) * float(r["time_s"] or 0)
        if r["power_w"] and window_s < ENERGY_MIN_WINDOW_S:
            r["power_w"] = r["energy_j"] = ""
            blanked += 1
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    return blanked


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        for p in sorted(Path(folder).glob("*.csv")):
            if p.name != "power.csv":
                print(p, clean(p), "cells blanked")
