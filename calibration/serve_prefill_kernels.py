"""Session s25v3pre (issue 15): the eager engine's prompt kernels as the engine runs them, and their judgement
(docs/notes/s25v3pre_rule.md).

The engine terms (twin.serving.timing.ADOPT_ENGINE_PREFILL_KERNELS) replace the ops the serving engine runs differently
from the twin's prefill forward (docs/notes/s24v3pre.md): the math-SDPA attention core, the eager MoE's routing passes,
the fp32 RoPE. Their constants are fitted here on the fitting record h100/s24v3pre alone (real/serve/prefillprof.py's
kernels by region, both serve-fit models it profiled, 4 prompt-only compositions each), by non-negative least squares
on relative residuals (every step alike):

    attention core  (measured 'attention core')                       = H L (a pairs + b keys)
    MoE routing     (measured 'MoE routing + elementwise' less the twin's router, top-k and shared SwiGLU)
                                                                      = L_moe (c0 + c1 T top_k hidden)
    RoPE            (measured q path + kv latents less the twin's q/kv GEMMs and norms)
                                                                      = r T H L

(H heads, L layers, L_moe MoE layers, T prompt tokens, pairs = sum of n (c + n) over chunks, keys = sum of (c + n)).

    python -m calibration.serve_prefill_kernels constants   # the fit, per step against the record
    python -m calibration.serve_prefill_kernels refit       # the one-GPU tables refitted -> s25v3pre_refit.json
    python -m calibration.serve_prefill_kernels fit         # the fitting steps (h100/s24eager/fit) under each setting
    python -m calibration.serve_prefill_kernels kernels     # part 1's fresh kernel records against the twin (beside)
    python -m calibration.serve_prefill_kernels [--no-guards] [--no-committed] [--json PATH]
                                                            # the judgement (set F and the guards; rule first)
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
from scipy.optimize import nnls

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_engine_fit as sef
from calibration import serve_pipeline as spl
from calibration import serve_score_heads as ssh
from calibration import serve_switch_compare as ssc
from calibration.serve_host_speed import before_t, tables_with
from calibration.records_io import csv_exists, open_csv, read_json, write_json_text
from calibration.serve_load_validation import FIGURES
from calibration import serve_v3_prefill as v3
from calibration.serve_pipeline import costs_for
from twin.core.specs import get_model
from twin.serving import timing
from twin.serving.pipeline import is_moe_layer

NAME = "s25v3pre"
# the twin's ops each measured part keeps (the rest of the part is what the engine terms price)
KEPT_MOE_OPS = ("router", "router_topk", "shared_swiglu")
KEPT_ROPE_OPS = ("q_down", "q_norm", "q_up", "q_proj", "kv_down", "kv_norm")


def fitting_steps(root: Path | str | None = None) -> list[dict]:
    """Per profiled step of h100/s24v3pre: the model's shape, the step's features and the three measured targets
    (seconds a step, all layers), each less the twin's ops that the engine terms do not replace."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    steps, kernels = v3.measured_steps(root), v3.measured_kernels(root)
    out = []
    for key in sorted(kernels):
        model, p, n = key
        m = get_model(model)
        row0 = steps[key]["row"]
        costs = costs_for(model, row0, seh.probe_s(row0), v3.TABLE, root)
        dense = {k for k in range(m.num_layers) if not is_moe_layer(m, k)}
        got = defaultdict(float)
        for (region, op, _), x in kernels[key].items():
            got[v3.measured_part(region, op, dense)] += x
        ops = {name: x for part, name, x in v3.twin_step(costs, p, n)["ops"]}
        moe_layers = m.num_moe_layers
        out.append({
            "model": model, "prompts": p, "tokens": n, "heads": m.num_heads, "layers": m.num_layers,
            "moe_layers": moe_layers, "top_k": m.top_k, "hidden": m.hidden_size,
            "pairs": float(p * n * n), "keys": float(p * n), "prompt_tokens": float(p * n),
            "core_s": got["attention core"],
            "moe_s": got["MoE routing + elementwise"] - moe_layers * sum(ops.get(k, 0.0) for k in KEPT_MOE_OPS),
            "rope_s": (got["q path (incl. rope)"] + got["kv latents"]
                       - m.num_layers * sum(ops.get(k, 0.0) for k in KEPT_ROPE_OPS))})
    return out


def _relative_nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares of X c = y on relative residuals (each row divided by its y)."""
    w = 1.0 / y
    scale = np.maximum(np.abs(X).max(axis=0), 1e-30)
    c, _ = nnls((X / scale) * w[:, None], np.ones_like(y))
    return c / scale


def design_rows(s: dict) -> dict[str, list[float]]:
    """The three terms' features of one step (the columns of each term's constants)."""
    hl = s["heads"] * s["layers"]
    return {"core": [hl * s["pairs"], hl * s["keys"]],
            "moe": [float(s["moe_layers"]), s["moe_layers"] * s["prompt_tokens"] * s["top_k"] * s["hidden"]],
            "rope": [s["prompt_tokens"] * hl]}


def fit_constants(root: Path | str | None = None) -> dict[str, float]:
    """The engine terms' constants from the fitting record (h100/s24v3pre), every profiled step of both models."""
    root = rec.records_root() if root is None else root
    steps = fitting_steps(root)
    if not steps:
        raise ValueError(f"no kernel records under {Path(root) / v3.KERNELS}(.gz)")
    rows = [design_rows(s) for s in steps]
    a, b = _relative_nnls(np.array([r["core"] for r in rows]), np.array([s["core_s"] for s in steps]))
    c0, c1 = _relative_nnls(np.array([r["moe"] for r in rows]), np.array([s["moe_s"] for s in steps]))
    (r,) = _relative_nnls(np.array([r["rope"] for r in rows]), np.array([s["rope_s"] for s in steps]))
    return {"core_s_per_pair_head_layer": float(a), "core_s_per_key_head_layer": float(b),
            "moe_routing_s_per_layer": float(c0), "moe_routing_s_per_row_element": float(c1),
            "rope_s_per_token_head_layer": float(r)}


# ---- the refit of the one-GPU tables (fitting records only) -------------------------------------------------

REFIT_FILE = Path(__file__).resolve().parent / "s25v3pre_refit.json"
TABLE_FOLDERS = {"real-serve-h100-ep1": "h100", "real-serve-h200-ep1": "h200"}
# the refit's terms that replace the committed table's (the host references, loop, wake and issue terms stay)
REFIT_TERMS = sef.TERMS + ("spread",)


def refit_tables(root: Path | str | None = None) -> dict[str, dict]:
    """{one-GPU table: the refitted terms (REFIT_TERMS)}: calibration.serve_engine_fit.fit_folder on the table's own
    folder (its fit runs) with the engine's prompt terms in the kernel physics and the score term held at 0."""
    root = rec.records_root() if root is None else root
    out = {}
    with mock.patch.object(sef, "ENGINE_PREFILL_REFIT", True):
        for table, folder in TABLE_FOLDERS.items():
            fitted = sef.fit_folder(Path(root) / folder)
            out[table] = {k: fitted[k] for k in REFIT_TERMS}
            out[table]["fit_median_abs_rel_error"] = fitted["fit_median_abs_rel_error"]
            out[table]["fit_iterations"] = fitted["fit_iterations"]
    return out


def write_refit(root: Path | str | None = None, path: Path = REFIT_FILE) -> dict[str, dict]:
    """Refit the tables and write them (with the engine terms' constants they were fitted under) to `path`."""
    root = rec.records_root() if root is None else root
    tables = refit_tables(root)
    doc = {"source": "calibration.serve_prefill_kernels.refit_tables: serve_engine_fit.fit_folder on each table's "
                     "folder (fit runs), ENGINE_PREFILL_REFIT on (docs/notes/s25v3pre_rule.md)",
           "constants": engine_constants(), "tables": tables}
    write_json_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return tables


def engine_constants() -> dict[str, float]:
    """The engine terms' constants as the twin holds them (twin.serving.timing)."""
    return {k: getattr(timing, k.upper()) for k in CONSTANT_NAMES}


CONSTANT_NAMES = ("core_s_per_pair_head_layer", "core_s_per_key_head_layer", "moe_routing_s_per_layer",
                  "moe_routing_s_per_row_element", "rope_s_per_token_head_layer")


def read_refit(path: Path = REFIT_FILE) -> dict[str, dict]:
    """The committed refit's tables; a clear error where it was fitted under other constants than the twin's."""
    doc = read_json(path)
    if doc["constants"] != engine_constants():
        raise ValueError(f"{path}: fitted under constants {doc['constants']}, the twin holds {engine_constants()}: "
                         "rerun python -m calibration.serve_prefill_kernels refit")
    return doc["tables"]


def fit_check(root: Path | str | None = None, table: str = "real-serve-h100-ep1") -> list[dict]:
    """Per fit model and composition of h100/s24eager/fit (rounds 1-3, medians): the measured step (duration_s) against
    the committed twin's and each candidate's iteration (less the loop gap; a fresh engine's shapes as
    serve_pipeline.step_prediction: decode rows at context 33, each prompt one chunk from its start). Reported
    beside, never a criterion."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    rows = [r for r in seh.fit_rows(seh.read_fit(root)) if r.get("ops")]
    refit, op_costs = read_refit(), spl.op_cost(root)
    out = {}
    for cand in (None,) + CANDIDATES:
        with setting(cand, refit, op_costs):
            for model in sorted({r["model"] for r in rows}):
                mine = [r for r in rows if r["model"] == model]
                costs = costs_for(model, mine[0], seh.probe_s(mine[0]), table, root)
                for comp in sorted({r["composition"] for r in mine}):
                    rs = [r for r in mine if r["composition"] == comp]
                    d = out.setdefault((model, comp), {"model": model, "composition": comp, "measured_s": float(
                        np.median([float(r["duration_s"]) for r in rs]))})
                    d[f"{cand or 'off'}_s"] = spl.committed_step_s(costs, rs[0])
    return list(out.values())


FRESH_KERNELS = Path("h100") / NAME / "prefill" / "prefill_kernels.csv"   # part 1: reported beside, never a criterion


def fresh_kernel_check(root: Path | str | None = None, path: Path = FRESH_KERNELS) -> list[dict]:
    """Part 1's fresh compositions (v3-slice-2l, prompt-only): the profiled kernel sum a step (mean over the profiled
    reps) against the twin's prompt kernels, committed (+ its score term) and under the switch."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    acc, reps, gpu = defaultdict(float), defaultdict(set), {}
    full = root / path
    if not csv_exists(full):
        return []
    with open_csv(full) as f:
        for r in csv.DictReader(f):
            key = (r["model"], int(r["prompts"]), int(r["tokens"]))
            acc[key] += float(r["time_s"])
            reps[key].add(r["rep"])
            gpu[key] = r
    out = []
    for key in sorted(acc):
        model, p, n = key
        row = {"model": model, "prompts": p, "tokens": n, "measured_s": acc[key] / len(reps[key])}
        for label, on in (("off", False), ("on", True)):
            with mock.patch.object(timing, "ADOPT_ENGINE_PREFILL_KERNELS", on):
                c = costs_for(model, gpu[key], 0.0, v3.TABLE, root)
                kern = c._kernels(0, 0.0, float(p * n), float(n), 0.0, 0.0, float(p * n * n))[0]
                row[f"{label}_s"] = kern + (0.0 if c.engine_prefill else c.engine["score_s_per_pair"] * p * n * n)
        out.append(row)
    return out


def _print_fit_check(root: Path) -> None:
    rows = fit_check(root)
    print(f"{'model':20s} {'composition':12s} {'meas ms':>8s} {'off':>7s} {'P':>7s} {'Q':>7s}")
    for r in rows:
        print(f"{r['model']:20s} {r['composition']:12s} {r['measured_s'] * 1e3:8.2f} "
              + " ".join(f"{r[f'{k}_s'] / r['measured_s'] - 1:+7.1%}" for k in ("off", "P", "Q")))
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        print(f"  {model}: median error " + ", ".join(
            f"{k} {np.median([r[f'{k}_s'] / r['measured_s'] - 1 for r in mine]):+.1%}" for k in ("off", "P", "Q")))


def _print_constants(root: Path) -> None:
    c = fit_constants(root)
    print("constants (h100/s24v3pre): " + ", ".join(f"{k} {v:.4g}" for k, v in c.items()))
    for s in fitting_steps(root):
        d = design_rows(s)
        core = float(np.dot(d["core"], [c["core_s_per_pair_head_layer"], c["core_s_per_key_head_layer"]]))
        moe = float(np.dot(d["moe"], [c["moe_routing_s_per_layer"], c["moe_routing_s_per_row_element"]]))
        rope = d["rope"][0] * c["rope_s_per_token_head_layer"]
        print(f"  {s['model']:20s} {s['prompts']}x{s['tokens']:<5d} core {s['core_s'] * 1e3:6.3f} / {core * 1e3:6.3f} "
              f"({core / s['core_s'] - 1:+6.1%})  moe {s['moe_s'] * 1e3:6.3f} / {moe * 1e3:6.3f} "
              f"({moe / s['moe_s'] - 1:+6.1%})  rope {s['rope_s'] * 1e3:6.3f} / {rope * 1e3:6.3f} ({rope / s['rope_s'] - 1:+6.1%})")


# ---- the judgement ------------------------------------------------------------------------------------------

FRESH_MODELS = ("v3-slice-2l", "qwen3moe-mla-slice")   # set F (real/serve/plans.py S25V_PLANS)
MISPRICED = "v3-slice-2l"
CANDIDATES = ("P", "Q")     # P: engine terms + pipeline + refit; Q: engine terms + refit (additive)
FRESH_RUNS = 6


def setting(candidate: str | None, refit: dict[str, dict] | None = None, op_costs: dict[str, float] | None = None):
    """The committed twin (None: every switch off) or a candidate of the rule with the refitted one-GPU tables (P also
    the pipeline, with s24pipe's eager_op_s)."""
    stack = before_t(ExitStack())
    on = candidate is not None
    if on and candidate not in CANDIDATES:
        raise ValueError(f"candidate must be one of {CANDIDATES} or None, got {candidate!r}")
    stack.enter_context(mock.patch.object(timing, "ADOPT_ENGINE_PREFILL_KERNELS", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_EAGER_PIPELINE", candidate == "P"))
    stack.enter_context(mock.patch.object(timing, "ADOPT_HEAD_SCALED_SCORES", False))
    if on:
        terms = {t: dict(v) for t, v in (refit or read_refit()).items()}
        for t, v in terms.items():
            v.pop("fit_median_abs_rel_error", None)
            v.pop("fit_iterations", None)
            if candidate == "P":
                v["eager_op_s"] = (op_costs or spl.op_cost())[t]
        stack.enter_context(tables_with(terms))
    return stack


def fresh_rows(root: Path | str | None = None, name: str = NAME, models=FRESH_MODELS) -> list[dict]:
    """Set F's held-out runs replayed (serve_eager_host.set_rows); `name`, `models`: a stand-in set (tests)."""
    root = rec.records_root() if root is None else root
    return seh.set_rows(name, models, root)


def incomplete_runs(root: Path | str | None = None, name: str = NAME, models=FRESH_MODELS) -> list[str]:
    """Set F's held-out runs whose record has fewer completed requests than issued (serve_load.csv num_completed <
    num_requests): the rule judges nothing then."""
    root = rec.records_root() if root is None else root
    out = []
    for gpu in seh.GPUS:
        for model in models:
            path = Path(root) / gpu / name / model / "serve_load.csv"
            if not csv_exists(path):   # the record may be stored packed (.csv.xz)
                continue
            with open_csv(path) as f:
                out.extend(r["run_id"] for r in csv.DictReader(f)
                           if r["split"] == "holdout" and int(r["num_completed"]) < int(r["num_requests"]))
    return out


def fresh_criteria(off: list[dict], on: list[dict], mispriced: str = MISPRICED, other: str = "qwen3moe-mla-slice",
                   runs: int = FRESH_RUNS, incomplete: tuple[str, ...] = ()) -> dict:
    """F1: more checks met and a lower median |error|; F2: the mispriced model's runs no fewer checks and a lower
    median |error|; F3: the other model's runs no fewer checks. Nothing is met with fewer than `runs` runs or with
    any run `incomplete` (requests not all completed)."""
    a, b = seh.checks(off), seh.checks(on)
    mo, mn = seh.checks([r for r in off if r["model"] == mispriced]), seh.checks([r for r in on if r["model"] == mispriced])
    oo, on_ = seh.checks([r for r in off if r["model"] == other]), seh.checks([r for r in on if r["model"] == other])
    full = len(off) >= runs and len(on) == len(off) and not incomplete
    crit = {"F1_more_checks_lower_median": full and b[0] > a[0] and b[1] < a[1],
            "F2_mispriced_no_fewer_lower_median": full and mn[0] >= mo[0] and mn[1] < mo[1],
            "F3_other_no_fewer": full and on_[0] >= oo[0]}
    return {"all": (a, b), "mispriced": (mo, mn), "other": (oo, on_), "criteria": crit, "met": all(crit.values())}


GUARD_LABELS = {**seh.GUARD_SETS, "D": (seh.NAME,), "E": (spl.NAME,)}


def guard_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-E replayed under the setting in force (A-C: s23closed's diagnostic replays, head scaling off)."""
    root = rec.records_root() if root is None else root
    names = ssh.REGISTRATIONS + ssh.EXTRA + (ssh.FRESH.name,)
    return (ssh.replays(False, root, names) + [{**r, "registration": seh.NAME} for r in seh.fresh_rows(root)]
            + [{**r, "registration": spl.NAME} for r in spl.fresh_rows(root)])


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G1: on each of sets A-E no fewer checks met; over A-E pooled a median |error| no higher."""
    return seh.guard_criteria(off, on, GUARD_LABELS)


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          mispriced: str = MISPRICED, other: str = "qwen3moe-mla-slice", guards: bool = True) -> dict:
    """Every setting (committed, P, Q) on set F (`fresh`: (records name, models); a stand-in in tests), sets A-E
    (`guards`) and the committed serve_load sets (`committed_sets`); each candidate's criteria and the verdict: P if
    P passes, else Q if Q passes, else none. G3 holds by construction (tests/twin/test_engine_prefill_kernels.py)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    refit, op_costs = read_refit(), spl.op_cost(root)
    rows = {}
    for cand in (None,) + CANDIDATES:
        with setting(cand, refit, op_costs):
            rows[cand] = {"F": fresh_rows(root, *fresh), "guard": guard_rows(root) if guards else [],
                          "committed": ssc.all_rows(root) if committed_sets else None}
    out = {"rows": rows, "candidates": {}, "incomplete": incomplete_runs(root, *fresh)}
    for cand in CANDIDATES:
        f = fresh_criteria(rows[None]["F"], rows[cand]["F"], mispriced, other, incomplete=tuple(out["incomplete"]))
        g = guard_criteria(rows[None]["guard"], rows[cand]["guard"]) if guards else {"met": False, "criteria": {}}
        res = {"F": f, "guard": g}
        if committed_sets:
            s_off, s_on = ssc.summary(rows[None]["committed"]), ssc.summary(rows[cand]["committed"])
            res.update(summary_off=s_off, summary_on=s_on, committed=ssh.committed_criterion(s_off, s_on))
        res["passes"] = bool(f["met"] and g["met"] and committed_sets and all(res["committed"].values()))
        out["candidates"][cand] = res
    out["adopt"] = next((c for c in CANDIDATES if out["candidates"][c]["passes"]), None)
    return out


def _by_figure(off: list[dict], on: list[dict]) -> str:
    return ", ".join(f"{k.removesuffix('_s')} {seh.checks(off, (k,))[0]} -> {seh.checks(on, (k,))[0]}" for k in FIGURES)


def print_judgement(out: dict) -> None:
    rows = out["rows"]
    for cand, res in out["candidates"].items():
        f = res["F"]
        (a, b), (mo, mn), (oo, on_) = f["all"], f["mispriced"], f["other"]
        print(f"== candidate {cand}")
        print(f"set F: checks {a[0]} -> {b[0]} of {5 * len(rows[None]['F'])}, median |err| {a[1]:.2%} -> {b[1]:.2%}; "
              f"{MISPRICED} {mo[0]} -> {mn[0]} (median {mo[1]:.2%} -> {mn[1]:.2%}); other {oo[0]} -> {on_[0]}; "
              + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in f["criteria"].items()))
        print("  set F by figure: " + _by_figure(rows[None]["F"], rows[cand]["F"]))
        g = res["guard"]
        for label, (x, y) in g.get("sets", {}).items():
            print(f"set {label}: checks {x[0]} -> {y[0]}, median |err| {x[1]:.2%} -> {y[1]:.2%}")
        if "pooled" in g:
            (x, y) = g["pooled"]
            print(f"A-E pooled: checks {x[0]} -> {y[0]}, median |err| {x[1]:.2%} -> {y[1]:.2%}")
        print("guards: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in g["criteria"].items()))
        if "summary_off" in res:
            for name in res["summary_off"]:
                (ma, na, ea), (mb, nb, eb) = res["summary_off"][name], res["summary_on"][name]
                print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   on {mb:3}/{nb:3} median {eb:.2%}")
            print("committed sets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in res["committed"].items()))
        print(f"candidate {cand}: {'PASSES' if res['passes'] else 'fails'}")
        for r in rows[cand]["F"]:
            print(seh._rows_line(f"F {cand}", r))
    for r in rows[None]["F"]:
        print(seh._rows_line("F off", r))
    if out["incomplete"]:
        print(f"set F incomplete (requests not all completed): {', '.join(out['incomplete'])}")
    print(f"verdict: {'ADOPT candidate ' + out['adopt'] if out['adopt'] else 'not adopted'}")


def _parser():
    ap = cli.parser("calibration.serve_prefill_kernels", __doc__, ("constants", "fit", "kernels", "refit"),
                    "a part only (default: the judgement of set F)", default=None, dest="command")
    ap.add_argument("--no-guards", action="store_true", help="leave out the guard sets A-E")
    return ap


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.command == "constants":
        _print_constants(root)
        return 0
    if args.command == "fit":
        _print_fit_check(root)
        return 0
    if args.command == "kernels":
        for r in fresh_kernel_check(root):
            print(f"{r['model']} {r['prompts']}x{r['tokens']}: measured {r['measured_s'] * 1e3:.2f} ms, committed "
                  f"{r['off_s'] / r['measured_s'] - 1:+.1%}, engine terms {r['on_s'] / r['measured_s'] - 1:+.1%}")
        return 0
    if args.command == "refit":
        for table, t in write_refit(root).items():
            print(f"{table}: " + ", ".join(f"{k} {v:.4g}" for k, v in t.items() if k != "spread"))
        return 0
    if not fresh_rows(root):
        return cli.refuse("set F", root, f"{NAME}/<model>/")
    return cli.judgement(args, judge(root, committed_sets=not args.no_committed, guards=not args.no_guards),
                         print_judgement, judgement_record)


RECORD_KEYS = ("run_id", "model", "gpu")


def judgement_record(out: dict) -> dict:
    """The judgement's set-F rows (each figure's error and check) per setting, each candidate's criteria and the
    verdict: what tests read back (calibration/s25v3pre_judgement.json) instead of replaying set F."""
    def slim(rows):
        return [{**{k: r[k] for k in RECORD_KEYS},
                 **{f"{f}_{x}": r[f"{f}_{x}"] for f in FIGURES for x in ("rel_error", "within_target")}} for r in rows]
    return {"F": {str(c): slim(v["F"]) for c, v in out["rows"].items()},
            "criteria": {c: {**res["F"]["criteria"], **res["guard"]["criteria"], **res.get("committed", {})}
                         for c, res in out["candidates"].items()},
            "passes": {c: res["passes"] for c, res in out["candidates"].items()},
            "incomplete": out["incomplete"], "adopt": out["adopt"]}


if __name__ == "__main__":
    sys.exit(main())
