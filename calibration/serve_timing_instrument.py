"""Session s28serve (issue 15; docs/notes/s28serve_rule.md, committed before its judging records existed): the load
records as they were run. real/serve with `--timing` runs its per-iteration instrument between iterations, and most seen
sets (D-I, the fitting runs) were recorded with it; the twin priced them as if the engine ran alone.

Candidate W = the twin in force (T) with two switches on:
  - `timing.ADOPT_TIMING_INSTRUMENT` and the term `timing_loop_s` in both one-GPU real.serve tables: a scenario whose
    engine ran with --timing (serve.engine_timing, from the record's per-iteration timing columns) pays it on top of
    loop_s at every iteration (host-scaled). Fitted here on the fitting runs <gpu>/s26start2/fit alone (recorded with
    --timing): per run, the median gap between a non-idle iteration's end and the next start at the table's reference
    host (gap / host_scale) less the table's loop_s; the term is the median over the runs. No load set enters.
  - `timing.ADOPT_GRAPH_OP_FLOOR` with round 2's per-operator floor (495.0 ns, calibration/s27serve2_fit.json, not
    refitted) in the H200 one-GPU table only (round 3's V-H200, calibration.serve_graph_floor_h200).
Judged on set M (h200/s28serve/<model>: four models without --timing; h200/s28serve/timing/<model>: two of them with
it); guards on sets A-L and the committed sets.

    python -m calibration.serve_timing_instrument fit [--json calibration/s28serve_fit.json]   # the term alone
    python -m calibration.serve_timing_instrument guards [--parts]                             # sets A-L, committed sets
    python -m calibration.serve_timing_instrument [--json calibration/s28serve_judgement.json]  # set M, guards, verdict
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_graph_floor as sgf
from calibration import serve_graph_floor_h200 as sgfh
from calibration import serve_graph_ops as sgo
from calibration import serve_load_host as slh
from calibration import serve_pipeline as spl
from calibration.records_io import open_csv, read_csv
from calibration.serve_host_speed import tables_with
from calibration.serve_load_validation import record_host_launch_s
from twin.core.specs import serve_engines
from twin.serving import timing
from twin.serving.timing import host_scale

NAME = "s28serve"
TERM = "timing_loop_s"
FIT_FILE = Path(__file__).resolve().parent / "s28serve_fit.json"
UNTIMED_MODELS = ("bench-small", "v2-lite-slice", "v3-slice-1l", "qwen3moe-mla-slice")   # set M (S28M_PLANS)
TIMED_MODELS = ("bench-small", "v2-lite-slice")   # set M's --timing repeat (S28MT_PLANS)
FRESH_MODELS = UNTIMED_MODELS + tuple(f"timing/{m}" for m in TIMED_MODELS)   # folders under <gpu>/s28serve/
FRESH_RUNS = 2 * len(FRESH_MODELS)
JUDGED = "W"
SEEN_L = (sgfh.NAME, sgfh.FRESH_MODELS)   # round 3's set L (seen)
GUARD_LABELS = {**sgfh.GUARD_LABELS, "L": (sgfh.NAME,)}
POOL_LEFT_OUT = ("I", "J", "K", "L")   # K1 pools sets A-H, as rounds 2-3 (I-L shaped or judged V)


def gap_rows(root: Path | str = rec.MEASUREMENTS_DIR, gpu: str = "h200") -> list[dict]:
    """Per fitting run (<gpu>/s26start2/fit, recorded with --timing): the median gap between a non-idle iteration's end
    and the next iteration's start, the host factor of the run's probe on the card's one-GPU table, and the gap at the
    table's reference host less its loop_s (the instrument's time there)."""
    table = serve_engines()[f"real-serve-{gpu}-ep1"]
    out = []
    for d in slh.fit_folders(root, gpu):
        with open_csv(d / "serve_load.csv") as f:
            runs = {r["run_id"]: r for r in csv.DictReader(f) if r["split"] == "fit"}
        its = read_csv(d / "serve_iterations.csv")
        for run_id, it in its[its.run_id.isin(runs.keys()) & (its["rank"] == 0)].groupby("run_id"):
            it = it.sort_values("iteration")
            gap = (it.start_s.shift(-1) - it.start_s - it.duration_s).to_numpy()[:-1]
            gap = gap[(it.idle.to_numpy()[:-1] == 0) & np.isfinite(gap)]
            f = host_scale(table, record_host_launch_s(runs[run_id]))
            g = float(np.median(gap))
            out.append({"model": d.name, "run_id": run_id, "gap_p50_s": g, "host_factor": f,
                        "iterations": int(len(gap)), "instrument_s": g / f - table["loop_s"]})
    return out


def instrument_fit(root: Path | str = rec.MEASUREMENTS_DIR) -> dict:
    """{TERM: the median over the fitting runs of their instrument_s, the runs' rows} (gap_rows on the H200 fitting
    runs: the only card with fitting records recorded with --timing)."""
    cards = slh.fit_cards(root)
    if cards != ["h200"]:
        raise ValueError(f"fitting records: expected the h200 card under <gpu>/{slh.NAME}/fit, found {cards}")
    rows = gap_rows(root, "h200")
    return {TERM: float(np.median([r["instrument_s"] for r in rows])), "card": "h200", "runs": rows}


def tables(root: Path | str = rec.MEASUREMENTS_DIR, parts=("instrument", "floor")) -> dict[str, dict]:
    """W's terms per one-GPU table: the instrument's in both (a host term: the same seconds at each table's reference
    host), round 2's floor in the H200 table alone (round 3's V-H200). `parts` picks one of them (a diagnostic)."""
    out = {t: {} for t in spl.ONE_GPU_TABLES}
    if "instrument" in parts:
        c = instrument_fit(root)[TERM]
        for t in out:
            out[t][TERM] = c
    if "floor" in parts:
        out[sgf.FIT_TABLE][sgf.TERM] = sgfh.tables(root)[sgf.FIT_TABLE][sgf.TERM]
    return out


def setting(terms: dict | None):
    """The twin in force (None) or W (its switches on where `terms` carry their terms)."""
    stack = ExitStack()
    if terms is not None:
        if any(TERM in v for v in terms.values()):
            stack.enter_context(mock.patch.object(timing, "ADOPT_TIMING_INSTRUMENT", True))
        if any(sgf.TERM in v for v in terms.values()):
            stack.enter_context(mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", True))
        stack.enter_context(tables_with(terms))
    return stack


def seen_rows(root: Path | str = rec.MEASUREMENTS_DIR) -> list[dict]:
    """Sets A-L replayed under the setting in force (A-K as round 3's guards; L, round 3's set)."""
    return sgfh.seen_rows(root) + seh.set_rows(SEEN_L[0], SEEN_L[1], root)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """K1: sets A-H pooled no fewer checks met and a median |error| no higher; K2: each of sets A-L at most
    serve_start_sync.SET_MARGIN_CHECKS (2) checks fewer; the A-L pool reported ("pooled_with_I")."""
    with mock.patch.object(sgf, "GUARD_LABELS", GUARD_LABELS), mock.patch.object(sgf, "POOL_LEFT_OUT", POOL_LEFT_OUT):
        return sgf.guard_criteria(off, on)


def timed_criteria(off: list[dict], on: list[dict], full: bool) -> dict[str, bool]:
    """J3: set M's runs recorded with --timing: no fewer checks met and a lower median |error| (nothing met unless
    `full`: every run of set M there and complete)."""
    a = seh.checks([r for r in off if r["model"].startswith("timing/")])
    b = seh.checks([r for r in on if r["model"].startswith("timing/")])
    return {"J3_timed_no_fewer_lower_median": full and b[0] >= a[0] and b[1] < a[1]}


def judge(root: Path | str = rec.MEASUREMENTS_DIR, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, terms: dict | None = None) -> dict:
    """serve_graph_ops.judge with W: set M (`fresh`), sets A-L, the committed sets (criteria J1-J3, K1-K3)."""
    terms = terms or tables(root)
    out = sgo.judge(root, committed_sets, fresh, guards, candidate=lambda: setting(terms), seen=seen_rows,
                    guard=guard_criteria, fresh_runs=FRESH_RUNS, judged=JUDGED)
    if fresh:
        res, off, on = out["result"], out["rows"][None]["J"], out["rows"][JUDGED]["J"]
        full = len(off) >= FRESH_RUNS and len(on) == len(off) and not out["incomplete"]
        res["J"]["timed"] = (seh.checks([r for r in off if r["model"].startswith("timing/")]),
                             seh.checks([r for r in on if r["model"].startswith("timing/")]))
        res["criteria"].update(timed_criteria(off, on, full))
        res["passes"] = bool(guards and committed_sets and all(res["criteria"].values()))
        out["adopt"] = JUDGED if res["passes"] else None
    return out


def guard_parts(root: Path | str = rec.MEASUREMENTS_DIR) -> dict[str, dict]:
    """Sets A-L under each part of W alone and under W (a diagnostic beside the guards): set -> setting ->
    (checks met, median |error|)."""
    settings = {"in force": None, "instrument": tables(root, ("instrument",)), "floor": tables(root, ("floor",)),
                JUDGED: tables(root)}
    rows = {}
    for name, terms in settings.items():
        with setting(terms):
            rows[name] = seen_rows(root)
    out = {}
    for label, names in GUARD_LABELS.items():
        out[label] = {s: seh.checks([r for r in rs if r["registration"] in names]) for s, rs in rows.items()}
    left = {n for label in POOL_LEFT_OUT for n in GUARD_LABELS[label]}
    out["A-H"] = {s: seh.checks([r for r in rs if r["registration"] not in left]) for s, rs in rows.items()}
    out["A-L"] = {s: seh.checks(rs) for s, rs in rows.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_timing_instrument", __doc__)
    ap.add_argument("what", nargs="?", choices=("judge", "fit", "guards"), default="judge",
                    help="fit: the instrument's term from the fitting runs alone; guards: sets A-L and the committed "
                         "sets under W (no set M); judge: set M, the guards and the verdict")
    ap.add_argument("--parts", action="store_true", help="guards: sets A-L under each part of W alone (no verdict)")
    ap.add_argument("--no-committed", action="store_true", help="leave out the committed sets (no verdict then)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the fit (fit) or the judgement (judge, guards)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if not slh.fit_cards(root):
        print(f"no fitting records under {root}/<gpu>/{slh.NAME}/fit/<model>/", file=sys.stderr)
        return 2
    fit = instrument_fit(root)
    print(f"{TERM} {fit[TERM] * 1e6:.2f} us at the reference host (median of {len(fit['runs'])} fitting runs on "
          f"{fit['card']}: " + ", ".join(f"{r['instrument_s'] * 1e6:.1f}" for r in fit["runs"]) + " us)")
    if args.what == "fit":
        if args.json:
            args.json.write_text(json.dumps({"source": "calibration.serve_timing_instrument fit: the fitting load runs "
                                             f"<gpu>/{slh.NAME}/fit/<model> (docs/notes/s28serve_rule.md)", **fit},
                                            indent=1, sort_keys=True) + "\n")
        return 0
    if args.what == "guards" and args.parts:
        for label, per in guard_parts(root).items():
            print(f"set {label:4} " + "   ".join(f"{s} {c}/{m:.2%}" for s, (c, m) in per.items()))
        return 0
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        print(f"no set M records under {root}/<gpu>/{NAME}/<model>/", file=sys.stderr)
        return 2
    terms = tables(root)
    out = judge(root, committed_sets=not args.no_committed, fresh=fresh, terms=terms)
    sgo.print_judgement(out, JUDGED, "A-H")
    if args.json:
        args.json.write_text(json.dumps(sgo.judgement_record(out, terms, JUDGED), indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
