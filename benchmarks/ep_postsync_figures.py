"""The held-out figures docs/notes/s23ephost_rule.md judges A (ADOPT_EP_POSTSYNC_HOST) and A+B (with
ADOPT_EP_REST_HOST) on, under each setting (diagnostics only; the rest of the rule's clauses come from
benchmarks/s17alt_figures.py run / compare).

    PYTHONPATH=. .venv/bin/python benchmarks/ep_postsync_figures.py      (a few minutes)

Prints, per setting (off, A, A+B): the fresh 2xH100 EP2 steps of the committed s23ephost run
(calibration.ep_postsync.holdout_live), s20epnew's 2xH100 and 2xH200 EP2 steps at their routing
(calibration.ep_fresh.s20epnew_live), and the s21pp4 / s21pp4b pp2ep2 rows at their routing
(calibration.prereg_pp4.live_section): each set's median / P90 |error|, its largest over-prediction and
every row's error; for the 4-GPU deliveries the idle rank-rows within tolerance and misordered pairs.
"""

from __future__ import annotations

import numpy as np

import calibration.pipeline as pipe
from calibration import ep_fresh, ep_postsync, prereg_pp4

SETTINGS = {"off": (False, False), "A": (True, False), "A+B": (True, True)}


def _line(name: str, err: np.ndarray) -> str:
    a = np.abs(err)
    return (f"  {name}: n={len(err)} median {np.median(a):.2%} P90 {np.percentile(a, 90):.2%} max over "
            f"{err.max():+.2%} | " + " ".join(f"{e:+.1%}" for e in err))


def main() -> int:
    for label, (a, b) in SETTINGS.items():
        pipe.ADOPT_EP_POSTSYNC_HOST, pipe.ADOPT_EP_REST_HOST = a, b
        print(label)
        for gpu, run in ep_postsync.runs():
            live = ep_postsync.holdout_live(run, gpu)
            if not live.empty:
                print(_line(f"fresh {gpu}x2 {run.name}", live["rel_error"].to_numpy()))
        for gpu in ("h100", "h200"):
            print(_line(f"s20epnew {gpu}x2", ep_fresh.s20epnew_live(True, gpu, routed=True)["rel_error"].to_numpy()))
        inputs: dict = {}
        for sub in (prereg_pp4.RECORDS_SUBDIR, prereg_pp4.SECOND_SUBDIR):
            sec = prereg_pp4.live_section(sub, True, inputs=inputs)
            err = np.array([r["rel_error"] for r in sec["rows"]])
            idle = sec["idle"]
            mis = sum(1 for p in sec["ranking"] if p["resolved"] and not p["ordered"])
            print(_line(f"{sub} pp2ep2", err) + f" | idle within {sum(i['within'] for i in idle)} of {len(idle)}, "
                  f"misordered {mis} of {sum(1 for p in sec['ranking'] if p['resolved'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
