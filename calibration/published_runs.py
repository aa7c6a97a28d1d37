"""Validation rung 4, beyond DeepSeek: the twin predicts published training runs of other models
and layouts (dense Llama 3.1 and GPT, FSDP, TP, PP, CP) from their published configuration.

The rows are data (calibration/data/published_runs.toml: model, GPU, GPU count, plan, batch,
sequence, the published metric and its source). Each becomes a training scenario built here, one
step is simulated with the twin's defaults for everything the source does not set, and the metric
the source publishes is compared: tokens/s per GPU, or model TFLOP/s per GPU counted the source's
way (`flop_basis`). rel_error = predicted / published - 1. Targets (issue 14): every row within
10%, median |error| at most 5%. Never a fitting input: nothing here changes a parameter.

A row whose plan needs a field this checkout's ParallelPlan lacks (e.g. `cp` before context
parallelism exists) is not evaluated; the result names the fields. A field at its neutral value
(cp = 1, virtual_stages = 1, no sequence parallelism, no TP overlap) is dropped instead, since the
plan without it means the same; cp_kind is dropped whenever cp = 1 (it means nothing there).

The peers (Calculon, llm-analysis) run outside the project's install, from
benchmarks/published_runs.py, which writes calibration/published_runs/peers.csv; `compare` reads
that committed file only to put the peers' errors beside the twin's.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import Scenario, from_dict
from twin.core.specs import ModelSpec, ParallelPlan
from twin.training.results import StepResult
from twin.training.step import simulate_step

RUNS_FILE = Path(__file__).resolve().parent / "data" / "published_runs.toml"
PEERS_CSV = Path(__file__).resolve().parent / "published_runs" / "peers.csv"
ROW_TARGET = 0.10      # every evaluated row within 10% (issue 14)
MEDIAN_TARGET = 0.05   # median |error| at most 5%

METRICS = ("tokens_per_s_per_gpu", "model_tflops_per_s_per_gpu")
FLOP_BASES = ("megatron", "twin")
# plan fields that change nothing at these values: a checkout without the field runs the row without it
NEUTRAL = {"cp": 1, "virtual_stages": 1, "sequence_parallel": False, "tp_comm_overlap": False, "kernels": "fused",
           "kv_repeat": False, "optimizer_kernel": "fused", "loss_kernel": "as_kernels", "grad_reduce_dtype": "bf16",
           "overlap_grad_reduce": False, "unfused_linears": False}
NEUTRAL_WITH = {"cp_kind": ("cp", 1), "tp_overlap_kind": ("tp_comm_overlap", False)}   # meaningless while cp = 1, without overlap


@dataclass(frozen=True)
class PublishedRun:
    """One published training run and its configuration, as the source gives it."""

    id: str
    source: str
    where: str
    model: str
    gpu: str
    num_gpus: int
    seq_len: int
    global_batch_seqs: int
    metric: str
    published: float
    plan: dict
    flop_basis: str = "twin"
    not_modelled: tuple[str, ...] = ()
    assumed: tuple[str, ...] = ()


def load_runs(path: Path | str = RUNS_FILE) -> tuple[tuple[PublishedRun, ...], dict]:
    """The rows and their sources (key -> url, title, commit, hardware, metric_note)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    sources = data["sources"]
    runs = []
    for raw in data["runs"]:
        # a source's plan_defaults: what every run of that source's stack does (a row may override)
        defaults = sources.get(raw.get("source"), {}).get("plan_defaults", {})
        run = PublishedRun(**{**raw, "plan": {**defaults, **raw["plan"]},
                              "not_modelled": tuple(raw.get("not_modelled", ())),
                              "assumed": tuple(raw.get("assumed", ()))})
        if run.source not in sources or run.metric not in METRICS or run.flop_basis not in FLOP_BASES:
            raise ValueError(f"{path}: run {run.id}: source, metric or flop_basis not among "
                             f"{sorted(sources)}, {METRICS}, {FLOP_BASES}")
        runs.append(run)
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate run ids")
    return tuple(runs), sources


def plan_field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(ParallelPlan)}


def _neutral(name: str, plan: dict) -> bool:
    if name in NEUTRAL:
        return plan[name] == NEUTRAL[name]
    if name in NEUTRAL_WITH:
        other, value = NEUTRAL_WITH[name]
        return plan.get(other, value) == value
    return False


def missing_fields(run: PublishedRun, known: set[str] | None = None) -> list[str]:
    """Plan fields the row sets to a non-neutral value that this checkout's ParallelPlan lacks."""
    known = plan_field_names() if known is None else known
    return sorted(k for k in run.plan if k not in known and not _neutral(k, run.plan))


def scenario_of(run: PublishedRun) -> Scenario:
    """The training scenario of a row: its model, GPUs, plan and batch; the twin's defaults for
    the rest. Neutral fields this checkout lacks are dropped (see the module docstring)."""
    known = plan_field_names()
    # a field this checkout lacks goes when neutral (missing_fields refuses the rest); a field that
    # means nothing beside another's value (cp_kind at cp = 1) goes always: the loader refuses it
    plan = {k: v for k, v in run.plan.items() if k in known and not (k in NEUTRAL_WITH and _neutral(k, run.plan))}
    raw = {"name": f"published-{run.id}", "model": {"name": run.model},
           "cluster": {"gpu": run.gpu, "num_gpus": run.num_gpus}, "plan": plan,
           "workload": {"seq_len": run.seq_len, "global_batch_seqs": run.global_batch_seqs}}
    return from_dict(raw, f"{RUNS_FILE.name}:{run.id}")


def megatron_flops_per_token(model: ModelSpec, seq_len: int) -> float:
    """Model FLOPs per token as Megatron-LM counts them (Narayanan et al., SC'21, eq. 3, with GQA
    and gated FFNs as megatron/training/training.py num_floating_point_operations extends it):
    12 L h^2 [(1 + g/a + s/h) q/h + (f/h) x gated + V / (2 L h)], forward and backward (x3), two
    FLOPs per multiply-add, the full (not causal-halved) score matrix. The twin's dense FFN is
    SwiGLU (gated 3/2); a GPT FFN of 4h is held as SwiGLU of 8h/3 (twin/data/models.toml), so
    (f/h) x 3/2 = 4 as Megatron counts the GeLU FFN."""
    h, L, s = model.hidden_size, model.num_layers, seq_len
    q_ratio = model.num_heads * model.head_dim / h
    attention = (1 + model.num_kv_heads / model.num_heads + s / h) * q_ratio
    mlp = model.intermediate_size / h * 1.5
    logits = model.vocab_size / (2 * L * h)
    return 12 * L * h * h * (attention + mlp + logits)


def predicted_metric(run: PublishedRun, sc: Scenario, step: StepResult) -> float:
    """The row's published metric, from the simulated step."""
    if run.metric == "tokens_per_s_per_gpu":
        return step.tokens_per_s_per_gpu
    if run.flop_basis == "megatron":
        return megatron_flops_per_token(sc.model, run.seq_len) * step.tokens_per_s_per_gpu / 1e12
    return step.model_flops_per_step / step.step_time_s / step.num_gpus / 1e12


def evaluate(run: PublishedRun) -> dict:
    """One row: status 'ok', 'missing_fields' (not evaluated), 'infeasible' (the twin refuses the
    plan: the reason, and the figure it would predict without the memory check) or 'invalid'."""
    row = {"id": run.id, "source": run.source, "where": run.where, "model": run.model, "gpu": run.gpu,
           "num_gpus": run.num_gpus, "metric": run.metric, "published": run.published,
           "predicted": None, "rel_error": None, "status": "ok", "reason": "", "missing_fields": [],
           "not_modelled": list(run.not_modelled), "assumed": list(run.assumed)}
    missing = missing_fields(run)
    if missing:
        return {**row, "status": "missing_fields", "missing_fields": missing,
                "reason": "plan needs " + ", ".join(missing)}
    try:
        sc = scenario_of(run)
    except ScenarioError as exc:
        return {**row, "status": "invalid", "reason": str(exc)}
    try:
        step = simulate_step(sc, record_events=False)
    except InfeasiblePlan as exc:
        refused = {**row, "status": "infeasible", "reason": str(exc)}
        try:   # the figure it would predict were memory no object: for the diagnosis only
            pred = predicted_metric(run, sc, simulate_step(sc, record_events=False, check_memory=False))
        except InfeasiblePlan:
            return refused
        return {**refused, "predicted_ignoring_memory": pred, "rel_error_ignoring_memory": pred / run.published - 1.0}
    pred = predicted_metric(run, sc, step)
    return {**row, "predicted": pred, "rel_error": pred / run.published - 1.0,
            "step_time_s": step.step_time_s, "mfu_frac": step.mfu_frac, "bubble_frac": step.bubble_frac,
            "exposed_comm_frac": step.exposed_comm_frac, "memory_per_gpu_bytes": step.memory_per_gpu_bytes}


def summarize(rows: list[dict]) -> dict:
    """Targets over the rows the twin could express. A row refused as infeasible counts as a miss."""
    done = [r for r in rows if r["status"] == "ok"]
    errs = np.array([abs(r["rel_error"]) for r in done])
    refused = [r["id"] for r in rows if r["status"] in ("infeasible", "invalid")]
    out = {"num_rows": len(rows), "num_evaluated": len(done), "num_refused": len(refused), "refused": refused,
           "not_evaluated": {r["id"]: r["missing_fields"] for r in rows if r["status"] == "missing_fields"},
           "median_abs_rel_error": float(np.median(errs)) if errs.size else None,
           "max_abs_rel_error": float(errs.max()) if errs.size else None,
           "num_within_row_target": int((errs <= ROW_TARGET).sum())}
    out["meets_targets"] = bool(errs.size and not refused and out["num_within_row_target"] == errs.size
                                and out["median_abs_rel_error"] <= MEDIAN_TARGET)
    return out


def read_peers(path: Path | str = PEERS_CSV) -> pd.DataFrame | None:
    """The committed peers table (benchmarks/published_runs.py), or None before it exists."""
    path = Path(path)
    return pd.read_csv(path) if path.is_file() else None


def compare(path: Path | str = RUNS_FILE, peers_csv: Path | str = PEERS_CSV) -> dict:
    """Every row evaluated by the twin, with the committed peers' predictions beside it."""
    runs, sources = load_runs(path)
    rows = [evaluate(r) for r in runs]
    peers = read_peers(peers_csv)
    if peers is not None:
        by_id = peers.set_index("id")
        for row in rows:
            if row["id"] in by_id.index:
                p = by_id.loc[row["id"]]
                for peer in ("calculon", "llm_analysis"):
                    v = p.get(peer)
                    row[peer] = None if pd.isna(v) else float(v)
                    row[f"{peer}_rel_error"] = None if pd.isna(v) else float(v) / row["published"] - 1.0
    return {"targets": {"row_abs_rel_error": ROW_TARGET, "median_abs_rel_error": MEDIAN_TARGET},
            "plan_fields": sorted(plan_field_names()), "sources": sources, "rows": rows,
            "summary": summarize(rows), "peers_file": str(peers_csv) if peers is not None else None,
            "peer_versions": _peer_versions(peers)}


def _peer_versions(peers: pd.DataFrame | None) -> dict:
    if peers is None:
        return {}
    return {c: str(peers[c].dropna().iloc[0]) for c in ("calculon_version", "llm_analysis_version")
            if c in peers and peers[c].notna().any()}


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.1%}" if pct else f"{v:,.1f}"


def format_table(result: dict) -> str:
    """The per-row table with the peers beside the twin, and the verdict line."""
    lines = ["Published runs beyond DeepSeek (twin vs published; peers beside; error = predicted / published - 1)",
             f"{'run':28} {'metric':10} {'published':>10} {'twin':>10} {'err':>7} {'calculon':>9} {'err':>7} "
             f"{'llm-an.':>9} {'err':>7}  status"]
    for r in result["rows"]:
        unit = "tok/s/GPU" if r["metric"] == "tokens_per_s_per_gpu" else "TFLOP/s"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason'][:60]}"
        lines.append(f"{r['id']:28} {unit:10} {r['published']:>10,.1f} {_fmt(r['predicted']):>10} "
                     f"{_fmt(r['rel_error'], True):>7} {_fmt(r.get('calculon')):>9} {_fmt(r.get('calculon_rel_error'), True):>7} "
                     f"{_fmt(r.get('llm_analysis')):>9} {_fmt(r.get('llm_analysis_rel_error'), True):>7}  {status}")
    s = result["summary"]
    med = "-" if s["median_abs_rel_error"] is None else f"{s['median_abs_rel_error']:.1%}"
    lines.append(f"Published runs: {s['num_evaluated']} of {s['num_rows']} evaluated, {s['num_refused']} refused, "
                 f"{s['num_within_row_target']} within 10%, median |error| {med}; targets every row 10% / median 5%: "
                 f"{'met' if s['meets_targets'] else 'NOT met'}")
    return "\n".join(lines)


def failures(result: dict) -> list[str]:
    s = result["summary"]
    msgs = []
    if s["median_abs_rel_error"] is not None and s["median_abs_rel_error"] > MEDIAN_TARGET:
        msgs.append(f"published runs: median |error| {s['median_abs_rel_error']:.1%} > {MEDIAN_TARGET:.0%}")
    outside = [r["id"] for r in result["rows"] if r["status"] == "ok" and abs(r["rel_error"]) > ROW_TARGET]
    if outside or s["refused"]:
        msgs.append(f"published runs beyond 10% or refused: {', '.join(outside + s['refused'])}")
    return msgs
