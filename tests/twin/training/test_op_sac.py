"""plan.recompute 'selective_op': torchtitan's per-op selective activation checkpointing
(twin.costs.flops.op_sac_recompute), its time and its memory."""

import dataclasses

from twin.costs.flops import OpKind, attention_ops, dense_ffn_ops, op_sac_recompute
from twin.costs.memory import activation_bytes_per_token
from twin.core.specs import ParallelPlan, get_model
from tests.twin.training.test_step_parallel import scenario, step


def _recomputed(precision: str) -> dict:
    m = get_model("llama3.1-8b")
    ops = attention_ops(m, 1, 1) + dense_ffn_ops(m, 1)
    ops = [dataclasses.replace(op, precision=precision) if op.kind == OpKind.GEMM else op for op in ops]
    return {op.name: again.n for op, again in op_sac_recompute(ops, m, 1)}


def test_bf16_recomputes_every_second_linear_and_every_elementwise_op():
    # Llama 3.1 8B (32 heads, 8 KV heads of 128, FFN 14336): the linears in forward order are
    # wq, wk, wv, wo, w1, w3, w2; the 2nd, 4th, 6th (wk, wo, w3) are recomputed
    again = _recomputed("bf16")
    assert again["qkv_proj"] == 8 * 128        # wk
    assert again["o_proj"] == 4096             # wo
    assert again["ffn_gate_up"] == 14336       # w3
    assert "ffn_down" not in again and "attn_core" not in again   # w2 and attention kept
    for name in ("attn_norm", "rope", "residual_add", "ffn_norm", "swiglu"):
        assert name in again


def test_fp8_linears_alternate_as_the_bf16_ones():
    # torchao's Float8Linear (float8_linear.py @ eab345c, Dec 2024) calls torch.mm on its Float8Tensor
    # operands; the checkpoint's dispatch mode sees that aten.mm before the subclass turns it into
    # torch._scaled_mm (a mode runs before a subclass's __torch_dispatch__: benchmarks/sac_policy_ops.py),
    # so torchtitan's policy counts and saves FP8 linears as it does BF16 ones: wk, wo, w3 recomputed
    assert _recomputed("fp8") == _recomputed("bf16")
    again = _recomputed("fp8")
    assert again["qkv_proj"] == 8 * 128 and again["o_proj"] == 4096 and again["ffn_gate_up"] == 14336
    assert "ffn_down" not in again and "attn_core" not in again


def test_time_and_memory_lie_between_selective_and_full():
    times = {rc: step(scenario(recompute=rc)).step_time_s for rc in ("none", "selective_op", "full")}
    assert times["none"] < times["selective_op"] < times["full"]
    m = get_model("llama3.1-8b")
    mem = {rc: activation_bytes_per_token(m, True, ParallelPlan(tp=1, ep=1, recompute=rc, gemm_precision="bf16"))
           for rc in ("none", "selective_op", "full")}
    assert mem["full"] < mem["selective_op"] < mem["none"]
    # kept: block input, q and v (wq, wv), attention output and its statistics, w1 and w2 outputs
    d, h, kvh, hd, f = 4096, 32, 8, 128, 14336
    expected = 2 * (d + h * hd + kvh * hd + h * hd + f + d) + 4 * h
    assert mem["selective_op"] == expected


def test_ops_of_another_kind_are_left_alone():
    m = get_model("llama3.1-8b")
    ops = attention_ops(m, 1, 1)
    assert all(again.kind != OpKind.ATTENTION for _, again in op_sac_recompute(ops, m, 1))


def test_the_head_and_loss_are_outside_the_policy(monkeypatch):
    # torchtitan's apply_ac wraps each TransformerBlock alone (parallelize_llama.py @ 9dec370): the
    # final norm, output projection and loss are never recomputed, and the policy's mm count restarts
    # with each block's region; so the head's tuple recomputes nothing (s26mem)
    from twin.training import step as st
    from twin.training.results import Perturb
    sc = scenario(recompute="selective_op", pp=1, kernels="eager")
    costs = st._prepare(sc, None, Perturb(), False)[1]
    assert costs.extra_last and costs._op_sac(costs.extra_last) == ()
    block = costs.blocks[0].ops
    assert costs._op_sac(block) == tuple(op_sac_recompute(list(block), sc.model, 1))
    monkeypatch.setattr(st, "ADOPT_AC_BLOCKS_ONLY", False)
    again = st.StepCosts(sc, costs.schedule, costs.profile, st.routing_loads(sc, Perturb()), 1.0)
    assert any(op.kind == OpKind.MEMORY for op, _ in again._op_sac(again.extra_last))
