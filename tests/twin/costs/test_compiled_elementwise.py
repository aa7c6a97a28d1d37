"""twin.costs.compute's candidate of docs/notes/s31pub_rule.md (ADOPT_COMPILED_ELEMENTWISE_EFF): inside a
torch.compile'd block (Op.compiled, plan.kernels 'fused_blocks') the elementwise kernels and an FP8 GEMM's casts run at
COMPILED_ELEMENTWISE_RATIO of their streaming rate; nothing with the switch off, and nothing outside compiled blocks."""

import dataclasses

import pytest

from calibration.dense_block import compiled_elementwise_ratio
from calibration.predict import gpu_spec
from twin.costs import compute
from twin.costs.flops import Op, OpKind, compiled_ops
from twin.costs.profile import load_profile

NORM = Op("attn_norm", OpKind.MEMORY, "attn", bytes=64e6)
GEMM = Op("ffn_up", OpKind.GEMM, "ffn", m=16384, n=14336, k=4096)


def test_the_ratio_is_the_estimators_on_the_committed_records():
    # median over h100/dense_block.csv's two compiled 8B fitting records (2 x 8,192): 0.687 forward, 0.570 fwd+bwd
    assert compute.COMPILED_ELEMENTWISE_RATIO == pytest.approx(compiled_elementwise_ratio("h100"), rel=1e-9)
    assert 0.55 < compute.COMPILED_ELEMENTWISE_RATIO < 0.70


def test_compiled_ops_marks_memory_ops_and_gemms_only():
    attn = Op("attention", OpKind.ATTENTION, "attn", batch=2, seq_len=8192, heads=32, qk_dim=128, v_dim=128)
    marked = compiled_ops([NORM, GEMM, attn])
    assert [op.compiled for op in marked] == [True, True, False]
    assert [dataclasses.replace(op, compiled=False) for op in marked] == [NORM, GEMM, attn]   # nothing else changes


@pytest.mark.parametrize("on", [False, True])
def test_a_compiled_memory_op_slows_by_the_ratio_only_under_the_switch(monkeypatch, on):
    monkeypatch.setattr(compute, "ADOPT_COMPILED_ELEMENTWISE_EFF", on)
    gpu, prof = gpu_spec("h100"), load_profile("h100")
    plain = compute.op_time_s(NORM, "fwd", "bf16", gpu, prof)
    inside = compute.op_time_s(dataclasses.replace(NORM, compiled=True), "fwd", "bf16", gpu, prof)
    stream_s = NORM.bytes / (gpu.hbm_bytes_per_s * prof.memory_eff) * prof.in_layer_factor("memory")
    assert inside - plain == pytest.approx(stream_s * (1 / compute.COMPILED_ELEMENTWISE_RATIO - 1) if on else 0.0)
    # an eager op (plan.kernels 'eager': eager_ops, never marked compiled) keeps its own rate whatever the switch
    eager = dataclasses.replace(NORM, eager=True)
    here = compute.op_time_s(eager, "fwd", "bf16", gpu, prof)
    monkeypatch.setattr(compute, "ADOPT_COMPILED_ELEMENTWISE_EFF", not on)
    assert compute.op_time_s(eager, "fwd", "bf16", gpu, prof) == here


@pytest.mark.parametrize("on", [False, True])
def test_a_compiled_fp8_gemm_pays_its_casts_at_the_ratio_under_the_switch(monkeypatch, on):
    monkeypatch.setattr(compute, "ADOPT_COMPILED_ELEMENTWISE_EFF", on)
    gpu, prof = gpu_spec("h100"), load_profile("h100")
    casts = compute.fp8_cast_time_s(GEMM, "fwd", gpu, prof)
    assert casts > 0
    plain = compute.op_time_s(GEMM, "fwd", "fp8", gpu, prof)
    inside = compute.op_time_s(dataclasses.replace(GEMM, compiled=True), "fwd", "fp8", gpu, prof)
    assert inside - plain == pytest.approx(casts * (1 / compute.COMPILED_ELEMENTWISE_RATIO - 1) if on else 0.0)
    # a BF16 GEMM has no casts: unchanged either way
    assert compute.op_time_s(dataclasses.replace(GEMM, compiled=True), "fwd", "bf16", gpu, prof) == \
        compute.op_time_s(GEMM, "fwd", "bf16", gpu, prof)
