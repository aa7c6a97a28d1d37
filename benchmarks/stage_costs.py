"""Per-stage and per-rank compute of a training step under each pipeline stage cut (plan.stage_cut),
and where the pipeline waits: what a layout choice does to the step (seconds on a 2-core machine).

For each cut it prints every model stage's blocks and compute-stream milliseconds per micro-batch
(forward, input gradient, weight gradient: the embedding on stage 0, the output head and MTP
modules on the last), every pipeline rank's stages (DualPipe: stage r on chunk 0, stage PP-1-r on
chunk 1) and their compute, each rank's idle seconds in the simulated step, and the step, bubble
and replayed GPU-hours.
Usage: python benchmarks/stage_costs.py [SCENARIO.toml] [--set key=value ...]
"""

from __future__ import annotations

import argparse

import twin
from twin.training.results import Perturb
from twin.training.step import StepCosts, routing_loads
from twin.core.schedules import build_schedule
from twin.costs.profile import load_profile


def stage_compute_ms(costs: StepCosts, stage: int) -> tuple[float, float, float]:
    """A stage's (forward, input-gradient, weight-gradient) compute-stream milliseconds per micro-batch."""
    return tuple(1e3 * sum(t.duration_s for t in costs._chain(stage, kind) if t.stream == "compute")
                 for kind in ("F", "B", "W"))


def report(sc) -> None:
    p = sc.plan
    schedule = build_schedule(p.schedule, p.pp, sc.num_microbatches, p.virtual_stages)
    profile = load_profile(sc.gpu.calibrated_as).with_attention_kernel(p.attention_kernel).with_fp8_recipe(p.fp8_recipe)
    costs = StepCosts(sc, schedule, profile, routing_loads(sc, Perturb()), 1.0)
    per_stage = [stage_compute_ms(costs, s) for s in range(schedule.num_model_stages)]
    print(f"\n== plan.stage_cut = {p.stage_cut!r}: blocks per stage {[len(r) for r in costs.layers]}")
    print("stage  blocks    F ms    B ms    W ms  F+B+W ms")
    for s, (f, b, w) in enumerate(per_stage):
        print(f"{s:5d} {len(costs.layers[s]):7d} {f:7.1f} {b:7.1f} {w:7.1f} {f + b + w:9.1f}")
    step = twin.simulate_step(sc)
    pipe = step.pipeline
    print("rank  stages (by chunk)  F+B+W ms  idle s")
    for r in range(schedule.num_ranks):
        stages = [schedule.stage_of(r, c) for c in range(schedule.num_chunks)]
        total = sum(sum(per_stage[s]) for s in stages)
        print(f"{r:4d}  {str(stages):17s} {total:9.1f} {pipe.makespan_s - pipe.covered_s[r]:7.2f}")
    run = twin.replay(sc)
    print(f"step {step.step_time_s:.3f} s, bubble {step.bubble_frac:.4f}, MFU {step.mfu_frac:.4f}; "
          f"replay {run.total_gpu_hours / 1e6:.4f}M GPU-hours")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    for cut in ("even", "balanced"):
        report(twin.load_scenario(args.scenario, [*args.set, f"plan.stage_cut={cut}"]))


if __name__ == "__main__":
    main()
