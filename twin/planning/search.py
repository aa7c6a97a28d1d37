"""Capacity planning: which cluster and parallel plan trains a model on T tokens within D days at
the lowest cost?

Every candidate (GPU type, GPU count, PP, EP, TP, schedule, micro-batch) is a scenario variant made
with `--set`-style overrides and checked by the same strict loader, so a candidate whose degrees
don't divide is skipped with the loader's reason, and one that doesn't fit in memory is reported
infeasible with the step twin's reason. Candidates run in a local process pool, or on a Dask
distributed cluster when a scheduler address is given (`pip install -e .[dask]`). Nothing here
writes files: reports/plan_report.py does.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import TRAINING, Scenario, apply_overrides, from_dict
from twin.core.search_specs import SearchSpec
from twin.core.specs import get_gpu, gpu_names
from twin.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR
from twin.planning.result import Candidate, PlanResult, PlanRow
from twin.training.step import simulate_step


def candidates(gpus: list[str], num_gpus: list[int], pp: list[int], ep: list[int], tp: list[int],
               schedules: list[str], micro_batch_seqs: list[int]) -> list[Candidate]:
    return [Candidate(*c) for c in itertools.product(gpus, num_gpus, pp, ep, tp, schedules, micro_batch_seqs)]


def search_candidates(sc: Scenario, search: SearchSpec) -> list[Candidate]:
    """Every combination of the search's lists; an empty list keeps the base scenario's value."""
    p = sc.plan
    return candidates(gpus=list(search.gpus or [sc.cluster.gpu]), num_gpus=list(search.num_gpus or [sc.cluster.num_gpus]),
                      pp=list(search.pp or [p.pp]), ep=list(search.ep or [p.ep]), tp=list(search.tp or [p.tp]),
                      schedules=list(search.schedules or [p.schedule]),
                      micro_batch_seqs=list(search.micro_batch_seqs or [p.micro_batch_seqs]))


def catalog_prices(sc: Scenario) -> dict[str, float]:
    """Rental price per GPU-hour of every catalog GPU type, with the scenario's own price for its GPU."""
    prices = {g: get_gpu(g).rental_usd_per_gpu_hour for g in gpu_names()}
    prices[sc.cluster.gpu] = sc.cluster.price_usd_per_gpu_hour
    return prices


def evaluate(raw: dict, cand: Candidate, tokens: float, prices: dict[str, float]) -> PlanRow:
    """One candidate: its step, run length and cost, or why it can't run. Never raises for a bad
    or infeasible plan (sweeps must not crash)."""
    row = dict(**cand.__dict__, label=cand.plan_label())
    try:
        sc: Scenario = from_dict(apply_overrides(raw, cand.overrides()), kind=TRAINING)
        res = simulate_step(sc, record_events=False)
    except ScenarioError as exc:
        return PlanRow(**row, feasible=False, reason=f"invalid: {exc}")
    except InfeasiblePlan as exc:
        return PlanRow(**row, feasible=False, reason=exc.reason)
    steps = tokens / res.tokens_per_step
    wall_s = steps * res.step_time_s
    gpu_hours = wall_s * cand.num_gpus / SECONDS_PER_HOUR
    price = prices.get(cand.gpu)
    return PlanRow(**row, feasible=True, step_time_s=res.step_time_s, mfu_frac=res.mfu_frac,
                   tokens_per_s_per_gpu=res.tokens_per_s_per_gpu, memory_per_gpu_bytes=res.memory_per_gpu_bytes,
                   wall_days=wall_s / SECONDS_PER_DAY, gpu_hours=gpu_hours,
                   cost_usd=gpu_hours * price if price is not None else None)


def _map(raw: dict, cands: list[Candidate], tokens: float, prices: dict, scheduler: str | None,
         workers: int | None, progress: bool) -> list[PlanRow]:
    n = len(cands)
    args = ([raw] * n, cands, [tokens] * n, [prices] * n)
    if scheduler:
        # lazy: dask is an optional extra (pip install -e .[dask]) that only a scheduler address needs
        from dask.distributed import Client
        with Client(scheduler) as client:
            return client.gather(client.map(evaluate, *args))
    workers = workers or max(1, min(n, os.cpu_count() or 1))
    bar = tqdm(total=n, desc="plans", unit="plan", file=sys.stderr, disable=not progress)
    with bar:
        if workers == 1:
            results = map(evaluate, *args)
            return [_tick(bar, r) for r in results]
        with ProcessPoolExecutor(workers) as pool:
            return [_tick(bar, r) for r in pool.map(evaluate, *args)]


def _tick(bar, row: PlanRow) -> PlanRow:
    bar.update(1)
    return row


def _reason_kind(reason: str) -> str:
    """Group failure reasons: 'invalid' for loader errors, else the reason without its numbers
    ('out of memory on pipeline rank 0: needs ...' -> 'out of memory')."""
    return "invalid" if reason.startswith("invalid") else reason.split(" on pipeline")[0]


def plan(raw: dict, tokens: float, deadline_days: float, cands: list[Candidate], prices: dict[str, float],
         scheduler: str | None = None, workers: int | None = None, progress: bool = False) -> PlanResult:
    """Rank the feasible candidates that meet the deadline by cost (GPU-hours where a price is
    missing); report how many failed and why. `raw` is the base training scenario's tables."""
    rows = _map(raw, cands, tokens, prices, scheduler, workers, progress)
    feasible = [r for r in rows if r.feasible]
    on_time = [r for r in feasible if r.wall_days <= deadline_days]

    def cost_key(r: PlanRow):
        return (r.cost_usd is None, r.cost_usd if r.cost_usd is not None else r.gpu_hours)

    reasons = Counter(_reason_kind(r.reason) for r in rows if not r.feasible)
    return PlanResult(
        tokens=tokens, deadline_days=deadline_days, num_candidates=len(rows), num_feasible=len(feasible),
        num_meeting_deadline=len(on_time),
        best=min(on_time, key=cost_key) if on_time else None,
        fastest=min(feasible, key=lambda r: r.wall_days) if feasible else None,
        ranked=tuple(sorted(on_time, key=cost_key)),
        infeasible_reasons=dict(reasons), rows=tuple(rows))
