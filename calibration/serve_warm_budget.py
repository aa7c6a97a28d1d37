"""Session s28serve round 2 (issue 15; docs/notes/s28serve2_rule.md, committed before its judging records existed): the
candidate W, `serve_load_validation.ADOPT_WARM_PASS_AND_BUDGET` (a warmed engine process has met the flat sizes
1..warm_shapes and its token budget's size, not every size up to the budget: a first-met size between them pays the
table's first-met terms), judged on a fresh set (set N: <gpu>/s28serve2/<model>) under round 1's guards (sets A-M, the
committed sets; K1's median margin the twin's own draw noise, calibration/s28serve_noise.json).

    python -m calibration.serve_warm_budget guards [--json FILE]     # sets A-M and the committed sets (no set N)
    python -m calibration.serve_warm_budget [--json calibration/s28serve2_judgement.json]   # set N, guards, verdict
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_floor_rejudge as sfr
from calibration import serve_graph_ops as sgo
from calibration import serve_load_validation as slv

NAME = "s28serve2"
FRESH_MODELS = ("bench-small", "v2-lite-slice")   # set N (real/serve/plans.py S28N_PLANS)
FRESH_RUNS = 3 * len(FRESH_MODELS)
JUDGED = "W"
SEEN_M = (sfr.NAME, sfr.FRESH_MODELS)   # round 1's set M (seen)
GUARD_LABELS = {**sfr.GUARD_LABELS, "M": (sfr.NAME,)}
POOL_LEFT_OUT = (*sfr.POOL_LEFT_OUT, "M")   # K1 pools sets A-H, as rounds 1-3


def candidate():
    """W on: the warm pass covers 1..warm_shapes and the budget's size."""
    return mock.patch.object(slv, "ADOPT_WARM_PASS_AND_BUDGET", True)


def seen_rows(root: Path | str = rec.MEASUREMENTS_DIR) -> list[dict]:
    """Sets A-M replayed under the current setting (A-L as round 1's guards; M, round 1's set)."""
    return sfr.seen_rows(root) + seh.set_rows(SEEN_M[0], SEEN_M[1], root)


def guard_criteria(off: list[dict], on: list[dict], margin: float | None = None) -> dict:
    """Round 1's guards (serve_floor_rejudge.guard_criteria) over sets A-M: K1 the A-H pool within the noise margin,
    K2 each set at most 2 checks fewer."""
    with mock.patch.object(sfr, "GUARD_LABELS", GUARD_LABELS), mock.patch.object(sfr, "POOL_LEFT_OUT", POOL_LEFT_OUT):
        return sfr.guard_criteria(off, on, margin)


def closed_p99(rows: list[dict]) -> tuple[int, float]:
    """(TTFT P99 checks met, median |TTFT P99 error|) over the closed-loop runs of rows."""
    closed = [r for r in rows if "-closed-" in r["run_id"]]
    errs = [abs(r["ttft_p99_s_rel_error"]) for r in closed if math.isfinite(r["ttft_p99_s_rel_error"])]
    return sum(bool(r["ttft_p99_s_within_target"]) for r in closed), float(np.median(errs)) if errs else math.nan


def criteria(out: dict) -> dict:
    """The rule's criteria: N1 (more checks, lower median over set N), N2 (the closed loops' TTFT P99: no fewer met, a
    lower median |error|), K1-K2 (guard) and K3 (committed); K4 holds by construction (a replay setting)."""
    res, rows = out["result"], out["rows"]
    off, on = rows[None]["J"], rows[JUDGED]["J"]
    full = len(off) >= FRESH_RUNS and len(on) == len(off) and not out["incomplete"]
    (a, b) = res["J"]["all"]
    pa, pb = closed_p99(off), closed_p99(on)
    crit = {"N1_more_checks_lower_median": bool(full and b[0] > a[0] and b[1] < a[1]),
            "N2_closed_ttft_p99_no_fewer_lower_median": bool(full and pb[0] >= pa[0] and pb[1] < pa[1])}
    crit.update(res["guard"]["criteria"])
    crit.update(res["committed"])
    return {"criteria": crit, "closed_p99": (pa, pb),
            "passes": bool(rows[None]["J"] and res["guard"]["criteria"] and "K3_not_computed" not in res["committed"]
                           and all(crit.values()))}


def judge(root: Path | str = rec.MEASUREMENTS_DIR, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, margin: float | None = None) -> dict:
    """serve_graph_ops.judge with W: set N (`fresh`), sets A-M, the committed sets; the rule's criteria and verdict."""
    out = sgo.judge(root, committed_sets, fresh, guards, candidate=candidate, seen=seen_rows,
                    guard=lambda off, on: guard_criteria(off, on, margin), fresh_runs=FRESH_RUNS, judged=JUDGED)
    got = criteria(out)
    out["result"].update(criteria=got["criteria"], passes=got["passes"], closed_p99=got["closed_p99"])
    out["adopt"] = JUDGED if got["passes"] else None
    return out


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_warm_budget", __doc__)
    ap.add_argument("what", nargs="?", choices=("judge", "guards"), default="judge",
                    help="guards: sets A-M and the committed sets under W (no set N); judge: set N, the guards and the "
                         "verdict")
    ap.add_argument("--no-committed", action="store_true", help="leave out the committed sets (no verdict then)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the judgement")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        print(f"no set N records under {root}/<gpu>/{NAME}/<model>/", file=sys.stderr)
        return 2
    out = judge(root, committed_sets=not args.no_committed, fresh=fresh)
    print(f"K1's median margin (calibration/s28serve_noise.json): {out['result']['guard'].get('margin', 0) * 100:.3f} "
          "points")
    sgo.print_judgement(out, JUDGED, "A-H")
    if fresh:
        (pa, ma), (pb, mb) = out["result"]["closed_p99"]
        print(f"set N closed loops' TTFT P99: in force {pa} met, median {ma:.2%} -> {JUDGED} {pb} met, median {mb:.2%}")
    for k, v in out["result"]["criteria"].items():
        print(f"  {k}: {'met' if v else 'NOT met'}")
    print(f"verdict: {'adopt ' + JUDGED if out['adopt'] else 'not adopted'}")
    if args.json:
        record = {**sgo.judgement_record(out, {}, JUDGED), "closed_p99": [list(x) for x in out["result"]["closed_p99"]]
                  if fresh else None, "K1_margin": out["result"]["guard"].get("margin")}
        entry.write_json(args.json, record, sort_keys=True, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
