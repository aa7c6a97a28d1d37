"""plan.unfused_linears: torchtitan's Llama issues wq, wk, wv and w1, w3 as separate linears
(twin.costs.flops.unfused_linear_ops): one GEMM each on the shared input, its FP8 cast shared, the
input gradients summed in the backward; torchtitan's per-op SAC policy reads them the same way."""

import pytest

from twin.costs import comm, compute
from twin.costs.flops import (BF16_BYTES, GEMM_KINDS, OpKind, attention_ops, dense_ffn_ops, op_sac_recompute,
                              unfused_linear_ops)
from twin.core.scenario import load_scenario
from twin.core.specs import get_model
from twin.training import step as step_mod
from twin.training.results import Perturb
from twin.training.step import _prepare
from tests.twin.training.test_step_parallel import scenario, step


def _ops(tp=1, eager=False):
    m = get_model("llama3.1-8b")
    fused = attention_ops(m, 1, 4096, tp) + dense_ffn_ops(m, 4096, tp)
    return m, fused, unfused_linear_ops(fused, m, tp, eager)


def test_qkv_and_gate_up_become_separate_linears_on_a_shared_input():
    m, fused, ops = _ops(tp=8)
    by = {op.name: op for op in ops}
    # 32 query heads and 8 K/V heads of 128 over 8 TP ranks: wq 512 columns, wk and wv one head each
    assert [(by[n].n, by[n].shared_input) for n in ("q_proj", "k_proj", "v_proj")] == [(512, False), (128, True), (128, True)]
    assert [(by[n].n, by[n].shared_input) for n in ("ffn_gate", "ffn_up")] == [(14336 // 8, False), (14336 // 8, True)]
    assert "qkv_proj" not in by and "ffn_gate_up" not in by
    flops = lambda lst: sum(2 * op.m * op.n * op.k for op in lst if op.kind in GEMM_KINDS)
    assert flops(ops) == flops(fused)
    # the summed input gradients: no forward work; compiled one kernel reading n and writing 1
    qkv_sum, ffn_sum = by["qkv_dgrad_sum"], by["ffn_gate_up_dgrad_sum"]
    assert qkv_sum.kind == OpKind.MEMORY and qkv_sum.bytes == 0 and qkv_sum.launches == 0
    assert qkv_sum.bwd_bytes == 4 * 4096 * 4096 * BF16_BYTES and ffn_sum.bwd_bytes == 3 * 4096 * 4096 * BF16_BYTES
    # eager autograd adds them pairwise: n - 1 adds of 3 tensors' bytes
    eager = {op.name: op for op in _ops(tp=8, eager=True)[2]}
    assert eager["qkv_dgrad_sum"].bwd_bytes == 2 * 3 * 4096 * 4096 * BF16_BYTES and eager["qkv_dgrad_sum"].bwd_launches == 2


def test_a_shared_input_is_cast_once():
    _, _, ops = _ops()
    q, k = (next(op for op in ops if op.name == n) for n in ("q_proj", "k_proj"))
    assert compute.fp8_cast_passes(q, "fwd") and not compute.fp8_cast_passes(k, "fwd")
    assert [kind for kind, _ in compute.fp8_cast_passes(q, "bwd_weight")] == ["cast_transpose", "requant_transpose"]
    assert [kind for kind, _ in compute.fp8_cast_passes(k, "bwd_weight")] == ["cast_transpose"]
    assert compute.fp8_cast_passes(k, "bwd_input") == [("cast", 4096 * 1024)]


def test_the_op_sac_policy_recomputes_the_same_linears_either_way():
    m, fused, ops = _ops()
    width = lambda lst: sum(again.n * again.k for _, again in op_sac_recompute(lst, m, 1) if again.kind in GEMM_KINDS)
    assert width(ops) == width(fused)


@pytest.mark.parametrize("fused_floor", [False, True])
def test_separate_linears_cost_more_and_torch_async_tp_gathers_beside_all_three(monkeypatch, fused_floor):
    # the ring model's exposure, and with ADOPT_ATP_FUSED_EXCESS (docs/notes/s20tt_rule.md) at least
    # ATP_FUSED_EXCESS_FRAC of the collective on top of it
    monkeypatch.setattr(step_mod, "ADOPT_ATP_FUSED_EXCESS", fused_floor)
    base = dict(tp=8, pp=1, dp=1, sequence_parallel=True)
    assert step(scenario(**base, unfused_linears=True)).step_time_s > step(scenario(**base)).step_time_s
    sc = scenario(**base, tp_comm_overlap=True, tp_overlap_kind="torch_async_tp", unfused_linears=True)
    _, costs, profile, *_ = _prepare(sc, None, Perturb(), True)
    seg = [op for op in costs.blocks[0].ops if op.part == "attn"]
    gemms = [op for op in seg if op.name in ("q_proj", "k_proj", "v_proj")]
    assert costs._beside_gemms(seg, "in_fwd") == gemms
    assert [op.name for op in costs._beside_gemms(seg, "out_fwd")] == ["o_proj"]
    c = costs._tp_points(seg)["in_fwd"]
    tasks = costs._tp_task(c, seg, "in_fwd")
    # the gather hides behind the three GEMMs as torch issues them: one chunk of m/8 rows per rank
    chunked_s = costs._compute_s(gemms, "fwd") + costs._chunked_extra_s(gemms, "fwd")
    exposed = [t for t in tasks if t.stream == "comm"]
    ring_s = comm.pipelined_exposed_s("all_gather", c.time_s, chunked_s, 8)
    floor_s = step_mod.ATP_FUSED_EXCESS_FRAC * c.time_s if fused_floor else 0.0
    assert sum(t.duration_s for t in exposed) == pytest.approx(max(ring_s, floor_s), rel=1e-12)


def test_fp8_jobs_leave_the_output_projection_in_bf16():
    """torchtitan converts every nn.Linear but `output` to Float8Linear (float8.py @ 9dec370:
    module_filter_fn fqn != "output"), and DeepSeek-V3 keeps the output head in its original
    precision (V3 report §3.3.1): with either FP8 recipe the head's GEMM is pinned to BF16, while
    the MTP module's projection (not named there) keeps the job's precision; a BF16 job pins nothing."""
    def extra_last(**plan):
        _, costs, *_ = _prepare(scenario(tp=1, pp=1, dp=1, **plan), None, Perturb(), True)
        return costs.extra_last
    def precisions(ops, name):
        return {op.precision for op in ops if op.name == name}
    assert precisions(extra_last(gemm_precision="fp8", fp8_recipe="tensorwise"), "lm_head") == {"bf16"}
    assert precisions(extra_last(gemm_precision="fp8"), "lm_head") == {"bf16"}
    v3 = load_scenario()   # DeepSeek's blockwise FP8, with an MTP module sharing the head
    assert (v3.plan.gemm_precision, v3.plan.fp8_recipe, v3.model.num_mtp_modules) == ("fp8", "blockwise", 1)
    _, costs, *_ = _prepare(v3, None, Perturb(), False)
    assert [op.precision for op in costs.extra_last if op.name in ("lm_head", "mtp_proj")] == ["bf16", None, "bf16"]
    assert precisions(extra_last(gemm_precision="bf16"), "lm_head") == {None}
