"""Session s24eager: the serving engine's eager iteration host time per model, and its judgement
(docs/notes/s24eager_rule.md).

The fitting records (real/serve/eagerhost.py; calibration/measurements/<gpu>/s24eager/fit/eager_host.csv): Engine.step
on the serve-fit models (v3-slice-2l, qwen3moe-, qwen2moe-, mixtral-mla-slice) at compositions of 1-6 prompts beside
0-48 decode rows, `host_s` (an iteration's start to its last launch) per step, the host probe around each model's
rounds, the aten operators a step dispatches. `fit_floor` fits, on the rounds after the first (no size met first),
the host time at a table's reference host (host_s / timing.host_scale at the model's probe) as

    host_ref = a + b x layers + c x chunks x layers + e x prompt tokens + r x decode rows
               + g x layers (where decode rows run)                          (non-negative least squares)

(the engine's host paths: per iteration (scheduling, inputs), per layer (an eager forward's launches), per chunk and
layer (a chunk's attention), per prompt token and per decode row (the Python lists of tokens, positions and slots; a
decode row's page-table row), per layer where decode rows run (their attention's launches)) and `floor_terms`
writes it as a one-GPU table's launch floor (timing.LAUNCH_FLOOR_TERMS: iteration a, eager 2b, chunk 2c and decode
2g, layer-scaled from ENGINE_FIT_LAYERS = 2 as the launch terms are, per prompt token e, per decode row r). The candidate
(`candidate`): timing.ADOPT_HEAD_SCALED_SCORES and timing.ADOPT_LAUNCH_FLOOR on, those terms in the one-GPU tables;
judged against the committed twin (both off) on the fresh held-out set D (models no record held: v2-lite-slice,
v3-slice-1l; calibration/measurements/<gpu>/s24eager/<model>/) with guards on the seen sets (s23closed's A, B, C and
the committed serve_load sets).

    python -m calibration.serve_eager_host fit       # the fitting records: the fit, per model against op counts
    python -m calibration.serve_eager_host           # the judgement (every set under both settings)
    python -m calibration.serve_eager_host --no-committed --json calibration/s24eager_judgement.json
                                                     # set D and the guard sets' rows, criteria and verdict, as
                                                     # tests read them back (judgement_record)
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
from scipy.optimize import nnls

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_score_heads as ssh
from calibration import serve_switch_compare as ssc
from calibration.records_io import csv_exists, open_csv, read_json, write_json_text
from calibration.serve_host_speed import before_t, replay, tables_with
from calibration.serve_load_validation import FIGURES, TARGETS
from twin.serving import timing
from twin.core.specs import get_model
from twin.serving.timing import ENGINE_FIT_LAYERS, engine_costs, host_scale

NAME = "s24eager"
GPUS = ("h100", "h200")
FRESH_MODELS = ("v2-lite-slice", "v3-slice-1l")   # set D: models no load record held (real/serve/plans.py S24_PLANS)
ONE_GPU_TABLES = ("real-serve-h100-ep1", "real-serve-h200-ep1")
GUARD_SETS = {"A": ssh.REGISTRATIONS, "B": ssh.EXTRA, "C": (ssh.FRESH.name,)}


# ---- the fitting records ------------------------------------------------------------------------------

def read_fit(root: Path | str | None = None) -> list[dict]:
    """Every eager_host row of the fitting records, on whichever GPU folder holds them."""
    root = rec.records_root() if root is None else root
    out = []
    for gpu in GPUS:
        path = Path(root) / gpu / NAME / "fit" / "eager_host.csv"
        if csv_exists(path):
            with open_csv(path) as f:
                out.extend({**r, "gpu": gpu} for r in csv.DictReader(f))
    return out


def probe_s(row: dict) -> float:
    """The model's host probe: the mean of the launch probe before and after its rounds (s a launch)."""
    v = [float(row[f"probe_{w}_launch_s"]) for w in ("before", "after")]
    v = [x for x in v if math.isfinite(x) and x > 0]
    return sum(v) / len(v) if v else 0.0


def host_at_reference(row: dict, table: dict) -> float:
    """The row's host time at the table's reference host (the table's own host scaling undone)."""
    return float(row["host_s"]) / host_scale(table, probe_s(row))


def fit_rows(rows: list[dict]) -> list[dict]:
    """The rows the fit reads: rounds after the first (every flat size met before), finite host time."""
    return [r for r in rows if r["first_met"] == "0" and math.isfinite(float(r["host_s"]))]


COEFS = ("a_s", "b_s_per_layer", "c_s_per_chunk_layer", "e_s_per_token", "r_s_per_row", "g_s_per_decode_layer")


def design(layers: float, chunks: float, prompt_tokens: float, decode_rows: float) -> list[float]:
    """The fit's regressors (COEFS' order) of an eager iteration."""
    return [1.0, layers, chunks * layers, prompt_tokens, decode_rows, layers if decode_rows > 0 else 0.0]


def row_design(row: dict) -> list[float]:
    """design() of an eager_host row."""
    rows = float(row["decode_rows"])
    return design(float(row["num_layers"]), float(row["chunks"]), float(row["flat_tokens"]) - rows, rows)


def fit_floor(rows: list[dict], table: dict) -> dict:
    """COEFS (seconds; see the module doc) fitted by non-negative least squares at `table`'s reference host."""
    use = fit_rows(rows)
    if not use:
        raise ValueError("no fitting rows (eager_host.csv rounds after the first)")
    x = np.array([row_design(r) for r in use])
    y = np.array([host_at_reference(r, table) for r in use])
    coef, _ = nnls(x, y)
    return dict(zip(COEFS, map(float, coef)))


def predicted_host_s(fit: dict, x: list[float]) -> float:
    """The fitted host time (reference host) of an iteration of regressors x (design())."""
    return float(np.dot(x, [fit[k] for k in COEFS]))


def floor_terms(root: Path | str | None = None) -> dict[str, dict]:
    """Per one-GPU table, the launch floor fitted at its own reference host (timing.LAUNCH_FLOOR_TERMS)."""
    root = rec.records_root() if root is None else root
    rows = read_fit(root)
    out = {}
    for name in ONE_GPU_TABLES:
        f = fit_floor(rows, engine_costs(name))
        out[name] = {"launch_floor_iteration_s": f["a_s"], "launch_floor_eager_s": f["b_s_per_layer"] * ENGINE_FIT_LAYERS,
                     "launch_floor_chunk_s": f["c_s_per_chunk_layer"] * ENGINE_FIT_LAYERS,
                     "launch_floor_token_s": f["e_s_per_token"], "launch_floor_row_s": f["r_s_per_row"],
                     "launch_floor_decode_s": f["g_s_per_decode_layer"] * ENGINE_FIT_LAYERS}
    return out


def additive_host_s(table: dict, row: dict) -> float:
    """The committed table's host terms of an eager prompt iteration of the row's shape at the reference host
    (iteration, eager forward and chunks layer-scaled, prompt path): what the twin charges as host work now."""
    f = float(row["num_layers"]) / ENGINE_FIT_LAYERS
    return (table["iteration_s"] + table["eager_iteration_s"] * f + table["prompt_iteration_s"]
            + table["chunk_s"] * float(row["chunks"]) * f)


def per_model(rows: list[dict], table: dict, fit: dict) -> list[dict]:
    """Per model (rounds after the first, measured compositions and setup steps): median host time at the reference
    host, operators a step (measured compositions), host per operator, host over the committed table's host terms
    (does the engine's eager host follow the twin's count, the constant wrong?), and the fit's median error, fitted on
    all models and with the model left out."""
    out = []
    use = fit_rows(rows)
    for model in sorted({r["model"] for r in use}):
        mine = [r for r in use if r["model"] == model]
        others = [r for r in rows if r["model"] != model]
        loo = fit_floor(others, table) if fit_rows(others) else None
        href = [host_at_reference(r, table) for r in mine]
        ops = [(host_at_reference(r, table), float(r["ops"])) for r in mine if r["ops"]]
        out.append({"model": model, "layers": int(mine[0]["num_layers"]), "probe_s": probe_s(mine[0]), "rows": len(mine),
                    "host_ref_p50_s": float(np.median(href)),
                    "ops_p50": float(np.median([o for _, o in ops])) if ops else math.nan,
                    "host_per_op_s": float(np.median([h / o for h, o in ops])) if ops else math.nan,
                    "over_table": float(np.median([h / additive_host_s(table, r) for h, r in zip(href, mine)])),
                    "fit_error": float(np.median([predicted_host_s(fit, row_design(r)) / h - 1
                                                  for h, r in zip(href, mine)])),
                    "left_out_error": (float(np.median([predicted_host_s(loo, row_design(r)) / h - 1
                                                        for h, r in zip(href, mine)]))
                                       if loo else math.nan)})
    return out


# ---- the host term on load runs (reported beside the judgement, never a criterion) ------------------------------

def load_run_host(folder: Path, model: str, fit: dict, table: dict) -> dict:
    """A load-run folder's eager prompt iterations: measured host_s over the fitted host term at the run's probe, and
    over the committed table's host terms at it (median and the 10th-90th percentiles)."""
    with open_csv(folder / "serve_load.csv") as f:
        probes = {r["run_id"]: probe_s(r) for r in csv.DictReader(f)}
    layers = float(get_model(model).num_layers)
    ratios, ratios_table = [], []
    with open_csv(folder / "serve_iterations.csv") as f:
        for it in csv.DictReader(f):
            if int(it["prefill_tokens"] or 0) <= 0 or int(it["graph_batch"] or 0) != 0:
                continue
            h = float(it["host_s"] or "nan")
            if not math.isfinite(h) or it["run_id"] not in probes:
                continue
            scale = host_scale(table, probes[it["run_id"]])
            rows, chunks = float(it["decode_seqs"]), float(it["prefill_seqs"])
            x = design(layers, chunks, float(it["prefill_tokens"]), rows)
            ratios.append(h / (predicted_host_s(fit, x) * scale))
            ratios_table.append(h / (additive_host_s(table, {"num_layers": layers, "chunks": chunks}) * scale))
    q = lambda v: tuple(float(np.percentile(v, p)) for p in (50, 10, 90)) if v else (math.nan,) * 3  # noqa: E731
    return {"iterations": len(ratios), "over_fit": q(ratios), "over_table": q(ratios_table)}


# ---- the judgement ----------------------------------------------------------------------------------------

def setting(on: bool, terms: dict[str, dict] | None = None):
    """The committed twin (off) or the candidate (on: both switches, the floor terms in the one-GPU tables)."""
    stack = before_t(ExitStack())
    stack.enter_context(mock.patch.object(timing, "ADOPT_HEAD_SCALED_SCORES", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_LAUNCH_FLOOR", on))
    if on:
        stack.enter_context(tables_with(terms))
    return stack


def set_rows(name: str, models, root: Path | str | None = None, run_ids=None) -> list[dict]:
    """A fresh set's held-out runs (<gpu>/<name>/<model> for each GPU of GPUS; `run_ids`: only those) replayed with
    the record's host probe (serve_host_speed.replay, as the diagnostic replays)."""
    root = rec.records_root() if root is None else root
    out = []
    for gpu in GPUS:
        for model in models:
            d = Path(root) / gpu / name / model
            if csv_exists(d / "serve_load.csv"):
                out.extend({**r, "model": model, "registration": name}
                           for r in replay(d, True, ("holdout",), run_ids=run_ids))
    return out


def fresh_rows(root: Path | str | None = None, run_ids=None) -> list[dict]:
    """Set D's runs (set_rows)."""
    root = rec.records_root() if root is None else root
    return set_rows(NAME, FRESH_MODELS, root, run_ids)


def checks(rows: list[dict], figures=FIGURES) -> tuple[int, float]:
    """(checks met, median |error|) over rows' figures."""
    errs = [abs(r[f"{k}_rel_error"]) for r in rows for k in figures if math.isfinite(r[f"{k}_rel_error"])]
    return sum(bool(r[f"{k}_within_target"]) for r in rows for k in figures), float(np.median(errs)) if errs else math.nan


def fresh_criteria(off: list[dict], on: list[dict]) -> dict:
    """D1: more checks met and a lower median |error|; D2: the closed loops' TTFT P99 median |error| no higher;
    D3: no fewer checks on any GPU the records ran on."""
    a, b = checks(off), checks(on)
    pa, pb = checks(ssh.closed(off), ("ttft_p99_s",)), checks(ssh.closed(on), ("ttft_p99_s",))
    gpus = sorted({r["gpu"] for r in off})
    by_gpu = {g: (checks([r for r in off if r["gpu"] == g])[0], checks([r for r in on if r["gpu"] == g])[0]) for g in gpus}
    crit = {"D1_more_checks_lower_median": bool(off) and b[0] > a[0] and b[1] < a[1],
            "D2_closed_ttft_p99_median": bool(off) and pb[1] <= pa[1],
            "D3_each_gpu": all(y >= x for x, y in by_gpu.values())}
    return {"all": (a, b), "closed_ttft_p99": (pa, pb), "by_gpu": by_gpu, "criteria": crit, "met": all(crit.values())}


def guard_criteria(off: list[dict], on: list[dict], sets: dict[str, tuple] | None = None) -> dict:
    """G1: on each guard set (label -> registrations; default A, B, C) no fewer checks met; over them pooled a
    median |error| no higher (s24eager's guards, and s24pipe's and s25v3pre's with their own sets)."""
    per = {}
    for label, names in (GUARD_SETS if sets is None else sets).items():
        so = [r for r in off if r["registration"] in names]
        sn = [r for r in on if r["registration"] in names]
        if so:
            per[label] = (checks(so), checks(sn))
    pooled = (checks(off), checks(on))
    crit = {f"G1_set_{k}_no_fewer": v[1][0] >= v[0][0] for k, v in per.items()}
    crit["G1_pooled_median"] = pooled[1][1] <= pooled[0][1]
    return {"sets": per, "pooled": pooled, "criteria": crit, "met": all(crit.values())}


def candidate(root: Path | str | None = None, committed_sets: bool = True) -> dict:
    """Both settings on set D, on sets A, B, C and (committed_sets) the committed serve_load sets; the verdict."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    terms = floor_terms(root)
    names = ssh.REGISTRATIONS + ssh.EXTRA + (ssh.FRESH.name,)
    rows = {}
    for on in (False, True):
        with setting(on, terms):
            rows[on] = {"D": fresh_rows(root), "guard": ssh.replays(on, root, names),
                        "committed": ssc.all_rows(root) if committed_sets else None}
    d = fresh_criteria(rows[False]["D"], rows[True]["D"])
    g = guard_criteria(rows[False]["guard"], rows[True]["guard"])
    out = {"terms": terms, "D": d, "guard": g, "rows": rows}
    if committed_sets:
        s_off, s_on = ssc.summary(rows[False]["committed"]), ssc.summary(rows[True]["committed"])
        out.update(summary_off=s_off, summary_on=s_on, committed=ssh.committed_criterion(s_off, s_on),
                   moved=ssc.moved(rows[False]["committed"], rows[True]["committed"]))
    out["adopt"] = bool(d["met"] and g["met"] and committed_sets and all(out["committed"].values()))
    return out


# ---- the committed judgement (calibration/s24eager_judgement.json) ----------------------------------------

JUDGEMENT_FILE = Path(__file__).resolve().parent / f"{NAME}_judgement.json"
RECORD_KEYS = ("run_id", "gpu", "registration")


def slim(rows: list[dict]) -> list[dict]:
    """A replay's rows as the judgement keeps them: the run's keys and each figure's error (its check follows from
    the error and serve_load_validation.TARGETS, as replay makes it; kept out to hold the file under 64 KiB)."""
    return [{**{k: r[k] for k in RECORD_KEYS}, **{f"{f}_rel_error": r[f"{f}_rel_error"] for f in FIGURES}}
            for r in rows]


def checked(row: dict) -> dict:
    """A kept row with each figure's check restored (replay's rule: a finite error within its target)."""
    return {**row, **{f"{f}_within_target": bool(math.isfinite(row[f"{f}_rel_error"])
                                                  and abs(row[f"{f}_rel_error"]) <= TARGETS[f]) for f in FIGURES}}


def head_commit() -> str:
    """The commit the judgement was computed at ('+dirty' where the tracked tree differed from it)."""
    repo = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=repo).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=repo).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def judgement_record(out: dict, command: str) -> dict:
    """Set D's and the guard sets' rows under both settings, the criteria, the verdict, the command and the commit:
    what tests read back instead of replaying sets A-D twice (36-71 s a CI run)."""
    return {"command": command, "code_commit": head_commit(),
            "rows": {s: {"D": slim(out["rows"][on]["D"]), "guard": slim(out["rows"][on]["guard"])}
                     for s, on in (("off", False), ("on", True))},
            "criteria": {**out["D"]["criteria"], **out["guard"]["criteria"], **out.get("committed", {})},
            "D_met": out["D"]["met"], "guard_met": out["guard"]["met"], "committed_sets": "committed" in out,
            "adopt": out["adopt"]}


def judgement_text(doc: dict) -> str:
    """The record as JSON, one row a line (a diff shows the rows that moved)."""
    rows = doc["rows"]
    head = json.dumps({k: v for k, v in doc.items() if k != "rows"}, indent=1, sort_keys=True)
    sets = ",\n".join(f'  "{s}": {{\n' + ",\n".join(
        f'   "{k}": [\n' + ",\n".join("    " + json.dumps(r, sort_keys=True, separators=(",", ":")) for r in v)
        + "\n   ]" for k, v in rows[s].items()) + "\n  }" for s in rows)
    return head[:-2] + ',\n "rows": {\n' + sets + "\n }\n}\n"


def read_judgement(path: Path | str = JUDGEMENT_FILE) -> dict:
    """The committed judgement with every row's checks restored (checked)."""
    doc = read_json(path)
    doc["rows"] = {s: {k: [checked(r) for r in v] for k, v in sets.items()} for s, sets in doc["rows"].items()}
    return doc


# ---- printing ---------------------------------------------------------------------------------------------

def _print_fit(root: Path) -> None:
    rows = read_fit(root)
    for name in ONE_GPU_TABLES:
        table = engine_costs(name)
        fit = fit_floor(rows, table)
        print(f"{name} (reference {table['host_probe_launch_s'] * 1e6:.2f} us): a {fit['a_s'] * 1e3:.3f} ms, b "
              f"{fit['b_s_per_layer'] * 1e3:.3f} ms a layer, c {fit['c_s_per_chunk_layer'] * 1e3:.3f} ms a chunk-layer, "
              f"e {fit['e_s_per_token'] * 1e6:.3f} us a prompt token, r {fit['r_s_per_row'] * 1e6:.2f} us a decode row, "
              f"g {fit['g_s_per_decode_layer'] * 1e3:.3f} ms a layer with decode rows")
        for m in per_model(rows, table, fit):
            print(f"  {m['model']:20s} L{m['layers']} probe {m['probe_s'] * 1e6:5.2f} us, {m['rows']:3d} rows, host "
                  f"{m['host_ref_p50_s'] * 1e3:6.2f} ms, {m['ops_p50']:5.0f} ops, {m['host_per_op_s'] * 1e6:5.2f} us an "
                  f"op, x{m['over_table']:.2f} the table's host terms, fit {m['fit_error']:+.1%}, left out "
                  f"{m['left_out_error']:+.1%}")


def _print_load_host(root: Path) -> None:
    """The fitted host term against the eager prompt iterations of set D (fresh) and, beside, sets A and C."""
    rows = read_fit(root)
    for gpu in GPUS:
        name = f"real-serve-{gpu}-ep1"
        table = engine_costs(name)
        fit = fit_floor(rows, table)
        folders = [(NAME, m) for m in FRESH_MODELS] + [(reg, m) for reg in ssh.REGISTRATIONS + (ssh.FRESH.name,)
                                                       for m in ("qwen3moe-mla-slice", "qwen2moe-mla-slice",
                                                                 "mixtral-mla-slice")]
        for reg, model in folders:
            d = Path(root) / gpu / reg / (model if reg == NAME else model.split("-", 1)[0])
            if not csv_exists(d / "serve_iterations.csv"):
                continue
            h = load_run_host(d, model, fit, table)
            print(f"  {gpu} {reg:12s} {model:20s} {h['iterations']:5d} eager prompt iterations: host_s / fitted term "
                  f"{h['over_fit'][0]:.2f} ({h['over_fit'][1]:.2f}-{h['over_fit'][2]:.2f}), / committed table's host "
                  f"terms {h['over_table'][0]:.2f} ({h['over_table'][1]:.2f}-{h['over_table'][2]:.2f})")


def _rows_line(label: str, r: dict) -> str:
    figs = " ".join(f"{r[f'{k}_rel_error']:+6.1%}{'' if r[f'{k}_within_target'] else '!'}" for k in FIGURES)
    return f"{label} {r['gpu']} {r['run_id']:32s} {figs}"


def print_committed(out: dict) -> None:
    """The committed sets' checks with the switch off and on (where the judgement computed them) and the verdict."""
    if "summary_off" in out:
        for name in out["summary_off"]:
            (ma, na, ea), (mb, nb, eb) = out["summary_off"][name], out["summary_on"][name]
            print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   on {mb:3}/{nb:3} median {eb:.2%}")
        print("committed sets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in out["committed"].items()))
    print(f"verdict: {'ADOPT' if out['adopt'] else 'not adopted'}")


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_eager_host", __doc__, ("fit",),
                     "fit: the fitting records only (default: the judgement too)", default=None, dest="part")
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if not read_fit(root):
        return cli.refuse("fitting", root, f"{NAME}/fit/")
    _print_fit(root)
    _print_load_host(root)
    if args.part == "fit":
        return 0
    out = candidate(root, committed_sets=not args.no_committed)
    for key, t in out["terms"].items():
        print(f"{key}: " + ", ".join(f"{k} {v * 1e3:.4f} ms" for k, v in t.items()))
    d = out["D"]
    (a, b), (pa, pb) = d["all"], d["closed_ttft_p99"]
    print(f"set D: checks {a[0]} -> {b[0]}, median |err| {a[1]:.2%} -> {b[1]:.2%}; closed TTFT P99 met {pa[0]} -> "
          f"{pb[0]}, median {pa[1]:.1%} -> {pb[1]:.1%}; by GPU {d['by_gpu']}; " +
          ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in d["criteria"].items()))
    g = out["guard"]
    for label, (x, y) in g["sets"].items():
        print(f"set {label}: checks {x[0]} -> {y[0]}, median |err| {x[1]:.2%} -> {y[1]:.2%}")
    print("guards: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in g["criteria"].items()))
    print_committed(out)
    for label, on in (("off", False), ("on", True)):
        for r in out["rows"][on]["D"]:
            print(_rows_line(f"D {label}", r))
    print("\n".join(ssh.changed_sides(out["rows"][False]["guard"], out["rows"][True]["guard"])))
    if args.json:
        command = " ".join(["python -m calibration.serve_eager_host"] + list(sys.argv[1:] if argv is None else argv))
        write_json_text(args.json, judgement_text(judgement_record(out, command)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
