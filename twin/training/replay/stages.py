"""The stages of a training run: which plan each stage runs, and its steps and wall time.

Each stage of [run] is simulated with the step twin. Steps with the same shape (sequence length,
batch, plan, perturbation) are simulated once and cached (StepCache); along a batch ramp a few
batch sizes (`run.ramp_knots`) are simulated and the step time is interpolated linearly in the
number of micro-batches between them (a pipeline's step time is affine in it once the pipeline is
full). A stage whose plan does not fit tries the scenario's fallbacks (full recomputation, larger
TP, other schedules) in order and records why each earlier one failed.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import Scenario, replace
from twin.training.results import Perturb, StepResult
from twin.training.replay.rollout import grpo_step
from twin.training.step import simulate_step

# (scenario, perturb=Perturb) -> StepResult, raising InfeasiblePlan; the step twin, or a stand-in in tests
StepFn = Callable[..., StepResult]


def default_step_fn() -> StepFn:
    """The step twin without its per-task event log: totals are identical, and results stay small
    enough to cross the process pool cheaply. The Gantt step is re-run with events."""
    return functools.partial(simulate_step, record_events=False)


# --------------------------------------------------------------------------- step cache

class StepCache:
    """Simulates steps once per (model, cluster, plan, workload, perturbation)."""

    def __init__(self, step_fn: StepFn):
        self.step_fn = step_fn
        self.cache: dict = {}
        self.num_simulated = 0
        self.sim_s = 0.0

    def _key(self, sc: Scenario, perturb: Perturb):
        # a perturbed routing imbalance is the scenario's own knob, so the scenario carries it
        if perturb.routing_imbalance is not None and perturb.routing_imbalance != sc.workload.routing_imbalance:
            sc = replace(sc, workload=dataclasses.replace(sc.workload, routing_imbalance=perturb.routing_imbalance))
        perturb = dataclasses.replace(perturb, routing_imbalance=None)
        return sc, perturb, (sc.model, sc.cluster, sc.plan, sc.workload, perturb)

    def prefetch(self, jobs: list[tuple[Scenario, Perturb]], workers: int | None = None) -> None:
        """Simulate the missing steps of `jobs` in a process pool (results land in the cache)."""
        todo = {}
        for sc, p in jobs:
            sc2, perturb, key = self._key(sc, p)
            if key not in self.cache:
                todo[key] = (sc2, perturb)
        workers = workers or min(2, os.cpu_count() or 1)
        if len(todo) < 2 or workers < 2:
            return
        t0 = time.perf_counter()
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            futs = {pool.submit(_simulate_job, self.step_fn, sc2, perturb): key for key, (sc2, perturb) in todo.items()}
            for fut in cf.as_completed(futs):
                self.cache[futs[fut]] = fut.result()
                self.num_simulated += 1
        self.sim_s += time.perf_counter() - t0

    def step(self, sc: Scenario, perturb: Perturb = Perturb()) -> StepResult:
        """A StepResult, or raises InfeasiblePlan (also cached)."""
        sc, perturb, key = self._key(sc, perturb)
        if key not in self.cache:
            t0 = time.perf_counter()
            try:
                value = self.step_fn(sc, perturb=perturb)
            except InfeasiblePlan as exc:
                value = exc
            self.sim_s += time.perf_counter() - t0
            self.num_simulated += 1
            self.cache[key] = value
        value = self.cache[key]
        if isinstance(value, InfeasiblePlan):
            raise value
        return value


def _simulate_job(step_fn, sc: Scenario, perturb: Perturb):
    try:
        return step_fn(sc, perturb=perturb)
    except InfeasiblePlan as exc:
        return InfeasiblePlan(exc.reason, exc.breakdown)


# --------------------------------------------------------------------------- stages

def _plan_for(sc: Scenario, stage, tp: int | None = None, recompute=None):
    over = {k: getattr(stage, k) for k in ("tp", "pp", "ep", "micro_batch_seqs", "recompute") if getattr(stage, k) is not None}
    if tp is not None:
        over["tp"] = tp
    if isinstance(recompute, tuple):  # (recompute, schedule)
        recompute, over["schedule"] = recompute
    if recompute is not None:
        over["recompute"] = recompute
    return dataclasses.replace(sc.plan, **over)


def stage_scenario(sc: Scenario, stage, batch_seqs: int | None = None, tp: int | None = None,
                   recompute=None) -> Scenario:
    """The scenario of one step of `stage` (raises ScenarioError if its plan does not fit)."""
    workload = dataclasses.replace(sc.workload, seq_len=stage.seq_len,
                                   global_batch_seqs=batch_seqs or stage.global_batch_seqs)
    return replace(sc, plan=_plan_for(sc, stage, tp, recompute), workload=workload)


def _candidates(sc: Scenario, stage) -> list[tuple[int | None, str | None, str]]:
    base_tp = stage.tp or sc.plan.tp
    out = [(None, None, "the scenario's plan" + (" with the stage's overrides" if any(
        getattr(stage, k) is not None for k in ("tp", "pp", "ep", "micro_batch_seqs", "recompute")) else ""))]
    if not sc.run.plan_search:
        return out
    if (stage.recompute or sc.plan.recompute) != "full":
        out.append((None, "full", "full recomputation"))
    for tp in sc.run.fallback_tp:
        if tp > base_tp and tp <= sc.gpu.gpus_per_node:
            out.append((tp, None, f"tp={tp}"))
            out.append((tp, "full", f"tp={tp} with full recomputation"))
    base_sched = sc.plan.schedule
    for sched in sc.run.fallback_schedules:
        if sched != base_sched:
            for tp in (None, *[t for t in sc.run.fallback_tp if t > base_tp and t <= sc.gpu.gpus_per_node]):
                out.append((tp, ("full", sched), f"schedule {sched}" + (f", tp={tp}" if tp else "") + ", full recomputation"))
    return out


@dataclass
class StagePlan:
    """How one stage is run: the feasible scenario at full batch, or why none fits."""

    stage: Any
    scenario: Scenario | None
    note: str
    tried: list[str] = field(default_factory=list)


def resolve_stage(sc: Scenario, stage, cache: StepCache) -> StagePlan:
    tried = []
    for tp, rc, label in _candidates(sc, stage):
        try:
            s = stage_scenario(sc, stage, tp=tp, recompute=rc)
            if stage.batch_ramp_start_seqs:
                unit = s.dp * s.plan.micro_batch_seqs
                if stage.batch_ramp_start_seqs < unit:
                    raise ScenarioError("batch_ramp_start_seqs", stage.batch_ramp_start_seqs, f">= dp x micro_batch_seqs = {unit}")
            cache.step(s)
            return StagePlan(stage, s, label if not tried else f"{label} (fallback: {'; '.join(tried)})", tried)
        except (InfeasiblePlan, ScenarioError) as exc:
            reason = exc.reason if isinstance(exc, InfeasiblePlan) else str(exc)
            tried.append(f"{label} does not fit: {reason}")
    return StagePlan(stage, None, "infeasible: " + "; ".join(tried), tried)


def _ramp_levels(b0: int, b1: int, ramp_tokens: float, unit: int) -> list[tuple[int, float]]:
    """(batch, tokens) pairs of a linear batch ramp b0 -> b1 over ramp_tokens, batches rounded down to `unit`."""
    lo = max(unit, (b0 // unit) * unit)
    levels = list(range(lo, b1, unit))
    out = []
    for b in levels:
        x0 = ramp_tokens * max(b - b0, 0) / (b1 - b0)
        x1 = ramp_tokens * min(max(b + unit - b0, 0) / (b1 - b0), 1.0)
        if x1 > x0:
            out.append((b, x1 - x0))
    return out


@dataclass
class StageRun:
    """A stage's base result (before perturbations)."""

    plan: StagePlan
    wall_s: float = 0.0
    steps: float = 0.0
    full_step: StepResult | None = None
    flops: float = 0.0
    util_frac: float = 0.0
    ramp_note: str = ""
    rl: dict | None = None               # a GRPO stage's step by part (twin.training.replay.rollout)

    @property
    def feasible(self) -> bool:
        return self.plan.scenario is not None


def run_stage(sp: StagePlan, cache: StepCache) -> StageRun:
    stage, s = sp.stage, sp.scenario
    run = StageRun(sp)
    if s is None:
        return run
    full = cache.step(s)
    run.full_step = full
    seq = stage.seq_len
    flops_per_token = full.model_flops_per_step / full.tokens_per_step
    wall = steps = 0.0
    tokens = stage.total_tokens
    rest = tokens
    if stage.batch_ramp_start_seqs:
        unit = s.dp * s.plan.micro_batch_seqs
        b1 = stage.global_batch_seqs
        levels = _ramp_levels(stage.batch_ramp_start_seqs, b1, stage.batch_ramp_tokens, unit)
        if levels:
            knots, knot_t = [], []
            for target in np.linspace(levels[0][0], b1, s.run.ramp_knots):
                b = int(round(target / unit)) * unit
                while b <= b1:  # the nearest batch the schedule accepts (DualPipe: an even count >= 2 PP)
                    try:
                        kb = replace(s, workload=dataclasses.replace(s.workload, global_batch_seqs=b))
                        break
                    except ScenarioError:
                        b += unit
                if b > b1 or b in knots:
                    continue
                knots.append(b)
                knot_t.append(cache.step(kb).step_time_s)
            if len(knots) == 1:
                knots, knot_t = [knots[0], knots[0] + 1], [knot_t[0], knot_t[0]]
            for b, tok in levels:
                if b < knots[0]:  # below the schedule's minimum: extrapolate the affine step time
                    t = knot_t[0] + (b - knots[0]) * (knot_t[1] - knot_t[0]) / (knots[1] - knots[0])
                    run.ramp_note = (f"ramp batches below {knots[0]} sequences ({knots[0] // unit} micro-batches, the "
                                     f"{s.plan.schedule} minimum) extrapolated linearly from the simulated ones")
                else:
                    t = float(np.interp(b, knots, knot_t))
                n = tok / (b * seq)
                steps += n
                wall += n * t
            rest = tokens - sum(tok for _, tok in levels)
    n = rest / (stage.global_batch_seqs * seq)
    steps += n
    wall += n * full.step_time_s
    if stage.grpo is not None:   # an RL stage: GRPO steps (rollout + passes + update) instead of plain steps
        g = stage.grpo
        run.rl = grpo_step(s, g, full.step_time_s, stage.global_batch_seqs * seq)
        steps = stage.steps if stage.steps else tokens / g.tokens_per_step
        wall = steps * run.rl["step_s"]
    run.wall_s = wall * stage.overhead_factor
    run.steps = steps
    run.flops = tokens * flops_per_token
    run.util_frac = 1.0 - full.bubble_frac
    return run
