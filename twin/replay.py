"""Replay a whole training run (`twin replay`): stages -> GPU-hours, days, cost, energy, goodput, bands.

Each stage of [run] is simulated with the step twin. Steps with the same shape (sequence length,
batch, plan, perturbation) are simulated once and cached; along a batch ramp a few batch sizes
(`run.ramp_knots`) are simulated and the step time is interpolated linearly in the number of
micro-batches between them (a pipeline's step time is affine in it once the pipeline is full).

Published figures (twin/data/claims.toml) are only compared against, never fitted.

Uncertainty: one-at-a-time runs at the P10 and P90 of each uncertain input (compute efficiency,
link bandwidth, routing imbalance, failure rate, PUE) give a per-input response (a quadratic through
P10, base, P90); Monte Carlo samples of all inputs are pushed through the product of these
responses (effects on time are multiplicative) to give P10/P50/P90 of every headline number, and
the one-at-a-time swings are the sensitivity tornado. Perturbed runs re-simulate each stage's
full-batch step and scale the stage by the ratio to its base step; stages under 1% of the total
reuse the ratio of the largest stage (SMALL_STAGE_FRAC), which keeps a replay to a few dozen
step simulations; those of the uncertainty and size sweep run in a small process pool.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import inspect
import math
import os
import platform
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from twin import costmodel, failures
from twin.errors import InfeasiblePlan, ScenarioError
from twin.results import StepResult
from twin.scenario import Scenario, load_scenario, replace
from twin.units import SECONDS_PER_DAY, SECONDS_PER_HOUR

Z90 = 1.2815515655446004  # standard normal quantile of 0.9
SMALL_STAGE_FRAC = 0.10  # stages below this share of the run reuse the largest stage's sensitivity ratios
BAND_METRICS = ("total_gpu_hours", "total_cost_usd", "total_wall_days", "total_energy_kwh",
                "total_gpu_hours_goodput", "total_cost_usd_goodput")


@functools.cache
def claims_catalog() -> tuple[dict, ...]:
    with resources.files("twin.data").joinpath("claims.toml").open("rb") as fh:
        return tuple(tomllib.load(fh)["claims"])


def default_step_fn() -> Callable[..., StepResult]:
    """The step twin without its per-task event log: totals are identical, and results stay small
    enough to cross the process pool cheaply. The Gantt step is re-run with events."""
    from twin.sim.step import simulate_step  # imported late: the step twin is optional for tests
    return functools.partial(simulate_step, record_events=False)


def _accepts_perturb(fn: Callable) -> bool:
    try:
        return "perturb" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- step cache

@dataclass(frozen=True)
class Perturb:
    """A point in the uncertain inputs; the defaults are the scenario itself."""

    compute_eff_scale: float = 1.0
    link_bw_scale: float = 1.0
    routing_imbalance: float | None = None   # None = the scenario's workload.routing_imbalance

    @property
    def step_hook(self) -> dict:
        d = {}
        if self.compute_eff_scale != 1.0:
            d["compute_eff_scale"] = self.compute_eff_scale
        if self.link_bw_scale != 1.0:
            d["link_bw_scale"] = self.link_bw_scale
        return d


class StepCache:
    """Simulates steps once per (model, cluster, plan, workload, perturbation)."""

    def __init__(self, step_fn: Callable[..., StepResult], progress=None):
        self.step_fn = step_fn
        self.perturb_ok = _accepts_perturb(step_fn)
        self.cache: dict = {}
        self.num_simulated = 0
        self.sim_s = 0.0
        self.progress = progress

    def _key(self, sc: Scenario, perturb: Perturb):
        if perturb.routing_imbalance is not None and perturb.routing_imbalance != sc.workload.routing_imbalance:
            sc = replace(sc, workload=dataclasses.replace(sc.workload, routing_imbalance=perturb.routing_imbalance))
        hook = perturb.step_hook
        return sc, hook, (sc.model, sc.cluster, sc.plan, sc.workload, tuple(sorted(hook.items())))

    def prefetch(self, jobs: list[tuple[Scenario, Perturb]], workers: int | None = None) -> None:
        """Simulate the missing steps of `jobs` in a process pool (results land in the cache)."""
        todo = {}
        for sc, p in jobs:
            sc2, hook, key = self._key(sc, p)
            if key not in self.cache and (not hook or self.perturb_ok):
                todo[key] = (sc2, hook)
        workers = workers or min(2, os.cpu_count() or 1)
        if len(todo) < 2 or workers < 2:
            return
        import concurrent.futures as cf
        import multiprocessing as mp
        t0 = time.perf_counter()
        try:
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                futs = {pool.submit(_simulate_job, self.step_fn, sc2, hook): key for key, (sc2, hook) in todo.items()}
                for fut in cf.as_completed(futs):
                    self.cache[futs[fut]] = fut.result()
                    self.num_simulated += 1
                    if self.progress is not None:
                        self.progress.update(1)
        except Exception:  # a pool that cannot start (or pickle) falls back to serial runs on demand
            pass
        self.sim_s += time.perf_counter() - t0

    def step(self, sc: Scenario, perturb: Perturb = Perturb()) -> StepResult:
        """A StepResult, or raises InfeasiblePlan (also cached)."""
        sc, hook, key = self._key(sc, perturb)
        if key not in self.cache:
            t0 = time.perf_counter()
            try:
                if hook:
                    if not self.perturb_ok:
                        raise NotImplementedError("the step simulator has no perturb hook")
                    value = self.step_fn(sc, perturb=hook)
                else:
                    value = self.step_fn(sc)
            except InfeasiblePlan as exc:
                value = exc
            self.sim_s += time.perf_counter() - t0
            self.num_simulated += 1
            if self.progress is not None:
                self.progress.update(1)
            self.cache[key] = value
        value = self.cache[key]
        if isinstance(value, InfeasiblePlan):
            raise value
        return value


def _simulate_job(step_fn, sc: Scenario, hook: dict):
    try:
        return step_fn(sc, perturb=hook) if hook else step_fn(sc)
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
    run.wall_s = wall * stage.overhead_factor
    run.steps = steps
    run.flops = tokens * flops_per_token
    run.util_frac = 1.0 - full.bubble_frac
    return run


# --------------------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class Inputs:
    """Post-processing inputs (no step simulation needed)."""

    failure_rate_scale: float = 1.0
    pue: float | None = None


def _num_params(sc: Scenario) -> float:
    from twin.costs.flops import param_counts
    pc = param_counts(sc.model)
    return float(pc["total_params"] + pc["mtp_params"])


def evaluate(sc: Scenario, runs: list[StageRun], time_scale: list[float] | None = None,
             inputs: Inputs = Inputs()) -> dict:
    """Stage and total figures of a replay; `time_scale[i]` multiplies stage i's wall time."""
    gpu = sc.gpu
    price = sc.cluster.price_usd_per_gpu_hour
    stages = []
    tot = dict(gpu_hours=0.0, gpu_hours_goodput=0.0, wall_s=0.0, wall_s_goodput=0.0, energy_kwh=0.0,
               energy_kwh_goodput=0.0, tokens=0.0)
    fspec = dataclasses.replace(sc.failures, rate_scale=sc.failures.rate_scale * inputs.failure_rate_scale)
    for i, r in enumerate(runs):
        st = r.plan.stage
        row = {"name": st.name, "group": st.label, "tokens": st.total_tokens, "seq_len": st.seq_len,
               "global_batch_seqs": st.global_batch_seqs, "feasible": r.feasible, "plan_note": r.plan.note,
               "source": st.source, "overhead_factor": st.overhead_factor, "ramp_note": r.ramp_note}
        if not r.feasible:
            row.update(gpu_hours=None, gpu_hours_goodput=None, wall_days=None, steps=None)
            stages.append(row)
            continue
        s = r.plan.scenario
        n_gpus = s.cluster.num_gpus
        wall = r.wall_s * (time_scale[i] if time_scale else 1.0)
        gh = costmodel.gpu_hours(wall, n_gpus)
        num_nodes = -(-n_gpus // gpu.gpus_per_node)
        if sc.failures.enabled:
            gp = failures.goodput(fspec, n_gpus, _num_params(sc), num_nodes, wall)
            ettr = gp.ettr_frac
        else:
            gp, ettr = None, 1.0
        en = costmodel.energy_of(wall, n_gpus, gpu.gpus_per_node, gpu.tdp_w, r.util_frac, sc.energy, inputs.pue)
        full = r.full_step
        row.update(
            steps=r.steps, plan={k: getattr(s.plan, k) for k in ("tp", "pp", "ep", "micro_batch_seqs", "recompute", "schedule")},
            dp=s.dp, num_gpus=n_gpus, step_time_s=full.step_time_s, bubble_frac=full.bubble_frac,
            memory_per_gpu_bytes=full.memory_per_gpu_bytes, wall_s=wall, wall_days=wall / SECONDS_PER_DAY,
            gpu_hours=gh, gpu_hours_goodput=gh / ettr, wall_days_goodput=wall / ettr / SECONDS_PER_DAY,
            ettr_frac=ettr, tokens_per_s_per_gpu=st.total_tokens / wall / n_gpus,
            mfu_frac=r.flops / (wall * n_gpus * gpu.peak_bf16_flops_per_s),
            cost_usd=costmodel.rental_cost_usd(gh, price), cost_usd_goodput=costmodel.rental_cost_usd(gh / ettr, price),
            energy_kwh=en.energy_kwh, energy_kwh_goodput=en.energy_kwh / ettr, gpu_power_w=en.gpu_power_w,
            facility_power_w=en.facility_power_w, carbon_kg=en.carbon_kg,
            goodput=gp.to_json() if gp else None,
        )
        stages.append(row)
        tot["gpu_hours"] += gh
        tot["gpu_hours_goodput"] += gh / ettr
        tot["wall_s"] += wall
        tot["wall_s_goodput"] += wall / ettr
        tot["energy_kwh"] += en.energy_kwh
        tot["energy_kwh_goodput"] += en.energy_kwh / ettr
        tot["tokens"] += st.total_tokens
    goodput_basis = sc.run.claims_basis == "goodput"
    out = {
        "stages": stages,
        "complete": all(r.feasible for r in runs),
        "total_gpu_hours_ideal": tot["gpu_hours"],
        "total_gpu_hours_goodput": tot["gpu_hours_goodput"],
        "total_gpu_hours": tot["gpu_hours_goodput"] if goodput_basis else tot["gpu_hours"],
        "total_wall_days": (tot["wall_s_goodput"] if goodput_basis else tot["wall_s"]) / SECONDS_PER_DAY,
        "total_wall_days_goodput": tot["wall_s_goodput"] / SECONDS_PER_DAY,
        "total_tokens": tot["tokens"],
        "price_usd_per_gpu_hour": price,
        "total_energy_kwh": tot["energy_kwh_goodput"] if goodput_basis else tot["energy_kwh"],
        "total_energy_kwh_goodput": tot["energy_kwh_goodput"],
    }
    out["total_cost_usd"] = costmodel.rental_cost_usd(out["total_gpu_hours"], price)
    out["total_cost_usd_goodput"] = costmodel.rental_cost_usd(out["total_gpu_hours_goodput"], price)
    out["electricity_cost_usd"] = costmodel.electricity_cost_usd(out["total_energy_kwh_goodput"], sc.cost.electricity_usd_per_kwh)
    out["total_carbon_kg"] = (out["total_energy_kwh_goodput"] * sc.energy.carbon_kg_per_kwh
                              if sc.energy.carbon_kg_per_kwh > 0 else None)
    out["groups"] = _groups(stages, goodput_basis, price)
    out["claims"] = compare_claims(out, sc)
    return out


def _groups(stages: list[dict], goodput_basis: bool, price: float) -> dict:
    groups: dict[str, dict] = {}
    for r in stages:
        g = groups.setdefault(r["group"], dict(gpu_hours=0.0, wall_s=0.0, tokens=0.0, flops_time=0.0, feasible=True, gpu_seconds=0.0))
        if not r["feasible"]:
            g["feasible"] = False
            continue
        gh = r["gpu_hours_goodput"] if goodput_basis else r["gpu_hours"]
        wall = gh * SECONDS_PER_HOUR / r["num_gpus"]
        g["gpu_hours"] += gh
        g["wall_s"] += wall
        g["tokens"] += r["tokens"]
        g["gpu_seconds"] += gh * SECONDS_PER_HOUR
        g["flops_time"] += r["mfu_frac"] * r["gpu_hours"] * SECONDS_PER_HOUR  # MFU weighted by ideal GPU-time
    for g in groups.values():
        g["cost_usd"] = g["gpu_hours"] * price
        g["wall_days"] = g["wall_s"] / SECONDS_PER_DAY
        g["gpu_hours_per_trillion"] = g["gpu_hours"] / (g["tokens"] / 1e12) if g["tokens"] else None
        g["days_per_trillion"] = g["wall_days"] / (g["tokens"] / 1e12) if g["tokens"] else None
        g["tokens_per_s_per_gpu"] = g["tokens"] / g["gpu_seconds"] if g["gpu_seconds"] else None
        g["mfu_frac"] = g.pop("flops_time") / g["gpu_seconds"] if g["gpu_seconds"] else None
    return groups


def _predicted(claim: dict, out: dict) -> float | None:
    q = claim["quantity"]
    if q == "total_gpu_hours":
        return out["total_gpu_hours"] if out["complete"] else None
    if q == "total_cost_usd":
        return out["total_cost_usd"] if out["complete"] else None
    g = out["groups"].get(claim.get("group", ""))
    if g is None or not g["feasible"]:
        return None
    key = {"group_gpu_hours": "gpu_hours", "group_cost_usd": "cost_usd"}.get(q, q)
    return g.get(key)


def compare_claims(out: dict, sc: Scenario) -> list[dict]:
    rows = []
    for c in claims_catalog():
        pred = _predicted(c, out)
        rows.append({"id": c["id"], "statement": c["statement"], "claimed": float(c["value"]), "predicted": pred,
                     "rel_error": (pred - c["value"]) / c["value"] if pred is not None else None,
                     "unit": c["unit"], "status": c["status"], "source": c["source"]})
    return rows


# --------------------------------------------------------------------------- uncertainty

@dataclass(frozen=True)
class UInput:
    name: str
    label: str
    kind: str                 # "step" or "post"
    dist: str                 # "lognormal" (median 1, sigma) or "uniform" (lo, hi)
    a: float
    b: float
    base: float

    def quantile(self, q: float) -> float:
        if self.dist == "lognormal":
            z = {0.1: -Z90, 0.9: Z90}[q]
            return math.exp(z * self.a)
        return self.a + q * (self.b - self.a)

    def sample(self, rng, n: int) -> np.ndarray:
        if self.dist == "lognormal":
            return np.exp(rng.normal(0.0, self.a, n))
        return rng.uniform(self.a, self.b, n)


def uncertain_inputs(sc: Scenario) -> list[UInput]:
    u = sc.uncertainty
    imb = sc.workload.routing_imbalance
    ins = [
        UInput("compute_eff_scale", "compute efficiency", "step", "lognormal", u.compute_eff_rel_sigma, 0, 1.0),
        UInput("link_bw_scale", "link bandwidth", "step", "lognormal", u.link_bw_rel_sigma, 0, 1.0),
        UInput("routing_imbalance", "routing imbalance", "step", "uniform", imb, max(imb, u.routing_imbalance_high), imb),
        UInput("failure_rate_scale", "failure rate", "post", "lognormal", u.failure_rate_rel_sigma, 0, 1.0),
        UInput("pue", "PUE", "post", "uniform", min(u.pue_low, u.pue_high), max(u.pue_low, u.pue_high), sc.energy.pue),
    ]
    return [i for i in ins if not (i.dist == "lognormal" and i.a == 0) and not (i.dist == "uniform" and i.a == i.b)]


def _metrics(out: dict) -> dict:
    m = {k: out[k] for k in BAND_METRICS}
    for gname, g in out["groups"].items():
        m[f"group.{gname}.gpu_hours"] = g["gpu_hours"] if g["feasible"] else None
    for c in out["claims"]:
        m[f"claim.{c['id']}"] = c["predicted"]
    return m


def _ratio_jobs(runs: list[StageRun]) -> dict[int, int]:
    """Stage index -> index of the stage whose step is re-simulated for it (small stages use the largest)."""
    total = sum(r.wall_s for r in runs if r.feasible) or 1.0
    feas = [i for i, r in enumerate(runs) if r.feasible]
    if not feas:
        return {}
    big = max(feas, key=lambda i: runs[i].wall_s)
    return {i: (i if runs[i].wall_s >= SMALL_STAGE_FRAC * total else big) for i in feas}


def _time_scales(sc: Scenario, runs: list[StageRun], cache: StepCache, perturb: Perturb) -> list[float]:
    """Per stage: perturbed / base full-batch step time (small stages reuse the largest stage's ratio)."""
    jobs = _ratio_jobs(runs)
    scales: dict[int, float] = {}
    out = []
    for i, r in enumerate(runs):
        if i not in jobs:
            out.append(1.0)
            continue
        j = jobs[i]
        if j not in scales:
            rj = runs[j]
            try:
                scales[j] = cache.step(rj.plan.scenario, perturb).step_time_s / rj.full_step.step_time_s
            except InfeasiblePlan:
                scales[j] = math.nan
        out.append(scales[j])
    return out


def propagate(sc: Scenario, runs: list[StageRun], cache: StepCache, base: dict) -> dict:
    """Sensitivity (one at a time, P10/P90 of each input) and the P10-P90 band of every headline number."""
    u = sc.uncertainty
    m0 = _metrics(base)
    ins = uncertain_inputs(sc)
    oat: dict[str, dict] = {}
    skipped = []
    big = sorted(set(_ratio_jobs(runs).values()))
    cache.prefetch([(runs[j].plan.scenario, Perturb(**{i.name: i.quantile(q)}))
                    for i in ins if i.kind == "step" for q in (0.1, 0.9) for j in big])
    for inp in ins:
        vals = {}
        for q in (0.1, 0.9):
            x = inp.quantile(q)
            if inp.kind == "step":
                try:
                    p = Perturb(**{inp.name: x})
                    scales = _time_scales(sc, runs, cache, p)
                except NotImplementedError as exc:
                    skipped.append(f"{inp.label}: {exc}")
                    break
                out = evaluate(sc, runs, scales)
            elif inp.name == "pue":
                out = evaluate(sc, runs, None, Inputs(pue=x))
            else:
                out = evaluate(sc, runs, None, Inputs(failure_rate_scale=x))
            vals[q] = (x, _metrics(out))
        else:
            oat[inp.name] = {"input": inp, "lo": vals[0.1], "hi": vals[0.9]}
    rng = np.random.default_rng(u.seed)
    samples = {name: d["input"].sample(rng, u.num_samples) for name, d in oat.items()}
    band = {}
    sens = []
    for key, v0 in m0.items():
        if v0 is None or not math.isfinite(v0) or v0 == 0:
            band[key] = None
            continue
        log_ratio = np.zeros(u.num_samples)
        var = 0.0
        for name, d in oat.items():
            inp = d["input"]
            (xl, ml), (xh, mh) = d["lo"], d["hi"]
            yl, yh = ml.get(key), mh.get(key)
            if yl is None or yh is None or not (yl > 0 and yh > 0) or not (math.isfinite(yl) and math.isfinite(yh)):
                continue
            xs = np.array([xl, inp.base, xh])
            ys = np.log(np.array([yl, v0, yh]) / v0)
            if len(set(xs.round(12))) == 3:
                coef = np.polyfit(xs, ys, 2)
            else:  # base at a range end: straight line
                coef = np.array([0.0, *np.polyfit([xl, xh], [ys[0], ys[2]], 1)])
            log_ratio += np.polyval(coef, samples[name])
            var += ((ys[2] - ys[0]) / (2 * Z90)) ** 2
        if u.method == "monte_carlo":
            vals = v0 * np.exp(log_ratio)
            p10, p50, p90 = (float(x) for x in np.percentile(vals, [10, 50, 90]))
        else:
            s = math.sqrt(var)
            p10, p50, p90 = v0 * math.exp(-Z90 * s), v0, v0 * math.exp(Z90 * s)
        band[key] = {"p10": p10, "p50": p50, "p90": p90, "base": v0}
    for name, d in oat.items():
        inp = d["input"]
        (xl, ml), (xh, mh) = d["lo"], d["hi"]
        sens.append({"input": name, "label": inp.label, "low_value": xl, "high_value": xh,
                     "total_gpu_hours_low": ml["total_gpu_hours"], "total_gpu_hours_high": mh["total_gpu_hours"],
                     "total_cost_usd_low": ml["total_cost_usd"], "total_cost_usd_high": mh["total_cost_usd"],
                     "total_energy_kwh_low": ml["total_energy_kwh"], "total_energy_kwh_high": mh["total_energy_kwh"]})
    sens.sort(key=lambda r: -abs((r["total_cost_usd_high"] or 0) - (r["total_cost_usd_low"] or 0)) - 1e-9 * abs(r["total_energy_kwh_high"] - r["total_energy_kwh_low"]))
    return {"band": band, "sensitivity": sens, "not_propagated": skipped,
            "method": u.method, "num_samples": u.num_samples,
            "inputs": [{"name": i.name, "label": i.label, "dist": i.dist, "a": i.a, "b": i.b, "base": i.base} for i in ins]}


# --------------------------------------------------------------------------- size sweep

def size_sweep(sc: Scenario, runs: list[StageRun], cache: StepCache) -> list[dict]:
    """Cost against cluster size: at each size the plan of each large stage is resolved again (same
    plan, DP scaled, the fallbacks if it no longer fits) and its full-batch step simulated; the stage's
    wall time is scaled by the step-time ratio to the base run (small stages reuse the largest's)."""
    rows = []
    jobs = _ratio_jobs(runs)
    big = sorted(set(jobs.values()))

    def at_size(s: Scenario, n: int) -> Scenario:  # unchecked: resolve_stage checks each stage
        return dataclasses.replace(s, cluster=dataclasses.replace(s.cluster, num_gpus=n))

    prefetch = []
    for n in sc.cost.size_sweep_gpus:
        for j in big:
            try:
                prefetch.append((replace(runs[j].plan.scenario, cluster=dataclasses.replace(sc.cluster, num_gpus=n)), Perturb()))
            except ScenarioError:
                pass
    cache.prefetch(prefetch)
    for n in sc.cost.size_sweep_gpus:
        scn = at_size(sc, n)
        ratios, reason = {}, ""
        for j in big:
            sp = resolve_stage(scn, runs[j].plan.stage, cache)
            if sp.scenario is None:
                reason = f"{runs[j].plan.stage.name}: {sp.note}"
                break
            ratios[j] = cache.step(sp.scenario).step_time_s / runs[j].full_step.step_time_s
        if reason:
            rows.append({"num_gpus": n, "feasible": False, "reason": reason})
            continue
        wall = sum(runs[i].wall_s * ratios[j] for i, j in jobs.items())
        gh = costmodel.gpu_hours(wall, n)
        rows.append({"num_gpus": n, "feasible": True, "gpu_hours": gh, "wall_days": wall / SECONDS_PER_DAY,
                     "cost_usd": gh * sc.cluster.price_usd_per_gpu_hour})
    return rows


# --------------------------------------------------------------------------- gap drivers

def gap_drivers(result: dict) -> list[str]:
    """Plain-language statements of what drives the gap between the twin and the published figures."""
    notes = []
    pre = next((c for c in result["claims"] if c["id"] == "train.cost.pretrain_gpu_hours"), None)
    if pre and pre["rel_error"] is not None:
        side = "above" if pre["rel_error"] > 0 else "below"
        notes.append(f"Pre-training: the twin is {abs(pre['rel_error']) * 100:.1f}% {side} the published 2,664K GPU-hours. "
                     "That figure is exactly 14.8T tokens x 180K GPU-hours/T, i.e. a throughput figure without failures or "
                     "restarts, so it is compared with the twin's ideal GPU-hours; the failure model adds "
                     f"{(result['total_gpu_hours_goodput'] / result['total_gpu_hours_ideal'] - 1) * 100:.1f}% on top.")
        notes.append("The step twin itself reproduces DeepSeek's own H800 DualPipe chunk-pair trace (4 MoE layers, "
                     "balanced routing) to within a few percent (`twin validate`), so the pre-training gap lies in what "
                     "that trace does not show: routing is perfectly balanced in the default scenario (the trace's "
                     "setting; real batches under aux-loss-free balancing are not), and no straggler, preemption or "
                     "data-loader stall is modelled. Compute runs at the profile's measured sustained-load rates "
                     "(calibration/measurements/<gpu>/sustained.csv), not at short-benchmark clocks, and FP8 GEMMs pay "
                     "the costs of DeepSeek's stack as the V3 report describes it: separate cast kernels and 1x128 x 1x128 "
                     "weight-gradient GEMMs (measured in calibration/measurements/<gpu>/fp8_stack.csv).")
    sens = result.get("uncertainty", {}).get("sensitivity", [])
    if sens:
        top = sens[:3]
        notes.append("Inputs that move the total most (P10 -> P90): " + "; ".join(
            f"{s['label']} {s['low_value']:.3g} -> {s['high_value']:.3g}: "
            f"{s['total_gpu_hours_low'] / 1e3:,.0f}K -> {s['total_gpu_hours_high'] / 1e3:,.0f}K GPU-hours" for s in top) + ".")
    for r in result["stages"]:
        if not r["feasible"]:
            notes.append(f"Stage {r['name']} could not be simulated: {r['plan_note']}. Totals exclude it.")
        elif "fallback" in r["plan_note"] or r["plan_note"].startswith(("full", "tp=")):
            notes.append(f"Stage {r['name']} ran with {r['plan_note'].split(' (fallback')[0]}: DeepSeek does not publish its "
                         "long-context plan, so this choice (the first that fits memory) drives that stage's figure.")
        if r.get("ramp_note"):
            notes.append(f"Stage {r['name']}: {r['ramp_note']}.")
        if r["overhead_factor"] != 1.0 or "assumption" in r["source"]:
            notes.append(f"Stage {r['name']}: {r['source']}" + (f"; overhead factor {r['overhead_factor']:g}" if r["overhead_factor"] != 1.0 else "") + ".")
    return notes


# --------------------------------------------------------------------------- entry points

def replay_run(scenario: Scenario, step_fn: Callable[..., StepResult] | None = None, progress: bool = False,
               uncertainty: bool = True, sweep: bool = True) -> tuple[dict, dict]:
    """Replay the run; returns (result JSON dict, internals for the report: runs, cache, gantt step)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    step_fn = step_fn or default_step_fn()
    bar = tqdm(desc="replay: simulated steps", unit="step", file=sys.stderr, disable=not progress, leave=False)
    cache = StepCache(step_fn, bar)
    try:
        plans = [resolve_stage(scenario, st, cache) for st in scenario.run.stages]
        runs = [run_stage(p, cache) for p in plans]
        result = evaluate(scenario, runs)
        if uncertainty:
            result["uncertainty"] = propagate(scenario, runs, cache, result)
            result["band"] = result["uncertainty"]["band"]
            for c in result["claims"]:
                b = result["band"].get(f"claim.{c['id']}")
                c["band"] = {"p10": b["p10"], "p90": b["p90"]} if b else None
        else:
            result["band"] = {}
        result["size_sweep"] = size_sweep(scenario, runs, cache) if sweep else []
    finally:
        bar.close()
    for r in result["stages"]:
        c = next((c for c in claims_catalog() if c["id"] == _stage_claim(scenario, r["name"])), None)
        sole = c is not None and sum(1 for s in scenario.run.stages if s.claim_id == c["id"]) == 1
        r["claim_id"] = c["id"] if c else None
        r["claimed_gpu_hours"] = float(c["value"]) if sole else None
        r["group_claimed_gpu_hours"] = float(c["value"]) if c else None
    result["gap_drivers"] = gap_drivers(result)
    result["runtime"] = {"wall_s": time.perf_counter() - t0, "steps_simulated": cache.num_simulated, "step_sim_s": cache.sim_s}
    result["provenance"] = provenance(scenario)
    result["scenario_name"] = scenario.name
    result["gpu"] = scenario.cluster.gpu
    result["num_gpus"] = scenario.cluster.num_gpus
    gantt_run = next((r for r in runs if r.feasible), None)
    gantt = gantt_run.full_step if gantt_run else None
    if gantt is not None and gantt.pipeline is not None and not gantt.pipeline.events:
        try:
            gantt = step_fn(gantt_run.plan.scenario, record_events=True)
        except TypeError:  # a step function without the option keeps its result
            pass
    return result, {"runs": runs, "cache": cache, "gantt_step": gantt}


def _stage_claim(sc: Scenario, name: str) -> str:
    st = next(s for s in sc.run.stages if s.name == name)
    return st.claim_id


def provenance(sc: Scenario) -> dict:
    def ver(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"scenario": sc.name, "python": platform.python_version(),
            "versions": {p: ver(p) for p in ("moe-twin", "numpy", "scipy", "simpy", "matplotlib", "pandas")},
            "claims_file": "twin/data/claims.toml", "failures_file": "twin/data/failures.toml",
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_replay(scenario: Scenario | None = None, json_path=None, out_dir=None, progress: bool = True,
               step_fn: Callable[..., StepResult] | None = None) -> dict:
    """Everything `twin replay` does: replay, then write the JSON and/or the report directory atomically."""
    import json

    from twin.atomic import write_text

    scenario = scenario or load_scenario()
    result, internals = replay_run(scenario, step_fn=step_fn, progress=progress)
    if out_dir is not None:
        from reports.replay_report import write_report
        write_report(result, scenario, internals, out_dir)
    if json_path is not None:
        write_text(json_path, json.dumps(clean_json(result), indent=2) + "\n")
    return result


def clean_json(o):
    """JSON-safe copy: non-finite floats -> None, numpy scalars -> Python."""
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean_json(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
