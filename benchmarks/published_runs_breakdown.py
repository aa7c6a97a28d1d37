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

Then one middle block of each row (one micro-batch, forward and full backward): its GEMMs' and
attention core's rates, memory-bound seconds and exposed TP/CP communication, to see where one row
is cheaper per FLOP than another. With --counterfactuals, each Llama 3 row's error under settings the
paper does not publish (the other attention kernel, TP communication overlapped or not, full
recomputation, the block's kernels as Meta's released model code issues them, ZeRO-2's other
reading under pipelining, plan.pp_grad_sync): diagnostics, not inputs.

Usage: PYTHONPATH=. python benchmarks/published_runs_breakdown.py [--counterfactuals] [ROW_ID ...]  (5-60 s)
"""

from __future__ import annotations

import copy
import dataclasses
import sys

from calibration.published_runs import flops_per_token, load_runs, predicted_metric, scenario_of
from twin.costs import compute
from twin.costs.flops import GEMM_KINDS, OpKind, attention_bwd_flops, train_flops_per_token
from twin.sim.pipeline import simulate_pipeline
from twin.training.results import Perturb
from twin.training.step import _prepare, local_tokens, param_gather_release_s, runtime_needs, simulate_step

ROWS = ("l3-405b-8k-gpus8192", "l3-405b-8k-gpus16384", "l3-405b-128k-cp16", "mlm-gpt-462b", "mlm-gpt-314b")


def free_p2p_makespan_s(sc, release_s=None) -> float:
    """The same pipeline with p2p transfers free (a counterfactual: the hops' exposed share); with
    `release_s`, its ranks' first ops held as the step holds them (Megatron's parameter all-gather)."""
    schedule, costs, *_ = _prepare(sc, None, Perturb(), False)
    costs = copy.copy(costs)   # _prepare's are kept for later steps of the same scenario: not this one
    costs._p2p_s = 0.0   # StepCosts.p2p_s returns this one figure for every hop, or (ADOPT_PP_PAIR_SPANS)
    costs._p2p_by_node = {False: 0.0, True: 0.0}   # one of these by the hop's nodes
    return simulate_pipeline(schedule, costs, record_events=False, release_s=release_s,
                             extra_needs=runtime_needs(sc, schedule)).makespan_s


def param_gather_release(sc) -> list[float] | None:
    """Per rank, the start its first op waits for (plan.param_gather_kind); None when no rank waits."""
    schedule, costs, _, mems, _, _ = _prepare(sc, None, Perturb(), False)
    release = param_gather_release_s(sc, costs, schedule, mems)
    return release if any(release) else None


def breakdown(run) -> dict:
    sc = scenario_of(run)
    # a diagnosis: a row whose count does not fit its GPU (Llama 3's 8K rows since s12fsdp) is taken apart too
    step = simulate_step(sc, record_events=False, check_memory=False)
    pipe = step.pipeline
    p, v, m = sc.plan.pp, max(1, sc.plan.virtual_stages), sc.num_microbatches
    busiest_s = max(pipe.busy_s)
    release = param_gather_release(sc)
    free_s = free_p2p_makespan_s(sc, release)
    gather_s = free_s - free_p2p_makespan_s(sc) if release else 0.0   # what the memset and gather hold the free-hop pipeline
    ideal_s = (p - 1) / (v * m) * busiest_s
    tokens_per_gpu = step.tokens_per_step / step.num_gpus
    executed = train_flops_per_token(sc.model, run.seq_len, True)
    counted = flops_per_token(run.flop_basis, sc.model, run.seq_len)
    compute_ops = {k: s for k, s in step.op_time_s.items() if not k.startswith(("tp_", "cp_", "dp_", "pp_", "optimizer", "fsdp_post_backward"))}
    return {"id": run.id, "published": run.published, "predicted": predicted_metric(run, sc, step),
            "basis": run.flop_basis, "counted_tflop_per_token": counted / 1e12,
            "executed_tflop_per_token": executed / 1e12, "tokens_per_gpu": tokens_per_gpu,
            "pp": p, "v": v, "m": m, "step_s": step.step_time_s, "makespan_s": pipe.makespan_s,
            "busiest_compute_s": busiest_s, "ideal_bubble_s": ideal_s, "p2p_s": pipe.makespan_s - free_s,
            "gather_s": gather_s, "rest_s": free_s - gather_s - busiest_s - ideal_s,
            "tail_s": step.step_time_s - pipe.makespan_s,
            "exposed_comm_s": step.exposed_comm_frac * pipe.makespan_s,
            "executed_rate_tflops": executed * tokens_per_gpu / busiest_s / 1e12,
            "compute_ops_s": compute_ops, "comm_ops_s": {k: s for k, s in step.op_time_s.items() if k not in compute_ops},
            "busy_per_rank_s": pipe.busy_s, "bubble_frac": step.bubble_frac}


def block_rates(run) -> dict:
    """One middle transformer block of the row, one micro-batch, forward and full backward as the
    twin costs it: its GEMMs' and attention core's rates (TFLOP/s of the FLOPs they run), the
    memory-bound kernels' seconds, and the communication the block's chains leave exposed (TP, CP).
    The same figures for Megatron's and Llama 3's rows show where one is cheaper per FLOP."""
    sc = scenario_of(run)
    _, costs, profile, *_ = _prepare(sc, None, Perturb(), False)
    ops = costs.blocks[len(costs.blocks) // 2].ops
    prec, gpu = sc.plan.gemm_precision, sc.gpu
    out = {"gemm_s": 0.0, "gemm_flops": 0.0, "attn_s": 0.0, "attn_flops": 0.0, "memory_s": 0.0}
    for phase in ("fwd", "bwd_input", "bwd_weight"):
        for op in ops:
            t = compute.op_time_s(op, phase, prec, gpu, profile, costs.sm_frac)
            if op.kind in GEMM_KINDS:
                out["gemm_s"] += t
                out["gemm_flops"] += op.flops
            elif op.kind == OpKind.ATTENTION and phase != "bwd_weight":
                out["attn_s"] += t
                out["attn_flops"] += op.flops if phase == "fwd" else attention_bwd_flops(
                    op.batch, op.seq_len, op.heads, op.qk_dim, op.v_dim, op.causal, op.kv_len)
            elif op.kind == OpKind.MEMORY:
                out["memory_s"] += t
    tasks = [*costs._forward_tasks(ops), *costs._backward_tasks(ops, True)]
    out["block_s"] = sum(t.duration_s for t in tasks)
    out["compute_s"] = sum(t.duration_s for t in tasks if t.stream == "compute")
    out["recompute_s"] = sum(t.duration_s for t in tasks if t.stream == "compute" and t.name.startswith("recompute_"))
    out["tp_exposed_s"] = sum(t.duration_s for t in tasks if t.stream == "comm" and t.name.startswith("tp_"))
    # what the TP overlap costs on the compute stream (chunked GEMMs, GEMMs slowed beside its SMs,
    # userbuffer copies, torch's partial-sum reductions)
    out["tp_overlap_compute_s"] = sum(t.duration_s for t in tasks if t.stream == "compute" and t.name.startswith("tp_"))
    out["cp_exposed_s"] = sum(t.duration_s for t in tasks if t.stream == "comm" and t.name.startswith("cp_"))
    out["tokens"] = local_tokens(sc)
    out["attention_kernel"], out["tp_comm_overlap"], out["recompute"] = (
        sc.plan.attention_kernel, sc.plan.tp_comm_overlap, sc.plan.recompute)
    return out


def show_block(run_id: str, r: dict) -> None:
    print(f"   one block, one micro-batch ({r['tokens']:,} tokens a rank; attention {r['attention_kernel']}, "
          f"TP overlap {r['tp_comm_overlap']}, recompute {r['recompute']}): {r['block_s'] * 1e3:.2f} ms = "
          f"GEMMs {r['gemm_s'] * 1e3:.2f} ms at {r['gemm_flops'] / r['gemm_s'] / 1e12:.0f} TFLOP/s, attention core "
          f"{r['attn_s'] * 1e3:.2f} ms at {r['attn_flops'] / r['attn_s'] / 1e12:.0f} TFLOP/s, memory-bound "
          f"{r['memory_s'] * 1e3:.2f} ms, full recompute {r['recompute_s'] * 1e3:.2f} ms, exposed TP "
          f"{r['tp_exposed_s'] * 1e3:.2f} ms (its overlap's compute {r['tp_overlap_compute_s'] * 1e3:.2f} ms), "
          f"CP {r['cp_exposed_s'] * 1e3:.2f} ms")


def show(b: dict) -> None:
    step = b["step_s"]
    print(f"== {b['id']}: predicted {b['predicted']:.1f} against {b['published']} ({b['predicted'] / b['published'] - 1:+.1%}); "
          f"PP {b['pp']} V {b['v']} M {b['m']}")
    print(f"   FLOPs/token: {b['counted_tflop_per_token']:.3f} T on the '{b['basis']}' basis, {b['executed_tflop_per_token']:.3f} T "
          f"executed (causal); {b['tokens_per_gpu']:,.0f} tokens per GPU and step")
    print(f"   step {step:.3f} s = busiest rank's compute {b['busiest_compute_s']:.3f} ({b['busiest_compute_s'] / step:.1%}; "
          f"{b['executed_rate_tflops']:.0f} TFLOP/s of executed FLOPs)")
    for name, s in (("idealised bubble (PP-1)/(V M)", b["ideal_bubble_s"]), ("exposed p2p hops", b["p2p_s"]),
                    ("memset + parameter all-gather wait", b["gather_s"]),
                    ("rest of the pipeline", b["rest_s"]), ("tail: DP reduce-scatter, optimizer", b["tail_s"])):
        print(f"     + {name:36s} {s:7.3f} s  {s / step:6.1%}")
    print(f"   exposed communication inside the pipeline {b['exposed_comm_s']:.3f} s; twin's bubble_frac "
          f"(largest idle over ranks) {b['bubble_frac']:.1%}")
    print("   compute per op on the busiest rank: " + ", ".join(f"{k} {s:.3f}" for k, s in sorted(
        b["compute_ops_s"].items(), key=lambda kv: -kv[1])))
    print("   communication: " + ", ".join(f"{k} {s:.3f}" for k, s in sorted(b["comm_ops_s"].items(), key=lambda kv: -kv[1]) if s))
    print("   compute per rank: " + " ".join(f"{s:.2f}" for s in b["busy_per_rank_s"]))


def counterfactuals(run) -> dict:
    """The row's error under settings its source does not publish (diagnostics, never inputs)."""
    sc = scenario_of(run)
    out = {}
    other_kernel = "cudnn" if sc.plan.attention_kernel == "fa2" else "fa2"
    # a row overlapping TP some other way, as TransformerEngine's userbuffers would cost it
    te = ((("tp_overlap_kind te_userbuffers", {"tp_overlap_kind": "te_userbuffers"}),)
          if sc.plan.tp_comm_overlap and sc.plan.tp_overlap_kind != "te_userbuffers" else ())
    for name, change in ((f"attention {other_kernel}", {"attention_kernel": other_kernel}), *te,
                         (f"tp_comm_overlap {not sc.plan.tp_comm_overlap}", {"tp_comm_overlap": not sc.plan.tp_comm_overlap}),
                         ("recompute full", {"recompute": "full"}),
                         # as Meta's released Llama 3 model code computes (meta-llama/llama3 llama/model.py:
                         # RMSNorm through FP32, complex RoPE, separate wq/wk/wv and w1/w3), uncompiled
                         ("eager kernels, separate linears", {"kernels": "eager", "unfused_linears": True})):
        alt = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, **change))
        out[name] = predicted_metric(run, alt, simulate_step(alt, record_events=False, check_memory=False)) / run.published - 1
    if sc.plan.zero_stage == 2 and sc.plan.pp > 1:   # the other reading of ZeRO-2 under PP (plan.pp_grad_sync)
        other = "last_backward" if sc.plan.pp_grad_sync == "every_backward" else "every_backward"
        alt = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, pp_grad_sync=other))
        out[f"pp_grad_sync {other}"] = predicted_metric(run, alt, simulate_step(alt, record_events=False, check_memory=False)) / run.published - 1
    return out


def show_gradient_memory(run) -> None:
    """A pipelined ZeRO-2 row's gradient memory both ways (plan.pp_grad_sync): the unsharded FP32
    accumulator, or sharded gradients with those waiting in the reduce-scatter queue."""
    sc = scenario_of(run)
    if sc.plan.zero_stage != 2 or sc.plan.pp == 1:
        return
    gib = 2**30
    parts = []
    for sync in ("last_backward", "every_backward"):
        alt = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, pp_grad_sync=sync))
        step = simulate_step(alt, record_events=False, check_memory=False)
        held = step.memory_breakdown_bytes
        parts.append(f"{sync}: gradients {held['gradients'] / gib:.2f} + queue {held.get('grad_queue', 0.0) / gib:.2f} GiB, "
                     f"count {sum(held.values()) / gib:.2f} of {step.memory_capacity_bytes / gib:.2f} GiB, "
                     f"dp_reduce_scatter {step.op_time_s['dp_reduce_scatter']:.2f} s, step {step.step_time_s:.3f} s")
    print("   ZeRO-2 under PP, " + "; ".join(parts))


def main(argv: list[str]) -> int:
    what_if = "--counterfactuals" in argv
    argv = [a for a in argv if a != "--counterfactuals"]
    runs, _ = load_runs()
    wanted = argv or list(ROWS)
    for run in runs:
        if run.id in wanted:
            show(breakdown(run))
            show_block(run.id, block_rates(run))
            if what_if and run.source == "llama3":
                print("   counterfactual errors (unpublished settings): " + ", ".join(
                    f"{k} {v:+.1%}" for k, v in counterfactuals(run).items()))
                show_gradient_memory(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
