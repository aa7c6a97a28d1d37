"""Session s27serve round 2 (issue 15; docs/notes/s27serve2_rule.md, committed before its judging records existed): a
CUDA-graph decode replay's per-operator floor relative to the model the one-GPU tables were fitted on.

Candidate V = the twin in force (T) with `timing.ADOPT_GRAPH_OP_FLOOR` on and one term in each one-GPU real.serve table:
a graph-replayed iteration of a model whose captured decode forward has n operators (timing.graph_ops) costs what it
costs in force plus graph_op_floor_s x (n - 403), 403 the operators of v3-slice-2l's (timing.ENGINE_FIT_MODEL: the model
every one-GPU table's iteration_s was fitted on). The fit model's replays are priced as before by construction.
The term comes from every graph-replayed decode iteration of the fitting runs <gpu>/s26start2/fit/<model> (the same
fitting runs as round 1's U): least squares through the origin of (duration_s - the twin in force's duration, its
loop left out) on (n - 403), once more without the iterations above TRIM_RATIO x the first fit's duration. The H200
table's prediction (the records' card); the same term in the H100 table (a per-kernel floor of the captured forward,
Hopper alike: not measured on an H100). No load set (A-K) enters.

    python -m calibration.serve_graph_floor fit [--json calibration/s27serve2_fit.json]     # the term alone
    python -m calibration.serve_graph_floor guards                                          # sets A-J, committed sets
    python -m calibration.serve_graph_floor [--json calibration/s27serve2_judgement.json]   # set K, guards, verdict
"""

from __future__ import annotations

import csv
import math
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_graph_ops as sgo
from calibration import serve_load_host as slh
from calibration import serve_pipeline as spl
from calibration.records_io import open_csv, read_csv
from calibration.serve_engine_fit import base_table
from calibration.serve_host_speed import tables_with
from calibration.serve_load_validation import scenario_for
from twin.serving import timing
from twin.serving.timing import IterationCosts

NAME = "s27serve2"
FIT_TABLE = "real-serve-h200-ep1"
TERM = "graph_op_floor_s"
TRIM_RATIO = 2.0
FIT_FILE = Path(__file__).resolve().parent / "s27serve2_fit.json"
FRESH_MODELS = ("bench-small", "v2-lite-slice", "v3-slice-1l", "mixtral-mla-slice")   # set K (S27K_PLANS)
FRESH_RUNS = 8
JUDGED = "V"
SEEN_J = (sgo.NAME, sgo.FRESH_MODELS)   # round 1's set J (seen: it shaped V beside set I)
GUARD_LABELS = {**sgo.GUARD_LABELS, "J": (sgo.NAME,)}
POOL_LEFT_OUT = ("I", "J")   # K1 pools sets A-H; I and J shaped V


def floor_rows(root: Path | str, gpu: str, folders=None, split: str = "fit") -> list[dict]:
    """Every graph-replayed decode iteration of the card's fitting runs (or of `folders`' runs of `split`, a
    diagnostic): the model, its captured operators beyond the fit model's, duration_s and the twin in force's duration
    (iteration_s less the loop) at the run's host probe, priced without the floor (adopted since s28serve)."""
    with mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", False):   # the residual is the floor's: priced without it
        return _floor_rows(root, gpu, folders, split)


def _floor_rows(root: Path | str, gpu: str, folders, split: str) -> list[dict]:
    out = []
    for d in (slh.fit_folders(root, gpu) if folders is None else folders):
        with open_csv(d / "serve_load.csv") as f:
            runs = {r["run_id"]: r for r in csv.DictReader(f) if r["split"] == split}
        its = read_csv(d / "serve_iterations.csv")
        its = its[(its.graph_batch > 0) & (its.prefill_seqs == 0) & (its.idle == 0) & its.run_id.isin(runs.keys())]
        for run_id, it in its.groupby("run_id"):
            run = runs[run_id]
            sc = scenario_for(run, spread=False, engine=base_table(run))
            costs = IterationCosts(sc.model, sc.gpu, sc.serve)
            for r in it.itertuples():
                if not (math.isfinite(r.duration_s) and r.duration_s > 0 and r.decode_seqs > 0):
                    continue
                b = int(r.decode_seqs)
                t, _ = costs.iteration_s(b, r.decode_kv_tokens / b, 0.0, 0.0, float(r.max_kv_tokens))
                out.append({"model": run["model"], "run_id": run_id, "ops_over_fit": costs.graph_ops_over_fit,
                            "rows": b, "duration_s": float(r.duration_s), "in_force_s": t - costs.loop_of(False)})
    return out


def fit_term(x: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Least squares through the origin of y - pred on x, once more without the rows whose y is above TRIM_RATIO x
    (pred + the first fit); the term, counts and the in-sample median |relative error| before and after."""
    c = float(x @ (y - pred) / (x @ x))
    keep = y <= TRIM_RATIO * (pred + c * x)
    xk = x[keep]
    c = float(xk @ (y[keep] - pred[keep]) / (xk @ xk))
    return {TERM: c, "rows": int(len(y)), "rows_left_out": int((~keep).sum()),
            "in_force_median_abs_rel_error": float(np.median(np.abs(pred[keep] / y[keep] - 1))),
            "fit_median_abs_rel_error": float(np.median(np.abs((pred[keep] + c * xk) / y[keep] - 1)))}


def floor_fit(root: Path | str | None = None) -> dict[str, dict]:
    """{one-GPU table: V's term}: fit_term on the fitting runs' graph iterations (the H200 table's prediction, the
    records' card), the same term in both tables."""
    root = rec.records_root() if root is None else root
    cards = slh.fit_cards(root)
    if cards != ["h200"]:
        raise ValueError(f"fitting records: expected the h200 card under <gpu>/{slh.NAME}/fit, found {cards}")
    rows = floor_rows(root, "h200")
    x = np.array([r["ops_over_fit"] for r in rows])
    y = np.array([r["duration_s"] for r in rows])
    pred = np.array([r["in_force_s"] for r in rows])
    got = fit_term(x, y, pred)
    return {t: {**got, "card": "h200", "fit_table": FIT_TABLE} for t in spl.ONE_GPU_TABLES}


def by_model(rows: list[dict], term_s: float) -> dict[str, dict[str, float]]:
    """Per model: mean predicted / measured duration in force and under V (a check of the form, no criterion)."""
    out = {}
    for r in rows:
        m = out.setdefault(r["model"], {"in_force": [], JUDGED: []})
        m["in_force"].append(r["in_force_s"] / r["duration_s"])
        m[JUDGED].append((r["in_force_s"] + term_s * r["ops_over_fit"]) / r["duration_s"])
    return {k: {s: float(np.mean(v[s])) for s in v} for k, v in out.items()}


def setting(tables: dict | None):
    """The twin in force (None) or V (the switch on, `tables`' term in the one-GPU tables)."""
    stack = ExitStack()
    if tables is not None:
        stack.enter_context(mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", True))
        stack.enter_context(tables_with({t: {TERM: v[TERM]} for t, v in tables.items()}))
    return stack


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-J replayed under the setting in force (A-I as round 1's guards; J, round 1's set)."""
    root = rec.records_root() if root is None else root
    return sgo.seen_rows(root) + seh.set_rows(SEEN_J[0], SEEN_J[1], root)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """K1: sets A-H pooled (I and J left out: they shaped V) no fewer checks met and a median |error| no higher; K2:
    each of sets A-J at most serve_start_sync.SET_MARGIN_CHECKS (2) checks fewer. Also the A-J pool, reported."""
    with mock.patch.object(slh, "GUARD_LABELS", GUARD_LABELS):
        out = slh.guard_criteria(off, on)
    left = {n for label in POOL_LEFT_OUT for n in GUARD_LABELS[label]}
    out["pooled_with_I"] = out["pooled"]
    out["pooled"] = tuple(seh.checks([r for r in rows if r["registration"] not in left]) for rows in (off, on))
    out["criteria"]["K1_pooled_no_fewer"] = out["pooled"][1][0] >= out["pooled"][0][0]
    out["criteria"]["K1_pooled_median_no_higher"] = out["pooled"][1][1] <= out["pooled"][0][1]
    out["met"] = bool(out["sets"]) and all(out["criteria"].values())
    return out


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, tables: dict | None = None) -> dict:
    """serve_graph_ops.judge with V: set K (`fresh`), sets A-J, the committed sets; criteria K-named as J1/J2 there."""
    root = rec.records_root() if root is None else root
    tables = tables or floor_fit(root)
    with mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", False):   # in force as judged (adopted since s28serve)
        return sgo.judge(root, committed_sets, fresh, guards, candidate=lambda: setting(tables), seen=seen_rows,
                         guard=guard_criteria, fresh_runs=FRESH_RUNS, judged=JUDGED)


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_graph_floor", __doc__, ("judge", "fit", "guards"),
                     "fit: the term from the fitting runs alone; guards: sets A-J and the committed sets under it (no set "
                     "K); judge: set K, the guards and the verdict",
                     json_help="write the fit (fit) or the judgement (judge, guards)")
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if not slh.fit_cards(root):
        return cli.refuse("fitting", root, f"{slh.NAME}/fit/<model>/")
    tables = floor_fit(root)
    v = tables[FIT_TABLE]
    print(f"{TERM} {v[TERM] * 1e9:.1f} ns an operator beyond the fit model's {timing.fit_model_graph_ops():.0f} "
          f"(fitting runs on {v['card']}, {v['rows'] - v['rows_left_out']} graph iterations, {v['rows_left_out']} "
          f"left out above {TRIM_RATIO:g}x); in-sample median |error| {v['in_force_median_abs_rel_error']:.1%} in "
          f"force -> {v['fit_median_abs_rel_error']:.1%}")
    if args.what == "fit":
        for m, r in by_model(floor_rows(root, "h200"), v[TERM]).items():
            print(f"  {m}: mean predicted / measured duration in force {r['in_force']:.3f}, V {r[JUDGED]:.3f}")
        if args.json:
            cli.write_json(args.json, {"source": "calibration.serve_graph_floor fit: the fitting load runs "
                                       f"<gpu>/{slh.NAME}/fit/<model> (docs/notes/s27serve2_rule.md)", "tables": tables})
        return 0
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        return cli.refuse("set K", root, f"{NAME}/<model>/")
    return cli.judgement(args, judge(root, committed_sets=not args.no_committed, fresh=fresh, tables=tables),
                         lambda out: sgo.print_judgement(out, JUDGED, "A-H"),
                         lambda out: sgo.judgement_record(out, tables, JUDGED))


if __name__ == "__main__":
    sys.exit(main())
