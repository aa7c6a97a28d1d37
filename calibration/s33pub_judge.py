"""Judge of docs/notes/s33pub_rule.md: the Llama 3 rows' communication as Meta's ISCA'25 paper states it.

Every published row evaluated with the rule's two switches off, then on (calibration.published_runs.
ADOPT_LLAMA3_ISCA_COMMS: TP exposed, ZeRO-1 at bs >= 2 pp else ZeRO-2, one reduce-scatter a stage;
twin.training.step.ADOPT_ZERO2_PP_GRADS_WHEN_BORN: a ZeRO-2 pipeline stage's FP32 accumulators counted from its
first backward); the rule's C1 and P1-P3, and every row whose figures moved (for its guard G1).

    python -m calibration.s33pub_judge [--json calibration/s33pub_judgement.json]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from calibration import entry
from calibration import published_runs as pr
from twin.training import step

ROW_FIELDS = ("status", "predicted", "rel_error", "step_time_s", "mfu_frac", "bubble_frac", "exposed_comm_frac",
              "memory_per_gpu_bytes", "memory_fits", "reason")
# C1: Meta's rule (ISCA'25 3.1.3) on the three Llama 3 rows, worked in published_runs.isca_zero_stage's docstring
EXPECTED_ZERO = {"l3-405b-8k-gpus8192": 1, "l3-405b-8k-gpus16384": 2, "l3-405b-128k-cp16": 2}


@contextlib.contextmanager
def switches(on: bool) -> Iterator[None]:
    saved = pr.ADOPT_LLAMA3_ISCA_COMMS, step.ADOPT_ZERO2_PP_GRADS_WHEN_BORN
    pr.ADOPT_LLAMA3_ISCA_COMMS = step.ADOPT_ZERO2_PP_GRADS_WHEN_BORN = on
    try:
        yield
    finally:
        pr.ADOPT_LLAMA3_ISCA_COMMS, step.ADOPT_ZERO2_PP_GRADS_WHEN_BORN = saved


def _within(row: dict) -> bool:
    return row["status"] == "ok" and abs(row["rel_error"]) <= pr.ROW_TARGET


def criteria(off: dict, on: dict) -> dict:
    """P1-P3 of the rule from two compare() results (a refused row counts as outside 10%)."""
    s_off, s_on = off["summary"], on["summary"]
    rows_off = {r["id"]: r for r in off["rows"]}
    left = sorted(r["id"] for r in on["rows"] if _within(rows_off[r["id"]]) and not _within(r))
    return {"P1_within_not_lower": s_on["num_within_row_target"] >= s_off["num_within_row_target"],
            "P2_median_not_higher": s_on["median_abs_rel_error"] <= s_off["median_abs_rel_error"],
            "P3_none_leaves_10pct": not left, "P3_left": left}


def moved(off: dict, on: dict) -> dict:
    """Per row whose figures differ between the two results: each differing field, off and on."""
    rows_on = {r["id"]: r for r in on["rows"]}
    out = {}
    for r in off["rows"]:
        o = rows_on[r["id"]]
        diff = {k: [r.get(k), o.get(k)] for k in ROW_FIELDS if r.get(k) != o.get(k)}
        if r.get("assumed") != o.get("assumed"):
            diff["assumed"] = [list(r.get("assumed", ())), list(o.get("assumed", ()))]
        if diff:
            out[r["id"]] = diff
    return out


def judge() -> dict:
    with switches(True):
        runs = {r.id: r for r in pr.load_runs()[0]}
        zero = {rid: runs[rid].plan["zero_stage"] for rid in EXPECTED_ZERO}
        on = pr.compare()
    with switches(False):
        off = pr.compare()
    crit = {"C1_zero_stages": zero == EXPECTED_ZERO, **criteria(off, on)}
    keys = ("num_evaluated", "num_refused", "refused", "num_within_row_target", "median_abs_rel_error")
    return {"rule": "docs/notes/s33pub_rule.md", "zero_stage_on": zero,
            "summary_off": {k: off["summary"][k] for k in keys}, "summary_on": {k: on["summary"][k] for k in keys},
            "moved": moved(off, on), "criteria": crit,
            "adopt": all(v for k, v in crit.items() if k != "P3_left")}


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s33pub_judge", __doc__)
    ap.add_argument("--json", type=Path, default=None, help="write the judgement here")
    args = ap.parse_args(argv)
    return entry.print_json(args.json, judge(), sort_keys=True, default=float)


if __name__ == "__main__":
    raise SystemExit(main())
