"""Session s33loop (issue 15; docs/notes/s33loop.md): why the twin in force over-prices closed serving loops, taken
apart per iteration, and candidate W (`twin.serving.timing.ADOPT_EAGER_WARMTH`, off): an eager step's host work grows
with the CUDA-graph replays since the instance's last eager step.

Per closed loop of a seen set (`loops`): every busy iteration of the record priced by the twin in force at its own
composition (decode rows, their contexts, the prompt chunks rebuilt from the request log: serve_engine_fit.rebuild),
with the run's host probe, as the replay prices it; graph replays and eager prompt steps apart; the engine spread's mean
ratio at each prediction; where the run was recorded with --timing, the measured host time to the last launch against
the twin's host path (start + operators x eager_op_s); and the host factor the run's eager steps imply against the
probe's. `counterfactual`: the two loops of the brief replayed in force, with the spread off, with the run's own host
speed as its probe, and both.

W's constants come from the fitting load runs alone (`fit`, h200/s26start2/fit: one H200, --timing, every flat size met
in the warm pass): per eager prompt step, y = log(measured host_s / the twin's host path at the run's probe) and x =
log2(1 + min(k, cap)), k the graph-replayed iterations of the run since its last eager one (the cap before its first);
the slope is least squares of y on x within each run (both demeaned per run), the centre the mean x over the steps.

    python -m calibration.s33loop loops [--json FILE]           # every seen closed loop taken apart
    python -m calibration.s33loop counterfactual                 # the two loops: spread, host speed
    python -m calibration.s33loop fit [--json calibration/s33loop_fit.json]
    python -m calibration.s33loop screen [--json FILE]           # every seen set in force and under W
    python -m calibration.s33loop hostfactors [--json FILE]      # probe against measured host, closed vs Poisson
    python -m calibration.s33loop sett [--json FILE]             # the same on set T's records (fitting, diagnostic)
    python -m calibration.s33loop probes [--json FILE]           # ways of taking the host factor from the probes
    python -m calibration.s33loop record --json calibration/s33loop_diagnosis.json   # all of it (~2 min of CPU)
"""

from __future__ import annotations

import math
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration import s32kern as s32k
from calibration import serve_eager_host as seh
from calibration.records_io import csv_exists, read_csv, text_records
from calibration.serve_engine_fit import base_table, rebuild
from calibration.serve_load_validation import (FIGURES, predict_run, scenario_for,
                                               sizes_run_before, timed_run_ids)
from twin.serving import timing
from twin.serving.pipeline import stage_ops
from twin.serving.timing import IterationCosts

NAME = "s33loop"
CARD = "h200"
FIT_MODELS = ("mixtral-mla-slice", "qwen2moe-mla-slice", "qwen3moe-mla-slice", "v3-slice-2l")   # s26start2's fit runs
FIT_FILE = Path(__file__).resolve().parent / "s33loop_fit.json"
# the brief's two loops (set J's v2-lite-slice closed c18, set I's v3-slice-1l closed c14) and set J's v3-slice-1l loop
LOOPS = (("h200/s27serve/v2-lite-slice", "n27j-v2-closed-c18-j"), ("h200/s26start2/v3-slice-1l", "n26i-v3-closed-c14-i"),
         ("h200/s27serve/v3-slice-1l", "n27j-v3-closed-c18-j"))


def _folder_records(folder: Path) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    load = text_records(read_csv(folder / "serve_load.csv", dtype=str).fillna(""))
    its = read_csv(folder / "serve_iterations.csv")
    reqs = read_csv(folder / "serve_requests.csv", dtype={"first_token_iteration": str, "finish_iteration": str})
    for c in ("first_token_iteration", "finish_iteration"):
        reqs[c] = pd.to_numeric(reqs[c], errors="coerce")
    return load, its, reqs


def _nan(x) -> float:
    return float(x) if x is not None and not pd.isna(x) else math.nan


def run_iterations(folder: Path | str, run_id: str) -> tuple[dict, IterationCosts, pd.DataFrame]:
    """(the run's row, its in-force IterationCosts at its probe, one row per busy iteration of rank 0): measured
    duration, host_s and gpu_s (NaN without --timing), the composition, the twin's price (pred_s), with the spread's
    mean ratio (pred_spread_s), its kernels (kern_s), and for eager iterations the twin's host path (host_twin_s: start +
    operators x eager_op_s), its operators and k, the graph iterations since the run's last eager one (-1 before the
    first)."""
    folder = Path(folder)
    load, its, reqs = _folder_records(folder)
    run = dict(next(r for r in load if r["run_id"] == run_id))
    run["engine_timing"] = run_id in timed_run_ids(text_records(its.astype(str)))
    sc = scenario_for(run, engine=base_table(run))
    costs = IterationCosts(sc.model, sc.gpu, sc.serve)
    it = its[(its.run_id == run_id) & (its["rank"] == 0)]
    rq = reqs[(reqs.run_id == run_id) & (reqs["rank"] == 0)]
    rows, since = [], -1
    for r in rebuild(it, rq).itertuples(index=False):
        if int(r.idle):
            continue
        ch = r.chunks
        p = sum(n for n, _ in ch)
        b = int(r.decode_seqs)
        span = sum(n * (n + 2 * c) for n, c in ch) / p if p else 0.0
        pairs = float(sum(n * (c + n) for n, c in ch))
        prefix = float(sum(c for _, c in ch))
        ctx = float(r.decode_ctx_mean) if b else 0.0
        mx = float(r.decode_ctx_max) if b else 0.0
        dur, _ = costs.iteration_s(b, ctx, float(p), span, mx, len(ch), pairs, prefix)
        eager = costs.is_eager(b, p, mx)
        loop = costs.loop_of(eager)
        mean_ratio = costs.spread.mean_ratio(p > 0, dur - loop) if costs.spread is not None else 1.0
        kern = costs._kernels(b, ctx, float(p), span, mx, prefix, pairs)[0]
        ops = sum(_flat(stage_ops(costs.ops, costs.m, len(ch), b))) if (eager and costs.ops is not None) else 0.0
        host_twin = (costs.start_s(b, float(p)) + ops * costs.engine.get("eager_op_s", 0.0)) if ops else math.nan
        rows.append({"iteration": int(r.iteration), "start_s": float(r.start_s), "measured_s": float(r.duration_s),
                     "prompt_tokens": p, "decode_rows": b, "chunks": len(ch), "eager": eager, "pred_s": dur,
                     "pred_spread_s": loop + (dur - loop) * mean_ratio, "kern_s": kern, "ops": ops,
                     "host_twin_s": host_twin, "host_s": _nan(getattr(r, "host_s", None)), "gpu_s": _nan(getattr(r, "gpu_s", None)),
                     "since_eager": since if eager else math.nan,
                     "prompt_ok": p == int(r.prefill_tokens)})
        since = 0 if eager else (since + 1 if since >= 0 else -1)
    return run, costs, pd.DataFrame(rows)


def _flat(parts) -> list[float]:
    pre, attn, ffn, head = parts
    return [pre, *attn, *ffn, head]


def host_factor(costs: IterationCosts) -> float:
    """The run's host factor on the table's host terms (eager_op_s at the probe over the table's)."""
    ref = timing.engine_table(costs.s.engine_costs).get("eager_op_s", 0.0)
    return costs.engine.get("eager_op_s", 0.0) / ref if ref else math.nan


def loop_row(folder: Path | str, run_id: str) -> dict:
    """One closed loop taken apart (module docstring): medians of predicted / measured by kind, the spread's factor,
    the host path where timed, the probe's host factor and the one the eager steps imply."""
    run, costs, df = run_iterations(folder, run_id)
    mix = df[df.eager & (df.prompt_tokens > 0)]
    graph = df[~df.eager]
    hf = host_factor(costs)
    out = {"folder": str(folder), "run_id": run_id, "timed": bool(run["engine_timing"]),
           "concurrency": int(float(run.get("concurrency") or 0)), "probe_host_factor": hf,
           "eager_prompt_steps": len(mix), "graph_steps": len(graph),
           "eager_prompt_pred_over_measured": float(np.median(mix.pred_s / mix.measured_s)) if len(mix) else math.nan,
           "eager_prompt_spread_factor": float(np.median(mix.pred_spread_s / mix.pred_s)) if len(mix) else math.nan,
           "eager_prompt_measured_ms": float(np.median(mix.measured_s)) * 1e3 if len(mix) else math.nan,
           "graph_pred_over_measured": float(np.median(graph.pred_s / graph.measured_s)) if len(graph) else math.nan,
           "busy_pred_spread_over_measured": float(df.pred_spread_s.sum() / df.measured_s.sum()),
           "eager_prompt_share_of_busy": float(mix.measured_s.sum() / df.measured_s.sum()) if len(df) else math.nan,
           "eager_prompt_since_eager_median": float(np.median(mix.since_eager)) if len(mix) else math.nan}
    timed = mix[np.isfinite(mix.host_s)]
    if len(timed):
        out.update(host_measured_ms=float(np.median(timed.host_s)) * 1e3,
                   host_twin_ms=float(np.median(timed.host_twin_s)) * 1e3,
                   host_twin_over_measured=float(np.median(timed.host_twin_s / timed.host_s)),
                   host_factor_measured=float(np.median(timed.host_s / (timed.host_twin_s / hf))))
    return out


def seen_closed_loops(root: Path | str | None = None) -> list[tuple[str, str, str]]:
    """(set letter, folder under the records root, run id) of every one-GPU closed loop of the seen sets' folders
    (s32kern.GUARD_LABELS: <gpu>/<registration>/<model>)."""
    root = Path(rec.records_root() if root is None else root)
    out = []
    for letter, regs in s32k.GUARD_LABELS.items():
        for reg in regs:
            for gpu in ("h100", "h200"):
                for d in sorted((root / gpu / reg).glob("*")) if (root / gpu / reg).is_dir() else ():
                    if not csv_exists(d / "serve_load.csv") or not csv_exists(d / "serve_iterations.csv"):
                        continue
                    for r in text_records(read_csv(d / "serve_load.csv", dtype=str).fillna("")):
                        if (r["arrival"] == "closed" and r.get("split") == "holdout"
                                and int(float(r.get("ep_size") or 1)) == 1):
                            out.append((letter, str(d.relative_to(root)), r["run_id"]))
    return out


def loops(root: Path | str | None = None) -> list[dict]:
    root = Path(rec.records_root() if root is None else root)
    return [{"set": s, **loop_row(root / f, rid), "folder": f} for s, f, rid in seen_closed_loops(root)]


def host_factors(root: Path | str | None = None, folders: list[str] | None = None) -> dict:
    """Every one-GPU run recorded with --timing in the seen sets' folders of closed loops and in the fitting runs
    (h200/s26start2/fit): the host factor its probe gives against the one its eager prompt steps measured (the median of
    host_s over the twin's host path at the table's reference); their ratio's quartiles by card and arrival, and by card,
    position in the process (0 = its first run, after the warm pass) and arrival. `folders` (under the root): those
    instead (set T's: set_t_folders), every run counted as fitting."""
    root = Path(rec.records_root() if root is None else root)
    given = folders is not None
    if not given:
        folders = sorted({f for _, f, _ in seen_closed_loops(root)}) + [f"{CARD}/s26start2/fit/{m}" for m in FIT_MODELS]
    rows = []
    for f in folders:
        d = root / f
        if not csv_exists(d / "serve_load.csv"):
            continue
        for pos, r in enumerate(text_records(read_csv(d / "serve_load.csv", dtype=str).fillna(""))):
            if int(float(r.get("ep_size") or 1)) != 1:
                continue
            _, costs, df = run_iterations(d, r["run_id"])
            m = df[df.eager & (df.prompt_tokens > 0) & np.isfinite(df.host_s) & df.prompt_ok]
            if not len(m):
                continue
            graph = df[~df.eager]
            hf = host_factor(costs)
            rows.append({"folder": f, "run_id": r["run_id"], "card": f.split("/")[0], "arrival": r["arrival"],
                         "position": pos, "fitting": given or "/fit/" in f, "probe_factor": hf,
                         "measured_factor": float(np.median(m.host_s / (m.host_twin_s / hf))), "steps": len(m),
                         # the measured factor over the run's thirds (by iteration): the host's state flips
                         "by_third": [float(np.median(x)) if len(x) else math.nan
                                      for x in np.array_split((m.host_s / (m.host_twin_s / hf)).to_numpy(), 3)],
                         # after the last launch: measured (duration - host_s) and the twin's (its price less its
                         # host path, at the probe), medians; the graph replays' twin / measured
                         "tail_measured_s": float(np.median(m.measured_s - m.host_s)),
                         "tail_twin_s": float(np.median((m.pred_s - m.host_twin_s).clip(lower=0.0))),
                         "graph_pred_over_measured": float(np.median(graph.pred_s / graph.measured_s))
                         if len(graph) else math.nan})
    df = pd.DataFrame(rows, columns=["folder", "run_id", "card", "arrival", "position", "fitting", "probe_factor",
                                     "measured_factor", "steps", "by_third", "tail_measured_s", "tail_twin_s",
                                     "graph_pred_over_measured"])
    df["ratio"] = df.measured_factor / df.probe_factor
    for r, ratio in zip(rows, df.ratio):
        r["ratio"] = float(ratio)

    def quart(g) -> list:
        return [int(len(g)), *(float(x) for x in np.percentile(g.ratio, [25, 50, 75]))]
    seen = df[~df.fitting]
    return {"runs": rows,
            "by_arrival": {f"{c} {a}": quart(g) for (c, a), g in seen.groupby(["card", "arrival"])},
            "by_position": {f"{c} {p} {a}": quart(g) for (c, p, a), g in seen.groupby(["card", "position", "arrival"])},
            "fitting_by_arrival": {a: quart(g) for a, g in df[df.fitting].groupby("arrival")},
            "fitting_by_position": {f"{p} {a}": quart(g) for (p, a), g in df[df.fitting].groupby(["position", "arrival"])}}


def set_t_folders(root: Path | str | None = None) -> list[str]:
    """Set T's records folders (<card>/s33loop/<model>, real/campaigns/s33loop.sh), filed by card."""
    root = Path(rec.records_root() if root is None else root)
    return [str(d.relative_to(root)) for d in sorted(root.glob(f"*/{NAME}/*")) if csv_exists(d / "serve_load.csv")]


# how a run's two launch probes (before, after; real/serve --host-probe) might give its host factor: the replay's
# (record_host_launch_s: the mean of the two means) and the alternatives compared on the fitting runs
PROBE_CHOICES = {
    "mean": lambda b, a, b50, a50: (b + a) / 2,
    "geometric": lambda b, a, b50, a50: math.sqrt(b * a),
    "before": lambda b, a, b50, a50: b,
    "after": lambda b, a, b50, a50: a,
    "faster": lambda b, a, b50, a50: min(b, a),
    "slower": lambda b, a, b50, a50: max(b, a),
    "p50 mean": lambda b, a, b50, a50: (b50 + a50) / 2,
}


def probe_choices(root: Path | str | None = None) -> dict:
    """Per group of timed runs (the fitting runs: set T with h200/s26start2/fit; the seen sets by card): for each way of
    taking the host factor from the run's probes (PROBE_CHOICES, on the table's reference and exponent), the median
    |log(measured factor / the probe's)| and its median (bias) over all, closed and Poisson runs."""
    root = Path(rec.records_root() if root is None else root)
    runs = [{**r, "fitting": True} for r in host_factors(root, set_t_folders(root))["runs"]]
    runs += host_factors(root)["runs"]
    out: dict = {}
    for r in runs:
        row = next(x for x in text_records(read_csv(root / r["folder"] / "serve_load.csv", dtype=str).fillna(""))
                   if x["run_id"] == r["run_id"])
        engine = timing.engine_table(f"real-serve-{r['card']}-ep1")
        probes = [float(row.get(f"probe_{w}_launch{q}_s") or "nan") for q in ("", "_p50") for w in ("before", "after")]
        group = f"fitting {r['card']}" if r["fitting"] else f"seen {r['card']}"
        for name, f in PROBE_CHOICES.items():
            p = f(probes[0], probes[1], probes[2], probes[3])
            factor = (p / engine["host_probe_launch_s"]) ** engine["host_probe_exponent"]
            out.setdefault(group, {}).setdefault(name, []).append((r["arrival"], math.log(r["measured_factor"] / factor)))
    summary = {}
    for group, by in out.items():
        for name, pts in by.items():
            e = np.array([x for _, x in pts])
            closed = np.array([x for a, x in pts if a == "closed"])
            poisson = np.array([x for a, x in pts if a == "poisson"])
            summary.setdefault(group, {})[name] = {
                "runs": len(e), "median_abs_log": float(np.median(np.abs(e))), "bias_log": float(np.median(e)),
                "closed_bias_log": float(np.median(closed)) if len(closed) else math.nan,
                "poisson_bias_log": float(np.median(poisson)) if len(poisson) else math.nan}
    return summary


def record(root: Path | str | None = None) -> dict:
    """All of it (`python -m calibration.s33loop record`): loops, counterfactual, host factors (the seen sets' and set
    T's), the probe choices, W's fit and screen."""
    root = rec.records_root() if root is None else root
    return {"command": "python -m calibration.s33loop record --json calibration/s33loop_diagnosis.json",
            "loops": loops(root), "counterfactual": counterfactual(root), "host_factors": host_factors(root),
            "set_t_host_factors": host_factors(root, set_t_folders(root)), "probe_choices": probe_choices(root),
            "fit": fit(root), "screen": screen(root)}


def _probe_for(factor: float, engine: dict) -> float:
    """The launch probe at which the table's host factor is `factor` (timing.host_scale inverted)."""
    return engine["host_probe_launch_s"] * factor ** (1.0 / engine["host_probe_exponent"])


def counterfactual(root: Path | str | None = None, loops_=LOOPS) -> dict:
    """Per loop: its figures' errors in force, with the spread off, with the run's own host speed as its probe (the
    host factor its eager steps imply: measured host_s where timed, else the eager prompt steps' duration less the
    twin's kernel tail over the twin's host path at the table's reference), and both."""
    root = Path(rec.records_root() if root is None else root)
    out = {}
    for folder, rid in loops_:
        d = root / folder
        load, its, reqs = _folder_records(d)
        its_t, reqs_t = text_records(its.astype(str)), text_records(reqs.astype(str))
        run = dict(next(r for r in load if r["run_id"] == rid))
        run["engine_timing"] = rid in timed_run_ids(its_t)
        _, costs, df = run_iterations(d, rid)
        hf = host_factor(costs)
        mix = df[df.eager & (df.prompt_tokens > 0)]
        if mix.host_s.notna().any():
            implied = float(np.median(mix.host_s / (mix.host_twin_s / hf)))
        else:   # the step less the twin's kernels after its last launch (its pipeline's tail) is the host path
            tail = mix.pred_s - costs.loop_of(True) - timing.engine_table(costs.s.engine_costs).get("sync_s", 0.0) \
                - mix.host_twin_s
            implied = float(np.median((mix.measured_s - tail.clip(lower=0.0)) / (mix.host_twin_s / hf)))
        engine = timing.engine_table(costs.s.engine_costs)
        probe = _probe_for(implied, engine)
        before = sizes_run_before(load, its_t)
        rq = [q for q in reqs_t if q["run_id"] == rid]
        meas = {k: float(run[k]) for k in FIGURES}
        got = {"probe_host_factor": hf, "run_host_factor": implied, "figures": {}}
        own = {**run, "probe_before_launch_s": probe, "probe_after_launch_s": probe}
        for label, r, spread in (("in force", run, True), ("spread off", run, False), ("run's host speed", own, True),
                                 ("both", own, False)):
            p = predict_run(r, rq, spread, before[rid], base_table(run))
            got["figures"][label] = {k: p[k] / meas[k] - 1.0 for k in FIGURES}
        out[f"{folder}:{rid}"] = got
    return out


def fit_points(root: Path | str | None = None) -> pd.DataFrame:
    """W's fitting points: every eager prompt step with host_s of the fitting runs (h200/s26start2/fit/<model>): run,
    y = log(host_s / the twin's host path at the run's probe), k (graph iterations since the run's last eager step; -1
    before its first)."""
    root = Path(rec.records_root() if root is None else root)
    frames = []
    for m in FIT_MODELS:
        d = root / CARD / "s26start2" / "fit" / m
        if not csv_exists(d / "serve_load.csv"):
            continue
        for r in text_records(read_csv(d / "serve_load.csv", dtype=str).fillna("")):
            _, _, df = run_iterations(d, r["run_id"])
            pts = df[df.eager & (df.prompt_tokens > 0) & df.prompt_ok & np.isfinite(df.host_s) & (df.host_s > 0)]
            frames.append(pd.DataFrame({"model": m, "run_id": r["run_id"], "k": pts.since_eager,
                                        "y": np.log(pts.host_s / pts.host_twin_s)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "run_id", "k", "y"])


def warmth_x(k, cap: int = timing.EAGER_WARMTH_CAP) -> np.ndarray:
    """log2(1 + min(k, cap)), k < 0 (before the run's first eager step) at the cap."""
    k = np.asarray(k, dtype=float)
    return np.log2(1.0 + np.where(k < 0, cap, np.minimum(k, cap)))


def fit(root: Path | str | None = None) -> dict:
    """W's slope (per doubling of 1 + k, within run) and centre from the fitting runs (module docstring)."""
    pts = fit_points(root)
    if pts.empty:
        return {}
    x = warmth_x(pts.k)
    xd = x - pd.Series(x).groupby(pts.run_id.values).transform("mean").to_numpy()
    yd = pts.y.to_numpy() - pts.groupby("run_id").y.transform("mean").to_numpy()
    slope = float((xd * yd).sum() / (xd * xd).sum())
    resid = yd - slope * xd
    se = float(math.sqrt((resid ** 2).sum() / (len(xd) - 1 - pts.run_id.nunique()) / (xd * xd).sum()))
    edges = (-2, -0.5, 0.5, 3.5, 7.5, 15.5, 31.5, 1e9)
    by_k = {}
    for lo, hi in zip(edges, edges[1:]):
        sel = (pts.k > lo) & (pts.k <= hi)
        if sel.any():
            name = "first" if hi < 0 else f"{int(lo + 0.5)}-{int(hi - 0.5) if hi < 1e8 else 'inf'}"
            by_k[name] = [float(np.exp(np.median(yd[sel.to_numpy()]))), int(sel.sum())]
    return {"per_doubling": slope, "per_doubling_se": se, "centre_log2": float(x.mean()), "cap": timing.EAGER_WARMTH_CAP,
            "steps": int(len(pts)), "runs": int(pts.run_id.nunique()), "card": CARD,
            "records": f"{CARD}/s26start2/fit/{{{','.join(FIT_MODELS)}}}",
            "within_run_host_ratio_by_k": by_k}


def candidate():
    """W on (the committed constants)."""
    stack = ExitStack()
    stack.enter_context(mock.patch.object(timing, "ADOPT_EAGER_WARMTH", True))
    return stack


def set_of(row: dict) -> str:
    lab = {reg: k for k, v in s32k.GUARD_LABELS.items() for reg in v}
    return lab.get(row.get("registration", ""), row.get("registration", ""))


def screen(root: Path | str | None = None) -> dict:
    """Every seen set (sets A-Q, K: s32kern.seen_rows) in force and under W: checks met and median |error| per set, and
    the closed loops' figures of LOOPS."""
    root = rec.records_root() if root is None else root
    rows = {}
    for label, ctx in (("in force", ExitStack), ("W", candidate)):
        with ctx():
            rows[label] = s32k.seen_rows(root)
    out = {"sets": {}, "loops": {}}
    for label, rs in rows.items():
        for letter in sorted({set_of(r) for r in rs}):
            n, med = seh.checks([r for r in rs if set_of(r) == letter])
            out["sets"].setdefault(letter, {})[label] = [n, med]
        n, med = seh.checks(rs)
        out["sets"].setdefault("all", {})[label] = [n, med]
        for _, rid in LOOPS:
            r = next((x for x in rs if x["run_id"] == rid), None)
            if r is not None:
                out["loops"].setdefault(rid, {})[label] = {k: r[f"{k}_rel_error"] for k in FIGURES}
    return out


def _print_loops(rows: list[dict]) -> None:
    print("set run c | eager prompt steps: n, measured ms, twin/measured, spread x | graph twin/measured | busy x | "
          "probe host factor | timed: host twin/measured, host factor measured")
    for r in rows:
        timed = (f" | host {r['host_twin_over_measured']:.3f}, factor {r['host_factor_measured']:.3f}"
                 if "host_twin_over_measured" in r else "")
        print(f"{r['set']:3s} {r['run_id']:32s} c{r['concurrency']:<3d} | {r['eager_prompt_steps']:4d} "
              f"{r['eager_prompt_measured_ms']:6.2f} {r['eager_prompt_pred_over_measured']:.3f} "
              f"x{r['eager_prompt_spread_factor']:.3f} | {r['graph_pred_over_measured']:.3f} | "
              f"{r['busy_pred_spread_over_measured']:.3f} | {r['probe_host_factor']:.3f}{timed}")


def _print_probe_choices(got: dict) -> None:
    print("log(measured host factor / the probe's): median |.|, bias (all, closed, Poisson)")
    for group, by in got.items():
        for name, v in by.items():
            print(f"  {group:13s} {name:10s} n={v['runs']:3d} {v['median_abs_log']:.3f}  {v['bias_log']:+.3f} "
                  f"{v['closed_bias_log']:+.3f} {v['poisson_bias_log']:+.3f}")


def _print_host_factors(got: dict) -> None:
    print("measured / probe host factor of the timed runs (runs, quartiles):")
    for key in ("by_arrival", "by_position", "fitting_by_arrival", "fitting_by_position"):
        for k, v in got.get(key, {}).items():
            print(f"  {key:18s} {k:22s} n={v[0]:3d}  {v[1]:.3f} / {v[2]:.3f} / {v[3]:.3f}")


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s33loop", __doc__)
    ap.add_argument("what", choices=["loops", "counterfactual", "fit", "screen", "hostfactors", "sett", "probes",
                                     "record"])
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the figures")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()
    if args.what == "fit":
        got = fit(root)
        if not got:
            print(f"no fitting runs under {root}/{CARD}/s26start2/fit/", file=sys.stderr)
            return 2
        print(f"{CARD}: per doubling {got['per_doubling']:.4f} (se {got['per_doubling_se']:.4f}), centre "
              f"{got['centre_log2']:.3f}, cap {got['cap']}; {got['steps']} steps of {got['runs']} runs")
        print("within-run host / twin by k:", {k: (round(v[0], 3), v[1]) for k, v in got["within_run_host_ratio_by_k"].items()})
    elif args.what == "loops":
        got = loops(root)
        _print_loops(got)
    elif args.what == "counterfactual":
        got = counterfactual(root)
        for key, v in got.items():
            print(f"{key}: probe host factor {v['probe_host_factor']:.3f}, the run's {v['run_host_factor']:.3f}")
            for label, f in v["figures"].items():
                print(f"   {label:17s} " + " ".join(f"{k} {e * 100:+.1f}%" for k, e in f.items()))
    elif args.what == "hostfactors":
        got = host_factors(root)
        _print_host_factors(got)
    elif args.what == "sett":
        folders = set_t_folders(root)
        if not folders:
            print(f"no set T records under {root}/<card>/{NAME}/<model>/", file=sys.stderr)
            return 2
        got = host_factors(root, folders)
        for r in got["runs"]:
            print(f"  {r['run_id']:28s} pos {r['position']} {r['arrival']:8s} probe {r['probe_factor']:.3f} measured "
                  f"{r['measured_factor']:.3f} ratio {r['ratio']:.3f} ({r['steps']} steps; by third "
                  + " ".join(f"{x:.2f}" for x in r["by_third"]) + f"; after the last launch {r['tail_measured_s'] * 1e3:.2f}"
                  f" ms, twin {r['tail_twin_s'] * 1e3:.2f}; graph twin / measured {r['graph_pred_over_measured']:.3f})")
        _print_host_factors(got)
    elif args.what == "probes":
        got = probe_choices(root)
        _print_probe_choices(got)
    elif args.what == "record":
        got = record(root)
        _print_probe_choices(got["probe_choices"])
        _print_loops(got["loops"])
        _print_host_factors(got["host_factors"])
    else:
        got = screen(root)
        for letter, v in got["sets"].items():
            a, b = v["in force"], v["W"]
            print(f"set {letter:10s} {a[0]:4d} -> {b[0]:4d}   median {a[1] * 100:.2f} -> {b[1] * 100:.2f}%"
                  + ("   LOST" if b[0] < a[0] else ""))
        for rid, v in got["loops"].items():
            print(rid, " ".join(f"{k} {v['in force'][k] * 100:+.1f}->{v['W'][k] * 100:+.1f}%" for k in FIGURES))
    entry.write_json(args.json, got, sort_keys=True, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
