"""plan.kernels = "eager", plan.kv_repeat and cp_kind "torch_allgather": how torchtitan's stack runs
a dense GQA block (issue 14), on a tiny dense model: byte counts by hand and behaviour, not figures."""

import dataclasses

import pytest

from twin.core.errors import ScenarioError
from twin.costs import compute
from twin.costs.flops import EAGER_ELEMENTWISE, Op, OpKind, attention_ops, compiled_ops, eager_ops
from twin.costs.memory import kv_exchange_bytes_per_token
from twin.costs.profile import load_profile
from twin.core.specs import get_gpu, get_model
from twin.training import step as st

from tests.twin.training.test_step_parallel import scenario


def test_eager_ops_carry_the_counted_bytes_of_each_chain():
    norm = Op("attn_norm", OpKind.MEMORY, "attn", bytes=4.0 * 1000)      # 1000 BF16 elements read and written
    swiglu = Op("swiglu", OpKind.MEMORY, "mlp", bytes=6.0 * 1000)        # 1000 inner elements
    add = Op("residual_add", OpKind.MEMORY, "attn", bytes=6.0 * 1000)
    gemm = Op("o_proj", OpKind.GEMM, "attn", 64, 64, 64)
    e_norm, e_swiglu, e_add, e_gemm = eager_ops([norm, swiglu, add, gemm])
    # RMSNorm through FP32: 36 B per element forward (float 6, pow 8, mean 4, mul 8, type_as 6, x w 4), 96 backward
    assert (e_norm.bytes, e_norm.bwd_bytes, e_norm.launches) == (36_000, 96_000, 8)
    # silu then mul: 10 B per inner element forward, 18 backward
    assert e_swiglu.bytes == pytest.approx(10_000) and e_swiglu.bwd_bytes == pytest.approx(18_000)
    # one kernel either way, but an eager one (the measured eager_elementwise_eff); GEMMs untouched
    assert e_add == dataclasses.replace(add, eager=True) and e_gemm == gemm
    assert e_norm.eager and e_swiglu.eager and not norm.eager
    gpu, prof = get_gpu("h100"), load_profile("h100")
    for phase in ("fwd", "bwd_input"):
        assert compute.op_time_s(e_norm, phase, "bf16", gpu, prof) > compute.op_time_s(norm, phase, "bf16", gpu, prof)
    # the fused backward keeps its 1.5 x convention
    fused_bwd = compute.op_time_s(norm, "bwd_input", "bf16", gpu, prof)
    assert fused_bwd == pytest.approx(compute.memory_time_s(1.5 * norm.bytes, gpu, prof))
    # eager kernels stream at the measured eager_elementwise_eff (real/dense.py's eager blocks), below
    # the copy kernels' memory_eff
    assert 0 < prof.eager_elementwise_eff < prof.memory_eff
    assert compute.op_time_s(e_add, "fwd", "bf16", gpu, prof) == pytest.approx(
        add.bytes / (gpu.hbm_bytes_per_s * prof.eager_elementwise_eff) + prof.launch_s)
    assert set(EAGER_ELEMENTWISE) == {"norm", "rope", "swiglu", "cross_entropy"}


def test_an_eager_step_is_slower_by_its_elementwise_work_only():
    fused = st.simulate_step(scenario(pp=1, zero_stage=3), record_events=False)
    eager = st.simulate_step(scenario(pp=1, zero_stage=3, kernels="eager"), record_events=False)
    assert eager.step_time_s > fused.step_time_s
    assert eager.model_flops_per_step == fused.model_flops_per_step


def test_kv_repeat_copies_kv_to_the_query_heads_and_ships_them():
    m = get_model("llama3.1-8b")   # 32 query heads, 8 key/value heads of 128
    plain = attention_ops(m, 1, 1024)
    rep = attention_ops(m, 1, 1024, kv_repeat=True)
    extra = [op for op in rep if op not in plain]
    assert [op.name for op in extra] == ["repeat_kv"]
    assert extra[0].bytes == 2 * 1024 * (8 + 32) * 128 * 2     # K and V: read 8 heads, write 32, BF16
    assert kv_exchange_bytes_per_token(m, 1, kv_repeat=True) == 4 * kv_exchange_bytes_per_token(m, 1)
    assert kv_exchange_bytes_per_token(m, 8, kv_repeat=True) == 2 * 4 * 128 * 2   # TP 8: 4 query heads a rank


def test_kv_repeat_is_refused_for_mla():
    with pytest.raises(ScenarioError, match=r"plan\.kv_repeat.*not GQA"):
        from twin.core.scenario import from_dict
        from_dict({"name": "t", "model": {"name": "tiny"}, "cluster": {"gpu": "h100", "num_gpus": 8},
                   "plan": {"tp": 1, "pp": 1, "ep": 8, "kv_repeat": True, "schedule": "1f1b"},
                   "workload": {"seq_len": 256, "global_batch_seqs": 8}})


def _costs(sc):
    return st._costs_and_memory(sc, None, st.Perturb())[1]


def test_torch_allgather_exposes_the_gather_past_the_first_call_and_the_last_dkv_hand_over():
    sc = scenario(cp=4, pp=1, dp=1, cp_kind="torch_allgather", kv_repeat=True)
    costs = _costs(sc)
    gather = costs._collective_s("all_gather", costs.kv_bytes * 4, 4, costs.cp_same_node)
    hand = costs._collective_s("send_recv", costs.kv_bytes * 2, 2, costs.cp_same_node)
    # a core so short that nothing hides: everything is exposed, the hand-over cp times
    assert costs._torch_cp_exposed_s(0.0, False) == pytest.approx(gather)
    assert costs._torch_cp_exposed_s(0.0, True) == pytest.approx(gather + 4 * hand)
    # a core long enough to hide every transfer behind one call: only the last hand-over shows
    assert costs._torch_cp_exposed_s(1e3, False) == 0.0
    assert costs._torch_cp_exposed_s(1e3, True) == pytest.approx(hand)


def test_torch_allgather_merges_grow_with_the_calls():
    merges = [_costs(scenario(cp=cp, pp=1, dp=1, cp_kind="torch_allgather", seq_len=1024 * cp))._torch_cp_merge_s(b)
              for cp in (2, 4) for b in (False, True)]
    # the same tokens per rank, twice the calls: more merging forward and backward
    assert merges[2] > merges[0] and merges[3] > merges[1]
    r = st.simulate_step(scenario(cp=4, pp=1, dp=1, cp_kind="torch_allgather", kv_repeat=True), record_events=False)
    assert "cp_torch_kv_bwd" in r.op_time_s


def test_torch_allgather_inside_compiled_blocks_exposes_every_collective_and_fuses_the_merges(monkeypatch):
    """plan.kernels 'fused_blocks' (torchtitan compiles each block with fullgraph=True): the traced
    collectives are waited at issue, so however long the core, the all-gather and every hand-over
    are exposed; the merges cost the compiled factors, below the eager ones. (The backward's own
    all-gather charged: ADOPT_COMPILED_CP_ONE_GATHER off; the next test has it on. Each pass adds its
    ranks' meeting loss, compiled_schedule_wait_s: docs/notes/s27cp_rule.md.)"""
    from twin.costs import context_parallel
    from twin.costs.context_parallel import TORCH_CP_COMPILED_MERGE_TIME_FACTOR, TORCH_CP_MERGE_TIME_FACTOR
    monkeypatch.setattr(context_parallel, "ADOPT_COMPILED_CP_ONE_GATHER", False)
    eager = _costs(scenario(cp=4, pp=1, dp=1, cp_kind="torch_allgather", kv_repeat=True))
    comp = _costs(scenario(cp=4, pp=1, dp=1, cp_kind="torch_allgather", kv_repeat=True, kernels="fused_blocks"))
    gather = comp._collective_s("all_gather", comp.kv_bytes * 4, 4, comp.cp_same_node)
    hand = comp._collective_s("send_recv", comp.kv_bytes * 2, 2, comp.cp_same_node)
    wait_f, wait_b = (context_parallel.compiled_schedule_wait_s(4, 1e3, b) for b in (False, True))
    assert comp._torch_cp_exposed_s(1e3, False) == pytest.approx(gather + wait_f)
    assert comp._torch_cp_exposed_s(1e3, True) == pytest.approx(gather + 4 * hand + wait_b)
    assert eager._torch_cp_exposed_s(1e3, False) == 0.0
    for backward, phase in ((False, "fwd"), (True, "bwd")):
        ratio = TORCH_CP_COMPILED_MERGE_TIME_FACTOR[phase] / TORCH_CP_MERGE_TIME_FACTOR
        assert comp._torch_cp_merge_s(backward) == pytest.approx(eager._torch_cp_merge_s(backward) * ratio)


@pytest.mark.parametrize("adopt", [False, True])
def test_compiled_backward_reads_the_forwards_gather_when_adopted(monkeypatch, adopt):
    """ADOPT_COMPILED_CP_ONE_GATHER (docs/notes/s17cp_rule.md part C): compiled, the backward's
    K/V all-gather is CSE'd with the forward's, so the backward exposes its cp dK/dV hand-overs
    only; the forward keeps its gather, and eager CP is untouched either way."""
    from twin.costs import context_parallel
    monkeypatch.setattr(context_parallel, "ADOPT_COMPILED_CP_ONE_GATHER", adopt)
    comp = _costs(scenario(cp=4, pp=1, dp=1, cp_kind="torch_allgather", kv_repeat=True, kernels="fused_blocks"))
    eager = _costs(scenario(cp=4, pp=1, dp=1, cp_kind="torch_allgather", kv_repeat=True))
    gather = comp._collective_s("all_gather", comp.kv_bytes * 4, 4, comp.cp_same_node)
    hand = comp._collective_s("send_recv", comp.kv_bytes * 2, 2, comp.cp_same_node)
    assert gather > 0 and hand > 0
    wait_f, wait_b = (context_parallel.compiled_schedule_wait_s(4, 1e3, b) for b in (False, True))
    assert comp._torch_cp_exposed_s(1e3, False) == pytest.approx(gather + wait_f)
    assert comp._torch_cp_exposed_s(1e3, True) == pytest.approx((0.0 if adopt else gather) + 4 * hand + wait_b)
    assert eager._torch_cp_exposed_s(0.0, True) == pytest.approx(gather + 4 * hand)
    assert eager._torch_cp_exposed_s(1e3, True) == pytest.approx(hand)


def test_tensorwise_fp8_runs_the_measured_tensorwise_kernel_for_all_three_gemms():
    prof = load_profile("h100")
    tw = prof.with_fp8_recipe("tensorwise")
    assert prof.with_fp8_recipe("blockwise") is prof
    assert tw.gemm["fp8"] == prof.gemm["fp8-tensor"] and tw.gemm["bf16"] == prof.gemm["bf16"]
    assert "wgrad_1d1d_speed" in prof.fp8_stack and "wgrad_1d1d_speed" not in tw.fp8_stack
    assert tw.fp8_stack["cast_eff"] == prof.fp8_stack["cast_eff"]    # the casts stay
    gpu = get_gpu("h100")
    op = Op("ffn_down", OpKind.GEMM, "mlp", 8192, 4096, 14336)
    # the weight gradient loses the 1x128 x 1x128 recipe's slowdown (0.74 measured)
    assert compute.op_time_s(op, "bwd_weight", "fp8", gpu, tw) < compute.op_time_s(op, "bwd_weight", "fp8", gpu, prof)
    with pytest.raises(ValueError, match="FP8 recipe 'mx'"):
        prof.with_fp8_recipe("mx")


def test_an_fp8_recipe_without_fp8_gemms_is_refused():
    with pytest.raises(ScenarioError, match=r"plan\.fp8_recipe.*no FP8 GEMMs"):
        scenario(pp=1, fp8_recipe="tensorwise")    # the helper's GEMMs are BF16
    r = st.simulate_step(scenario(pp=1, gemm_precision="fp8", fp8_recipe="tensorwise"), record_events=False)
    assert r.step_time_s > 0


def test_torchao_float8_all_gathers_tp_inputs_in_fp8_and_reduce_scatters_in_bf16():
    bf16 = _costs(scenario(tp=4, pp=1, sequence_parallel=True, gemm_precision="fp8"))
    tw = _costs(scenario(tp=4, pp=1, sequence_parallel=True, gemm_precision="fp8", fp8_recipe="tensorwise"))
    assert tw._tp_collective_bytes("all_gather") == bf16._tp_collective_bytes("all_gather") / 2
    assert tw._tp_collective_bytes("reduce_scatter") == bf16._tp_collective_bytes("reduce_scatter") == bf16.tp_bytes


def test_fused_blocks_compile_the_blocks_and_leave_the_head_eager():
    """plan.kernels 'fused_blocks' (torchtitan's apply_compile: torch.compile per TransformerBlock):
    the blocks' ops are the fused ones, marked as run inside a compiled block (their memory ops and GEMMs:
    compute.ADOPT_COMPILED_ELEMENTWISE_EFF's rate, docs/notes/s31pub_rule.md), the final norm and the FP32 loss
    those of eager."""
    fused, blocks, eager = (_costs(scenario(pp=1, kernels=k)) for k in ("fused", "fused_blocks", "eager"))
    assert compiled_ops(list(fused.blocks[0].ops)) == list(blocks.blocks[0].ops)
    assert blocks.blocks[0].ops != fused.blocks[0].ops != eager.blocks[0].ops
    assert not any(op.compiled for op in fused.blocks[0].ops + eager.blocks[0].ops + blocks.extra_last)
    assert blocks.extra_last == eager.extra_last != fused.extra_last
    assert [op.launches for op in blocks.extra_last if op.name == "final_norm"] == [EAGER_ELEMENTWISE["norm"][2]]


def test_megatron_unfused_loss_costs_its_fp32_chain():
    """plan.loss_kernel 'megatron_unfused': Megatron's default vocab-parallel cross-entropy, 38 B
    per logit forward (FP32 copy, max, subtract, exp, sum, divide) and 14 backward, where the fused
    kernel moves 12 and 18."""
    fused, megatron = (_costs(scenario(pp=1, loss_kernel=k)) for k in ("as_kernels", "megatron_unfused"))
    ce = {c: next(op for op in costs.extra_last if op.name == "cross_entropy") for c, costs in
          (("fused", fused), ("megatron", megatron))}
    assert ce["megatron"].bytes == pytest.approx(ce["fused"].bytes * 38 / 12)
    assert ce["megatron"].bwd_bytes == pytest.approx(ce["fused"].bytes * 14 / 12)
    assert (ce["megatron"].launches, ce["megatron"].bwd_launches) == (6, 2)
    assert megatron.blocks[0].ops == fused.blocks[0].ops
