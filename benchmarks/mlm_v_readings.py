"""Figures (not a test): Megatron-LM's pipelined published rows under every virtual-stage count V the code
accepts (megatron/training/arguments.py validate_args @ f2e5db4: the layers a virtual stage divide the
layers a stage), beside the rows' assumed V (the least, s14mlm). A diagnostic of the sign pattern
(docs/notes/s27mlm.md section 2): V is unpublished, and these figures never choose it.

Usage: PYTHONPATH=. python benchmarks/mlm_v_readings.py  (~1-2 min)
"""

from __future__ import annotations

import dataclasses

from calibration.published_runs import load_runs, predicted_metric, scenario_of
from twin.training.step import simulate_step


def main() -> None:
    runs, _ = load_runs()
    for run in runs:
        if run.source != "megatron" or run.plan.get("pp", 1) == 1:
            continue
        sc = scenario_of(run)
        per_stage = sc.model.num_layers // sc.plan.pp
        cells = []
        for v in (d for d in range(2, per_stage + 1) if per_stage % d == 0):
            plan = dataclasses.replace(sc.plan, virtual_stages=v)
            variant = dataclasses.replace(sc, plan=plan)
            step = simulate_step(variant, record_events=False, check_memory=False)
            mark = "*" if v == sc.plan.virtual_stages else ""
            cells.append(f"V{v}{mark} {predicted_metric(run, variant, step) / run.published - 1:+.1%}")
        print(f"{run.id:26s} {per_stage:3d} layers a stage: " + ", ".join(cells))
    print("(* the row's assumed V; V = layers a stage is one layer a chunk)")


if __name__ == "__main__":
    main()
