"""plan.recompute 'megatron_selective': Megatron-LM's selective recomputation (--recompute-activations,
core_r0.8.0 attention.py checkpoint_core_attention) re-runs the core attention in the backward and
nothing else; V3's 'selective' (RMSNorms and up-projections) is another thing under the same word.
Tiny dense GPT-like model; formulas, not figures."""

import dataclasses

import pytest

from twin.core.scenario import from_dict
from twin.costs import compute, memory
from twin.costs.flops import OpKind
from twin.planning.space import DEFAULT_VALUES
from twin.training.results import Perturb
from twin.training.step import _prepare, simulate_step

DENSE = {"name": "tiny-gpt", "num_layers": 4, "hidden_size": 1024, "vocab_size": 32768, "num_heads": 8,
         "attention": "gqa", "num_kv_heads": 8, "head_dim": 128, "intermediate_size": 4096, "num_dense_layers": 4,
         "attention_dropout": 0.1}


def scenario(recompute):
    return from_dict({"name": "t", "model": DENSE, "cluster": {"gpu": "h100", "num_gpus": 1},
                      "plan": {"tp": 1, "pp": 1, "ep": 1, "schedule": "1f1b", "gemm_precision": "bf16",
                               "recompute": recompute, "zero_stage": 0},
                      "workload": {"seq_len": 2048, "global_batch_seqs": 2}})


def _backward_s(sc) -> tuple[float, object]:
    _, costs, profile, *_ = _prepare(sc, None, Perturb(), False)
    ops = costs.blocks[1].ops
    return sum(t.duration_s for t in costs._backward_tasks(ops, True)), (costs, profile, ops)


def test_the_backward_reruns_the_attention_forward_and_nothing_else():
    megatron, (costs, profile, ops) = _backward_s(scenario("megatron_selective"))
    none, _ = _backward_s(scenario("none"))
    attn = next(op for op in ops if op.kind == OpKind.ATTENTION)
    rerun = compute.op_time_s(attn, "fwd", "bf16", costs.gpu, profile)
    assert megatron - none == pytest.approx(rerun, rel=1e-9)
    assert attn.dropout == 0.1 and rerun > 0   # the rerun carries the kernel's dropout, as the forward did


def test_it_keeps_what_none_keeps_but_the_softmax_statistics():
    m = from_dict({"name": "t", "model": DENSE, "cluster": {"gpu": "h100", "num_gpus": 1},
                   "plan": {"tp": 1, "pp": 1, "ep": 1, "schedule": "1f1b", "gemm_precision": "bf16"},
                   "workload": {"seq_len": 2048, "global_batch_seqs": 2}}).model
    plan = scenario("none").plan
    kept = {r: memory.activation_bytes(m, True, dataclasses.replace(plan, recompute=r), 2048)
            for r in ("none", "megatron_selective", "selective")}
    assert kept["none"] - kept["megatron_selective"] == pytest.approx(2048 * 8 * 4)   # FP32 stats per head and token
    assert kept["megatron_selective"] > kept["selective"]
    assert simulate_step(scenario("megatron_selective")).step_time_s > simulate_step(scenario("none")).step_time_s


def test_the_default_plan_search_does_not_try_it():
    assert "megatron_selective" not in DEFAULT_VALUES["recompute"]
