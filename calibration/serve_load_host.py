"""Session s26start round 2 (issue 15; docs/notes/s26start2_rule.md, committed before its records existed): the eager
prompt step's host terms fitted inside the serving loop, on fitting load runs recorded with `--timing`.

Candidate T = round 1's S (calibration.serve_start_sync: round 1's P with the start and the closing sync,
ADOPT_EAGER_START_SYNC; docs/notes/s26start_rule.md) with its five host terms taken from the fitting load runs of this
delivery (<gpu>/s26start2/fit/<model>/, real/serve plans gpu1-s26f-*) instead of eagerhost's isolated steps:
  host_s = ops x eager_op_s + prompt tokens x start_s_per_token + start_s + start_prompt_only_s [no decode row]
over every eager iteration with prompt work (graph_batch 0, not idle, prefill_seqs > 0) of the fitting runs, its
operators from twin/data/serve_eager_ops.toml (stage_ops at the iteration's chunks and decode rows), host_s at each
one-GPU table's reference host (the run's host probe undone, as every host term); relative non-negative least squares,
then once more without the iterations whose host is above twice the first fit (first-size stalls: the twin prices them
apart); `sync_s` the median over the kept iterations of (duration_s - gpu_s) at the reference host. Every model alike.

    python -m calibration.serve_load_host fit [--json calibration/s26start2_fit.json]   # (a) alone: the host terms
    python -m calibration.serve_load_host [--no-committed] [--json calibration/s26start2_judgement.json]  # set I, guards
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_pipeline as spl
from calibration import serve_prefill_kernels as spk
from calibration import serve_start_sync as ssy
from calibration import serve_switch_compare as ssc
from calibration.records_io import csv_exists, open_csv, read_json
from calibration.serve_load_validation import record_host_launch_s
from twin.core.specs import get_model
from twin.serving import timing
from twin.serving.pipeline import eager_ops, stage_ops
from twin.serving.timing import engine_costs

NAME = "s26start2"
FIT_MODELS = ("qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice", "v3-slice-2l")  # S26F_PLANS
FIT_RUNS = 8
FRESH_MODELS = ("v2-lite-slice", "v3-slice-1l", "bench-small")   # set I (real/serve/plans.py S26I_PLANS)
FRESH_RUNS = 6
TRIM_RATIO = 2.0            # the second pass leaves out iterations whose host is above this many times the first fit
TERMS = ssy.HOST_FIT_TERMS  # eager_op_s, start_s_per_token, start_s, start_prompt_only_s
FIT_FILE = Path(__file__).resolve().parent / "s26start2_fit.json"
JUDGED = "T"


def fit_folders(root: Path | str, gpu: str) -> list[Path]:
    """The fitting runs' folders of one card (<gpu>/s26start2/fit/<model>) that hold records."""
    return [Path(root) / gpu / NAME / "fit" / m for m in FIT_MODELS
            if csv_exists(Path(root) / gpu / NAME / "fit" / m / "serve_load.csv")]


def fit_cards(root: Path | str | None = None) -> list[str]:
    root = rec.records_root() if root is None else root
    return [g for g in seh.GPUS if fit_folders(root, g)]


def iterations(root: Path | str, gpu: str) -> list[dict]:
    """Every eager iteration with prompt work of the card's fitting runs (split fit): its operators, prompt tokens,
    decode rows, host_s, gpu_s, duration_s and the run's host probe (s a launch)."""
    import pandas as pd   # lazy: only the fit reads the iteration records as frames
    out = []
    for d in fit_folders(root, gpu):
        model = d.name
        ops, m = eager_ops(model), get_model(model)
        with open_csv(d / "serve_load.csv") as f:
            probe = {r["run_id"]: record_host_launch_s(r) for r in csv.DictReader(f) if r["split"] == "fit"}
        with open_csv(d / "serve_iterations.csv") as f:
            it = pd.read_csv(f)
        it = it[(it.graph_batch == 0) & (it.idle == 0) & (it.prefill_seqs > 0) & it.run_id.isin(probe.keys())]
        for r in it.itertuples():
            if not (math.isfinite(r.host_s) and math.isfinite(r.gpu_s) and r.host_s > 0):
                continue
            pre, attn, ffn, head = stage_ops(ops, m, int(r.prefill_seqs), int(r.decode_seqs))
            out.append({"model": model, "run_id": r.run_id, "ops": pre + sum(attn) + sum(ffn) + head,
                        "prompt_tokens": float(r.prefill_tokens), "decode_rows": int(r.decode_seqs),
                        "host_s": float(r.host_s), "gpu_s": float(r.gpu_s), "duration_s": float(r.duration_s),
                        "probe_s": probe[r.run_id]})
    return out


def design(rows: list[dict]) -> np.ndarray:
    return np.array([[r["ops"], r["prompt_tokens"], 1.0, float(r["decode_rows"] == 0)] for r in rows])


def fit_terms(X: np.ndarray, y: np.ndarray, outside: np.ndarray) -> dict[str, float]:
    """The host terms (relative NNLS of X c = y; once more without rows whose y is above TRIM_RATIO x the first fit)
    and sync_s (the median of `outside` over the kept rows), with the fit's in-sample median |error| and counts."""
    c = spk._relative_nnls(X, y)
    keep = y <= TRIM_RATIO * (X @ c)
    c = spk._relative_nnls(X[keep], y[keep])
    return {**dict(zip(TERMS, map(float, c))), "sync_s": float(np.median(outside[keep])),
            "fit_median_abs_rel_error": float(np.median(np.abs(X[keep] @ c / y[keep] - 1))),
            "rows": int(len(y)), "rows_left_out": int((~keep).sum())}


def load_host_fit(root: Path | str | None = None, gpu: str | None = None) -> dict[str, dict[str, float]]:
    """{one-GPU table: T's host terms and sync_s}: fit_terms on the card's fitting iterations, each table at its own
    reference host. `gpu`: the card whose fitting runs are read (default: the one card that holds them)."""
    root = rec.records_root() if root is None else root
    cards = fit_cards(root)
    if gpu is None:
        if len(cards) != 1:
            raise ValueError(f"fitting records: expected one card under <gpu>/{NAME}/fit, found {cards}")
        gpu = cards[0]
    rows = iterations(root, gpu)
    if not rows:
        raise ValueError(f"no fitting iterations under {gpu}/{NAME}/fit")
    X = design(rows)
    out = {}
    for t in spl.ONE_GPU_TABLES:
        scale = np.array([timing.host_scale(engine_costs(t), r["probe_s"]) for r in rows])
        y = np.array([r["host_s"] for r in rows]) / scale
        outside = np.array([r["duration_s"] - r["gpu_s"] for r in rows]) / scale
        out[t] = {**fit_terms(X, y, outside), "card": gpu}
    return out


def fit_record(root: Path | str | None = None) -> dict:
    root = rec.records_root() if root is None else root
    cards = fit_cards(root)
    runs = {g: sorted({r["run_id"] for r in iterations(root, g)}) for g in cards}
    return {"source": "calibration.serve_load_host fit: the fitting load runs <gpu>/s26start2/fit/<model> "
                      "(docs/notes/s26start2_rule.md)", "runs": runs, "tables": load_host_fit(root)}


def adopted_terms(refit_path: Path = spk.REFIT_FILE, fit_path: Path = FIT_FILE) -> dict[str, dict]:
    """{one-GPU table: the terms T carries (the `start_sync` section of twin/data/serve_engines.toml)}: the s25v3pre
    refit's terms and spread (calibration/s25v3pre_refit.json) and the five host terms of calibration/s26start2_fit.json."""
    refit = read_json(refit_path)["tables"]
    fit = read_json(fit_path)["tables"]
    return {t: {**{k: v for k, v in refit[t].items() if k not in ("fit_median_abs_rel_error", "fit_iterations")},
                **{k: fit[t][k] for k in (*TERMS, "sync_s")}} for t in spl.ONE_GPU_TABLES}


def adopted_toml(table: str, terms: dict) -> str:
    """The `[<table>.start_sync]` and `[<table>.start_sync.spread]` sections of twin/data/serve_engines.toml."""
    def num(x):
        return repr(float(x)) if not float(x).is_integer() or abs(x) < 1 else repr(int(x))
    lines = [f"[{table}.start_sync]",
             "# (s26start round 2, docs/notes/s26start2_rule.md: adopted candidate T) read only with ADOPT_ENGINE_PREFILL_KERNELS,",
             "# ADOPT_EAGER_PIPELINE and ADOPT_EAGER_START_SYNC on (timing.engine_table): the refit of calibration/s25v3pre_refit.json",
             "# (its terms and spread) and the host terms fitted on the fitting load runs calibration/measurements/h200/s26start2/fit",
             "# (calibration/s26start2_fit.json, written by python -m calibration.serve_load_host fit)"]
    lines += [f"{k} = {num(v)}" for k, v in sorted(terms.items()) if k != "spread"]
    sp = terms["spread"]
    lines += ["", f"[{table}.start_sync.spread]"]
    for k in ("edges_s", "probs", "decode_iterations", "prompt_iterations"):
        lines.append(f"{k} = [{', '.join(num(x) for x in sp[k])}]")
    for k in ("decode", "prompt"):
        lines.append(f"{k} = [")
        lines += ["  [" + ", ".join(repr(float(x)) for x in row) + "]," for row in sp[k]]
        lines.append("]")
    return "\n".join(lines) + "\n"


def split_terms(tables: dict[str, dict]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(sync_s by table, host terms by table) as calibration.serve_start_sync.setting takes them."""
    return {t: v["sync_s"] for t, v in tables.items()}, {t: {k: v[k] for k in TERMS} for t, v in tables.items()}


def incomplete_runs(root: Path | str, name: str, models, sub: str = "", split: str = "holdout") -> list[str]:
    """Runs whose record has fewer completed requests than issued (num_completed < num_requests)."""
    out = []
    for gpu in seh.GPUS:
        for model in models:
            d = Path(root) / gpu / name / sub / model
            if csv_exists(d / "serve_load.csv"):
                with open_csv(d / "serve_load.csv") as f:
                    out.extend(r["run_id"] for r in csv.DictReader(f)
                               if r["split"] == split and int(r["num_completed"]) < int(r["num_requests"]))
    return out


def fit_run_count(root: Path | str | None = None) -> int:
    root = rec.records_root() if root is None else root
    n = 0
    for gpu in seh.GPUS:
        for d in fit_folders(root, gpu):
            with open_csv(d / "serve_load.csv") as f:
                n += sum(r["split"] == "fit" for r in csv.DictReader(f))
    return n


GUARD_LABELS = {**ssy.GUARD_LABELS, "H": (ssy.NAME,)}   # sets A-G as round 1, and round 1's set H


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-H replayed under the setting in force (A-G as round 1's guards; H, round 1's set, on its card)."""
    root = rec.records_root() if root is None else root
    return ssy.seen_rows(root) + seh.set_rows(ssy.NAME, ssy.FRESH_MODELS, root)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """K1: over sets A-H pooled no fewer checks met and a median |error| no higher; K2: on each of sets A-H at most
    serve_start_sync.SET_MARGIN_CHECKS (2) checks fewer."""
    per = {}
    for label, names in GUARD_LABELS.items():
        so = [r for r in off if r["registration"] in names]
        sn = [r for r in on if r["registration"] in names]
        if so:
            per[label] = (seh.checks(so), seh.checks(sn))
    pooled = (seh.checks(off), seh.checks(on))
    m = ssy.SET_MARGIN_CHECKS
    crit = {"K1_pooled_no_fewer": pooled[1][0] >= pooled[0][0], "K1_pooled_median_no_higher": pooled[1][1] <= pooled[0][1]}
    crit.update({f"K2_set_{k}_within_{m}": v[1][0] >= v[0][0] - m for k, v in per.items()})
    return {"sets": per, "pooled": pooled, "criteria": crit, "met": bool(per) and all(crit.values())}


def fresh_criteria(off: list[dict], on: list[dict], runs: int = FRESH_RUNS, incomplete=(), models=FRESH_MODELS) -> dict:
    """I1: more checks met and a lower median |error| over set I; I2: each model's runs no fewer checks met. Nothing is
    met with fewer than `runs` runs or any run (set I or fitting) incomplete."""
    a, b = seh.checks(off), seh.checks(on)
    per = {m: (seh.checks([r for r in off if r["model"] == m]), seh.checks([r for r in on if r["model"] == m]))
           for m in models}
    full = len(off) >= runs and len(on) == len(off) and not incomplete
    crit = {"I1_more_checks_lower_median": full and b[0] > a[0] and b[1] < a[1]}
    for m, ((co, _), (cn, _)) in per.items():
        crit[f"I2_{m}_no_fewer"] = full and cn >= co
    return {"all": (a, b), "models": per, "criteria": crit, "met": all(crit.values())}


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, tables: dict | None = None) -> dict:
    """The committed twin, S (beside, set I only) and T on set I; the committed twin and T on sets A-H (`guards`) and
    the committed sets (`committed_sets`); T's criteria (I1, I2, K1-K3 as docs/notes/s26start_rule.md) and the verdict.
    T's terms: `tables` (default: load_host_fit on this delivery's fitting runs)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    refit, op_costs = spk.read_refit(), spl.op_cost(root)
    t_sync, t_host = split_terms(tables or load_host_fit(root))
    rows = {}
    for cand in (None, "S", JUDGED):
        kw = dict(sync=t_sync, host=t_host) if cand == JUDGED else {}
        with ssy.setting(None if cand is None else "S", refit, op_costs, **kw):
            rows[cand] = {"I": seh.set_rows(fresh[0], fresh[1], root),
                          "seen": seen_rows(root) if guards and cand != "S" else [],
                          "committed": ssc.all_rows(root) if committed_sets and cand != "S" else None}
    incomplete = incomplete_runs(root, fresh[0], fresh[1]) + incomplete_runs(root, NAME, FIT_MODELS, "fit", "fit")
    i = fresh_criteria(rows[None]["I"], rows[JUDGED]["I"], incomplete=tuple(incomplete), models=fresh[1])
    k = guard_criteria(rows[None]["seen"], rows[JUDGED]["seen"]) if guards else {"met": False, "criteria": {}}
    res = {"I": i, "I_S": fresh_criteria(rows[None]["I"], rows["S"]["I"], models=fresh[1]), "guard": k}
    if committed_sets:
        s_off, s_on = ssc.summary(rows[None]["committed"]), ssc.summary(rows[JUDGED]["committed"])
        res.update(summary_off=s_off, summary_on=s_on, committed=ssy.committed_criteria(s_off, s_on))
    else:
        res["committed"] = {"K3_not_computed": False}
    fits = fit_run_count(root)
    crit = {**i["criteria"], f"fit_runs_{FIT_RUNS}": fits >= FIT_RUNS, **k["criteria"], **res["committed"]}
    res["criteria"] = crit
    res["passes"] = bool(guards and committed_sets and all(crit.values()))
    return {"rows": rows, "result": res, "incomplete": incomplete, "fit_runs": fits,
            "adopt": JUDGED if res["passes"] else None}


_line = ssy._line


def print_judgement(out: dict) -> None:
    res, rows = out["result"], out["rows"]
    print(_line(f"set I committed -> T (of {5 * len(rows[None]['I'])})", res["I"]["all"]))
    for m, pair in res["I"]["models"].items():
        print("  " + _line(m, pair))
    print(_line("set I committed -> S (beside)", res["I_S"]["all"]))
    for m, pair in res["I_S"]["models"].items():
        print("  " + _line(m, pair))
    if rows[None]["I"]:
        print("  set I by figure (committed -> T): " + spk._by_figure(rows[None]["I"], rows[JUDGED]["I"]))
    ssy.print_guards(res, "A-H", "T")
    print("criteria: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in res["criteria"].items()))
    for cand in (None, "S", JUDGED):
        for r in rows[cand]["I"]:
            print(seh._rows_line(f"I {cand or 'off'}", r))
    if out["incomplete"]:
        print(f"incomplete (requests not all completed): {', '.join(out['incomplete'])}")
    print(f"verdict: {'ADOPT candidate T' if out['adopt'] else 'not adopted'}")


def judgement_record(out: dict, tables: dict) -> dict:
    """Set I's rows (each figure's error and check) per setting, the guards' counts, T's terms, criteria and the
    verdict, for tests to read back (calibration/s26start2_judgement.json)."""
    slim = ssy.slim_rows
    res = out["result"]
    return {"I": {str(c): slim(v["I"]) for c, v in out["rows"].items()},
            "seen_sets": {k: [list(v[0]), list(v[1])] for k, v in res["guard"].get("sets", {}).items()},
            "summary": {k: {"committed": list(res["summary_off"][k]), JUDGED: list(res["summary_on"][k])}
                        for k in res.get("summary_off", {})},
            "constants": tables, "criteria": res["criteria"], "passes": res["passes"],
            "incomplete": out["incomplete"], "fit_runs": out["fit_runs"], "adopt": out["adopt"]}


def _print_fit(tables: dict) -> None:
    for t, v in tables.items():
        print(f"{t} (fitting runs on {v['card']}): " + ", ".join(
            f"{k} {v[k] * 1e6:.3f} us" for k in (*TERMS, "sync_s"))
              + f"; in-sample median |error| {v['fit_median_abs_rel_error']:.1%} over {v['rows'] - v['rows_left_out']}"
                f" iterations ({v['rows_left_out']} of {v['rows']} left out above {TRIM_RATIO:g}x the first fit)")


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_load_host", __doc__, ("judge", "fit"),
                     "fit: the host terms from the fitting runs alone; judge: set I and the guards under them",
                     json_help="write the fit (fit) or the judgement (judge)")
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if not fit_cards(root):
        return cli.refuse("fitting", root, f"{NAME}/fit/<model>/")
    if args.what == "fit":
        doc = fit_record(root)
        _print_fit(doc["tables"])
        if args.json:
            cli.write_json(args.json, doc)
        return 0
    if not seh.set_rows(NAME, FRESH_MODELS, root):
        return cli.refuse("set I", root, f"{NAME}/<model>/")
    tables = load_host_fit(root)
    _print_fit(tables)
    return cli.judgement(args, judge(root, committed_sets=not args.no_committed, tables=tables), print_judgement,
                         lambda out: judgement_record(out, tables))


if __name__ == "__main__":
    sys.exit(main())
