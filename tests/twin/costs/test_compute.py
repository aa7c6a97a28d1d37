"""The kernel cost model's structural terms (twin.costs.compute), each on a hand-made profile."""

import dataclasses

import pytest

from twin.costs import compute
from twin.costs.flops import Op, OpKind, router_op
from twin.costs.profile import BatchedCurve, GemmCurve, Profile, SeqCurve, profile_from_json
from twin.core.specs import get_gpu, get_model

GPU = get_gpu("h100")
BASE = Profile("h100", gemm={"bf16": GemmCurve(0.8), "fp8": GemmCurve(0.7)},
               grouped_gemm={"bf16": GemmCurve(0.7), "fp8": GemmCurve(0.6)},
               attention={"fwd": SeqCurve(0.6), "bwd": SeqCurve(0.5)}, memory_eff=0.9, launch_s=2e-6,
               calibrated=True, group_row_tile=256)


def test_grouped_call_pays_its_setup_kernel_once():
    with_setup = dataclasses.replace(BASE, grouped_setup_s=7e-6)
    rows = [512] * 16
    one = compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", GPU, BASE)
    assert compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", GPU, with_setup) == pytest.approx(one + 7e-6)
    # a dense GEMM launches no setup kernel
    assert compute.gemm_time_s(512, 4096, 7168, "bf16", GPU, with_setup) == compute.gemm_time_s(512, 4096, 7168, "bf16", GPU, BASE)


def test_small_groups_cost_a_whole_row_tile():
    """16 and 100 rows per expert both run one 128-row tile: the same time; skew that leaves the
    same mean but part-empty tiles costs more."""
    slow = dataclasses.replace(BASE, grouped_gemm={"bf16": GemmCurve(0.05)})   # compute-bound throughout
    t16 = compute.grouped_gemm_time_s([16] * 64, 7168, 7168, "bf16", GPU, slow)
    t100 = compute.grouped_gemm_time_s([100] * 64, 7168, 7168, "bf16", GPU, slow)
    assert t16 == pytest.approx(t100)
    untiled = dataclasses.replace(slow, group_row_tile=0)
    assert compute.grouped_gemm_time_s([16] * 64, 7168, 7168, "bf16", GPU, untiled) < t16 / 5
    even = compute.grouped_gemm_time_s([200] * 64, 7168, 7168, "bf16", GPU, slow)
    skewed = compute.grouped_gemm_time_s([300, 100] * 32, 7168, 7168, "bf16", GPU, slow)
    assert skewed > 1.2 * even


def test_weight_gradient_form_uses_its_own_curve_and_writes_empty_experts():
    slow = dataclasses.replace(BASE, grouped_gemm={**BASE.grouped_gemm, "bf16/wgrad": GemmCurve(0.35)})
    rows = [4096] * 8
    fwd = compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", GPU, slow)
    assert fwd == compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", GPU, BASE)
    wgrad = compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", GPU, slow, transposed=True)
    assert wgrad > 1.8 * compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", GPU, BASE, transposed=True)
    # an expert with no rows still writes its zero n x k gradient; in the forward form it runs nothing
    assert (compute.grouped_gemm_time_s([0] * 8, 4096, 7168, "bf16", GPU, BASE, transposed=True)
            > 8 * 4096 * 7168 * 2 / GPU.hbm_bytes_per_s)
    assert compute.grouped_gemm_time_s([0] * 8, 4096, 7168, "bf16", GPU, BASE) == pytest.approx(BASE.launch_s)


def test_roofline_blend_between_sum_and_max():
    assert compute.roofline_s(3.0, 4.0, 0.0) == 4.0
    assert compute.roofline_s(3.0, 4.0, 1.0) == pytest.approx(7.0)
    assert compute.roofline_s(3.0, 4.0, 2.0) == pytest.approx(5.0)
    assert 4.0 < compute.roofline_s(3.0, 4.0, 30.0) < 4.001
    assert compute.roofline_s(0.0, 0.0, 4.0) == 0.0


def test_gemm_streaming_efficiency_sets_the_memory_roofline_of_gemms_only():
    slow_stream = dataclasses.replace(BASE, gemm_memory_eff=0.45)
    # m = 16: far below the ridge, the GEMM is weight-streaming bound
    assert compute.gemm_time_s(16, 7168, 7168, "bf16", GPU, slow_stream) - BASE.launch_s == pytest.approx(
        2 * (compute.gemm_time_s(16, 7168, 7168, "bf16", GPU, BASE) - BASE.launch_s), rel=1e-6)
    assert compute.memory_time_s(1e9, GPU, slow_stream) == compute.memory_time_s(1e9, GPU, BASE)


def test_topk_uses_the_fitted_select_cost():
    fitted = dataclasses.replace(BASE, topk={"fixed_s": 9e-6, "row_s": 1.5e-9, "elem_s": 4.3e-11})
    t = compute.topk_time_s(65536, 256, 8, GPU, fitted)
    assert t == pytest.approx(9e-6 + 65536 * (1.5e-9 + 4.3e-11 * 256))
    # without a fit: one streaming kernel over the scores
    assert compute.topk_time_s(65536, 256, 8, GPU, BASE) == pytest.approx(
        compute.memory_time_s(65536 * 256 * 4 + 65536 * 8 * 12, GPU, BASE))


def test_new_profile_fields_round_trip():
    prof = dataclasses.replace(BASE, grouped_setup_s=7e-6, gemm_memory_eff=0.8, gemm_overlap_p=4.5,
                               topk={"fixed_s": 1e-5, "row_s": 1e-9, "elem_s": 1e-11},
                               sustained={"gemm": 0.96}, fp8_stack={"wgrad_1d1d_speed": 0.74, "cast_eff": 0.88},
                               grouped_gemm={**BASE.grouped_gemm, "bf16": GemmCurve(0.7, wave_tile=128)})
    assert profile_from_json(prof.to_json()) == prof


STACK = {"wgrad_1d1d_speed": 0.75, "cast_eff": 0.9, "cast_transpose_eff": 0.55, "requant_transpose_eff": 0.45}
PROJ = Op("o_proj", OpKind.GEMM, "attn", 4096, 7168, 16384)


def test_fp8_casts_per_phase_follow_the_v3_recipe():
    """fwd casts the input (rows x k); dgrad casts the output gradient (rows x n); wgrad re-casts
    both operands along the tokens; an expert GEMM fed by an FP8 dispatch casts nothing forward."""
    assert compute.fp8_cast_passes(PROJ, "fwd") == [("cast", 4096 * 16384)]
    assert compute.fp8_cast_passes(PROJ, "bwd_input") == [("cast", 4096 * 7168)]
    assert compute.fp8_cast_passes(PROJ, "bwd_weight") == [("cast_transpose", 4096 * 7168),
                                                          ("requant_transpose", 4096 * 16384)]
    experts = Op("experts_gate_up", OpKind.GROUPED_GEMM, "mlp", 512, 4096, 7168, groups=4, fp8_input=True)
    assert compute.fp8_cast_passes(experts, "fwd") == []
    assert compute.fp8_cast_passes(experts, "bwd_input") == [("cast", 4 * 512 * 4096)]


def test_fp8_casts_cost_their_bytes_at_the_measured_bandwidth_on_deepseeks_stack_only():
    prof = dataclasses.replace(BASE, fp8_stack=STACK)
    t = compute.fp8_cast_time_s(PROJ, "fwd", GPU, prof)
    assert t == pytest.approx(4096 * 16384 * (3 + 4 / 128) / (GPU.hbm_bytes_per_s * 0.9) + prof.launch_s)
    slower = dataclasses.replace(prof, fp8_stack={**STACK, "cast_eff": 0.45})
    assert compute.fp8_cast_time_s(PROJ, "fwd", GPU, slower) - prof.launch_s == pytest.approx(2 * (t - prof.launch_s))
    assert compute.fp8_cast_time_s(PROJ, "fwd", GPU, dataclasses.replace(prof, fp8_quant_fused=False)) == 0.0
    # BF16 GEMMs and the router are never cast
    bf16 = compute.op_time_s(PROJ, "fwd", "bf16", GPU, prof)
    assert bf16 == pytest.approx(compute.gemm_time_s(4096, 7168, 16384, "bf16", GPU, prof))


def test_the_router_runs_in_bf16_under_an_fp8_job():
    """V3 §3.3 keeps the gating network out of FP8: the router op is built pinned to BF16, and the
    cost function honours the pin (no cast kernels, the BF16 curve) whatever the job's precision."""
    prof = dataclasses.replace(BASE, fp8_stack=STACK)
    router = router_op(get_model("deepseek-v3"), 4096)
    assert router.kind == OpKind.GEMM and router.precision == "bf16"
    bf16 = compute.gemm_time_s(4096, 256, 7168, "bf16", GPU, prof)
    assert compute.op_time_s(router, "fwd", "fp8", GPU, prof) == bf16
    assert compute.op_time_s(dataclasses.replace(router, precision=None), "fwd", "fp8", GPU, prof) != bf16


def test_an_op_kind_given_as_a_string_becomes_an_op_kind_and_a_typo_raises():
    assert Op("x", "gemm", "mlp", 1, 1, 1).kind is OpKind.GEMM
    assert OpKind.GROUPED_GEMM == "grouped_gemm" and f"{OpKind.DISPATCH}_bwd" == "dispatch_bwd"
    with pytest.raises(ValueError, match="'gem' is not a valid OpKind"):
        Op("x", "gem", "mlp")


def test_fp8_weight_gradients_run_at_the_measured_1d1d_speed():
    slow = dataclasses.replace(BASE, gemm={"fp8": GemmCurve(0.2)}, gemm_overlap_p=0.0)   # compute-bound
    fast_w = compute.op_time_s(PROJ, "bwd_weight", "fp8", GPU, slow)
    slow_w = compute.op_time_s(PROJ, "bwd_weight", "fp8", GPU, dataclasses.replace(slow, fp8_stack={"wgrad_1d1d_speed": 0.5}))
    casts = compute.fp8_cast_time_s(PROJ, "bwd_weight", GPU, slow)
    assert slow_w - casts - slow.launch_s == pytest.approx(2 * (fast_w - casts - slow.launch_s))
    # the input gradient keeps the forward recipe
    fwd_prof = dataclasses.replace(slow, fp8_stack={"wgrad_1d1d_speed": 0.5})
    assert compute.op_time_s(PROJ, "bwd_input", "fp8", GPU, fwd_prof) == pytest.approx(
        compute.op_time_s(PROJ, "bwd_input", "fp8", GPU, slow))


def test_batched_gemm_runs_under_its_alignment_curve():
    """The absorbed MLA's scores of 256 sequences over 1,025 cached positions (batch 256 of
    128 x 1025 x 512): compute-bound, so the time scales as 1 / e_max of the alignment's curve; an
    alignment without a curve takes the next coarser measured one, a profile without any the dense
    curve."""
    prof = dataclasses.replace(BASE, batched_gemm={"bf16/scores/align8": BatchedCurve(0.6),
                                                   "bf16/scores/align1": BatchedCurve(0.15, fixed_s=3e-6)})
    flops = 2.0 * 256 * 128 * 1025 * 512
    t1 = compute.batched_gemm_time_s(256, 128, 1025, 512, 1, "scores", GPU, prof)
    assert t1 == pytest.approx(flops / (GPU.peak_flops_per_s("bf16") * 0.15) + BASE.launch_s + 3e-6)
    assert compute.batched_gemm_time_s(256, 128, 1026, 512, 2, "scores", GPU, prof) == pytest.approx(t1, rel=1e-3)
    # aligned, the same product is bound by its operands' bytes (the cache slices: 256 x 1032 x 512 x 2 B)
    t8 = compute.batched_gemm_time_s(256, 128, 1032, 512, 8, "scores", GPU, prof)
    bytes_ = 256 * (128 * 512 + 512 * 1032 + 128 * 1032) * 2
    assert t8 == pytest.approx(bytes_ / (GPU.hbm_bytes_per_s * BASE.memory_eff) + BASE.launch_s)
    assert t8 < t1 / 1.8
    slow = dataclasses.replace(BASE, gemm={"bf16": GemmCurve(0.05)})   # no batched curve: the dense one
    dense = compute.batched_gemm_time_s(256, 128, 1032, 512, 8, "scores", GPU, slow)
    assert dense == pytest.approx(2.0 * 256 * 128 * 1032 * 512 / (GPU.peak_flops_per_s("bf16") * 0.05) + BASE.launch_s)
    # the batched curves round-trip and scale with the GEMM curves
    eager = {"cublas_kernels": {"linear": {"1536x7168": {"1": 1}}}, "elementwise_eff": {"float": 0.4}}
    full = dataclasses.replace(prof, eager_decode=eager)
    assert profile_from_json(full.to_json()) == full
    assert full.scaled(compute=0.5).batched_gemm["bf16/scores/align1"].e_max == pytest.approx(0.075)
    assert full.scaled(compute=0.5).batched_gemm["bf16/scores/align1"].fixed_s == 3e-6


def test_chunked_gemms_are_the_chunk_shaped_gemms_torch_issues():
    """torch's micro-pipelined TP issues a fused GEMM as one GEMM of m/chunks rows per rank: costed
    at the chunk shape (the input gradient with n and k swapped, as op_time_s poses it)."""
    from twin.costs.profile import fitted_profile
    gpu, prof = get_gpu("h100"), fitted_profile("h100")
    op = Op("ffn_gate", OpKind.GEMM, "mlp", 32768, 6656, 16384)
    assert compute.chunked_gemm_time_s(op, "fwd", "fp8", 1, gpu, prof) == compute.gemm_time_s(32768, 6656, 16384, "fp8", gpu, prof)
    assert compute.chunked_gemm_time_s(op, "fwd", "fp8", 8, gpu, prof) == 8 * compute.gemm_time_s(4096, 6656, 16384, "fp8", gpu, prof)
    assert compute.chunked_gemm_time_s(op, "bwd_input", "bf16", 8, gpu, prof) == 8 * compute.gemm_time_s(4096, 16384, 6656, "bf16", gpu, prof)
    # smaller chunks never cost less than the whole GEMM on the curves (fixed costs, lower efficiency)
    assert compute.chunked_gemm_time_s(op, "fwd", "fp8", 8, gpu, prof) >= compute.chunked_gemm_time_s(op, "fwd", "fp8", 1, gpu, prof)
    with pytest.raises(ValueError, match="bwd_weight"):
        compute.chunked_gemm_time_s(op, "bwd_weight", "fp8", 8, gpu, prof)


def test_the_partials_reduction_runs_at_its_measured_bandwidth_else_the_streaming_one():
    from twin.costs.profile import fitted_profile
    gpu, prof = get_gpu("h100"), fitted_profile("h100")
    unmeasured = dataclasses.replace(prof, partials_reduce_eff={})
    out = 32768 * 16384 * 2
    assert compute.partials_reduce_time_s(out, 8, gpu, unmeasured) == pytest.approx(compute.memory_time_s(out * 1.125, gpu, prof))
    assert compute.partials_reduce_time_s(out, 8, gpu, prof) == pytest.approx(
        out * 1.125 / (gpu.hbm_bytes_per_s * prof.partials_reduce_eff_at(8)) + prof.launch_s)
