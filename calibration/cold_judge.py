"""The judge the cold-charge rounds of issue 15 share (s33mend): s32cold's K (docs/notes/s32cold_rule.md), s32kern's
C-k (docs/notes/s32kern_rule.md) and s33cold's S (docs/notes/s33cold_rule.md) run serve_graph_ops.judge on their fresh
set with their candidate, seen sets and guard, then the same criteria under their own names: N1 the fresh set's checks
met at least `more_checks` more and a lower median |error|; N2 its early runs' TTFT P50 no fewer met and a lower median
|error|; G1 / G3 issue 15's held-out sets (serve_idle_wake.holdout_guards); G2 the `guarded` seen sets no fewer checks.
Each round's module keeps its constants and calls these with them."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_graph_ops as sgo
from calibration import serve_idle_wake as siw
from calibration import serve_judge_cli as sjc
from calibration import serve_lookup as slk

TTFT_P50 = ("ttft_p50_s",)
JSON_HELP = "write the fit, figures or judgement"   # the rounds' --json (fit, screen and judge write it)


def patched(obj, **values) -> ExitStack:
    """A context with obj's attributes set to `values` (a candidate's switches on), in the order given."""
    stack = ExitStack()
    for attr, value in values.items():
        stack.enter_context(mock.patch.object(obj, attr, value))
    return stack


def seen_rows(root: Path | str | None, base, *sets: tuple) -> list[dict]:
    """`base`'s seen rows (a callable of root) and each (records name, models) of `sets`, replayed under the current
    setting."""
    root = rec.records_root() if root is None else root
    rows = base(root)
    for name, models in sets:
        rows = rows + seh.set_rows(name, models, root)
    return rows


def guard_criteria(off: list[dict], on: list[dict], labels: dict, guarded: tuple) -> dict:
    """G2: serve_lookup.guard_criteria over the sets `labels` names; each of `guarded` no fewer checks met under the
    candidate (every set's counts reported); met only when every guarded set was there."""
    with mock.patch.object(slk, "GUARD_LABELS", labels):
        out = slk.guard_criteria(off, on)
    crit = {f"G2_set_{k}_no_fewer": out["sets"][k][1][0] >= out["sets"][k][0][0] for k in guarded if k in out["sets"]}
    return {**out, "criteria": crit, "met": len(crit) == len(guarded) and all(crit.values())}


def criteria(out: dict, *, judged: str, fresh_runs: int, more_checks: int, guarded: tuple, names: tuple[str, str],
             early: str) -> dict:
    """The round's two fresh-set criteria (`names`: N1's and N2's keys), then G1, G3 and G2 (module doc); `early` marks
    the early runs' ids (N2)."""
    res, rows = out["result"], out["rows"]
    off, on = rows[None]["J"], rows[judged]["J"]
    full = len(off) >= fresh_runs and len(on) == len(off) and not out["incomplete"]
    a, b = seh.checks(off), seh.checks(on)
    eo, en = ([r for r in x if early in r["run_id"]] for x in (off, on))
    ea, eb = seh.checks(eo, TTFT_P50), seh.checks(en, TTFT_P50)
    crit = {names[0]: bool(full and b[0] >= a[0] + more_checks and b[1] < a[1]),
            names[1]: bool(full and eo and eb[0] >= ea[0] and eb[1] < ea[1])}
    held, lost = siw.holdout_guards(rows, res, judged)
    crit.update(held)
    crit.update(res["guard"]["criteria"])
    complete = len(res["guard"]["criteria"]) == len(guarded) and lost is not None
    return {"criteria": crit, "early": (ea, eb), "all": (a, b), "lost": lost or [],
            "passes": bool(off and complete and all(crit.values()))}


def judge(root: Path | str | None, committed_sets: bool, fresh, guards: bool, *, candidate, seen, guard,
          fresh_runs: int, judged: str, criteria) -> dict:
    """serve_graph_ops.judge with the round's candidate, seen sets and guard; its `criteria` and the verdict."""
    root = rec.records_root() if root is None else root
    out = sgo.judge(root, committed_sets, fresh, guards, candidate=candidate, seen=seen, guard=guard,
                    fresh_runs=fresh_runs, judged=judged)
    got = criteria(out)
    out["result"].update(criteria=got["criteria"], passes=got["passes"], early=got["early"], lost=got["lost"])
    out["adopt"] = judged if got["passes"] and fresh else None
    return out


def judged(args, root: Path | str, fresh: tuple, label: str, judge) -> tuple[dict, tuple | None] | None:
    """The command's judge part: `judge` on the fresh set (`fresh`: records name, models) for `judge`, without it for
    `guards`; (its output, the fresh set or None). None where the judge part finds no fresh records (one line said)."""
    fresh = fresh if args.what == "judge" else None
    if fresh and not seh.set_rows(fresh[0], fresh[1], root):
        sjc.refuse(label, root, f"{fresh[0]}/<model>/")
        return None
    return judge(root, committed_sets=not args.no_committed, fresh=fresh), fresh
