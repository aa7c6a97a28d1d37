"""Session s25v3pre2 (issue 15): round 1's candidate P (the engine's prompt terms, the pipeline, the refitted one-GPU
tables) only for models whose head-layers differ from the tables' fit model, the fit model priced as committed
(twin.serving.timing.ADOPT_ENGINE_PREFILL_BY_HEADS), and its judgement (docs/notes/s25v3pre2_rule.md, committed before
this was written and before set G existed).

Nothing is fitted here: the engine terms' constants, the refit (calibration/s25v3pre_refit.json) and `eager_op_s`
(s24pipe) are round 1's, unchanged.

    python -m calibration.serve_prefill_kernels2 [--no-committed] [--json PATH]
        set G (h100/s25v3pre2; its rerun on another card, h200/s25v3pre2, reported beside), the guards: set F,
        sets A-E, the committed sets (or, with --no-committed, the construction check that they hold only the fit
        model's one-GPU runs and EP runs), the verdict
"""

from __future__ import annotations

import copy
import csv
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_engine_fit as sef
from calibration import serve_pipeline as spl
from calibration import serve_prefill_kernels as spk
from calibration import serve_switch_compare as ssc
from calibration import serve_score_heads as ssh
from calibration.records_io import csv_exists, open_csv
from calibration.serve_host_speed import before_t
from calibration.serve_load_validation import FIGURES
from twin.core.specs import get_model, serve_engines
from twin.serving import timing

NAME = "s25v3pre2"
FRESH_MODELS = ("v3-slice-2l", "qwen3moe-mla-slice", "mixtral-mla-slice")   # set G (real/serve/plans.py S25W_PLANS)
FIT_MODEL = "v3-slice-2l"
PRICED_MODELS = ("qwen3moe-mla-slice", "mixtral-mla-slice")   # H2: each no fewer checks, median within the margin
MEDIAN_MARGIN = 0.010   # H2: a model's median |error| may rise by at most 1.0 percentage point
FRESH_RUNS = 6
SET_F = (spk.NAME, spk.FRESH_MODELS)
# set F under the committed twin (docs/notes/s25v3pre_rule.md Outcome): K1's bar, recomputed here and checked
SET_F_COMMITTED = (16, 0.1292)
# The card set G was judged on (h100/s25v3pre2, the first run). A later rerun of the same campaign on another card
# (h200/s25v3pre2) is replayed with that card's table and reported beside (`G_reported`), never part of the verdict:
# the rule judged one set G of 6 runs, and the verdict was written before the rerun existed.
JUDGED_GPU = "h100"


@contextmanager
def variant_tables(refit: dict[str, dict], op_costs: dict[str, float]):
    """The loaded engine tables with each one-GPU table's variant (timing.ENGINE_PREFILL_VARIANT) added: the
    committed table updated with round 1's refit terms and s24pipe's `eager_op_s` (removed after)."""
    tables = serve_engines()
    added = []
    try:
        for t, terms in refit.items():
            v = copy.deepcopy(tables[t])
            v.update({k: x for k, x in terms.items() if k not in ("fit_median_abs_rel_error", "fit_iterations")})
            v["eager_op_s"] = op_costs[t]
            name = timing.ENGINE_PREFILL_VARIANT.format(table=t)
            tables[name] = v
            added.append(name)
        yield tables
    finally:
        for name in added:
            tables.pop(name, None)


def setting(candidate: str | None, refit: dict[str, dict] | None = None, op_costs: dict[str, float] | None = None):
    """The committed twin (None: every switch off) or candidate R: ADOPT_ENGINE_PREFILL_BY_HEADS with
    ADOPT_ENGINE_PREFILL_KERNELS and ADOPT_EAGER_PIPELINE on and the variant tables loaded."""
    if candidate not in (None, "R"):
        raise ValueError(f"candidate must be 'R' or None, got {candidate!r}")
    on = candidate == "R"
    stack = before_t(ExitStack())
    stack.enter_context(mock.patch.object(timing, "ADOPT_ENGINE_PREFILL_BY_HEADS", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_ENGINE_PREFILL_KERNELS", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_EAGER_PIPELINE", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_HEAD_SCALED_SCORES", False))
    if on:
        stack.enter_context(variant_tables(refit or spk.read_refit(), op_costs or spl.op_cost()))
    return stack


def fit_model_head_layers(model: str) -> bool:
    """Whether `model` has the tables' fit model's head-layers (priced as committed under R)."""
    m = get_model(model)
    return m.num_heads * m.num_layers == timing.ENGINE_FIT_HEADS * timing.ENGINE_FIT_LAYERS


def committed_set_models(root: Path | str | None = None) -> dict[str, set[tuple[str, int]]]:
    """Folder -> {(model, ep)} of the runs calibration.serve_switch_compare's committed sets replay (K3's
    construction: R moves none whose model has the fit model's head-layers or whose ep is above 1)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    folders = {n: root / n for n in sef.FOLDERS}
    s13 = sef.probe_folders(root)
    folders.update({f"{n}/s13": d for n, d in s13.items()})
    folders.update({f"{n}/new": d for n, d in ssc.new_host_folders(s13).items()})
    out = {}
    for n, d in folders.items():
        path = d / "serve_load.csv"
        if not csv_exists(path):
            continue
        with open_csv(path) as f:
            out[n] = {(r.get("model") or FIT_MODEL, int(float(r.get("ep_size") or 1))) for r in csv.DictReader(f)}
    return out


def committed_sets_unmoved_by_construction(root: Path | str | None = None) -> bool:
    """K3 by construction: every run of the committed sets is the fit model's head-layers or an EP run."""
    root = rec.records_root() if root is None else root
    return all(ep > 1 or fit_model_head_layers(model) for pairs in committed_set_models(root).values()
               for model, ep in pairs)


def incomplete_runs(root: Path | str | None = None) -> list[str]:
    root = rec.records_root() if root is None else root
    return spk.incomplete_runs(root, NAME, FRESH_MODELS)


def fresh_criteria(off: list[dict], on: list[dict], runs: int = FRESH_RUNS, incomplete: tuple[str, ...] = ()) -> dict:
    """H1: more checks met and a lower median |error| over set G; H2: each priced model no fewer checks and a median
    |error| no higher than committed + MEDIAN_MARGIN; H3: the fit model's runs identical to the committed twin's."""
    a, b = seh.checks(off), seh.checks(on)
    per = {m: (seh.checks([r for r in off if r["model"] == m]), seh.checks([r for r in on if r["model"] == m]))
           for m in FRESH_MODELS}
    full = len(off) >= runs and len(on) == len(off) and not incomplete
    key = {(r["run_id"], r["gpu"]): r for r in on}
    fit_off = [r for r in off if r["model"] == FIT_MODEL]
    same = bool(fit_off) and all(
        (r["run_id"], r["gpu"]) in key and all(key[(r["run_id"], r["gpu"])][f"{f}_rel_error"] == r[f"{f}_rel_error"]
                                               for f in FIGURES) for r in fit_off)
    crit = {"H1_more_checks_lower_median": full and b[0] > a[0] and b[1] < a[1]}
    for m in PRICED_MODELS:
        (co, mo), (cn, mn) = per[m]
        crit[f"H2_{m}_no_fewer_median_within_margin"] = full and cn >= co and mn <= mo + MEDIAN_MARGIN
    crit["H3_fit_model_unchanged"] = full and same
    return {"all": (a, b), "models": per, "criteria": crit, "met": all(crit.values())}


def set_f_criteria(off: list[dict], on: list[dict]) -> dict:
    """K1: set F no fewer checks met and a median |error| no higher."""
    a, b = seh.checks(off), seh.checks(on)
    return {"all": (a, b), "criteria": {"K1_set_F_no_fewer_no_higher": bool(off) and b[0] >= a[0] and b[1] <= a[1]}}


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True) -> dict:
    """The committed twin and R on set G (`fresh`: a stand-in in tests), set F and sets A-E (`guards`), the committed
    sets (replayed, or by construction); R's criteria and the verdict. K4 holds by construction (tests)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    refit, op_costs = spk.read_refit(), spl.op_cost(root)
    rows = {}
    for cand in (None, "R"):
        with setting(cand, refit, op_costs):
            every_card = seh.set_rows(fresh[0], fresh[1], root)
            rows[cand] = {"G": [r for r in every_card if r["gpu"] == JUDGED_GPU],
                          "G_reported": [r for r in every_card if r["gpu"] != JUDGED_GPU],
                          "F": seh.set_rows(*SET_F, root) if guards else [],
                          "guard": spk.guard_rows(root) if guards else [],
                          "committed": ssc.all_rows(root) if committed_sets else None}
    incomplete = spk.incomplete_runs(root, *fresh)
    g = fresh_criteria(rows[None]["G"], rows["R"]["G"], incomplete=tuple(incomplete))
    f = set_f_criteria(rows[None]["F"], rows["R"]["F"]) if guards else {"criteria": {"K1_set_F_no_fewer_no_higher": False}}
    k2 = spk.guard_criteria(rows[None]["guard"], rows["R"]["guard"]) if guards else {"met": False, "criteria": {}}
    k2["criteria"] = {k.replace("G1_", "K2_"): v for k, v in k2["criteria"].items()}
    res = {"G": g, "F": f, "guard": k2,
           "G_reported": reported_by_gpu(rows[None]["G_reported"], rows["R"]["G_reported"])}
    if committed_sets:
        s_off, s_on = ssc.summary(rows[None]["committed"]), ssc.summary(rows["R"]["committed"])
        res.update(summary_off=s_off, summary_on=s_on,
                   committed={f"K3_{k}": v for k, v in ssh.committed_criterion(s_off, s_on).items()})
    else:
        res["committed"] = {"K3_by_construction": committed_sets_unmoved_by_construction(root)}
    crit = {**g["criteria"], **f["criteria"], **k2["criteria"], **res["committed"]}
    res["criteria"] = crit
    res["passes"] = bool(guards and all(crit.values()))
    return {"rows": rows, "result": res, "incomplete": incomplete, "adopt": "R" if res["passes"] else None}


def reported_by_gpu(off: list[dict], on: list[dict]) -> dict[str, dict]:
    """{card: set G's criteria recomputed on that card's rerun}, reported only (JUDGED_GPU's runs are the judgement)."""
    return {gpu: fresh_criteria([r for r in off if r["gpu"] == gpu], [r for r in on if r["gpu"] == gpu])
            for gpu in sorted({r["gpu"] for r in off})}


def _line(label: str, pair) -> str:
    (a, b) = pair
    return f"{label}: checks {a[0]} -> {b[0]}, median |err| {a[1]:.2%} -> {b[1]:.2%}"


def print_judgement(out: dict) -> None:
    res, rows = out["result"], out["rows"]
    print(_line(f"set G (of {5 * len(rows[None]['G'])})", res["G"]["all"]))
    for m, pair in res["G"]["models"].items():
        print("  " + _line(m, pair))
    print("  set G by figure: " + spk._by_figure(rows[None]["G"], rows["R"]["G"]))
    if "all" in res["F"]:
        print(_line("set F (guard)", res["F"]["all"]))
    for label, pair in res["guard"].get("sets", {}).items():
        print(_line(f"set {label}", pair))
    if "pooled" in res["guard"]:
        print(_line("A-E pooled", res["guard"]["pooled"]))
    if "summary_off" in res:
        for name in res["summary_off"]:
            (ma, na, ea), (mb, nb, eb) = res["summary_off"][name], res["summary_on"][name]
            print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   on {mb:3}/{nb:3} median {eb:.2%}")
    print("criteria: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in res["criteria"].items()))
    for cand in (None, "R"):
        for r in rows[cand]["G"]:
            print(seh._rows_line(f"G {cand or 'off'}", r))
    for gpu, rep in res.get("G_reported", {}).items():
        on_gpu = {c: [r for r in rows[c]["G_reported"] if r["gpu"] == gpu] for c in (None, "R")}
        print(_line(f"set G rerun on {gpu} (reported, not judged; of {5 * len(on_gpu[None])})", rep["all"]))
        for m, pair in rep["models"].items():
            print("  " + _line(m, pair))
        print("  by figure: " + spk._by_figure(on_gpu[None], on_gpu["R"]))
        print("  " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in rep["criteria"].items()))
        for cand in (None, "R"):
            for r in on_gpu[cand]:
                print(seh._rows_line(f"G {cand or 'off'} (reported)", r))
    if out["incomplete"]:
        print(f"set G incomplete (requests not all completed): {', '.join(out['incomplete'])}")
    print(f"verdict: {'ADOPT candidate R' if out['adopt'] else 'not adopted'}")


RECORD_KEYS = ("run_id", "model", "gpu")


def judgement_record(out: dict) -> dict:
    """Set G's rows (each figure's error and check) per setting, R's criteria and the verdict, for tests to read back
    (calibration/s25v3pre2_judgement.json)."""
    def slim(rows):
        return [{**{k: r[k] for k in RECORD_KEYS},
                 **{f"{f}_{x}": r[f"{f}_{x}"] for f in FIGURES for x in ("rel_error", "within_target")}} for r in rows]
    res = out["result"]
    return {"G": {str(c): slim(v["G"]) for c, v in out["rows"].items()},
            "G_reported": {str(c): slim(v.get("G_reported", [])) for c, v in out["rows"].items()},
            "F_checks": {"committed": list(res["F"].get("all", ((0, 0), (0, 0)))[0]),
                         "R": list(res["F"].get("all", ((0, 0), (0, 0)))[1])},
            "criteria": res["criteria"], "passes": res["passes"], "incomplete": out["incomplete"],
            "adopt": out["adopt"]}


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_prefill_kernels2", __doc__)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if not seh.set_rows(NAME, FRESH_MODELS, root):
        return cli.refuse("set G", root, f"{NAME}/<model>/")
    return cli.judgement(args, judge(root, committed_sets=not args.no_committed), print_judgement, judgement_record)


if __name__ == "__main__":
    sys.exit(main())
