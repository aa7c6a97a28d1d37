"""How sure the replay is, and what its figures depend on.

One-at-a-time runs at the P10 and P90 of each uncertain input (compute efficiency, link bandwidth,
routing imbalance, failure rate, PUE) give a per-input response (a quadratic through P10, base,
P90); Monte Carlo samples of all inputs are pushed through the product of these responses (effects
on time are multiplicative) to give P10/P50/P90 of every headline number, and the one-at-a-time
swings are the sensitivity tornado. Perturbed runs re-simulate each stage's full-batch step and
scale the stage by the ratio to its base step; stages under SMALL_STAGE_FRAC of the total reuse the
ratio of the largest stage, which keeps a replay to a few dozen step simulations; those of the
uncertainty and the size sweep run in a small process pool (StepCache.prefetch).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import Scenario, replace
from twin.core.specs import MAX_GPUS
from twin.core.units import SECONDS_PER_DAY
from twin.training import costmodel
from twin.training.replay.costs import Inputs, evaluate
from twin.training.replay.stages import StageRun, StepCache, resolve_stage
from twin.training.results import Perturb

Z90 = 1.2815515655446004  # standard normal quantile of 0.9
SMALL_STAGE_FRAC = 0.10  # stages below this share of the run reuse the largest stage's sensitivity ratios
BAND_METRICS = ("total_gpu_hours", "total_cost_usd", "total_wall_days", "total_energy_kwh",
                "total_gpu_hours_goodput", "total_cost_usd_goodput")


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


def propagate(sc: Scenario, runs: list[StageRun], cache: StepCache, base: dict, tick=lambda: None) -> dict:
    """Sensitivity (one at a time, P10/P90 of each input) and the P10-P90 band of every headline number."""
    u = sc.uncertainty
    m0 = _metrics(base)
    ins = uncertain_inputs(sc)
    oat: dict[str, dict] = {}
    big = sorted(set(_ratio_jobs(runs).values()))
    cache.prefetch([(runs[j].plan.scenario, Perturb(**{i.name: i.quantile(q)}))
                    for i in ins if i.kind == "step" for q in (0.1, 0.9) for j in big])
    for inp in ins:
        vals = {}
        for q in (0.1, 0.9):
            x = inp.quantile(q)
            if inp.kind == "step":
                out = evaluate(sc, runs, _time_scales(sc, runs, cache, Perturb(**{inp.name: x})))
            elif inp.name == "pue":
                out = evaluate(sc, runs, None, Inputs(pue=x))
            else:
                out = evaluate(sc, runs, None, Inputs(failure_rate_scale=x))
            vals[q] = (x, _metrics(out))
            tick()
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
    return {"band": band, "sensitivity": sens, "method": u.method, "num_samples": u.num_samples,
            "inputs": [{"name": i.name, "label": i.label, "dist": i.dist, "a": i.a, "b": i.b, "base": i.base} for i in ins]}


SIZE_SWEEP_FACTORS = (1, 1.5, 2, 4)   # cost.size_sweep_gpus empty: the scenario's own size and these multiples


def sweep_sizes(sc: Scenario) -> tuple[int, ...]:
    """The cluster sizes of the cost-against-size sweep: cost.size_sweep_gpus, or where it is empty the scenario's
    own cluster.num_gpus times SIZE_SWEEP_FACTORS (whole GPUs, at most the largest cluster a scenario takes)."""
    if sc.cost.size_sweep_gpus:
        return sc.cost.size_sweep_gpus
    n = sc.cluster.num_gpus
    return tuple(dict.fromkeys(min(MAX_GPUS, round(n * f)) for f in SIZE_SWEEP_FACTORS))


def size_sweep(sc: Scenario, runs: list[StageRun], cache: StepCache, tick=lambda: None) -> list[dict]:
    """Cost against cluster size: at each size each large stage keeps the plan it ran (DP scaled),
    or where that no longer fits resolves its plan again (the scenario's, else the plan search),
    and its full-batch step is simulated; the stage's wall time is scaled by the step-time ratio to
    the base run (small stages reuse the largest's)."""
    rows = []
    jobs = _ratio_jobs(runs)
    big = sorted(set(jobs.values()))

    def at_size(s: Scenario, n: int) -> Scenario:  # unchecked: resolve_stage checks each stage
        return dataclasses.replace(s, cluster=dataclasses.replace(s.cluster, num_gpus=n))

    prefetch = []
    for n in sweep_sizes(sc):
        for j in big:
            try:
                prefetch.append((replace(runs[j].plan.scenario, cluster=dataclasses.replace(sc.cluster, num_gpus=n)), Perturb()))
            except ScenarioError:
                pass
    cache.prefetch(prefetch)
    for n in sweep_sizes(sc):
        tick()
        scn = at_size(sc, n)
        ratios, reason = {}, ""
        for j in big:
            try:   # the plan the stage ran, DP scaled
                kept = replace(runs[j].plan.scenario, cluster=dataclasses.replace(runs[j].plan.scenario.cluster, num_gpus=n))
                ratios[j] = cache.step(kept).step_time_s / runs[j].full_step.step_time_s
                continue
            except (ScenarioError, InfeasiblePlan):
                pass
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
