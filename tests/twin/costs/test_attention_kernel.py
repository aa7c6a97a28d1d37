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


def test_a_card_s_own_attention_factor_replaces_the_gemm_clock_for_attention_only():
    import dataclasses
    prof, capped = load_profile("h100"), get_gpu("h100-hbm2e-500w")
    plain = dataclasses.replace(capped, attention_clock_frac=0.0, attention_clock_fracs=())
    op = Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=8192, heads=32, qk_dim=128, v_dim=128)
    base = {d: compute.attention_time_s(op, d, plain, prof) - prof.launch_s for d in ("fwd", "bwd")}
    # 0: the GEMMs' clock_frac, as before this field existed
    assert plain.attention_flops_per_s() == plain.peak_flops_per_s("bf16")
    own = dataclasses.replace(plain, attention_clock_frac=plain.clock_frac * 1.1)
    assert compute.attention_time_s(op, "fwd", own, prof) - prof.launch_s == pytest.approx(base["fwd"] / 1.1)
    assert own.peak_flops_per_s("bf16") == plain.peak_flops_per_s("bf16")   # GEMMs keep clock_frac
    # per pass and length: log-length interpolation between the points, held beyond them
    table = dataclasses.replace(plain, attention_clock_frac=0.5, attention_clock_fracs=(
        ("fwd", 8192.0, 0.9), ("fwd", 32768.0, 1.0), ("bwd", 8192.0, 0.8)))
    peak = plain.peak_bf16_flops_per_s
    assert table.attention_flops_per_s("fwd", 16384) == pytest.approx(0.95 * peak)
    assert table.attention_flops_per_s("fwd", 4096) == pytest.approx(0.9 * peak)
    assert table.attention_flops_per_s("fwd", 131072) == pytest.approx(1.0 * peak)
    assert table.attention_flops_per_s("bwd", 32768) == pytest.approx(0.8 * peak)
    assert compute.attention_time_s(op, "bwd", table, prof) - prof.launch_s == pytest.approx(
        base["bwd"] * plain.clock_frac / 0.8)
