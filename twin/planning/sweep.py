"""Sweeps over any scenario keys: a grid, random points or a Latin hypercube, one result row each.

An axis is a dotted scenario key with either a list of values (`plan.pp=8,16`, `cluster.gpu=h800,h200`)
or, for --random and --lhs, a numeric range (`workload.routing_imbalance=1.0:1.5`; integers when both
ends are and the field is not a float field). Every point is the base scenario with `--set`-style overrides, checked by the same
strict loader, so an invalid point is a row with its reason, never a crash. A training scenario's
point is one simulated step; a serving scenario's one `twin serve`. A point that raises anything
else (a twin bug, a point no check foresaw) is a row too, status 'error', its reason the exception's
type and message: the sweep goes on (until s21ux it stopped there), and a re-run tries those
points again (their rows are journaled but not counted as done: `done_ids`).

Each point has a stable candidate id: a hash of the base scenario and the point's settings, so a
re-run of the same sweep names its points the same way and can skip those already done
(`run_sweep(done=...)`); rows are handed to `on_row` as they arrive, for the caller to journal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import sys
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import KINDS, SECTIONS, SERVING, apply_overrides, from_dict, parse_toml
from twin.core.specs import ModelSpec
from twin.core.units import SECONDS_PER_HOUR
from twin.planning import executor
from twin.planning.serving import SLO_PERCENTILE, one_deployment_cluster, size_serving
from twin.serving.run import serve
from twin.training.step import simulate_step

MAX_POINTS = 10_000      # points in one sweep: each is a step simulation (0.1-1 s for V3)
GRID, RANDOM, LHS = "grid", "random", "lhs"
ERROR = "error"          # a point's status when it raised something other than ScenarioError / InfeasiblePlan


@dataclass(frozen=True)
class ServingQuestion:
    """The serving question asked at every point of a serving sweep (`twin sweep --rate --ttft --tpot`):
    each point's row is its fewest GPUs (twin.planning.serving.size_serving), not one run of it."""

    rate_per_s: float
    ttft_s: float
    tpot_s: float
    percentile: float = SLO_PERCENTILE   # held to both targets (`--percentile`; P90 alone until s24srvwalk)

    def row_fields(self) -> dict:
        """The question in each point's row: the rate and targets its fewest GPUs answer (rows did not say, until
        s24srvwalk)."""
        return {"rate_per_s": self.rate_per_s, "ttft_target_s": self.ttft_s, "tpot_target_s": self.tpot_s,
                "percentile": self.percentile}


@dataclass(frozen=True)
class Axis:
    key: str                              # dotted scenario key, e.g. plan.pp
    values: tuple = ()                    # a list axis
    low: float | None = None              # a range axis (random and LHS only)
    high: float | None = None
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None


def _value(text: str, field: str):
    try:
        return parse_toml(f"v = {text}", field)["v"]
    except tomllib.TOMLDecodeError:   # a bare word is a string (h800, dualpipe)
        return text


INT64_MAX = 2**63 - 1   # the results table's integer columns (Parquet int64)


def _storable(v) -> bool:
    """Whether a value can stand in the results (JSON, CSV, Parquet): no NaN or infinity, no
    integer beyond int64, recursively through TOML arrays and tables (until s21ux `--grid
    plan.pp=nan` or a 23-digit integer ended the sweep in a traceback while writing its report)."""
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return abs(v) <= INT64_MAX
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (list, tuple)):
        return all(_storable(x) for x in v)
    if isinstance(v, dict):
        return all(_storable(x) for x in v.values())
    return True


def _float_field(key: str) -> bool:
    """Whether a dotted key names a float field: its range is continuous however its ends are
    written (`workload.routing_imbalance=1:2` drew only 1 and 2 until s23walk). An unknown key is
    left to check_keys."""
    section, _, name = key.partition(".")
    spec = ModelSpec if section == "model" else SECTIONS.get(section)
    types = {f.name: str(f.type) for f in dataclasses.fields(spec)} if spec is not None else {}
    return types.get(name, "").split(" ")[0] == "float"


def parse_axis(text: str) -> Axis:
    """'plan.pp=8,16' -> list axis; 'workload.routing_imbalance=1.0:1.5' -> range axis."""
    key, eq, rest = text.partition("=")
    key = key.strip()
    if not eq or not key or "." not in key or not rest.strip():
        raise ScenarioError("--grid", text, "KEY=V1,V2 or KEY=LOW:HIGH with a dotted scenario key, e.g. plan.pp=8,16")
    field = f"--grid {key}"
    if ":" in rest and "," not in rest and not rest.strip().startswith(("'", '"')):
        lo_text, _, hi_text = rest.partition(":")
        lo, hi = _value(lo_text.strip(), field), _value(hi_text.strip(), field)
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and _storable(v)
                 for v in (lo, hi))
        if not ok or not lo < hi:
            raise ScenarioError(field, rest, f"LOW:HIGH, two finite numbers (integers within +-{INT64_MAX:,}) with LOW < HIGH")
        integer = isinstance(lo, int) and isinstance(hi, int) and not _float_field(key)
        return Axis(key, low=float(lo) if not integer else lo, high=float(hi) if not integer else hi, integer=integer)
    values = tuple(_value(v.strip(), field) for v in rest.split(",") if v.strip())
    if not values:
        raise ScenarioError(field, rest, "at least one value")
    bad = [v for v in values if not _storable(v)]
    if bad:
        raise ScenarioError(field, rest, f"finite values, integers within +-{INT64_MAX:,} (got {bad[0]!r})")
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    if twice:   # a value twice swept its points twice (until s21ux)
        raise ScenarioError(field, rest, f"each value once ({twice[0]!r} is given twice)")
    return Axis(key, values=values)


def check_keys(axes: list[Axis], kind: str | None = None) -> None:
    """Each axis names a field of a scenario section (a typo would make every point invalid), of the
    base scenario's `kind` where given (`--grid traffic.rate_per_s=1,2` on a training scenario ran
    every point to 'invalid' and exit 3, until s22walk), once (a key given twice swept the product
    of both lists with the second list's values only)."""
    seen = set()
    for a in axes:
        if a.key in seen:
            raise ScenarioError(f"--grid {a.key}", a.key, "each key once: join its values in one --grid, e.g. plan.pp=4,8,16")
        seen.add(a.key)
        section, _, name = a.key.partition(".")
        spec = ModelSpec if section == "model" else SECTIONS.get(section)
        names = {f.name for f in dataclasses.fields(spec)} if spec is not None else set()
        if name not in names:
            allowed = (f"a field of [{section}]: " + ", ".join(sorted(names))) if names else \
                "SECTION.FIELD with a section of " + ", ".join(sorted({"model", *SECTIONS}))
            raise ScenarioError(f"--grid {a.key}", a.key, allowed)
        own = KINDS[kind][1] if kind is not None else SECTIONS
        if section != "model" and section not in own:
            other = "a serving scenario, one with a [serve] table" if section in KINDS[SERVING][1] else \
                "a training scenario" if kind == SERVING else "a plan scenario"
            raise ScenarioError(f"--grid {a.key}", a.key, f"a key in a section of this {kind} scenario: "
                                + ", ".join(sorted({"model", *own})) + f" ([{section}] belongs to {other})")


@dataclass(frozen=True)
class SweepResult:
    """Every point of a sweep, one row each (settings, status, figures), in the order of the points."""

    mode: str
    axes: dict[str, Any]                  # key -> list of values, or {"low": .., "high": ..}
    num_points: int
    num_ok: int
    num_invalid: int
    num_infeasible: int
    num_error: int                        # points that raised an exception other than the two a point may raise
    evaluated_now: int                    # rows computed by this run (the rest were resumed from the journal)
    rows: tuple[dict[str, Any], ...]


def result_of(axes: list[Axis], mode: str, pts: list, base_raw: dict, rows_by_id: dict[str, dict], evaluated_now: int,
              question: ServingQuestion | None = None) -> SweepResult:
    rows = tuple(rows_by_id[cid] for cid in (candidate_id(base_raw, s, question) for s in pts) if cid in rows_by_id)
    status = [r["status"] for r in rows]
    return SweepResult(mode=mode, axes={a.key: ({"low": a.low, "high": a.high} if a.is_range else list(a.values)) for a in axes},
                       num_points=len(pts), num_ok=status.count("ok"), num_invalid=status.count("invalid"),
                       num_infeasible=status.count("infeasible"), num_error=status.count(ERROR),
                       evaluated_now=evaluated_now, rows=rows)


def done_ids(rows_by_id: dict[str, dict]) -> set[str]:
    """The journaled points a re-run skips: every one but those that ended in an error (a bug
    fixed since, or a passing fault such as memory, may let them run)."""
    return {cid for cid, row in rows_by_id.items() if row.get("status") != ERROR}


def points(axes: list[Axis], mode: str, n: int | None = None, seed: int = 0) -> list[tuple[tuple[str, object], ...]]:
    """The sweep's points as (key, value) settings: every combination of the lists (grid), or `n`
    points drawn uniformly (random) or stratified per axis (Latin hypercube), duplicates dropped."""
    if mode == GRID:
        ranged = [a.key for a in axes if a.is_range]
        if ranged:
            raise ScenarioError("--grid", ranged[0], "a list of values (a LOW:HIGH range needs --random N or --lhs N)")
        total = math.prod(len(a.values) for a in axes)
        if total > MAX_POINTS:
            longest = max(axes, key=lambda a: len(a.values))
            raise ScenarioError(f"--grid {longest.key}", len(longest.values),
                                f"lists whose combinations number at most {MAX_POINTS:,} points (now {total:,})")
        return [tuple(zip([a.key for a in axes], combo)) for combo in itertools.product(*(a.values for a in axes))]
    if mode == RANDOM:
        u = np.random.default_rng(seed).random((n, len(axes)))
    else:
        # lazy: scipy.stats is heavy and only the Latin hypercube needs it
        from scipy.stats import qmc
        u = qmc.LatinHypercube(d=len(axes), seed=seed).random(n)
    out, seen = [], set()
    for row in u:
        settings = tuple((a.key, _draw(a, x)) for a, x in zip(axes, row))
        if settings not in seen:
            seen.add(settings)
            out.append(settings)
    return out


def _draw(a: Axis, x: float):
    """The axis value at quantile x in [0, 1)."""
    if not a.is_range:
        return a.values[min(int(x * len(a.values)), len(a.values) - 1)]
    if a.integer:
        return min(a.high, a.low + int(x * (a.high - a.low + 1)))
    return a.low + x * (a.high - a.low)


def candidate_id(base_raw: dict, settings, question: ServingQuestion | None = None) -> str:
    """Stable id of a point: SHA-1 of the base scenario's tables, the point's settings and the serving
    question asked of it, if any (12 hex digits; without a question, the ids sweeps journaled before)."""
    asked = dataclasses.asdict(question) if question else None
    if asked and asked["percentile"] == SLO_PERCENTILE:   # a P90 question: the ids journaled before it had a percentile
        del asked["percentile"]
    key = [base_raw, sorted([k, v] for k, v in settings)] + ([asked] if asked else [])
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _override(key: str, value) -> str:
    return f"{key}={json.dumps(value)}" if isinstance(value, str) else f"{key}={str(value).lower() if isinstance(value, bool) else value}"


def serving_figures(res) -> dict:
    """A serving point's row: the request-level simulation's headline under the point's traffic
    (until s22walk the row took `tpot_s`, `ttft_s` and `batch` from the analytic concurrency sweep,
    the same at every request rate: R1 at 2/s and at 20/s both showed TTFT 1.55 s at batch 419,
    where the simulation gives 0.07 s and 0.2 s)."""
    return {"output_tokens_per_s": res.output_tokens_per_s, "output_tokens_per_s_per_gpu": res.output_tokens_per_s_per_gpu,
            "input_tokens_per_s": res.input_tokens_per_s,
            "ttft_p50_s": res.ttft_p50_s, "ttft_p90_s": res.ttft_p90_s, "ttft_p99_s": res.ttft_p99_s,
            "tpot_p50_s": res.tpot_p50_s, "tpot_p90_s": res.tpot_p90_s, "tpot_p99_s": res.tpot_p99_s,
            "e2e_p90_s": res.e2e_p90_s, "goodput_requests_per_s": res.goodput_requests_per_s,
            "usd_per_million_output_tokens": res.usd_per_million_output_tokens,
            "memory_per_gpu_bytes": res.memory_per_gpu_bytes, "max_batch_by_memory": res.max_batch_by_memory}


def token_costs(tokens_per_s_per_gpu: float, price_usd_per_gpu_hour: float | None) -> dict:
    """A training point's GPU-hours per trillion tokens and $ per million tokens at its own price, as
    `twin plan` costs a run (GPU-hours = tokens / tokens per GPU-second; a sweep's rows had no cost
    until s23walk). None where the GPU type has no price."""
    gpu_hours_per_token = 1.0 / (tokens_per_s_per_gpu * SECONDS_PER_HOUR)
    return {"gpu_hours_per_trillion_tokens": 1e12 * gpu_hours_per_token,
            "usd_per_million_tokens": 1e6 * gpu_hours_per_token * price_usd_per_gpu_hour
            if price_usd_per_gpu_hour is not None else None}


def sizing_figures(out) -> dict:
    """A point's row under the serving question: its fewest GPUs, their layout and split, latency and
    cost, and each layout's fewest."""
    b = out.best
    return {"num_gpus": b.num_gpus, "layout": b.layout, "prefill_gpus": b.prefill_gpus, "decode_gpus": b.decode_gpus,
            "ttft_s": b.ttft_s, "tpot_s": b.tpot_s, "usd_per_hour": b.usd_per_hour,
            "usd_per_million_output_tokens_all_gpus": b.usd_per_million_output_tokens_all_gpus,
            "colocated_gpus": out.best_colocated.num_gpus if out.best_colocated else None,
            "disaggregated_gpus": out.best_disaggregated.num_gpus if out.best_disaggregated else None,
            "deployments": out.evaluated}


def _priced_for(base_raw: dict, settings: dict) -> dict:
    """The base tables without their price where the point changes the GPU type and sets no price: the
    point then takes its GPU type's catalog price, as `twin plan` prices another type (space.apply). A
    sweep over cluster.gpu=h800,h200 from a scenario naming $3.50 costed the H800 at $3.50 (until s23walk)."""
    cluster = base_raw.get("cluster")
    if "cluster.gpu" not in settings or "cluster.price_usd_per_gpu_hour" in settings or not isinstance(cluster, dict) \
            or settings["cluster.gpu"] == cluster.get("gpu") or "price_usd_per_gpu_hour" not in cluster:
        return base_raw
    return {**base_raw, "cluster": {k: v for k, v in cluster.items() if k != "price_usd_per_gpu_hour"}}


def evaluate_point(args) -> dict:
    """One point: its settings, status (ok, invalid, infeasible, error) and figures; with a serving
    question (args' fifth), its fewest GPUs. Never raises (but for KeyboardInterrupt and SystemExit)."""
    base_raw, source, cid, settings, *rest = args
    question = rest[0] if rest else None
    row = {"candidate_id": cid, **{k: v for k, v in settings}, **(question.row_fields() if question is not None else {})}
    try:
        raw = apply_overrides(_priced_for(base_raw, dict(settings)), [_override(k, v) for k, v in settings])
        # the serving question sizes the cluster itself: a point's instance need not divide the scenario's count
        sc = from_dict(one_deployment_cluster(raw) if question is not None else raw, source)
        if question is not None:
            out = size_serving(sc, question.rate_per_s, question.ttft_s, question.tpot_s, percentile=question.percentile)
            if out.best is None:
                reasons = "; ".join(f"{k} ({v:,})" for k, v in out.infeasible_by_reason.items())
                return {**row, "status": "infeasible", "reason": f"no deployment serves {question.rate_per_s:g}/s: {reasons}"}
            figures = sizing_figures(out)
        elif sc.kind == SERVING:
            res = serve(sc)
            figures = serving_figures(res)
        else:
            res = simulate_step(sc.base() if hasattr(sc, "base") else sc, record_events=False)
            figures = {"step_time_s": res.step_time_s, "mfu_frac": res.mfu_frac, "tokens_per_s_per_gpu": res.tokens_per_s_per_gpu,
                       "bubble_frac": res.bubble_frac, "exposed_comm_frac": res.exposed_comm_frac,
                       "memory_per_gpu_bytes": res.memory_per_gpu_bytes,
                       **token_costs(res.tokens_per_s_per_gpu, sc.cluster.price_usd_per_gpu_hour)}
    except ScenarioError as exc:
        return {**row, "status": "invalid", "reason": str(exc)}
    except InfeasiblePlan as exc:
        return {**row, "status": "infeasible", "reason": exc.reason}
    except Exception as exc:   # one failing point must not stop a sweep of thousands: recorded, named
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {**row, "status": ERROR, "reason": f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
                                                  f"(at {Path(where.filename).name}:{where.lineno} in {where.name})"}
    return {**row, "status": "ok", "reason": "",
            **{k: v if v is None or isinstance(v, (int, str)) else float(v) for k, v in figures.items()}}


def run_sweep(base_raw: dict, source: str, pts: list, done: set[str], on_row: Callable[[dict], None],
              workers: int | None = None, dask: str | None = None, progress: bool = False,
              question: ServingQuestion | None = None) -> int:
    """Evaluate every point whose id is not in `done`, handing each row to `on_row` as it arrives
    (in completion order). Returns the number evaluated now."""
    todo = [(base_raw, source, cid, s, question) for cid, s in ((candidate_id(base_raw, s, question), s) for s in pts)
            if cid not in done]
    with tqdm(total=len(pts), initial=len(pts) - len(todo), desc="sweep", unit="point", file=sys.stderr,
              disable=not progress) as bar:
        for row in executor.run(evaluate_point, todo, workers, dask):
            on_row(row)
            bar.update(1)
    return len(todo)
