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

import calibration.pipeline as pipe
from calibration import ep_postsync

SETTINGS = {"off": (False, False), "A": (True, False), "A+B": (True, True)}


def main() -> int:
    for label, (a, b) in SETTINGS.items():
        pipe.ADOPT_EP_POSTSYNC_HOST, pipe.ADOPT_EP_REST_HOST = a, b
        print(label)
        for gpu, run in ep_postsync.runs():
            live = ep_postsync.holdout_live(run, gpu)
            if not live.empty:
                print(ep_postsync.error_line(f"fresh {gpu}x2 {run.name}", live["rel_error"].to_numpy()))
        print("\n".join(ep_postsync.ep_guard_lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
