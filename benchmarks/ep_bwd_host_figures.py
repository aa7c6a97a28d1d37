"""The figures docs/notes/s23bwd2_rule.md judges ADOPT_EP_BWD_HOST on, switch off and on (diagnostics only;
the rule's O clauses come from benchmarks/s17alt_figures.py run / compare).

    PYTHONPATH=. .venv/bin/python benchmarks/ep_bwd_host_figures.py      (a few minutes)

Prints, per setting: each committed s23bwd2 run's fresh EP2 steps (<gpu>x2/s23bwd2_<stamp>/<part>/, priced by
calibration.ep_postsync.own_rate_live: `committed` and `own`), the bench-small rows apart; s20epnew's 2xH100
and 2xH200 EP2 steps at their routing (calibration.ep_fresh.s20epnew_live); the s21pp4 / s21pp4b pp2ep2 rows
(calibration.prereg_pp4.live_section) with their idle within-counts; and, reported only (seen per phase
before the rule), the s23ephost / s23ephost2 fresh rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import calibration.pipeline as pipe
from calibration import ep_postsync
from calibration import records as rec

RUN_PREFIX = "s23bwd2_"


def fresh_runs(root: Path = rec.MEASUREMENTS_DIR) -> list[tuple[str, Path]]:
    """(gpu, run folder) of each committed s23bwd2 delivery."""
    return [(host.name[:-2], run) for host in sorted(Path(root).glob("*x2"))
            for run in sorted(host.glob(RUN_PREFIX + "*")) if run.is_dir()]


def fresh_table(run: Path, gpu: str) -> pd.DataFrame:
    """own_rate_live of every part folder of a run (those with pipeline_step.csv), a `part` column added."""
    parts = [ep_postsync.own_rate_live(d, gpu).assign(part=d.name) for d in sorted(run.iterdir())
             if d.is_dir() and any(d.glob("pipeline_step.csv*"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def main() -> int:
    for on in (False, True):
        pipe.ADOPT_EP_BWD_HOST = on
        print("on" if on else "off")
        for gpu, run in fresh_runs():
            t = fresh_table(run, gpu)
            if t.empty:
                print(f"  fresh {gpu}x2 {run.name}: no rows")
                continue
            for label in ("committed", "own"):
                print(ep_postsync.error_line(f"fresh {gpu}x2 {run.name} {label}", t[f"rel_error_{label}"].to_numpy()))
                small = t[t["model"] == "bench-small"]
                print(ep_postsync.error_line(f"  bench-small {label}", small[f"rel_error_{label}"].to_numpy()))
            print(t[["part", "num_microbatches", "measured_s", "predicted_s_committed", "predicted_s_own"]]
                  .to_string(index=False))
        print("\n".join(ep_postsync.ep_guard_lines()))
        for gpu, run in ep_postsync.runs():   # seen per phase before the rule: reported, not judged
            live = ep_postsync.holdout_live(run, gpu)
            if not live.empty:
                print(ep_postsync.error_line(f"(seen) s23ephost {gpu}x2 {run.name}", live["rel_error"].to_numpy()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
