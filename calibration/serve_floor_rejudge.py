"""Session s28serve (issue 15; docs/notes/s28serve_rule.md, committed before its judging records existed): round 3's
candidate V-H200 (calibration.serve_graph_floor_h200: `timing.ADOPT_GRAPH_OP_FLOOR` with round 2's per-operator floor,
495.0 ns beyond the fit model's 403 captured operators, calibration/s27serve2_fit.json, in the H200 one-GPU table only),
unchanged, judged again on a fresh set (set M) under guards whose K1 median margin is the twin's own draw noise
(seed_noise, computed and committed before set M: calibration/s28serve_noise.json).

Beside it (evidence, no criterion): the --timing instrument. real/serve with `--timing` runs its per-iteration
instrument between iterations; most seen sets (D-I, the fitting runs) were recorded with it. `timing.ADOPT_TIMING_
INSTRUMENT` (off) prices it where a record was run with it (serve.engine_timing): the tables' `timing_loop_s` on loop_s,
fitted on the fitting runs <gpu>/s26start2/fit alone (instrument_fit). Set M repeats two models with --timing.

    python -m calibration.serve_floor_rejudge fit [--json FILE]        # the instrument's term alone (evidence)
    python -m calibration.serve_floor_rejudge noise [--json calibration/s28serve_noise.json]   # K1's margin
    python -m calibration.serve_floor_rejudge guards [--parts]         # sets A-L, committed sets (--parts: evidence)
    python -m calibration.serve_floor_rejudge [--json calibration/s28serve_judgement.json]   # set M, guards, verdict
"""

from __future__ import annotations

import csv
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
from calibration import serve_load_validation as slv
from calibration import serve_pipeline as spl
from calibration import serve_start_sync as ssy
from calibration.records_io import open_csv, read_csv, read_json
from calibration.serve_host_speed import tables_with
from calibration.serve_load_validation import record_host_launch_s
from twin.core.specs import serve_engines
from twin.serving import timing
from twin.serving.timing import host_scale

NAME = "s28serve"
TERM = "timing_loop_s"
NOISE_FILE = Path(__file__).resolve().parent / "s28serve_noise.json"
FRESH_MODELS = ("bench-small", "v2-lite-slice", "v3-slice-1l", "mixtral-mla-slice")   # set M (S28M_PLANS)
FRESH_RUNS = 2 * len(FRESH_MODELS)
TIMED_MODELS = ("bench-small", "v2-lite-slice")   # set M's --timing repeat (evidence): <gpu>/s28serve/timing/<model>
TIMED_FOLDERS = tuple(f"timing/{m}" for m in TIMED_MODELS)
JUDGED = "V-H200"
SEEN_L = (sgfh.NAME, sgfh.FRESH_MODELS)   # round 3's set L (seen)
GUARD_LABELS = {**sgfh.GUARD_LABELS, "L": (sgfh.NAME,)}
POOL_LEFT_OUT = ("I", "J", "K", "L")   # K1 pools sets A-H, as rounds 2-3 (I-L shaped or judged V)
SEED_BASES = (8, 16)   # seed_noise: two other draws of the replays' spread seeds


def gap_rows(root: Path | str | None = None, gpu: str = "h200") -> list[dict]:
    """Per fitting run (<gpu>/s26start2/fit, recorded with --timing): the median gap between a non-idle iteration's end
    and the next iteration's start, the host factor of the run's probe on the card's one-GPU table, and the gap at the
    table's reference host less its loop_s (the instrument's time there)."""
    root = rec.records_root() if root is None else root
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


def instrument_fit(root: Path | str | None = None) -> dict:
    """{TERM: the median over the fitting runs of their instrument_s, the runs' rows} (gap_rows on the H200 fitting
    runs: the only card with fitting records recorded with --timing)."""
    root = rec.records_root() if root is None else root
    cards = slh.fit_cards(root)
    if cards != ["h200"]:
        raise ValueError(f"fitting records: expected the h200 card under <gpu>/{slh.NAME}/fit, found {cards}")
    rows = gap_rows(root, "h200")
    return {TERM: float(np.median([r["instrument_s"] for r in rows])), "card": "h200", "runs": rows}


def tables(root: Path | str | None = None, parts=("floor",)) -> dict[str, dict]:
    """The terms per one-GPU table: round 2's floor in the H200 table alone (V-H200, the candidate: `parts` "floor")
    and/or the instrument's in both ("instrument", evidence: a host term, the same seconds at each table's reference
    host)."""
    root = rec.records_root() if root is None else root
    out = {t: {} for t in spl.ONE_GPU_TABLES}
    if "instrument" in parts:
        c = instrument_fit(root)[TERM]
        for t in out:
            out[t][TERM] = c
    if "floor" in parts:
        out[sgf.FIT_TABLE][sgf.TERM] = sgfh.tables(root)[sgf.FIT_TABLE][sgf.TERM]
    return out


def as_judged():
    """The twin in force as this rule judged it: the floor off (it is the candidate; adopted since, on by default)."""
    return mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", False)


def setting(terms: dict | None):
    """The twin in force (None) or the switches on where `terms` carry their terms (V-H200's floor, the instrument)."""
    stack = ExitStack()
    if terms is not None:
        if any(TERM in v for v in terms.values()):
            stack.enter_context(mock.patch.object(timing, "ADOPT_TIMING_INSTRUMENT", True))
        if any(sgf.TERM in v for v in terms.values()):
            stack.enter_context(mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", True))
        stack.enter_context(tables_with(terms))
    return stack


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-L replayed under the setting in force (A-K as round 3's guards; L, round 3's set)."""
    root = rec.records_root() if root is None else root
    return sgfh.seen_rows(root) + seh.set_rows(SEEN_L[0], SEEN_L[1], root)


def noise_margin(path: Path = NOISE_FILE) -> float:
    """K1's median margin: seed_noise's largest move of the A-H pooled median (committed before set M)."""
    return float(read_json(path)["median_move"])


def guard_criteria(off: list[dict], on: list[dict], margin: float | None = None) -> dict:
    """K1: sets A-H pooled no fewer checks met and a median |error| at most `margin` (noise_margin) higher; K2: each of
    sets A-L at most serve_start_sync.SET_MARGIN_CHECKS (2) checks fewer; the A-L pool reported ("pooled_with_I")."""
    margin = noise_margin() if margin is None else margin
    with mock.patch.object(sgf, "GUARD_LABELS", GUARD_LABELS), mock.patch.object(sgf, "POOL_LEFT_OUT", POOL_LEFT_OUT):
        out = sgf.guard_criteria(off, on)
    crit = out["criteria"]
    del crit["K1_pooled_median_no_higher"]
    crit["K1_pooled_median_within_noise"] = out["pooled"][1][1] <= out["pooled"][0][1] + margin
    out["margin"] = margin
    out["met"] = bool(out["sets"]) and all(crit.values())
    return out


EVIDENCE = {"in force": (), JUDGED: ("floor",), "instrument": ("instrument",), f"{JUDGED}+instrument": ("floor", "instrument")}


def timed_rows(root: Path | str | None = None) -> dict[str, list[dict]]:
    """Set M's --timing repeat (evidence, no criterion) under the twin in force, V-H200, the instrument alone and both."""
    root = rec.records_root() if root is None else root
    out = {}
    for name, parts in EVIDENCE.items():
        with as_judged(), setting(tables(root, parts) if parts else None):
            out[name] = seh.set_rows(NAME, TIMED_FOLDERS, root)
    return out


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, terms: dict | None = None, margin: float | None = None) -> dict:
    """serve_graph_ops.judge with V-H200: set M (`fresh`), sets A-L, the committed sets (criteria J1, J2, K1-K3, K1's
    median within `margin`); set M's --timing repeat beside it (evidence)."""
    root = rec.records_root() if root is None else root
    terms = terms or tables(root)
    with as_judged():
        out = sgo.judge(root, committed_sets, fresh, guards, candidate=lambda: setting(terms), seen=seen_rows,
                        guard=lambda off, on: guard_criteria(off, on, margin), fresh_runs=FRESH_RUNS, judged=JUDGED)
        out["timed"] = timed_rows(root) if fresh else {}
    return out


def guard_parts(root: Path | str | None = None) -> dict[str, dict]:
    """Sets A-L under V-H200, the instrument alone and both (evidence beside the guards): set -> setting -> (checks met,
    median |error|)."""
    root = rec.records_root() if root is None else root
    settings = {name: tables(root, parts) if parts else None for name, parts in EVIDENCE.items()}
    rows = {}
    for name, terms in settings.items():
        with as_judged(), setting(terms):
            rows[name] = seen_rows(root)
    out = {}
    for label, names in GUARD_LABELS.items():
        out[label] = {s: seh.checks([r for r in rs if r["registration"] in names]) for s, rs in rows.items()}
    left = {n for label in POOL_LEFT_OUT for n in GUARD_LABELS[label]}
    out["A-H"] = {s: seh.checks([r for r in rs if r["registration"] not in left]) for s, rs in rows.items()}
    out["A-L"] = {s: seh.checks(rs) for s, rs in rows.items()}
    return out


def seed_noise(root: Path | str | None = None, bases=SEED_BASES) -> dict:
    """The twin in force's own draw noise on sets A-H pooled (K1's pool): the replays' spread seeds moved from 0..7 to
    base..base+7 for each of `bases`; per base (checks met, median |error|) and the largest move of the median from
    seeds 0..7 (K1's margin, fixed by this procedure before set M)."""
    root = rec.records_root() if root is None else root
    left = {n for label in POOL_LEFT_OUT for n in GUARD_LABELS[label]}
    out = {}
    for base in (0, *bases):
        with mock.patch.object(slv, "SPREAD_SEED_BASE", base), as_judged():
            out[base] = seh.checks([r for r in sgfh.seen_rows(root) if r["registration"] not in left])
    return {"pooled": out, "median_move": max(abs(out[b][1] - out[0][1]) for b in bases),
            "checks_move": max(abs(out[b][0] - out[0][0]) for b in bases)}


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_floor_rejudge", __doc__)
    ap.add_argument("what", nargs="?", choices=("judge", "fit", "guards", "noise"), default="judge",
                    help="fit: the instrument's term from the fitting runs alone (evidence); noise: K1's margin (the "
                         "twin in force's A-H pool under other spread seeds); guards: sets A-L and the committed sets "
                         "under V-H200 (no set M); judge: set M, the guards and the verdict")
    ap.add_argument("--parts", action="store_true", help="guards: sets A-L under V-H200, the instrument and both "
                                                          "(evidence, no verdict)")
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
        entry.write_json(args.json, {"source": "calibration.serve_floor_rejudge fit: the fitting load runs "
                                     f"<gpu>/{slh.NAME}/fit/<model> (docs/notes/s28serve_rule.md)", **fit}, sort_keys=True)
        return 0
    if args.what == "noise":
        got = seed_noise(root)
        for base, (c, m) in got["pooled"].items():
            print(f"sets A-H pooled, the twin in force, spread seeds {base}..{base + 7}: {c} checks, median {m:.3%}")
        print(f"largest move from seeds 0..7: median {got['median_move'] * 100:.3f} points, {got['checks_move']} checks")
        entry.write_json(args.json, {"source": "calibration.serve_floor_rejudge noise", **got}, sort_keys=True, default=str)
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
    print(f"K1's median margin (calibration/s28serve_noise.json): {out['result']['guard'].get('margin', 0) * 100:.3f} "
          "points")
    sgo.print_judgement(out, JUDGED, "A-H")
    for name, rows in out["timed"].items():
        c, m = seh.checks(rows)
        print(f"set M --timing repeat (evidence), {name}: {c} of {5 * len(rows)} checks, median {m:.2%}")
        for r in rows:
            print(seh._rows_line(f"  timed {name}", r))
    if args.json:
        record = {**sgo.judgement_record(out, {**terms, "instrument": tables(root, ("instrument",))}, JUDGED),
                  "K1_margin": out["result"]["guard"].get("margin"),
                  "timed": {k: ssy.slim_rows(v) for k, v in out["timed"].items()}}
        entry.write_json(args.json, record, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
