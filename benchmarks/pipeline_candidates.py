"""The pipeline rows of issue 14 under settings their sources do not publish: the figures of the
seventh pass (s11pp) in calibration/published_runs/README.md. Diagnostics, never inputs: nothing
here changes a row or a parameter.

    PYTHONPATH=. .venv/bin/python benchmarks/pipeline_candidates.py      (about 20 s)

Prints, for the pipelined rows and Megatron's table:
1. the first/last stage imbalance the even cut charges (error with a cost-balanced cut beside);
2. Megatron's --overlap-param-gather, modelled since s12mlm (plan.param_gather_kind 'megatron_chained',
   twin.training.step.param_gather_release_s): each Megatron row's error with it and with the
   all-gather hidden whole ('ideal', the rows' kind before), and what each rank's first forward waits for;
3. Megatron's strong scaling of the 177B (README: 96 GPUs MFU 47%, 4,608 GPUs 42%; the table's
   2,304-GPU row 43.7%) by virtual stages, with the rows' TP overlap and without it (a bound).
"""

from __future__ import annotations

import dataclasses

from calibration.published_runs import evaluate, load_runs, scenario_of
from twin.training.results import Perturb
from twin.training.step import _prepare, param_gather_release_s

STRONG_SCALING = {96: 0.47, 2304: 432.8 / 989.0, 4608: 0.42}   # Megatron-LM README (core_r0.8.0); MFU on 989 TF/s


def stage_cut(runs) -> None:
    print("1. stage imbalance (even cut, as the sources split; against a cost-balanced cut)")
    for run in runs:
        if run.plan.get("pp", 1) == 1 or run.source == "llama3":
            continue
        even = evaluate(run)["rel_error"]
        balanced = evaluate(dataclasses.replace(run, plan={**run.plan, "stage_cut": "balanced"}))["rel_error"]
        print(f"   {run.id:26} even {even:+.3f}  balanced {balanced:+.3f}  imbalance {even - balanced:+.3f}")


def param_gather_effect(runs) -> None:
    print("2. Megatron's chained parameter all-gather (error with it, and with the gather hidden whole)")
    for run in runs:
        if run.source != "megatron":
            continue
        sc = scenario_of(run)
        schedule, costs, _, mems, _, _ = _prepare(sc, None, Perturb(), False)
        release = param_gather_release_s(sc, costs, schedule, mems)
        ideal = evaluate(dataclasses.replace(run, plan={**run.plan, "param_gather_kind": "ideal"}))["rel_error"]
        print(f"   {run.id:26} pp {sc.plan.pp:2}  first forwards held to {max(release):5.3f} s (rank 0 {release[0]:5.3f} s)  "
              f"error {ideal:+.3f} -> {evaluate(run)['rel_error']:+.3f}")


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
                mfus.append(row["predicted"] / 989.0 if row["status"] == "ok" else float("nan"))
            print(f"   TP overlap {str(overlap):5} V={v}: " + "  ".join(
                f"{n} GPUs {mfu:.1%} ({mfu / STRONG_SCALING[n] - 1:+.1%})" for n, mfu in zip(STRONG_SCALING, mfus)))


def main() -> int:
    runs, _ = load_runs()
    stage_cut(runs)
    param_gather_effect(runs)
    strong_scaling(runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
