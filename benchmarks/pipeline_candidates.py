"""The pipeline rows of issue 14 under settings their sources do not publish: the figures of the
seventh pass (s11pp) in calibration/published_runs/README.md. Diagnostics, never inputs: nothing
here changes a row or a parameter.

    PYTHONPATH=. .venv/bin/python benchmarks/pipeline_candidates.py      (about 20 s)

Prints, for the pipelined rows and Megatron's table:
1. the first/last stage imbalance the even cut charges (error with a cost-balanced cut beside);
2. a bound on Megatron's --overlap-param-gather (distrib_optimizer @ f2e5db4 = core_r0.8.0: one
   bucket's all-gather ahead of the forward, so each rank's first forward lasts at least its
   stage's BF16 parameter all-gather over DP; pipelined, the warm-up passes through every stage):
   the rows' error were that added to the step;
3. Megatron's strong scaling of the 177B (README: 96 GPUs MFU 47%, 4,608 GPUs 42%; the table's
   2,304-GPU row 43.7%) by virtual stages, with the rows' TP overlap and without it (a bound).
"""

from __future__ import annotations

import dataclasses

from calibration.published_runs import evaluate, load_runs, predicted_metric, scenario_of
from twin.costs import comm, memory
from twin.training.results import Perturb
from twin.training.step import _prepare, simulate_step

STRONG_SCALING = {96: 0.47, 2304: 432.8 / 989.4, 4608: 0.42}   # Megatron-LM README (core_r0.8.0)


def stage_cut(runs) -> None:
    print("1. stage imbalance (even cut, as the sources split; against a cost-balanced cut)")
    for run in runs:
        if run.plan.get("pp", 1) == 1 or run.source == "llama3":
            continue
        even = evaluate(run)["rel_error"]
        balanced = evaluate(dataclasses.replace(run, plan={**run.plan, "stage_cut": "balanced"}))["rel_error"]
        print(f"   {run.id:26} even {even:+.3f}  balanced {balanced:+.3f}  imbalance {even - balanced:+.3f}")


def param_gather_bound(runs) -> None:
    print("2. Megatron's chained parameter all-gather (bound: the first forward lasts its stage's all-gather)")
    for run in runs:
        if run.source != "megatron":
            continue
        sc = scenario_of(run)
        step = simulate_step(sc, record_events=False)
        schedule, costs, _, mems, _, _ = _prepare(sc, None, Perturb(), False)
        exposed = []
        for rank in range(schedule.num_ranks):
            params = mems[rank]["weights"] / memory.WEIGHT_BYTES
            gather_s = comm.ring_collective_time_s(params * memory.WEIGHT_BYTES, sc.dp, sc.gpu, False)
            forward_s = sum(t.duration_s for t in costs._chain(rank, "F") if t.stream == "compute")
            exposed.append(max(0.0, gather_s - forward_s))
        pred = predicted_metric(run, sc, step)
        slower = pred * step.step_time_s / (step.step_time_s + sum(exposed))
        print(f"   {run.id:14} pp {sc.plan.pp:2}  exposed {sum(exposed):5.3f} s of {step.step_time_s:6.3f}  "
              f"error {pred / run.published - 1:+.3f} -> {slower / run.published - 1:+.3f}")


def strong_scaling(runs) -> None:
    base = next(r for r in runs if r.id == "mlm-gpt-177b")
    print("3. Megatron's 177B strong scaling (MFU; published " +
          ", ".join(f"{n} GPUs {mfu:.1%}" for n, mfu in STRONG_SCALING.items()) + ")")
    for overlap in (True, False):
        for v in (1, 2, 4, 8):
            plan = {**base.plan, "tp_comm_overlap": overlap, "virtual_stages": v,
                    "schedule": "1f1b" if v == 1 else "interleaved-1f1b"}
            mfus = []
            for n in STRONG_SCALING:
                row = evaluate(dataclasses.replace(base, num_gpus=n, plan=plan))
                mfus.append(row["predicted"] / 989.4 if row["status"] == "ok" else float("nan"))
            print(f"   TP overlap {str(overlap):5} V={v}: " + "  ".join(
                f"{n} GPUs {mfu:.1%} ({mfu / STRONG_SCALING[n] - 1:+.1%})" for n, mfu in zip(STRONG_SCALING, mfus)))


def main() -> int:
    runs, _ = load_runs()
    stage_cut(runs)
    param_gather_bound(runs)
    strong_scaling(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
