"""Session s27serve round 3 (issue 15; docs/notes/s27serve3_rule.md, committed before its judging records existed): a
CUDA-graph decode replay's per-operator floor (round 2's V, calibration.serve_graph_floor) on the card it was fitted
on only.

Candidate V-H200 = the twin in force (T) with `timing.ADOPT_GRAPH_OP_FLOOR` on and round 2's term (graph_op_floor_s,
495 ns an operator beyond the fit model's 403, fitted on the H200 fitting runs <gpu>/s26start2/fit alone; unchanged,
calibration/s27serve2_fit.json) in the H200 one-GPU table only; the H100 table carries none (its runs price as in
force). Judged on set L (h200/s27serve3/<model>, four models, 8 runs); guards on sets A-K and the committed sets.

    python -m calibration.serve_graph_floor_h200 guards                                     # sets A-K, committed sets
    python -m calibration.serve_graph_floor_h200 [--json calibration/s27serve3_judgement.json]  # set L, guards, verdict
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_graph_floor as sgf
from calibration import serve_graph_ops as sgo
from calibration import serve_load_host as slh
from twin.serving import timing

NAME = "s27serve3"
FRESH_MODELS = sgf.FRESH_MODELS   # set L (S27L_PLANS): the same four models as set K
FRESH_RUNS = 8
JUDGED = "V-H200"
SEEN_K = (sgf.NAME, sgf.FRESH_MODELS)   # round 2's set K (seen)
GUARD_LABELS = {**sgf.GUARD_LABELS, "K": (sgf.NAME,)}
POOL_LEFT_OUT = ("I", "J", "K")   # K1 pools sets A-H, as round 2 (I, J shaped V; K seen after V was fixed)


def tables(root: Path | str | None = None) -> dict[str, dict]:
    """V-H200's term: round 2's fit (floor_fit on the fitting runs) in the H200 one-GPU table alone."""
    root = rec.records_root() if root is None else root
    return {sgf.FIT_TABLE: sgf.floor_fit(root)[sgf.FIT_TABLE]}


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-K replayed under the setting in force (A-J as round 2's guards; K, round 2's set)."""
    root = rec.records_root() if root is None else root
    return sgf.seen_rows(root) + seh.set_rows(SEEN_K[0], SEEN_K[1], root)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """K1: sets A-H pooled no fewer checks met and a median |error| no higher; K2: each of sets A-K at most
    serve_start_sync.SET_MARGIN_CHECKS (2) checks fewer; the A-K pool reported ("pooled_with_I")."""
    with mock.patch.object(sgf, "GUARD_LABELS", GUARD_LABELS), mock.patch.object(sgf, "POOL_LEFT_OUT", POOL_LEFT_OUT):
        return sgf.guard_criteria(off, on)


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, terms: dict | None = None) -> dict:
    """serve_graph_ops.judge with V-H200: set L (`fresh`), sets A-K, the committed sets (criteria named J1/J2, K1-K3)."""
    root = rec.records_root() if root is None else root
    terms = terms or tables(root)
    with mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", False):   # in force as judged (adopted since s28serve)
        return sgo.judge(root, committed_sets, fresh, guards, candidate=lambda: sgf.setting(terms), seen=seen_rows,
                         guard=guard_criteria, fresh_runs=FRESH_RUNS, judged=JUDGED)


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_graph_floor_h200", __doc__, ("judge", "guards"),
                     "guards: sets A-K and the committed sets under V-H200 (no set L); judge: set L, the guards and the "
                     "verdict")
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if not slh.fit_cards(root):
        return cli.refuse("fitting", root, f"{slh.NAME}/fit/<model>/")
    terms = tables(root)
    v = terms[sgf.FIT_TABLE]
    print(f"{sgf.TERM} {v[sgf.TERM] * 1e9:.1f} ns an operator in {sgf.FIT_TABLE} only (fitting runs on {v['card']})")
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        return cli.refuse("set L", root, f"{NAME}/<model>/")
    return cli.judgement(args, judge(root, committed_sets=not args.no_committed, fresh=fresh, terms=terms),
                         lambda out: sgo.print_judgement(out, JUDGED, "A-H"),
                         lambda out: sgo.judgement_record(out, terms, JUDGED))


if __name__ == "__main__":
    sys.exit(main())
