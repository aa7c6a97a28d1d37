"""Figures (not a test): where the twin's step goes on the pipelined published rows (Llama 3 405B's
three Table 4 rows and Megatron-LM's largest GPT rows, the same TP 8 x PP kind of plan), to compare
what each row is charged per token.

Per row: FLOPs per token on the row's basis and as the twin executes them (causal attention), tokens
per GPU and step, the busiest pipeline rank's compute (by op) and its rate, the pipeline's overhead
beyond that compute split into the idealised interleaved bubble (PP - 1) / (V M) of it, the exposed
p2p hops (the same pipeline re-run with free p2p) and the rest (exposed TP/CP communication, uneven
chunks), then the step's tail (DP reduce-scatter after the last backward, optimizer), and each
rank's compute (the twin's `bubble_frac` is the largest idle over ranks: on Llama 3's layout that
is rank 0, whose first chunk holds only the embedding).

Usage: PYTHONPATH=. python benchmarks/published_runs_breakdown.py [ROW_ID ...]  (about 5 s)
"""

from __future__ import annotations

import sys

from calibration.published_runs import flops_per_token, load_runs, predicted_metric, scenario_of
from twin.costs.flops import train_flops_per_token
from twin.sim.pipeline import simulate_pipeline
from twin.training.results import Perturb
from twin.training.step import _prepare, simulate_step

ROWS = ("l3-405b-8k-gpus8192", "l3-405b-8k-gpus16384", "l3-405b-128k-cp16", "mlm-gpt-462b", "mlm-gpt-314b")


def free_p2p_makespan_s(sc) -> float:
    """The same pipeline with p2p transfers free (a counterfactual: the hops' exposed share)."""
    schedule, costs, *_ = _prepare(sc, None, Perturb(), False)
    costs._p2p_s = 0.0   # StepCosts.p2p_s returns this one figure for every hop
    return simulate_pipeline(schedule, costs, record_events=False).makespan_s


def breakdown(run) -> dict:
    sc = scenario_of(run)
    step = simulate_step(sc, record_events=False)
    pipe = step.pipeline
    p, v, m = sc.plan.pp, max(1, sc.plan.virtual_stages), sc.num_microbatches
    busiest_s = max(pipe.busy_s)
    free_s = free_p2p_makespan_s(sc)
    ideal_s = (p - 1) / (v * m) * busiest_s
    tokens_per_gpu = step.tokens_per_step / step.num_gpus
    executed = train_flops_per_token(sc.model, run.seq_len, True)
    counted = flops_per_token(run.flop_basis, sc.model, run.seq_len)
    compute_ops = {k: s for k, s in step.op_time_s.items() if not k.startswith(("tp_", "cp_", "dp_", "optimizer"))}
    return {"id": run.id, "published": run.published, "predicted": predicted_metric(run, sc, step),
            "basis": run.flop_basis, "counted_tflop_per_token": counted / 1e12,
            "executed_tflop_per_token": executed / 1e12, "tokens_per_gpu": tokens_per_gpu,
            "pp": p, "v": v, "m": m, "step_s": step.step_time_s, "makespan_s": pipe.makespan_s,
            "busiest_compute_s": busiest_s, "ideal_bubble_s": ideal_s, "p2p_s": pipe.makespan_s - free_s,
            "rest_s": free_s - busiest_s - ideal_s, "tail_s": step.step_time_s - pipe.makespan_s,
            "exposed_comm_s": step.exposed_comm_frac * pipe.makespan_s,
            "executed_rate_tflops": executed * tokens_per_gpu / busiest_s / 1e12,
            "compute_ops_s": compute_ops, "comm_ops_s": {k: s for k, s in step.op_time_s.items() if k not in compute_ops},
            "busy_per_rank_s": pipe.busy_s, "bubble_frac": step.bubble_frac}


def show(b: dict) -> None:
    step = b["step_s"]
    print(f"== {b['id']}: predicted {b['predicted']:.1f} against {b['published']} ({b['predicted'] / b['published'] - 1:+.1%}); "
          f"PP {b['pp']} V {b['v']} M {b['m']}")
    print(f"   FLOPs/token: {b['counted_tflop_per_token']:.3f} T on the '{b['basis']}' basis, {b['executed_tflop_per_token']:.3f} T "
          f"executed (causal); {b['tokens_per_gpu']:,.0f} tokens per GPU and step")
    print(f"   step {step:.3f} s = busiest rank's compute {b['busiest_compute_s']:.3f} ({b['busiest_compute_s'] / step:.1%}; "
          f"{b['executed_rate_tflops']:.0f} TFLOP/s of executed FLOPs)")
    for name, s in (("idealised bubble (PP-1)/(V M)", b["ideal_bubble_s"]), ("exposed p2p hops", b["p2p_s"]),
                    ("rest of the pipeline", b["rest_s"]), ("tail: DP reduce-scatter, optimizer", b["tail_s"])):
        print(f"     + {name:36s} {s:7.3f} s  {s / step:6.1%}")
    print(f"   exposed communication inside the pipeline {b['exposed_comm_s']:.3f} s; twin's bubble_frac "
          f"(largest idle over ranks) {b['bubble_frac']:.1%}")
    print("   compute per op on the busiest rank: " + ", ".join(f"{k} {s:.3f}" for k, s in sorted(
        b["compute_ops_s"].items(), key=lambda kv: -kv[1])))
    print("   communication: " + ", ".join(f"{k} {s:.3f}" for k, s in sorted(b["comm_ops_s"].items(), key=lambda kv: -kv[1]) if s))
    print("   compute per rank: " + " ".join(f"{s:.2f}" for s in b["busy_per_rank_s"]))


def main(argv: list[str]) -> int:
    runs, _ = load_runs()
    wanted = argv or list(ROWS)
    for run in runs:
        if run.id in wanted:
            show(breakdown(run))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
