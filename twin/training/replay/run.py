"""Replay a whole training run (`twin replay`): stages -> GPU-hours, days, cost, energy, goodput, bands.

The stages and their plans are twin.training.replay.stages, what they cost is
twin.training.replay.costs, how sure the figures are is twin.training.replay.uncertainty. Published
figures (twin/data/claims.toml) are only compared against, never fitted. Nothing here writes files:
reports/replay_report.py does.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import sys
import time

from tqdm import tqdm

from twin.core.errors import ScenarioError
from twin.core.gc_pause import gc_paused
from twin.core.run_specs import V3_STAGES
from twin.core.scenario import Scenario
from twin.core.specs import training_claims
from twin.training.replay.costs import evaluate
from twin.training.replay.result import ReplayResult, typed
from twin.training.replay.stages import (StepCache, StepFn, default_bound_fn, default_step_fn, resolve_stage, run_stage,
                                         stage_scenario)
from twin.training.replay.uncertainty import propagate, size_sweep, sweep_sizes, uncertain_inputs


def _gpu_hours(x: float) -> str:
    """Three significant figures with a K or M suffix: 2,336,000 -> '2.34M', 1,660 -> '1.66K', 5.92 -> '5.92'
    (thousands rounded to whole K printed a small run's 1.66K -> 1.77K as '2K -> 2K', until s21walk)."""
    for scale, suffix in ((1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def inherited_stages_note(sc: Scenario) -> str:
    """What a replay of another model's scenario that names no [[run.stages]] runs: DeepSeek-V3's published
    stages (run.stages' default). Until s26walk a 70B dense scenario replayed 14.8T tokens, the 32K and 128K
    context extensions, SFT and GRPO RL on its own model without a word. '' where the stages are the run's own."""
    if sc.run.stages != V3_STAGES or sc.model.name == "deepseek-v3":
        return ""
    return ("stages: DeepSeek-V3's published run (" + ", ".join(s.name for s in V3_STAGES) + f") replayed on {sc.model.name}: "
            "the scenario names no [[run.stages]] (run.stages' default); write them for this model's own run")


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
            f"{_gpu_hours(s['total_gpu_hours_low'])} -> {_gpu_hours(s['total_gpu_hours_high'])} GPU-hours" for s in top) + ".")
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


# simulated tasks a whole replay may run (its steps x their tasks): about 20 s on a 2-core machine
# (the default V3 replay estimates 24 x 153,600 = 3.7M and takes 3.3 s); and its steps x ops x
# blocks^2 (twin.core.scenario.STEP_OP_BLOCKS2_LIMIT: 2.6 us each), about 20 s too
REPLAY_TASK_LIMIT = 20_000_000
REPLAY_OP_BLOCKS2_LIMIT = 8_000_000


def check_replay_work(sc: Scenario, uncertainty: bool = True, sweep: bool = True) -> None:
    """Refuse a replay whose step simulations would together exceed REPLAY_TASK_LIMIT tasks. Each
    step is already within the step limit (Scenario.check); a replay simulates each stage (at
    `run.ramp_knots` batches along a ramp), the largest stages again at each uncertain input's P10
    and P90, and once per cluster size of the sweep."""
    stages = len(sc.run.stages) * sc.run.ramp_knots
    steps = stages + (2 * len(uncertain_inputs(sc)) if uncertainty else 0) + (len(sweep_sizes(sc)) if sweep else 0)
    work = sc.step_work()
    field, value = (("model.num_layers", sc.model.num_layers) if work["blocks"] > work["microbatches"]
                    else ("workload.global_batch_seqs", sc.workload.global_batch_seqs))
    inherited = inherited_stages_note(sc)   # the step count of 5 stages the scenario did not write (s26walk)
    inherited = f" ({inherited})" if inherited else ""
    if steps * work["tasks"] > REPLAY_TASK_LIMIT:
        raise ScenarioError(field, value, f"a replay of at most {REPLAY_TASK_LIMIT:,} simulated tasks; this one needs "
                                          f"~{steps} step simulations x ~{work['tasks']:,} tasks = {steps * work['tasks']:,}"
                                          + inherited)
    if steps * work["op_blocks2"] > REPLAY_OP_BLOCKS2_LIMIT:
        raise ScenarioError(field, value, f"a replay of at most {REPLAY_OP_BLOCKS2_LIMIT:,} ops x blocks^2; this one needs "
                                          f"~{steps} step simulations x {work['op_blocks2']:,} = {steps * work['op_blocks2']:,}"
                                          + inherited)


def replay(scenario: Scenario, step_fn: StepFn | None = None, progress: bool = False,
           uncertainty: bool = True, sweep: bool = True) -> ReplayResult:
    """Replay the run of a training scenario: every stage, its cost, the bands (`uncertainty`) and
    the cost against cluster size (`sweep`). `step_fn` stands in for the step twin (tests)."""
    with gc_paused():
        return _replay(scenario, step_fn, progress, uncertainty, sweep)


def _replay(scenario: Scenario, step_fn: StepFn | None, progress: bool, uncertainty: bool, sweep: bool) -> ReplayResult:
    check_replay_work(scenario, uncertainty, sweep)
    t0 = time.perf_counter()
    bound_fn = default_bound_fn() if step_fn is None else None   # a stand-in step function has no bound
    step_fn = step_fn or default_step_fn()
    # progress in parts of known count: the stages, each uncertain input at its P10 and P90, each
    # cluster size of the sweep
    total = (len(scenario.run.stages) + (2 * len(uncertain_inputs(scenario)) if uncertainty else 0)
             + (len(sweep_sizes(scenario)) if sweep else 0))
    bar = tqdm(total=total, desc="replay", unit="part", file=sys.stderr, disable=not progress)
    tick = functools.partial(bar.update, 1)
    cache = StepCache(step_fn, bound_fn)
    if bound_fn is not None and scenario.run.stages:   # the step twin: the report's Gantt is the first stage's
        try:
            cache.keep_events(stage_scenario(scenario, scenario.run.stages[0]))
        except ScenarioError:
            pass
    try:
        runs = []
        for st in scenario.run.stages:
            runs.append(run_stage(resolve_stage(scenario, st, cache), cache))
            tick()
        result = evaluate(scenario, runs)
        if uncertainty:
            result["uncertainty"] = propagate(scenario, runs, cache, result, tick)
            result["band"] = result["uncertainty"]["band"]
            for c in result["claims"]:
                b = result["band"].get(f"claim.{c['id']}")
                c["band"] = {"p10": b["p10"], "p90": b["p90"]} if b else None
        else:
            result["band"] = {}
        result["size_sweep"] = size_sweep(scenario, runs, cache, tick) if sweep else []
    finally:
        bar.close()
        cache.close()
    for r in result["stages"]:
        c = next((c for c in training_claims() if c["id"] == _stage_claim(scenario, r["name"])), None)
        sole = c is not None and sum(1 for s in scenario.run.stages if s.claim_id == c["id"]) == 1
        r["claim_id"] = c["id"] if c else None
        r["claimed_gpu_hours"] = float(c["value"]) if sole else None
        r["group_claimed_gpu_hours"] = float(c["value"]) if c else None
    inherited = inherited_stages_note(scenario)
    result["gap_drivers"] = ([inherited[0].upper() + inherited[1:] + "."] if inherited else []) + gap_drivers(result)
    result["runtime"] = {"wall_s": time.perf_counter() - t0, "steps_simulated": cache.num_simulated, "step_sim_s": cache.sim_s}
    result["provenance"] = provenance(scenario)
    result["scenario_name"] = scenario.name
    result["gpu"] = scenario.cluster.gpu
    result["num_gpus"] = scenario.cluster.num_gpus
    gantt_run = next((r for r in runs if r.feasible), None)
    gantt = gantt_run.full_step if gantt_run else None
    if gantt is not None and gantt.pipeline is not None and not gantt.pipeline.events:
        gantt = step_fn(gantt_run.plan.scenario, record_events=True)
    return typed(result, gantt)


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
