"""Session s27serve (issue 15; docs/notes/s27serve_rule.md, committed before its judging records existed): a CUDA-graph
decode replay priced by its captured operators and rows, fitted on the fitting load runs of s26start round 2.

Candidate U = the twin in force (T: s26start round 2's three switches) with `timing.ADOPT_GRAPH_DECODE_OPS` on and
three terms in each one-GPU real.serve table: a graph-replayed iteration costs
    graph_host_s x host_scale + its kernels + graph_op_s x graph_ops(model) + graph_row_s x padded rows + loop_s + ...
in place of iteration_s + its kernels + ... The terms come from every graph-replayed decode iteration (graph_batch > 0,
no prompt work, not idle) of the fitting runs <gpu>/s26start2/fit/<model> (four models of 216-427 captured operators):
    duration_s - kernels = graph_host_s x host_scale(table, the run's probe) + graph_op_s x ops + graph_row_s x rows
(kernels: the twin's cost functions at the iteration's padded rows and context, as the twin prices them), by
non-negative least squares on absolute residuals (the mean: the table's spread is drawn around it), then once more
without the iterations whose duration is above TRIM_RATIO x the first fit's (host stalls, which the spread carries).
Each table at its own reference host (host_scale), the GPU terms shared. No load set (A-J) enters.

    python -m calibration.serve_graph_ops fit [--json calibration/s27serve_fit.json]     # the terms alone
    python -m calibration.serve_graph_ops guards                                         # sets A-I, committed sets
    python -m calibration.serve_graph_ops [--json calibration/s27serve_judgement.json]   # set J, guards, verdict
"""

from __future__ import annotations

import csv
import math
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
from scipy.optimize import nnls

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_load_host as slh
from calibration import serve_pipeline as spl
from calibration import serve_prefill_kernels as spk
from calibration import serve_start_sync as ssy
from calibration import serve_switch_compare as ssc
from calibration.records_io import open_csv, read_csv
from calibration.serve_engine_fit import base_table
from calibration.serve_host_speed import tables_with
from calibration.serve_load_validation import record_host_launch_s, scenario_for
from twin.serving import timing
from twin.serving.pipeline import eager_ops
from twin.serving.timing import IterationCosts, engine_costs

NAME = "s27serve"
FIT_NAME = slh.NAME            # the fitting runs: <gpu>/s26start2/fit/<model> (real/serve plans gpu1-s26f-*)
TERMS = ("graph_host_s", "graph_op_s", "graph_row_s")
TRIM_RATIO = 2.0
FIT_FILE = Path(__file__).resolve().parent / "s27serve_fit.json"
FRESH_MODELS = ("bench-small", "v2-lite-slice", "v3-slice-1l")   # set J (real/serve/plans.py S27J_PLANS)
FRESH_RUNS = 6
JUDGED = "U"
SEEN_I = (slh.NAME, slh.FRESH_MODELS)   # set I: s26start round 2's held-out runs (seen: its misses shaped U)
GUARD_LABELS = {**slh.GUARD_LABELS, "I": (slh.NAME,)}


def graph_rows(root: Path | str, gpu: str, folders=None, split: str = "fit") -> list[dict]:
    """Every graph-replayed decode iteration of the card's fitting runs (or of `folders`' runs of `split`, a
    diagnostic): its captured operators, padded rows, the twin's kernel seconds at it, duration_s and the run's host
    probe (s a launch)."""
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
            ops = timing.graph_ops(eager_ops(run["model"]), sc.model)
            for r in it.itertuples():
                if not (math.isfinite(r.duration_s) and r.duration_s > 0 and r.decode_seqs > 0):
                    continue
                b = int(r.decode_seqs)
                kern, _, eager, rows, _ = costs._kernels(b, r.decode_kv_tokens / b, 0.0, 0.0, float(r.max_kv_tokens), 0.0)
                if eager:
                    continue
                out.append({"model": run["model"], "run_id": run_id, "ops": ops, "rows": float(rows), "kern_s": kern,
                            "duration_s": float(r.duration_s), "probe_s": record_host_launch_s(run)})
    return out


def fit_terms(scale: np.ndarray, ops: np.ndarray, rows: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """NNLS of y = graph_host_s x scale + graph_op_s x ops + graph_row_s x rows (absolute residuals), once more without
    the rows above TRIM_RATIO x the first fit; the terms, the in-sample median |relative error| and counts."""
    X = np.column_stack([scale, ops, rows])
    c, _ = nnls(X, y)
    keep = y <= TRIM_RATIO * (X @ c)
    c, _ = nnls(X[keep], y[keep])
    return {**dict(zip(TERMS, map(float, c))), "fit_median_abs_rel_error": float(np.median(np.abs(X[keep] @ c / y[keep] - 1))),
            "rows": int(len(y)), "rows_left_out": int((~keep).sum())}


def graph_fit(root: Path | str | None = None, gpu: str | None = None) -> dict[str, dict]:
    """{one-GPU table: U's three terms}: fit_terms on the card's fitting graph iterations, y = duration_s less the
    twin's kernels, each table's host term at its own reference host."""
    root = rec.records_root() if root is None else root
    cards = slh.fit_cards(root)
    if gpu is None:
        if len(cards) != 1:
            raise ValueError(f"fitting records: expected one card under <gpu>/{FIT_NAME}/fit, found {cards}")
        gpu = cards[0]
    rows = graph_rows(root, gpu)
    if not rows:
        raise ValueError(f"no graph iterations under {gpu}/{FIT_NAME}/fit")
    y = np.array([r["duration_s"] - r["kern_s"] for r in rows])
    ops, nrows = np.array([r["ops"] for r in rows]), np.array([r["rows"] for r in rows])
    out = {}
    for t in spl.ONE_GPU_TABLES:
        scale = np.array([timing.host_scale(engine_costs(t), r["probe_s"]) for r in rows])
        out[t] = {**fit_terms(scale, ops, nrows, y), "card": gpu}
    return out


def by_model(root: Path | str | None = None, tables: dict | None = None) -> dict[str, dict[str, float]]:
    """Per fitting model: the median measured duration and U's (at the H200 table's terms, the run's probe) and the
    committed pricing's (iteration_s + kernels), both as ratios (in-sample: a check of the form, no criterion)."""
    root = rec.records_root() if root is None else root
    gpu = slh.fit_cards(root)[0]
    tables = tables or graph_fit(root, gpu)
    out = {}
    for r in graph_rows(root, gpu):
        t = "real-serve-h200-ep1" if gpu == "h200" else "real-serve-h100-ep1"
        e, v = engine_costs(t), tables[t]
        f = timing.host_scale(e, r["probe_s"])
        u = v["graph_host_s"] * f + r["kern_s"] + v["graph_op_s"] * r["ops"] + v["graph_row_s"] * r["rows"]
        c = e["iteration_s"] * f + r["kern_s"]
        m = out.setdefault(r["model"], {"U": [], "committed": []})
        m["U"].append(u / r["duration_s"])
        m["committed"].append(c / r["duration_s"])
    return {k: {s: float(np.median(v[s])) for s in v} for k, v in out.items()}


def setting(tables: dict | None):
    """The twin in force (None) or U (the switch on, `tables`' three terms in the one-GPU tables)."""
    stack = ExitStack()
    if tables is not None:
        stack.enter_context(mock.patch.object(timing, "ADOPT_GRAPH_DECODE_OPS", True))
        stack.enter_context(tables_with({t: {k: v[k] for k in TERMS} for t, v in tables.items()}))
    return stack


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-I replayed under the setting in force (A-H as s26start round 2's guards; I, its held-out set)."""
    root = rec.records_root() if root is None else root
    return slh.seen_rows(root) + seh.set_rows(SEEN_I[0], SEEN_I[1], root)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """K1: sets A-H pooled (set I left out: its misses shaped U) no fewer checks met and a median |error| no higher;
    K2: each of sets A-I at most serve_start_sync.SET_MARGIN_CHECKS (2) checks fewer. Also the A-I pool, reported."""
    with mock.patch.object(slh, "GUARD_LABELS", GUARD_LABELS):
        out = slh.guard_criteria(off, on)
    out["pooled_with_I"] = out["pooled"]
    out["pooled"] = tuple(seh.checks([r for r in rows if r["registration"] not in GUARD_LABELS["I"]]) for rows in (off, on))
    out["criteria"]["K1_pooled_no_fewer"] = out["pooled"][1][0] >= out["pooled"][0][0]
    out["criteria"]["K1_pooled_median_no_higher"] = out["pooled"][1][1] <= out["pooled"][0][1]
    out["met"] = bool(out["sets"]) and all(out["criteria"].values())
    return out


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, tables: dict | None = None, candidate=None, seen=None, guard=None,
          fresh_runs: int = FRESH_RUNS, judged: str = JUDGED) -> dict:
    """The twin in force and the candidate on the fresh set (`fresh`: (records name, models); set J by default), the
    seen sets (`guards`) and the committed sets (`committed_sets`); the criteria (J1, J2, K1-K3) and the verdict. The
    candidate: U with `tables`' terms (default: graph_fit on the fitting runs); a later round passes its own
    `candidate` (a context of the candidate on), `seen` (the seen sets' rows) and `guard` (K1, K2 on them)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    if candidate is None:
        tables = tables or graph_fit(root)
        candidate = lambda: setting(tables)   # noqa: E731
    seen, guard = seen or seen_rows, guard or guard_criteria
    rows = {}
    for cand in (None, judged):
        with candidate() if cand else ExitStack():
            rows[cand] = {"J": seh.set_rows(fresh[0], fresh[1], root) if fresh else [],
                          "seen": seen(root) if guards else [],
                          "committed": ssc.all_rows(root) if committed_sets else None}
    incomplete = slh.incomplete_runs(root, fresh[0], fresh[1]) if fresh else []
    j = slh.fresh_criteria(rows[None]["J"], rows[judged]["J"], runs=fresh_runs, incomplete=tuple(incomplete),
                           models=fresh[1] if fresh else ())
    j["criteria"] = {k.replace("I1_", "J1_").replace("I2_", "J2_"): v for k, v in j["criteria"].items()}
    k = guard(rows[None]["seen"], rows[judged]["seen"]) if guards else {"met": False, "criteria": {}}
    res = {"J": j, "guard": k}
    if committed_sets:
        s_off, s_on = ssc.summary(rows[None]["committed"]), ssc.summary(rows[judged]["committed"])
        res.update(summary_off=s_off, summary_on=s_on, committed=ssy.committed_criteria(s_off, s_on))
    else:
        res["committed"] = {"K3_not_computed": False}
    crit = {**j["criteria"], **k["criteria"], **res["committed"]}
    res["criteria"] = crit
    res["passes"] = bool(fresh and guards and committed_sets and all(crit.values()))
    return {"rows": rows, "result": res, "incomplete": incomplete, "adopt": judged if res["passes"] else None}


_line = ssy._line


def print_judgement(out: dict, judged: str = JUDGED, seen_label: str = "A-H") -> None:
    res, rows = out["result"], out["rows"]
    if rows[None]["J"]:
        print(_line(f"set in force -> {judged} (of {5 * len(rows[None]['J'])})", res["J"]["all"]))
        for m, pair in res["J"]["models"].items():
            print("  " + _line(m, pair))
        print(f"  set by figure (in force -> {judged}): " + spk._by_figure(rows[None]["J"], rows[judged]["J"]))
    ssy.print_guards(res, seen_label, judged)
    if "pooled_with_I" in res["guard"]:
        print(_line("every seen set pooled (reported)", res["guard"]["pooled_with_I"]))
    print("criteria: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in res["criteria"].items()))
    for cand in (None, judged):
        for r in rows[cand]["J"]:
            print(seh._rows_line(f"J {cand or 'in force'}", r))
    if out["incomplete"]:
        print(f"incomplete (requests not all completed): {', '.join(out['incomplete'])}")
    print(f"verdict: {f'ADOPT candidate {judged}' if out['adopt'] else 'not adopted'}")


def judgement_record(out: dict, tables: dict, judged: str = JUDGED) -> dict:
    """Set J's rows per setting, the guards' counts, U's terms, criteria and the verdict (for tests to read back)."""
    res = out["result"]
    return {"J": {str(c): ssy.slim_rows(v["J"]) for c, v in out["rows"].items()},
            "seen_sets": {k: [list(v[0]), list(v[1])] for k, v in res["guard"].get("sets", {}).items()},
            "pooled": [list(x) for x in res["guard"].get("pooled", ())],
            "pooled_with_I": [list(x) for x in res["guard"].get("pooled_with_I", ())],
            "summary": {k: {"in_force": list(res["summary_off"][k]), judged: list(res["summary_on"][k])}
                        for k in res.get("summary_off", {})},
            "constants": tables, "criteria": res["criteria"], "passes": res["passes"],
            "incomplete": out["incomplete"], "adopt": out["adopt"]}


def _print_fit(tables: dict) -> None:
    for t, v in tables.items():
        print(f"{t} (fitting runs on {v['card']}): graph_host_s {v['graph_host_s'] * 1e6:.2f} us, graph_op_s "
              f"{v['graph_op_s'] * 1e9:.1f} ns, graph_row_s {v['graph_row_s'] * 1e6:.2f} us; in-sample median |error| "
              f"{v['fit_median_abs_rel_error']:.1%} over {v['rows'] - v['rows_left_out']} iterations "
              f"({v['rows_left_out']} of {v['rows']} left out above {TRIM_RATIO:g}x the first fit)")


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_graph_ops", __doc__, ("judge", "fit", "guards"),
                     "fit: the terms from the fitting runs alone; guards: sets A-I and the committed sets under them (no "
                     "set J); judge: set J, the guards and the verdict",
                     json_help="write the fit (fit) or the judgement (judge, guards)")
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if not slh.fit_cards(root):
        return cli.refuse("fitting", root, f"{FIT_NAME}/fit/<model>/")
    tables = graph_fit(root)
    _print_fit(tables)
    if args.what == "fit":
        for m, v in by_model(root, tables).items():
            print(f"  {m}: median predicted / measured duration, committed {v['committed']:.3f}, U {v['U']:.3f}")
        if args.json:
            cli.write_json(args.json, {"source": "calibration.serve_graph_ops fit: the fitting load runs "
                                       f"<gpu>/{FIT_NAME}/fit/<model> (docs/notes/s27serve_rule.md)", "tables": tables})
        return 0
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        return cli.refuse("set J", root, f"{NAME}/<model>/")
    with mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", False):   # in force as judged (adopted since s28serve)
        out = judge(root, committed_sets=not args.no_committed, fresh=fresh, tables=tables)
    return cli.judgement(args, out, print_judgement, lambda out: judgement_record(out, tables))


if __name__ == "__main__":
    sys.exit(main())
