"""Session s33graph (issue 15; docs/notes/s33graph.md): CUDA-graph decode replays taken apart, per model and card, on the
fitting records and (a description only) on the seen held-out sets.

A graph-replayed decode iteration is priced by the twin in force (twin.serving.timing, IterationCosts) as
    kernels (the cost functions' decode step at the padded rows and the longest context's padded width)
    + graph_op_floor_s x (the captured forward's operators - the fit model's 403)   (ADOPT_GRAPH_OP_FLOOR, H200 table)
    + iteration_s + loop_s (host terms, scaled by the run's launch probe) + the gathered attention's term.
Every graph replay of a record is priced at its own composition (calibration.s33loop.run_iterations: the run's probe,
the twin in force) and split into those terms (`replay_terms`); where the run was recorded with --timing, the measured
side splits too: gpu_s (CUDA events around the input copies and the replay's launch, so the replay's GPU time plus the
copies) and host_s. The figures: measured / twin per run, per model and card, by decode rows; the residual
(measured - twin) and its growth from 1 to 8 rows against the twin's kernels' growth; the twin's kernel groups
(decode_step's attention, routed and shared experts, elementwise, head) at 1-16 rows (`kernel_groups`).

Candidate F (screened, not judged; no switch): the per-operator floor refitted by calibration.serve_graph_floor's own
procedure (fit_term) on every H200 one-GPU fitting record with graph replays (h200/s26start2/fit as before, with set T,
h200/s33loop: v2-lite-slice, v3-slice-1l and bench-small widen the operators from 216-427 to 216-847). G (screened,
not judged; no switch): a replay's host terms scaled by the host factor ^ 0.75 (the H200 fitting records' exponent)
in place of ^ 1.

    python -m calibration.s33graph fitting [--json FILE]    # the fitting records, per run and per model and card
    python -m calibration.s33graph seen [--json FILE]       # the seen held-out sets (a description, no fit)
    python -m calibration.s33graph kernels                  # the twin's kernel groups of a replay, 1-16 rows
    python -m calibration.s33graph refit                    # F's term from the H200 fitting records
    python -m calibration.s33graph joint                    # the floor with the fixed terms' host exponent (evidence)
    python -m calibration.s33graph gamma                    # the replay's host terms' exponent on the fitting records
    python -m calibration.s33graph screen [--json FILE]     # every seen set in force, under F and under G (~2 min)
    python -m calibration.s33graph record --json calibration/s33graph_decomposition.json   # all of it (~4 min)
    python -m calibration.s33graph folders h200/s33loop --split fit   # any folders' replays (a description)
    python -m calibration.s33graph setr [--json FILE]      # s33cold's set R after the fact: replays, checks (F, G)
"""

from __future__ import annotations

import dataclasses
import math
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from calibration import entry, records_io
from calibration import records as rec
from calibration import s32kern as s32k
from calibration import serve_eager_host as seh
from calibration import serve_graph_floor as sgf
from calibration.records_io import csv_exists, read_csv, text_records
from calibration.s33loop import host_factor, run_iterations, set_of
from calibration.serve_host_speed import tables_with
from twin.serving import timing
from twin.serving.iteration import decode_step
from twin.serving.timing import graph_ops

NAME = "s33graph"
CARDS = ("h100", "h200")
# decode rows bins of a replay (upper edges; the graph buckets of the records are 1, 2, 4, 8, 16)
ROW_EDGES = (0, 1, 2, 4, 8, 16, 64)
ROW_BINS = ("1", "2", "3-4", "5-8", "9-16", "17-64")
# folders of fitting records left out: profiled runs (a folder name with "trace": the profiler changes the kernels' and
# the host's times)
LEFT_OUT = "trace"
# set T, the fitting / diagnostic records that widen the floor's operators (calibration.s33loop.set_t_folders)
SET_T = "s33loop"
FLOOR_TABLE = sgf.FIT_TABLE   # real-serve-h200-ep1: the only table carrying graph_op_floor_s
KERNEL_ROWS = (1, 2, 4, 8, 16)
KERNEL_CTX = 512.0            # context tokens of the kernel-group table (the records' replays: 300-1100)
CANDIDATE = "F"


def replay_terms(costs, df: pd.DataFrame) -> pd.DataFrame:
    """The graph replays of a run_iterations frame with the twin's price split into its terms (seconds): kern_s (the
    cost functions' kernels), floor_s (graph_op_floor_s x operators beyond the fit model's, ADOPT_GRAPH_OP_FLOOR),
    fixed_s (iteration_s + loop_s at the run's probe) and rest_s (the gathered attention and post-prompt terms: the
    price less the other three); pad_rows the graph bucket's rows."""
    g = df[~df.eager].copy()
    e = costs.graph_engine
    floor = (e.get("graph_op_floor_s", 0.0) * costs.graph_ops_over_fit
             if timing.ADOPT_GRAPH_OP_FLOOR and costs.ops is not None else 0.0)
    g["floor_s"] = floor
    g["fixed_s"] = e.get("iteration_s", 0.0) + e.get("loop_s", 0.0)
    g["rest_s"] = g.pred_s - g.kern_s - g.floor_s - g.fixed_s
    return g


def _bin(rows: pd.Series) -> pd.Series:
    return pd.cut(rows, ROW_EDGES, labels=ROW_BINS)


def fitting_folders(root: Path | str) -> list[Path]:
    """Every one-GPU folder under <card>/ (h100, h200; the card folder itself included) whose serve_load holds fitting
    runs (split fit) with its iterations, profiled folders (LEFT_OUT) left out."""
    root = Path(root)
    out = []
    for card in CARDS:
        base = root / card
        for d in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            rel = d.relative_to(root).as_posix()
            if any(LEFT_OUT in x for x in rel.split("/")) or not csv_exists(d / "serve_load.csv"):
                continue
            if not (csv_exists(d / "serve_iterations.csv") and csv_exists(d / "serve_requests.csv")):
                continue
            load = read_csv(d / "serve_load.csv", dtype=str).fillna("")
            if "split" in load and (load.split == "fit").any():
                out.append(d)
    return out


def seen_folders(root: Path | str) -> list[Path]:
    """The seen sets' one-GPU folders (s32kern.GUARD_LABELS: <card>/<registration>/<model>) with iterations."""
    root = Path(root)
    out = []
    for regs in s32k.GUARD_LABELS.values():
        for reg in regs:
            for card in CARDS:
                base = root / card / reg
                for d in sorted(base.glob("*")) if base.is_dir() else ():
                    if csv_exists(d / "serve_load.csv") and csv_exists(d / "serve_iterations.csv"):
                        out.append(d)
    return sorted(set(out))


def run_replays(folder: Path, split: str) -> list[pd.DataFrame]:
    """Per one-GPU run of `split` in the folder: its graph replays with the twin's terms (replay_terms) and the run's
    labels (folder, run, card, model, arrival, host factor)."""
    out = []
    load = text_records(read_csv(folder / "serve_load.csv", dtype=str).fillna(""))
    for r in load:
        if r.get("split") != split or int(float(r.get("ep_size") or 1)) != 1:
            continue
        _, costs, df = run_iterations(folder, r["run_id"])
        if not len(df) or not (~df.eager).any():
            continue
        g = replay_terms(costs, df)
        g["folder"] = folder.as_posix()
        g["run_id"], g["model"], g["arrival"] = r["run_id"], r["model"], r["arrival"]
        g["card"] = _card(folder)
        g["host_factor"] = host_factor(costs)
        g["ops"] = graph_ops(costs.ops, costs.m) if costs.ops is not None else math.nan
        g["layers"] = costs.m.num_layers
        out.append(g)
    return out


def _card(folder: Path) -> str:
    parts = folder.as_posix().split("/")
    return next(p for p in reversed(parts) if p in CARDS)


def replays(root: Path | str, folders: list[Path], split: str) -> pd.DataFrame:
    """Every graph replay of `folders`' runs of `split`, one frame (folder paths made relative to the root)."""
    root = Path(root)
    frames = [g for d in folders for g in run_replays(d, split)]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    df["folder"] = [Path(f).relative_to(root).as_posix() for f in df.folder]
    df["ratio"] = df.measured_s / df.pred_s
    df["resid_s"] = df.measured_s - df.pred_s
    df["rows_bin"] = _bin(df.decode_rows)
    return df


def _med(x) -> float:
    x = pd.Series(x).dropna()
    return float(np.median(x)) if len(x) else math.nan


def summarise(df: pd.DataFrame) -> dict:
    """Per run and per (card, model): replays, measured / twin (median), the residual (ms), the twin's terms' medians
    (ms), the timed split (gpu_s, host_s, ms) and by decode rows bin: n, measured / twin, residual, twin kernels,
    measured gpu_s; the growth from 1 row to 5-8 rows of the measured duration and the twin's price."""
    if not len(df):
        return {"runs": [], "models": {}}
    runs = []
    for (folder, rid), g in df.groupby(["folder", "run_id"], sort=False):
        runs.append({"folder": folder, "run_id": rid, "card": g.card.iat[0], "model": g.model.iat[0],
                     "arrival": g.arrival.iat[0], "host_factor": float(g.host_factor.iat[0]), "replays": int(len(g)),
                     "rows_median": _med(g.decode_rows), "measured_over_twin": _med(g.ratio),
                     "resid_ms": _med(g.resid_s) * 1e3})
    models = {}
    for (card, model), g in df.groupby(["card", "model"], sort=True):
        timed = g[np.isfinite(g.gpu_s)]
        by = {}
        for b, h in g.groupby("rows_bin", observed=True):
            ht = h[np.isfinite(h.gpu_s)]
            by[str(b)] = {"n": int(len(h)), "measured_over_twin": _med(h.ratio), "resid_ms": _med(h.resid_s) * 1e3,
                          "measured_ms": _med(h.measured_s) * 1e3, "twin_ms": _med(h.pred_s) * 1e3,
                          "kern_ms": _med(h.kern_s) * 1e3, "gpu_ms": _med(ht.gpu_s) * 1e3 if len(ht) else math.nan}
        grow = {}
        if "1" in by and "5-8" in by:
            grow = {"measured_ms": by["5-8"]["measured_ms"] - by["1"]["measured_ms"],
                    "twin_ms": by["5-8"]["twin_ms"] - by["1"]["twin_ms"],
                    "kern_ms": by["5-8"]["kern_ms"] - by["1"]["kern_ms"]}
        # across runs: log(measured / twin) on log(the run's host factor) (the graph's fixed terms follow the probe)
        per_run = g.groupby(["folder", "run_id"]).agg(hf=("host_factor", "first"), ratio=("ratio", "median"))
        slope = corr = math.nan
        if len(per_run) >= 3 and np.ptp(np.log(per_run.hf)) > 0:
            lx, ly = np.log(per_run.hf.to_numpy()), np.log(per_run.ratio.to_numpy())
            slope, corr = float(np.polyfit(lx, ly, 1)[0]), float(np.corrcoef(lx, ly)[0, 1])
        models[f"{card} {model}"] = {
            "card": card, "model": model, "runs": int(len(per_run)), "replays": int(len(g)),
            "ops": float(g.ops.iat[0]), "layers": int(g.layers.iat[0]),
            "measured_over_twin": _med(g.ratio), "run_ratios": [r["measured_over_twin"] for r in runs
                                                                if r["card"] == card and r["model"] == model],
            "resid_ms": _med(g.resid_s) * 1e3,
            "terms_ms": {k: _med(g[f"{k}_s"]) * 1e3 for k in ("kern", "floor", "fixed", "rest")},
            "timed_replays": int(len(timed)),
            "gpu_ms": _med(timed.gpu_s) * 1e3 if len(timed) else math.nan,
            "host_ms": _med(timed.host_s) * 1e3 if len(timed) else math.nan,
            "by_rows": by, "growth_1_to_5_8": grow,
            "host_factor_range": [float(per_run.hf.min()), float(per_run.hf.max())],
            "host_factor_slope": slope, "host_factor_corr": corr}
    return {"runs": runs, "models": models}


def fitting(root: Path | str | None = None) -> dict:
    root = Path(rec.records_root() if root is None else root)
    return summarise(replays(root, fitting_folders(root), "fit"))


def seen(root: Path | str | None = None) -> dict:
    root = Path(rec.records_root() if root is None else root)
    return summarise(replays(root, seen_folders(root), "holdout"))


def kernel_groups(root: Path | str | None = None) -> dict:
    """{model: {rows: {group: us}}}: the twin's decode step's kernel groups (one step, every layer) on the H200 one-GPU
    table's scenario of the model's set T or fitting run, at KERNEL_ROWS rows and KERNEL_CTX context; with the step's
    head and the routed experts' growth."""
    root = Path(rec.records_root() if root is None else root)
    out = {}
    for d in fitting_folders(root):
        if _card(d) != "h200":
            continue
        load = text_records(read_csv(d / "serve_load.csv", dtype=str).fillna(""))
        r = next((x for x in load if x.get("split") == "fit"), None)
        if r is None or r["model"] in out:
            continue
        _, costs, _ = run_iterations(d, r["run_id"])
        spec = dataclasses.replace(costs.s, input_len=KERNEL_CTX, output_len=0, num_microbatches=1)
        rows = {}
        for b in KERNEL_ROWS:
            st = decode_step(costs.m, costs.gpu, spec, b, costs.prof)
            groups = {k: float(v) * 1e6 for k, v in st["per_microbatch_groups_s"].items() if float(v) > 0}
            rows[str(b)] = {**groups, "head": float(st["head_s"]) * 1e6, "step": float(st["step_s"]) * 1e6}
        out[r["model"]] = rows
    return out


def refit(root: Path | str | None = None) -> dict:
    """F's term: serve_graph_floor.fit_term on the graph replays of h200/s26start2/fit (the in-force term's rows) and
    set T (h200/s33loop/<model>, split fit); also each part alone, and per model the median measured - twin (priced
    without the floor, ms) the fit answers."""
    root = Path(rec.records_root() if root is None else root)
    base = sgf.floor_rows(root, "h200")
    t_dirs = sorted(d for d in (root / "h200" / SET_T).glob("*") if csv_exists(d / "serve_load.csv"))
    t_rows = sgf.floor_rows(root, "h200", folders=t_dirs) if t_dirs else []
    out = {}
    for label, rows in (("s26start2_fit", base), ("set_T", t_rows), ("both", base + t_rows)):
        if not rows:
            continue
        x = np.array([r["ops_over_fit"] for r in rows])
        y = np.array([r["duration_s"] for r in rows])
        p = np.array([r["in_force_s"] for r in rows])
        got = sgf.fit_term(x, y, p)
        got["unfloored_resid_ms"] = {m: _med([r["duration_s"] - r["in_force_s"] for r in rows if r["model"] == m]) * 1e3
                                     for m in sorted({r["model"] for r in rows})}
        got["ops_over_fit"] = {m: float(next(r["ops_over_fit"] for r in rows if r["model"] == m))
                               for m in sorted({r["model"] for r in rows})}
        out[label] = got
    return out


GAMMAS = tuple(round(0.1 * k, 1) for k in range(14))   # the host exponents tried (`joint`, `gamma`)


def joint(root: Path | str | None = None) -> dict:
    """Evidence, no candidate: on every H200 fitting record's graph replays, measured - (kernels + rest) = a x (operators
    beyond the fit model's) + fixed terms at the fit host x host factor^gamma, a by least squares through the origin
    for each gamma of GAMMAS (the twin in force: gamma 1, a 495 ns); per gamma a, the median |relative error|
    and the median measured / fitted price per model. Whatever gamma, mixtral-mla-slice and v2-lite-slice sit on
    opposite sides: a per-operator term cannot carry both."""
    root = Path(rec.records_root() if root is None else root)
    df = replays(root, [d for d in fitting_folders(root) if _card(d) == "h200"], "fit")
    if not len(df):
        return {}
    costs_floor = timing.engine_table(FLOOR_TABLE).get(sgf.TERM, 0.0)
    x = (df.floor_s / costs_floor).to_numpy() if costs_floor > 0 else np.zeros(len(df))
    f = df.host_factor.to_numpy()
    ref = df.fixed_s.to_numpy() / f
    y = (df.measured_s - df.kern_s - df.rest_s).to_numpy()
    out = {}
    for gam in GAMMAS:
        fixed = ref * f ** gam
        a = float(x @ (y - fixed) / (x @ x))
        pred = df.kern_s.to_numpy() + df.rest_s.to_numpy() + fixed + a * x
        ratio = df.measured_s.to_numpy() / pred
        out[f"{gam:.1f}"] = {"floor_s": a, "median_abs_rel_error": float(np.median(np.abs(1 / ratio - 1))),
                             "models": {m: float(np.median(ratio[(df.model == m).to_numpy()]))
                                        for m in sorted(df.model.unique())}}
    return out


def candidate(term_s: float):
    """F: the H200 one-GPU table's graph_op_floor_s set to `term_s` (the switch in force stays on)."""
    stack = ExitStack()
    stack.enter_context(tables_with({FLOOR_TABLE: {sgf.TERM: term_s}}))
    return stack


# G (evidence, no candidate): a replay's host terms (timing.GRAPH_HOST_TERMS) at the fit host x host factor^G_GAMMA in
# place of x host factor (gamma 1, in force; s23srvh's unscaled switch: 0); 0.75 lies between the H200 fitting records'
# zero across-run slope (about 0.6) and their error minimum (0.8) (`gamma`)
G_GAMMA = 0.75


def partial_graph_engine(gamma: float):
    """timing.graph_engine with the replay's host terms scaled by the host factor ^ gamma (both cards' tables)."""
    def graph_engine(engine: dict, fit_host_engine: dict) -> dict:
        if not engine or not fit_host_engine:
            return engine
        out = dict(engine)
        for k in timing.GRAPH_HOST_TERMS:
            ref = fit_host_engine.get(k, 0.0)
            if k in engine and ref > 0:
                out[k] = ref * (engine[k] / ref) ** gamma
        return out
    return graph_engine


def host_gamma(root: Path | str | None = None) -> dict:
    """Per card, on its fitting records' graph replays with the floor in force: for each gamma of GAMMAS the fixed terms
    at the fit host x host factor^gamma; the median |relative error|, the mean log(measured / priced) and the slope of
    the runs' median log ratio on log host factor."""
    root = Path(rec.records_root() if root is None else root)
    out = {}
    for card in CARDS:
        df = replays(root, [d for d in fitting_folders(root) if _card(d) == card], "fit")
        if not len(df):
            continue
        f = df.host_factor.to_numpy()
        ref = df.fixed_s.to_numpy() / f
        base = (df.kern_s + df.rest_s + df.floor_s).to_numpy()
        for gam in GAMMAS:
            ratio = df.measured_s.to_numpy() / (base + ref * f ** gam)
            runs = df.assign(r=ratio).groupby(["folder", "run_id"]).agg(hf=("host_factor", "first"), r=("r", "median"))
            out.setdefault(card, {})[f"{gam:.1f}"] = {
                "median_abs_rel_error": float(np.median(np.abs(1 / ratio - 1))),
                "mean_log_ratio": float(np.mean(np.log(ratio))),
                "run_slope": float(np.polyfit(np.log(runs.hf), np.log(runs.r), 1)[0])}
    return out


def settings(term_s: float) -> dict:
    """The screened settings: F (the refitted floor) and G (the partial host exponent)."""
    return {CANDIDATE: lambda: candidate(term_s),
            "G": lambda: mock.patch.object(timing, "graph_engine", partial_graph_engine(G_GAMMA))}


def screen(root: Path | str | None = None, term_s: float | None = None) -> dict:
    """Every seen set (s32kern.seen_rows: A-Q and K) in force, under F and under G: checks met and median |error| per
    set and per card and model."""
    root = rec.records_root() if root is None else root
    term_s = refit(root)["both"][sgf.TERM] if term_s is None else term_s
    rows = {}
    for label, ctx in (("in force", ExitStack), *settings(term_s).items()):
        with ctx():
            rows[label] = s32k.seen_rows(root)
    out = {"term_s": term_s, "gamma": G_GAMMA, "sets": {}, "models": {}}
    for label, rs in rows.items():
        for letter in sorted({set_of(r) for r in rs}):
            n, med = seh.checks([r for r in rs if set_of(r) == letter])
            out["sets"].setdefault(letter, {})[label] = [n, med]
        n, med = seh.checks(rs)
        out["sets"].setdefault("all", {})[label] = [n, med]
        for key in sorted({(r.get("gpu", ""), r["model"]) for r in rs}):
            n, med = seh.checks([r for r in rs if (r.get("gpu", ""), r["model"]) == key])
            out["models"].setdefault(" ".join(key), {})[label] = [n, med]
    return out


# s33cold's set R (real/serve/plans.py S33R_PLANS; records on s33cold's branch under h200/s33cold/set/<model>): seen
# here only after it ran, as a description (no rule of this lane names it)
SET_R = ("s33cold/set", ("v2-lite-slice", "qwen2moe-mla-slice", "v3-slice-1l", "qwen3moe-mla-slice",
                         "mixtral-mla-slice", "v3-slice-2l"))


DECOMPOSITION = Path(__file__).resolve().parent / f"{NAME}_decomposition.json"


def committed_term_s() -> float:
    """F's term as screened: the decomposition's refit on the committed fitting records (s26start2/fit with set T)."""
    return float(records_io.read_json(DECOMPOSITION)["refit"]["both"][sgf.TERM])


def set_r(root: Path | str | None = None, term_s: float | None = None) -> dict:
    """Set R after the fact (no criterion): its graph replays per model (summarise) with F's replay ratio beside, and
    its runs replayed in force, under F and under G: checks met and median |error| per model and in all. F's term:
    `term_s`, else as screened (committed_term_s; a records root without set T would refit another)."""
    root = Path(rec.records_root() if root is None else root)
    name, models = SET_R
    dirs = [root / "h200" / name / m for m in models if csv_exists(root / "h200" / name / m / "serve_load.csv")]
    if not dirs:
        return {}
    term_s = committed_term_s() if term_s is None else term_s
    df = replays(root, dirs, "holdout")
    in_force = timing.engine_table(FLOOR_TABLE).get(sgf.TERM, 0.0)
    pred_f = df.pred_s + (term_s - in_force) * df.floor_s / in_force
    out = {"term_s": term_s, "replays": summarise(df),
           "replays_under_F": {m: _med(df.measured_s[df.model == m] / pred_f[df.model == m]) for m in models},
           "checks": {}}
    for label, ctx in (("in force", ExitStack), *settings(term_s).items()):
        with ctx():
            rows = seh.set_rows(name, models, root)
        out["checks"].setdefault("all", {})[label] = list(seh.checks(rows))
        for m in models:
            out["checks"].setdefault(m, {})[label] = list(seh.checks([r for r in rows if r["model"] == m]))
    return out


def record(root: Path | str | None = None) -> dict:
    root = rec.records_root() if root is None else root
    ref = refit(root)
    return {"source": f"python -m calibration.{NAME} record (docs/notes/{NAME}.md)", "fitting": fitting(root),
            "seen": seen(root), "kernel_groups_us": kernel_groups(root), "refit": ref, "joint": joint(root),
            "host_gamma": host_gamma(root),
            "screen": screen(root, ref["both"][sgf.TERM])}


def _print_models(got: dict) -> None:
    print("card model (ops, layers) | runs replays | measured/twin | resid ms | twin terms ms: kern floor fixed rest | "
          "timed gpu host ms | by rows: measured/twin (n) | growth 1 -> 5-8 rows ms: measured, twin (kernels) | "
          "across runs: log ratio on log host factor (slope, corr)")
    for key, v in got["models"].items():
        t = v["terms_ms"]
        by = " ".join(f"{b}:{x['measured_over_twin']:.3f}({x['n']})" for b, x in v["by_rows"].items())
        g = v["growth_1_to_5_8"]
        gr = f"{g['measured_ms']:+.2f}, {g['twin_ms']:+.2f} ({g['kern_ms']:+.2f})" if g else "-"
        print(f"{key} ({v['ops']:.0f}, {v['layers']}) | {v['runs']} {v['replays']} | {v['measured_over_twin']:.3f} | "
              f"{v['resid_ms']:+.3f} | {t['kern']:.3f} {t['floor']:+.3f} {t['fixed']:.3f} {t['rest']:.3f} | "
              f"{v['gpu_ms']:.3f} {v['host_ms']:.3f} | {by} | {gr} | {v['host_factor_slope']:+.2f} "
              f"{v['host_factor_corr']:+.2f} (hf {v['host_factor_range'][0]:.2f}-{v['host_factor_range'][1]:.2f})")


def _print_screen(got: dict) -> None:
    print(f"F: graph_op_floor_s {got['term_s'] * 1e9:.1f} ns (in force "
          f"{timing.engine_table(FLOOR_TABLE).get(sgf.TERM, 0.0) * 1e9:.1f} ns); G: graph host terms x host factor^"
          f"{got['gamma']:g}. Checks met (median |error|): in force -> F, G")
    for key in ("sets", "models"):
        for k, v in got[key].items():
            a, b, c = v["in force"], v[CANDIDATE], v["G"]
            print(f"  {k:28s} {a[0]:4d} -> {b[0]:4d}{'-' if b[0] < a[0] else ' '}, {c[0]:4d}{'-' if c[0] < a[0] else ' '}"
                  f"   median {a[1] * 100:.2f} -> {b[1] * 100:.2f}, {c[1] * 100:.2f}%")


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser(f"calibration.{NAME}", __doc__)
    ap.add_argument("what", choices=["fitting", "seen", "kernels", "refit", "joint", "gamma", "screen", "record", "folders",
                                     "setr"])
    ap.add_argument("folders", nargs="*", metavar="FOLDER",
                    help="folders: records folders under the records root (<card>/<registration>[/<model>]; the model "
                         "folders under each are taken)")
    ap.add_argument("--split", default="holdout", choices=["holdout", "fit"], help="folders: the runs' split")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the figures")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()
    if args.what == "folders":
        dirs = []
        for f in args.folders:
            d = root / f
            dirs += [d] if csv_exists(d / "serve_load.csv") else sorted(x for x in d.glob("*")
                                                                      if csv_exists(x / "serve_load.csv"))
        got = summarise(replays(root, dirs, args.split)) if dirs else {"runs": []}
        if not got["runs"]:
            print(f"folders: no one-GPU graph replays of {args.split} runs under {root}/{{{','.join(args.folders)}}}; "
                  "allowed: folders holding serve_load.csv and serve_iterations.csv, or their parent", file=sys.stderr)
            return 2
        _print_models(got)
        for r in got["runs"]:
            print(f"  {r['folder']} {r['run_id']} {r['arrival']} hf {r['host_factor']:.2f}: {r['replays']} replays, rows "
                  f"{r['rows_median']:.0f}, measured / twin {r['measured_over_twin']:.3f}")
    elif args.what == "setr":
        got = set_r(root)
        if not got:
            print(f"setr: no records under {root}/h200/{SET_R[0]}/<model>/ (s33cold's set R)", file=sys.stderr)
            return 2
        _print_models(got["replays"])
        print("replays under F (measured / twin): " + ", ".join(f"{m} {x:.3f}" for m, x in got["replays_under_F"].items()))
        for k, v in got["checks"].items():
            print(f"  {k:20s} checks " + ", ".join(f"{lab} {n} ({med * 100:.2f}%)" for lab, (n, med) in v.items()))
    elif args.what in ("fitting", "seen"):
        got = fitting(root) if args.what == "fitting" else seen(root)
        if not got["runs"]:
            print(f"no one-GPU graph replays of {args.what} runs under {root}/<card>/", file=sys.stderr)
            return 2
        _print_models(got)
    elif args.what == "kernels":
        got = kernel_groups(root)
        for m, rows in got.items():
            print(m + ": " + " | ".join(f"{b} rows " + " ".join(f"{k} {v:.0f}" for k, v in g.items())
                                        for b, g in rows.items()))
    elif args.what == "refit":
        got = refit(root)
        if "s26start2_fit" not in got:
            print(f"no fitting runs under {root}/h200/s26start2/fit/", file=sys.stderr)
            return 2
        for label, v in got.items():
            print(f"{label}: {sgf.TERM} {v[sgf.TERM] * 1e9:.1f} ns over {v['rows']} replays; in-sample median |error| "
                  f"{v['in_force_median_abs_rel_error']:.1%} -> {v['fit_median_abs_rel_error']:.1%}; unfloored "
                  "residual ms " + ", ".join(f"{m} ({v['ops_over_fit'][m]:+.0f} ops) {x:+.3f}"
                                             for m, x in v["unfloored_resid_ms"].items()))
    elif args.what == "joint":
        got = joint(root)
        for gam, v in got.items():
            print(f"gamma {gam}: floor {v['floor_s'] * 1e9:.0f} ns, median |error| {v['median_abs_rel_error']:.2%}; "
                  "measured / fitted " + " ".join(f"{m} {r:.3f}" for m, r in v["models"].items()))
    elif args.what == "gamma":
        got = host_gamma(root)
        for card, v in got.items():
            for gam, x in v.items():
                print(f"{card} gamma {gam}: median |error| {x['median_abs_rel_error']:.2%}, mean log ratio "
                      f"{x['mean_log_ratio']:+.4f}, across runs slope {x['run_slope']:+.3f}")
    elif args.what == "screen":
        got = screen(root)
        _print_screen(got)
    else:
        got = record(root)
        _print_models(got["fitting"])
        _print_models(got["seen"])
        _print_screen(got["screen"])
    if args.json:
        entry.write_json(args.json, got, sort_keys=True, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
