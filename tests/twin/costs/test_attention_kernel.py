"""plan.attention_kernel: FlashAttention-2 against the cuDNN attention the profiles measured."""

import pytest

from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import FA2_OVER_CUDNN, load_profile
from twin.core.specs import get_gpu
from tests.twin.training.test_step_parallel import scenario, step


def test_fa2_runs_attention_at_its_measured_share_of_cudnn():
    # FA3 paper, H100 head dim 128: FA2 / cuDNN between 0.59 and 0.64 at 2k-16k tokens (the ratio
    # a profile without dense_block records keeps)
    assert 0.59 < FA2_OVER_CUDNN < 0.64
    prof, gpu = load_profile("h100"), get_gpu("h100")
    # measured on our H100 (dense_block.csv: SDPA flash vs cuDNN, head dim 128, causal, 2K-32K)
    measured = prof.attention_kernels["fa2"]
    assert 0.5 < measured["fwd"] < 0.7 and 0.5 < measured["bwd"] < 0.7
    op = Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=8192, heads=32, qk_dim=128, v_dim=128)
    for d in ("fwd", "bwd"):
        cudnn = compute.attention_time_s(op, d, gpu, prof)
        fa2 = compute.attention_time_s(op, d, gpu, prof.with_attention_kernel("fa2"))
        assert fa2 == pytest.approx(cudnn / measured[d], rel=0.02)
    assert prof.with_attention_kernel("cudnn") is prof
    with pytest.raises(ValueError, match="attention kernel 'fa3'"):
        prof.with_attention_kernel("fa3")


def test_a_step_with_fa2_is_slower_by_its_attention_only():
    base, fa2 = step(scenario()), step(scenario(attention_kernel="fa2"))
    assert fa2.step_time_s > base.step_time_s
    assert fa2.model_flops_per_step == base.model_flops_per_step
