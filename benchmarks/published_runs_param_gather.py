"""Figures (not a test): Megatron-LM's rows taken apart around the parameter all-gather that follows
the distributed optimizer's step (plan.param_gather_kind 'megatron_chained', core_r0.8.0
--overlap-param-gather; twin.training.step.param_gather_release_s), to see why it exposes more on
one row than another.

Per row:
  layout (TP, PP, DP, GPUs, nodes, micro-batches a pipeline) and the data-parallel group the gather
  runs over: its ranks a node (TP innermost: 8 / TP), the nodes it crosses, the NICs a node gives it
  (one a GPU of the group: the node's other GPUs are in the other TP ranks' groups, gathering at the
  same time on their own NICs), Megatron's bucket (max(40M, 1M x DP) parameters);
  pipeline rank 0's first chunk in buckets (how many, parameters, all-gather seconds, its first
  forward's seconds, per bucket the gather and the forward beside it) and what the chain exposes,
  and as a diagnostic the same with Megatron's GeLU MLP parameter shapes (the twin's block is a
  SwiGLU stand-in of equal FLOPs, which moves the bucket boundaries);
  each later pipeline rank's one-piece gather against when its first input can arrive (rank 0's
  wait plus the forward chains of the stages before); under interleaving each rank's later chunks'
  one-piece gathers (step.later_chunk_gathers), which the simulator holds each chunk's first forward for
  (their waits are inside 'parameter all-gather wait' below);
  the step by part: the busiest rank's compute, Megatron's gradient-buffer memset at the step's
  start (step.grad_buffer_zero_s), the parameter all-gather wait (the step with the gather 'ideal'
  subtracted), the rest of the pipeline (bubble, p2p, exposed TP), the DP
  reduce-scatter left after the last backward, the optimizer; the published step at the same
  tokens; the row's error with and without the wait.

Usage: PYTHONPATH=. python benchmarks/published_runs_param_gather.py [ROW_ID ...]  (a few seconds)
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

from calibration.published_runs import load_runs, predicted_metric, scenario_of
from twin.training.results import Perturb
from twin.training.step import (_param_gather_s, _prepare, chained_gather_exposed_s, dp_ranks_per_node,
                                first_chunk_params_in_forward_order, first_rank_gather_buckets, later_chunk_gathers,
                                later_rank_gather_s,
                                megatron_bucket_params, megatron_buckets, simulate_step)

ROWS = ("mlm-gpt-16b", "mlm-gpt-32b", "mlm-gpt-70b", "mlm-gpt-119b", "mlm-gpt-177b", "mlm-gpt-177b-strong-4608")


def gelu_shaped_wait(sc, costs, schedule, mems) -> tuple[int, float]:
    """A diagnostic of the bucket boundaries: rank 0's buckets and wait with each block's FFN weights
    shaped as Megatron's GPT holds them (a GeLU MLP: fc1 and fc2 of 4h x h / TP each) instead of the
    twin's SwiGLU stand-in of equal FLOPs (gate/up 2 x 8h/3, down 8h/3: the same parameters, split
    2:1), at the same places in the forward. Not an input."""
    ops, starts, weights = first_chunk_params_in_forward_order(sc, costs, schedule, mems)
    weights = list(weights)
    for i, op in enumerate(ops):
        if op.name == "ffn_gate_up" and i + 2 < len(ops) and ops[i + 2].name == "ffn_down":
            weights[i] = weights[i + 2] = (weights[i] + weights[i + 2]) / 2
    buckets = megatron_buckets(weights, megatron_bucket_params(sc))
    return len(buckets), chained_gather_exposed_s([(starts[i], _param_gather_s(sc, n, 1.0)) for i, n in buckets])


def take_apart(run) -> dict:
    sc = scenario_of(run)
    ideal = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, param_gather_kind="ideal"))
    step, base = simulate_step(sc, record_events=False), simulate_step(ideal, record_events=False)
    schedule, costs, _, mems, _, _ = _prepare(sc, None, Perturb(), True)
    gpu, p = sc.gpu, sc.plan
    per_node = dp_ranks_per_node(sc, gpu)
    buckets = first_rank_gather_buckets(sc, costs, schedule, mems)
    first_forward_s = sum(t.duration_s for t in costs._chain(schedule.stage_of(0, 0), "F"))
    ends = [at for at, _, _ in buckets[1:]] + [first_forward_s]
    beside = [end - at for (at, _, _), end in zip(buckets, ends)]   # forward from a bucket's first use to the next's
    forward_chains = [sum(t.duration_s for t in costs._chain(k, "F")) for k in range(schedule.num_model_stages)]
    rank0_wait = chained_gather_exposed_s([(at, g) for at, _, g in buckets])
    later = [{"rank": r, "gather_s": later_rank_gather_s(sc, costs, schedule, mems, r),
              "input_at_s": rank0_wait + sum(forward_chains[:schedule.stage_of(r, 0)])}
             for r in range(1, schedule.num_ranks)]
    tail_s = step.step_time_s - step.pipeline.makespan_s
    optimizer_s = step.op_time_s.get("optimizer", 0.0)
    predicted, predicted_ideal = predicted_metric(run, sc, step), predicted_metric(run, ideal, base)
    return {"id": run.id, "tp": p.tp, "pp": p.pp, "dp": sc.dp, "gpus": run.num_gpus,
            "nodes": run.num_gpus // gpu.gpus_per_node, "m": sc.num_microbatches,
            "dp_ranks_per_node": per_node, "dp_nodes": -(-sc.dp * p.cp // per_node),
            "groups_per_node": gpu.gpus_per_node // per_node if p.tp * per_node <= gpu.gpus_per_node else 1,
            "bucket_params": megatron_bucket_params(sc), "gelu_buckets": gelu_shaped_wait(sc, costs, schedule, mems),
            "rank0_params": sum(n for _, n, _ in buckets), "buckets": len(buckets),
            "gather_total_s": sum(g for _, _, g in buckets), "first_forward_s": first_forward_s,
            "median_gather_s": statistics.median(g for _, _, g in buckets) if buckets else 0.0,
            "median_beside_s": statistics.median(beside) if beside else 0.0,
            "first_bucket_s": buckets[0][2] if buckets else 0.0,
            "rank0_wait_s": rank0_wait, "later": later,
            "chunk_gathers": later_chunk_gathers(sc, costs, schedule, mems) or [],
            "step_s": step.step_time_s, "published_step_s": step.step_time_s * predicted / run.published,
            "busiest_compute_s": max(step.pipeline.busy_s),
            "gather_wait_s": step.step_time_s - base.step_time_s,
            "grad_buffer_zero_s": step.op_time_s.get("grad_buffer_zero", 0.0),
            "pipeline_rest_s": (step.pipeline.makespan_s - max(step.pipeline.busy_s) - (step.step_time_s - base.step_time_s)
                                - step.op_time_s.get("grad_buffer_zero", 0.0)),
            "dp_reduce_scatter_total_s": step.op_time_s.get("dp_reduce_scatter", 0.0),
            "dp_reduce_scatter_exposed_s": tail_s - optimizer_s, "optimizer_s": optimizer_s,
            "error": predicted / run.published - 1, "error_ideal": predicted_ideal / run.published - 1}


def show(b: dict) -> None:
    print(f"== {b['id']}: TP {b['tp']} PP {b['pp']} DP {b['dp']}, {b['gpus']} GPUs on {b['nodes']} nodes, "
          f"{b['m']} micro-batches a pipeline; error {b['error']:+.1%} ({b['error_ideal']:+.1%} without the wait)")
    print(f"   DP group: {b['dp_ranks_per_node']} rank(s) a node over {b['dp_nodes']} nodes -> {b['dp_ranks_per_node']} "
          f"NIC(s) a node for it ({b['groups_per_node']} DP groups gather at once on a node's 8 NICs); "
          f"bucket {b['bucket_params'] / 1e6:.0f}M parameters")
    print(f"   rank 0: {b['rank0_params'] / 1e9:.2f}B parameters in {b['buckets']} buckets, gathers "
          f"{b['gather_total_s'] * 1e3:.0f} ms "
          f"(first bucket {b['first_bucket_s'] * 1e3:.1f} ms, median {b['median_gather_s'] * 1e3:.2f} ms) beside a first "
          f"forward of {b['first_forward_s'] * 1e3:.0f} ms (median {b['median_beside_s'] * 1e3:.2f} ms a bucket): "
          f"waits {b['rank0_wait_s'] * 1e3:.0f} ms")
    print(f"     (diagnostic: with Megatron's GeLU MLP shapes, {b['gelu_buckets'][0]} buckets, waits "
          f"{b['gelu_buckets'][1] * 1e3:.0f} ms)")
    for r in b["later"]:
        print(f"   rank {r['rank']}: one gather of {r['gather_s'] * 1e3:.0f} ms; its first input arrives at "
              f">= {r['input_at_s'] * 1e3:.0f} ms: waits {max(0.0, r['gather_s'] - r['input_at_s']) * 1e3:.0f} ms more")
    for rank, gathers in enumerate(b["chunk_gathers"]):   # interleaved: chunks after the first (s14mlm)
        ms = [g * 1e3 for _, g in gathers[1:]]
        print(f"   rank {rank}: {len(ms)} later chunk(s), one gather each of {min(ms):.0f}-{max(ms):.0f} ms, launched "
              f"{gathers[1][0] * 1e3:.0f} ms into the chunk before's first forward")
    step = b["step_s"]
    print(f"   step {step:.3f} s (published {b['published_step_s']:.3f} s, {step - b['published_step_s']:+.3f} s):")
    for name, s in (("busiest rank's compute", b["busiest_compute_s"]),
                    ("gradient buffer zeroed before the first forward", b["grad_buffer_zero_s"]),
                    ("parameter all-gather wait (after it)", b["gather_wait_s"]),
                    ("rest of the pipeline (bubble, p2p, TP)", b["pipeline_rest_s"]),
                    (f"DP buckets prepared, reduce-scatter after the last bwd (of {b['dp_reduce_scatter_total_s']:.3f} s)",
                     b["dp_reduce_scatter_exposed_s"]), ("optimizer", b["optimizer_s"])):
        print(f"     {name:58s} {s:7.3f} s  {s / step:6.1%}")


def main(argv: list[str]) -> int:
    wanted = argv or list(ROWS)
    runs = {r.id: r for r in load_runs()[0]}
    unknown = [w for w in wanted if w not in runs]
    if unknown:
        print(f"unknown row(s) {unknown}; Megatron's: {[i for i in runs if i.startswith('mlm-')]}", file=sys.stderr)
        return 2
    for row_id in wanted:
        show(take_apart(runs[row_id]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
