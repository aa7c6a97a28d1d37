"""The stages of a training run: which plan each stage runs, and its steps and wall time.

Each stage of [run] is simulated with the step twin. Steps with the same shape (sequence length,
batch, plan, perturbation) are simulated once and cached (StepCache); along a batch ramp a few
batch sizes (`run.ramp_knots`) are simulated and the step time is interpolated linearly in the
number of micro-batches between them (a pipeline's step time is affine in it once the pipeline is
full). A stage whose plan does not fit searches the scenario's fallbacks: every combination of a
larger TP degree (with sequence parallelism), a context-parallel degree and full recomputation,
each on the scenario's schedule or, where that cannot take the stage's micro-batch count, the
first fallback schedule that can; every option that fits is simulated and the fastest step runs.
The stage records the plan that ran, how many fitted, and why the others did not.
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
from twin.core.schedules import SCHEDULES
from twin.training.results import Perturb, StepResult
from twin.training.replay.rollout import grpo_step
from twin.training.step import simulate_step, step_time_lower_bound_s

# (scenario, perturb=Perturb) -> StepResult, raising InfeasiblePlan; the step twin, or a stand-in in tests
StepFn = Callable[..., StepResult]


def default_bound_fn() -> Callable[[Scenario], float]:
    """The step twin's lower bound of a step's time (no pipeline simulation)."""
    return step_time_lower_bound_s


def default_step_fn() -> StepFn:
    """The step twin without its per-task event log: totals are identical, and results stay small
    enough to cross the process pool cheaply. The Gantt step is re-run with events."""
    return functools.partial(simulate_step, record_events=False)


# --------------------------------------------------------------------------- step cache

class StepCache:
    """Simulates steps once per (model, cluster, plan, workload, perturbation). `bound_fn`, where
    given, is a lower bound of step_fn's step time that needs no simulation (for the step twin:
    twin.training.step.step_time_lower_bound_s); a plan search uses it to skip options."""

    def __init__(self, step_fn: StepFn, bound_fn: Callable[[Scenario], float] | None = None):
        self.step_fn = step_fn
        self.bound_fn = bound_fn
        self.cache: dict = {}
        self.bounds: dict = {}
        self.with_events: set = set()   # keys whose step keeps its event log (the report's Gantt)
        self.num_simulated = 0
        self.sim_s = 0.0
        self.workers = min(2, os.cpu_count() or 1)   # processes of prefetch
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        """The prefetch pool, forked once on first use and kept until close(): a replay prefetches
        a dozen times, and a pool per prefetch cost ~30 ms of forking each. Jobs carry their whole
        scenario, so workers need nothing of the parent's later state."""
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork"))
        return self._pool

    def close(self) -> None:
        """Stop the prefetch pool's workers (the cache stays usable; a later prefetch forks anew)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def bound(self, sc: Scenario) -> float:
        """bound_fn(sc), once per scenario (raises InfeasiblePlan or ScenarioError, also cached)."""
        key = (sc.model, sc.cluster, sc.plan, sc.workload)
        if key not in self.bounds:
            try:
                self.bounds[key] = self.bound_fn(sc)
            except (InfeasiblePlan, ScenarioError) as exc:
                self.bounds[key] = exc
        value = self.bounds[key]
        if isinstance(value, Exception):
            raise value
        return value

    def prefetch_bounds(self, scenarios: list[Scenario]) -> None:
        """bound_fn of the scenarios not yet bounded, in a process pool (a plan search bounds every
        option before it simulates any: ~20 ms each, tens of options per stage)."""
        todo = {}
        for sc in scenarios:
            key = (sc.model, sc.cluster, sc.plan, sc.workload)
            if key not in self.bounds:
                todo[key] = sc
        workers = self.workers
        if len(todo) < 2 or workers < 2 or self.bound_fn is None:
            return
        keys = list(todo)
        # contiguous parts, one per worker: options next to each other share schedules (memoised
        # per process)
        size = -(-len(keys) // workers)
        parts = [keys[i:i + size] for i in range(0, len(keys), size)]
        for part, values in zip(parts, self._executor().map(_bound_jobs, [self.bound_fn] * len(parts),
                                                            [[todo[k] for k in part] for part in parts])):
            self.bounds.update(zip(part, values))

    def _key(self, sc: Scenario, perturb: Perturb):
        # a perturbed routing imbalance is the scenario's own knob, so the scenario carries it
        if perturb.routing_imbalance is not None and perturb.routing_imbalance != sc.workload.routing_imbalance:
            sc = replace(sc, workload=dataclasses.replace(sc.workload, routing_imbalance=perturb.routing_imbalance))
        perturb = dataclasses.replace(perturb, routing_imbalance=None)
        return sc, perturb, (sc.model, sc.cluster, sc.plan, sc.workload, perturb)

    def keep_events(self, sc: Scenario) -> None:
        """Simulate this scenario's unperturbed step with its per-task event log when it comes (the
        report draws it; the totals are the same), instead of simulating it twice."""
        self.with_events.add(self._key(sc, Perturb())[2])

    def prefetch(self, jobs: list[tuple[Scenario, Perturb]]) -> None:
        """Simulate the missing steps of `jobs` in a process pool (results land in the cache)."""
        todo = {}
        for sc, p in jobs:
            sc2, perturb, key = self._key(sc, p)
            if key not in self.cache and key not in self.with_events:
                todo[key] = (sc2, perturb)
        workers = self.workers
        if len(todo) < 2 or workers < 2:
            return
        t0 = time.perf_counter()
        pool = self._executor()
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
                value = (self.step_fn(sc, perturb=perturb, record_events=True) if key in self.with_events
                         else self.step_fn(sc, perturb=perturb))
            except InfeasiblePlan as exc:
                value = exc
            self.sim_s += time.perf_counter() - t0
            self.num_simulated += 1
            self.cache[key] = value
        value = self.cache[key]
        if isinstance(value, InfeasiblePlan):
            raise value
        return value


def _bound_jobs(bound_fn, scenarios: list[Scenario]) -> list:
    out = []
    for sc in scenarios:
        try:
            out.append(bound_fn(sc))
        except (InfeasiblePlan, ScenarioError) as exc:
            out.append(exc)
    return out


def _simulate_job(step_fn, sc: Scenario, perturb: Perturb):
    try:
        return step_fn(sc, perturb=perturb)
    except InfeasiblePlan as exc:
        return InfeasiblePlan(exc.reason, exc.breakdown)


# --------------------------------------------------------------------------- stages

STAGE_FIELDS = ("tp", "pp", "ep", "micro_batch_seqs", "recompute")


@dataclass(frozen=True)
class Option:
    """One plan a stage may run: changes to the scenario's plan (after the stage's own overrides)."""

    label: str
    changes: tuple[tuple[str, Any], ...] = ()


def _plan_for(sc: Scenario, stage, option: Option = Option("")):
    over = {k: getattr(stage, k) for k in STAGE_FIELDS if getattr(stage, k) is not None}
    over.update(dict(option.changes))
    return dataclasses.replace(sc.plan, **over)


def stage_scenario(sc: Scenario, stage, batch_seqs: int | None = None, option: Option = Option("")) -> Scenario:
    """The scenario of one step of `stage` (raises ScenarioError if its plan does not fit)."""
    workload = dataclasses.replace(sc.workload, seq_len=stage.seq_len,
                                   global_batch_seqs=batch_seqs or stage.global_batch_seqs)
    return replace(sc, plan=_plan_for(sc, stage, option), workload=workload)


# the plan fields a stage's result keeps (replay.costs: StageResult.plan), all an Option can change but virtual_stages
SAVED_PLAN_FIELDS = ("tp", "cp", "pp", "ep", "micro_batch_seqs", "recompute", "schedule", "sequence_parallel")


def saved_gantt_step(sc: Scenario, stages: list[dict], step_fn: StepFn = simulate_step) -> StepResult | None:
    """The Gantt chart's step of a saved replay (`twin report` re-rendering a result.json, whose JSON leaves the
    step's event log out): the first feasible stage's full-batch step under the plan that stage ran (`stages`:
    the result's, each with the plan fields SAVED_PLAN_FIELDS; a fallback schedule without virtual stages runs one
    chunk a rank, as _schedule_changes sets it), simulated again with its events. The twin is deterministic, so
    this is the step the replay drew. None where no stage ran."""
    saved = next((r for r in stages if r["feasible"]), None)
    if saved is None:
        return None
    stage = next(st for st in sc.run.stages if st.name == saved["name"])
    base = _plan_for(sc, stage)
    changes = tuple((k, saved["plan"][k]) for k in SAVED_PLAN_FIELDS if saved["plan"][k] != getattr(base, k))
    schedule = saved["plan"]["schedule"]
    if schedule != base.schedule:
        changes += tuple(c for c in _schedule_changes(sc, schedule) if c[0] != "schedule")
    return step_fn(stage_scenario(sc, stage, option=Option("the saved plan", changes)), record_events=True)


def _base_option(sc: Scenario, stage) -> Option:
    return Option("the scenario's plan" + (" with the stage's overrides" if any(
        getattr(stage, k) is not None for k in STAGE_FIELDS) else ""))


def _search_options(sc: Scenario, stage) -> list[list[Option]]:
    """The plans a stage searches when its own does not fit: each a list of the same plan on the
    scenario's schedule and then on each fallback schedule (the first that can take the stage's
    micro-batch count is used). Larger TP degrees run with sequence parallelism (Megatron's
    advice: the same traffic, activations split over TP); context parallelism uses a ring."""
    base_tp = stage.tp or sc.plan.tp
    base_rc = stage.recompute or sc.plan.recompute
    tps = [None] + [t for t in sc.run.fallback_tp if base_tp < t <= sc.gpu.gpus_per_node]
    cps = [None] + [c for c in sc.run.fallback_cp if c > sc.plan.cp]
    rcs = [None] + (["full"] if base_rc != "full" else [])
    schedules = [None] + [x for x in sc.run.fallback_schedules if x != sc.plan.schedule]
    out = []
    for tp in tps:
        for cp in cps:
            for rc in rcs:
                if tp is None and cp is None and rc is None:
                    continue   # the scenario's own plan, tried first
                changes, words = [], []
                if tp is not None:
                    changes += [("tp", tp), ("sequence_parallel", True)]
                    words.append(f"tp={tp} with sequence parallelism")
                if cp is not None:
                    changes.append(("cp", cp))
                    words.append(f"cp={cp}")
                if rc is not None:
                    changes.append(("recompute", rc))
                    words.append(f"{rc} recomputation")
                out.append([Option(", ".join(w for w in (f"schedule {x}" if x else "",) + tuple(words) if w),
                                   tuple(changes) + _schedule_changes(sc, x)) for x in schedules])
    return out


def _schedule_changes(sc: Scenario, schedule: str | None) -> tuple:
    """The plan changes of falling back to `schedule` (None: the scenario's own): a schedule without virtual
    stages runs one chunk a rank (an interleaved scenario's fallback to zb1p or 1f1b kept its V and was refused,
    "plan.virtual_stages: got 4; allowed: 1 for schedule '1f1b'", for every option, until s27walk)."""
    if schedule is None:
        return ()
    one_chunk = (("virtual_stages", 1),) if sc.plan.virtual_stages > 1 and not SCHEDULES[schedule].virtual else ()
    return (("schedule", schedule),) + one_chunk


@dataclass
class StagePlan:
    """How one stage is run: the feasible scenario at full batch, or why none fits."""

    stage: Any
    scenario: Scenario | None
    note: str
    tried: list[str] = field(default_factory=list)


def _checked(sc: Scenario, stage, option: Option) -> Scenario:
    """The stage's scenario under `option`, checked (raises ScenarioError)."""
    s = stage_scenario(sc, stage, option=option)
    if stage.batch_ramp_start_seqs:
        unit = s.dp * s.plan.micro_batch_seqs
        if stage.batch_ramp_start_seqs < unit:
            raise ScenarioError("batch_ramp_start_seqs", stage.batch_ramp_start_seqs, f">= dp x micro_batch_seqs = {unit}")
    return s


def _try(sc: Scenario, stage, option: Option, cache: StepCache) -> Scenario:
    """The stage's scenario under `option`, simulated once (raises ScenarioError or InfeasiblePlan)."""
    s = _checked(sc, stage, option)
    cache.step(s)
    return s


def _why(exc: Exception) -> str:
    return exc.reason if isinstance(exc, InfeasiblePlan) else str(exc)


def resolve_stage(sc: Scenario, stage, cache: StepCache) -> StagePlan:
    """The plan a stage runs: the scenario's own if it fits; else, with run.plan_search, the
    fastest of the search options that fit (the same step simulation as every stage)."""
    base = _base_option(sc, stage)
    try:
        return StagePlan(stage, _try(sc, stage, base, cache), base.label, [])
    except (InfeasiblePlan, ScenarioError) as exc:
        tried = [f"{base.label} does not fit: {_why(exc)}"]
    if not sc.run.plan_search:
        return StagePlan(stage, None, "infeasible: " + "; ".join(tried), tried)
    # each option on the first schedule that takes the stage's micro-batch count (checking a
    # scenario is cheap); their steps are then simulated together (a process pool where there are
    # cores), and the fastest that fits runs
    chosen: list[tuple[Option, Scenario | None, str]] = []
    for variants in _search_options(sc, stage):
        picked, reason = None, ""
        for option in variants:
            try:
                picked = (option, _checked(sc, stage, option), "")
                break
            except ScenarioError as exc:
                reason = _why(exc)
        chosen.append(picked or (variants[0], None, reason))
    search = _search_bounded if cache.bound_fn is not None else _search_all
    fits, how = search(chosen, cache, tried)
    if not fits:
        return StagePlan(stage, None, "infeasible: " + "; ".join(tried), tried)
    step_s, _, s, label = min(fits, key=lambda f: (f[0], f[1]))
    note = f"{label} (fallback: fastest of {how}, {step_s:.3g} s per step; {'; '.join(tried)})"
    return StagePlan(stage, s, note, tried)


Fit = tuple[float, int, Scenario, str]   # (step time, option index, scenario, label)


def _search_bounded(chosen: list[tuple[Option, Scenario | None, str]], cache: StepCache,
                    tried: list[str]) -> tuple[list[Fit], str]:
    """Branch and bound: every option's lower bound (memory checked, no simulation), then
    simulations in the order of the bounds until the next bound is no better than the best step."""
    cache.prefetch_bounds([s for _, s, _ in chosen if s is not None])
    bounded = []
    for i, (option, s, reason) in enumerate(chosen):
        if s is not None:
            try:
                bounded.append((cache.bound(s), i, option, s))
                continue
            except (InfeasiblePlan, ScenarioError) as exc:
                reason = _why(exc)
        tried.append(f"{option.label} does not fit: {reason}")
    fits: list[Fit] = []
    best = float("inf")
    order = sorted(bounded, key=lambda x: (x[0], x[1]))
    for k, (bound, i, option, s) in enumerate(order):
        if bound >= best:
            break
        # where there are cores, the next options by bound are simulated together (the walk
        # below then finds them cached: the same options are compared, a few more simulated)
        cache.prefetch([(x[3], Perturb()) for x in order[k:k + cache.workers] if x[0] < best])
        try:
            fits.append((cache.step(s).step_time_s, i, s, option.label))
        except (InfeasiblePlan, ScenarioError) as exc:
            tried.append(f"{option.label} does not fit: {_why(exc)}")
            continue
        best = min(best, fits[-1][0])
    return fits, (f"{len(bounded)} plans that fit ({len(fits)} simulated; the others compute longer "
                  "than it steps)")


def _search_all(chosen: list[tuple[Option, Scenario | None, str]], cache: StepCache,
                tried: list[str]) -> tuple[list[Fit], str]:
    """Without a bound (a stand-in step function): simulate every option, together where there
    are cores, except full recomputation where the same plan fits without it (it only adds work)."""
    def lighter(option: Option) -> tuple | None:
        changes = dict(option.changes)
        if changes.get("recompute") != "full":
            return None
        return tuple((k, v) for k, v in option.changes if k not in ("recompute", "schedule"))
    first = [(o, s) for o, s, _ in chosen if s is not None and lighter(o) is None]
    cache.prefetch([(s, Perturb()) for _, s in first])
    fitting = set()
    for o, s in first:
        try:
            cache.step(s)
            fitting.add(tuple((k, v) for k, v in o.changes if k != "schedule"))
        except (InfeasiblePlan, ScenarioError):
            pass
    cache.prefetch([(s, Perturb()) for o, s, _ in chosen if s is not None and lighter(o) is not None
                    and lighter(o) not in fitting])
    fits: list[Fit] = []
    for i, (option, s, reason) in enumerate(chosen):
        if s is not None and lighter(option) in fitting:
            continue   # dominated: the same plan without full recomputation fits
        if s is not None:
            try:
                fits.append((cache.step(s).step_time_s, i, s, option.label))
                continue
            except (InfeasiblePlan, ScenarioError) as exc:
                reason = _why(exc)
        tried.append(f"{option.label} does not fit: {reason}")
    return fits, f"{len(fits)} plans that fit, the same plans with full recomputation being slower"


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
        try:
            run.rl = grpo_step(s, g, full.step_time_s, stage.global_batch_seqs * seq)
        except InfeasiblePlan as exc:   # rollouts that cannot run (grpo.rollout_gpus against the stage's GPUs, memory):
            # the stage cannot, as one whose plan does not fit (it ended the whole replay, no report or JSON, until s21walk)
            why = f"GRPO rollouts: {exc.reason}"
            return StageRun(StagePlan(stage, None, "infeasible: " + why, [*sp.tried, why]))
        steps = stage.steps if stage.steps else tokens / g.tokens_per_step
        wall = steps * run.rl["step_s"]
    run.wall_s = wall * stage.overhead_factor
    run.steps = steps
    run.flops = tokens * flops_per_token
    run.util_frac = 1.0 - full.bubble_frac
    return run
