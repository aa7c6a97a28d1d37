"""Capacity planning: which cluster and parallel plan trains a model on T tokens within D days at
the lowest cost?

Every candidate (GPU type, GPU count, PP, EP, TP, schedule, micro-batch) is a scenario variant made
with `--set`-style overrides and checked by the same strict loader, so a candidate whose degrees
don't divide is skipped with the loader's reason, and one that doesn't fit in memory is reported
infeasible with the step twin's reason. Candidates run in a local process pool, or on a Dask
distributed cluster when a scheduler address is given (`pip install -e .[dask]`).
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from twin.errors import InfeasiblePlan, ScenarioError
from twin.scenario import Scenario, apply_overrides, from_dict
from twin.units import SECONDS_PER_DAY, SECONDS_PER_HOUR


@dataclass(frozen=True)
class Candidate:
    gpu: str
    num_gpus: int
    pp: int
    ep: int
    tp: int
    schedule: str
    micro_batch_seqs: int

    def overrides(self) -> list[str]:
        return [f"cluster.gpu='{self.gpu}'", f"cluster.num_gpus={self.num_gpus}", f"plan.pp={self.pp}",
                f"plan.ep={self.ep}", f"plan.tp={self.tp}", f"plan.schedule='{self.schedule}'",
                f"plan.micro_batch_seqs={self.micro_batch_seqs}"]

    def label(self) -> str:
        return (f"{self.num_gpus}x{self.gpu} TP{self.tp} PP{self.pp} EP{self.ep} {self.schedule} "
                f"mb{self.micro_batch_seqs}")


def candidates(gpus: list[str], num_gpus: list[int], pp: list[int], ep: list[int], tp: list[int],
               schedules: list[str], micro_batch_seqs: list[int]) -> list[Candidate]:
    return [Candidate(*c) for c in itertools.product(gpus, num_gpus, pp, ep, tp, schedules, micro_batch_seqs)]


def evaluate(raw: dict, cand: Candidate, tokens: float, prices: dict[str, float]) -> dict:
    """One candidate: its step, run length and cost, or why it can't run. Never raises for a bad
    or infeasible plan (sweeps must not crash)."""
    from twin.sim.step import simulate_step
    row = {"label": cand.label(), **cand.__dict__}
    try:
        sc: Scenario = from_dict(apply_overrides(raw, cand.overrides()))
        res = simulate_step(sc, record_events=False)
    except ScenarioError as exc:
        return {**row, "feasible": False, "reason": f"invalid: {exc}"}
    except InfeasiblePlan as exc:
        return {**row, "feasible": False, "reason": exc.reason}
    steps = tokens / res.tokens_per_step
    wall_s = steps * res.step_time_s
    gpu_hours = wall_s * cand.num_gpus / SECONDS_PER_HOUR
    price = prices.get(cand.gpu)
    return {**row, "feasible": True, "step_time_s": res.step_time_s, "mfu_frac": res.mfu_frac,
            "tokens_per_s_per_gpu": res.tokens_per_s_per_gpu, "memory_per_gpu_bytes": res.memory_per_gpu_bytes,
            "wall_days": wall_s / SECONDS_PER_DAY, "gpu_hours": gpu_hours,
            "cost_usd": gpu_hours * price if price is not None else None}


def _map(raw: dict, cands: list[Candidate], tokens: float, prices: dict, scheduler: str | None,
         workers: int | None, progress) -> list[dict]:
    if scheduler:
        from dask.distributed import Client  # optional extra: pip install -e .[dask]
        with Client(scheduler) as client:
            futures = client.map(evaluate, [raw] * len(cands), cands, [tokens] * len(cands), [prices] * len(cands))
            return client.gather(futures)
    workers = workers or max(1, min(len(cands), os.cpu_count() or 1))
    if workers == 1:
        return [evaluate(raw, c, tokens, prices) for c in progress(cands)]
    with ProcessPoolExecutor(workers) as pool:
        return list(progress(pool.map(evaluate, [raw] * len(cands), cands, [tokens] * len(cands),
                                      [prices] * len(cands)), total=len(cands)))


def _reason_kind(reason: str) -> str:
    """Group failure reasons: 'invalid' for loader errors, else the reason without its numbers
    ('out of memory on pipeline rank 0: needs ...' -> 'out of memory')."""
    return "invalid" if reason.startswith("invalid") else reason.split(" on pipeline")[0]


def run_plan(raw: dict, tokens: float, deadline_days: float, cands: list[Candidate], prices: dict[str, float],
             scheduler: str | None = None, workers: int | None = None, progress: bool = False) -> dict:
    """Rank the feasible candidates that meet the deadline by cost (GPU-hours where a price is
    missing); report how many failed and why."""
    if progress:
        from tqdm import tqdm

        def bar(it, total=None):
            return tqdm(it, total=total or len(cands), desc="plans", unit="plan", file=__import__("sys").stderr)
    else:
        def bar(it, total=None):
            return it
    rows = _map(raw, cands, tokens, prices, scheduler, workers, bar)
    feasible = [r for r in rows if r["feasible"]]
    on_time = [r for r in feasible if r["wall_days"] <= deadline_days]

    def cost_key(r):
        return (r["cost_usd"] is None, r["cost_usd"] if r["cost_usd"] is not None else r["gpu_hours"])

    reasons = Counter(_reason_kind(r["reason"]) for r in rows if not r["feasible"])
    return {
        "tokens": tokens,
        "deadline_days": deadline_days,
        "num_candidates": len(rows),
        "num_feasible": len(feasible),
        "num_meeting_deadline": len(on_time),
        "best": min(on_time, key=cost_key) if on_time else None,
        "fastest": min(feasible, key=lambda r: r["wall_days"]) if feasible else None,
        "ranked": sorted(on_time, key=cost_key),
        "infeasible_reasons": dict(reasons),
        "rows": rows,
    }
