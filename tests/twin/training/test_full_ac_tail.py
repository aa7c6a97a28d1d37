"""plan.recompute 'full' inside torch.compile'd blocks (plan.kernels 'fused_blocks'): the compiled
backward graph re-runs only what the gradients read, so not the block's tail from its last GEMM on
nor the TP collective after it (twin.training.step.StepCosts._full_recompute_tasks;
docs/notes/s14ac_rule.md). Both settings of ADOPT_COMPILED_FULL_AC_TAIL are exercised."""

import pytest

from twin.training import step as step_mod
from tests.twin.training.test_step_parallel import scenario, step


def _switch(monkeypatch, adopt: bool):
    monkeypatch.setattr(step_mod, "ADOPT_COMPILED_FULL_AC_TAIL", adopt)
    # these compare the recompute with the whole forward, head included: under the setting that
    # re-runs the head too (ADOPT_AC_BLOCKS_ONLY off; its own tests below)
    monkeypatch.setattr(step_mod, "ADOPT_AC_BLOCKS_ONLY", False)
    monkeypatch.setattr(step_mod, "_PREPARED", {})   # costs built under the other setting are kept there


def _run(monkeypatch, adopt: bool, **plan):
    _switch(monkeypatch, adopt)
    return step(scenario(recompute="full", **plan))


def test_compiled_full_ac_leaves_out_the_down_projection_and_its_collective(monkeypatch):
    plan = dict(tp=4, sequence_parallel=True, kernels="fused_blocks")
    whole, tail_cut = _run(monkeypatch, False, **plan), _run(monkeypatch, True, **plan)
    # without the switch the recompute is the forward again, collectives included
    assert whole.op_time_s["recompute_mlp_fwd"] == pytest.approx(whole.op_time_s["mlp_fwd"])
    assert whole.op_time_s["recompute_tp_reduce_scatter"] == pytest.approx(whole.op_time_s["tp_reduce_scatter"])
    # with it: less FFN compute re-run, the attention part re-run whole, and of the two
    # reduce-scatters of a block (after wo, after w2) only wo's again
    assert 0 < tail_cut.op_time_s["recompute_mlp_fwd"] < tail_cut.op_time_s["mlp_fwd"]
    assert tail_cut.op_time_s["recompute_attn_fwd"] == pytest.approx(tail_cut.op_time_s["attn_fwd"])
    assert tail_cut.op_time_s["recompute_tp_reduce_scatter"] == pytest.approx(
        tail_cut.op_time_s["tp_reduce_scatter"] / 2)
    assert tail_cut.op_time_s["recompute_tp_all_gather"] == pytest.approx(tail_cut.op_time_s["tp_all_gather"])
    assert tail_cut.step_time_s < whole.step_time_s
    # the forward and the backward themselves are untouched
    for name in ("mlp_fwd", "attn_fwd", "mlp_bwd_input", "attn_bwd_input"):
        assert tail_cut.op_time_s[name] == pytest.approx(whole.op_time_s[name])


def test_the_cut_is_the_down_projection_gemm_and_what_follows(monkeypatch):
    # one FFN: gate/up GEMM (2 x inner wide) and down GEMM (as many FLOPs as one half of gate/up);
    # the cut removes at least the down GEMM's share (a third of the FFN's GEMM FLOPs) but not more
    # than half of the FFN part (norm, gate/up and SwiGLU stay)
    r = _run(monkeypatch, True, tp=1, kernels="fused_blocks")
    removed_frac = 1 - r.op_time_s["recompute_mlp_fwd"] / r.op_time_s["mlp_fwd"]
    assert 0.2 < removed_frac < 0.5


@pytest.mark.parametrize("kernels", ["fused", "eager"])
def test_other_kernels_recompute_the_whole_forward(monkeypatch, kernels):
    r = _run(monkeypatch, True, tp=4, sequence_parallel=True, kernels=kernels)
    for name in ("mlp_fwd", "attn_fwd", "tp_reduce_scatter", "tp_all_gather"):
        assert r.op_time_s["recompute_" + name] == pytest.approx(r.op_time_s[name])


def test_selective_recompute_is_untouched(monkeypatch):
    times = []
    for adopt in (False, True):
        _switch(monkeypatch, adopt)
        times.append(step(scenario(recompute="selective_op", kernels="fused_blocks")).step_time_s)
    assert times[0] == times[1]


def _blocks_only(monkeypatch, adopt: bool):
    monkeypatch.setattr(step_mod, "ADOPT_AC_BLOCKS_ONLY", adopt)
    monkeypatch.setattr(step_mod, "_PREPARED", {})


@pytest.mark.parametrize("kernels", ["fused_blocks", "eager"])
def test_full_ac_recomputes_the_blocks_only(monkeypatch, kernels):
    """torchtitan's full AC wraps each TransformerBlock only (parallelize_llama.apply_ac @ 9dec370;
    docs/notes/s15tt_rule.md part E): the embedding, the final norm, the output head and the loss run
    once a micro-batch. With ADOPT_AC_BLOCKS_ONLY the recompute leaves them out, by exactly their
    forward's time; without it they are re-run with the blocks."""
    times = {}
    sc = scenario(recompute="full", kernels=kernels)
    for adopt in (False, True):
        _blocks_only(monkeypatch, adopt)
        times[adopt] = step(sc)
    with_head, blocks_only = times[False], times[True]
    # the head sits on the last stage, the busiest rank here: its recompute shrinks by m head forwards
    removed = sum(with_head.op_time_s[k] - blocks_only.op_time_s[k] for k in with_head.op_time_s
                  if k.startswith("recompute_"))
    assert removed > 0
    # the step shortens, by no more than the head forwards a 1F1B critical path crosses (m + p - 1)
    m, p = with_head.num_microbatches, sc.plan.pp
    shortening = with_head.step_time_s - blocks_only.step_time_s
    assert 0 < shortening <= removed * (m + p - 1) / m + 1e-12
    # the forward itself (the head included) is untouched
    for name in ("mlp_fwd", "attn_fwd"):
        assert blocks_only.op_time_s[name] == pytest.approx(with_head.op_time_s[name])
    # what is left recomputed is the blocks' forward: less than the whole forward
    assert blocks_only.op_time_s["recompute_mlp_fwd"] < blocks_only.op_time_s["mlp_fwd"]


def test_blocks_only_keeps_the_head_out_of_the_op_policy_too(monkeypatch):
    # s26mem: torchtitan's per-op policy is applied by the same apply_ac, to the blocks alone: the
    # eager final norm and FP32 loss after the compiled blocks are no longer re-run in the backward
    times = []
    for adopt in (False, True):
        _blocks_only(monkeypatch, adopt)
        times.append(step(scenario(recompute="selective_op", kernels="fused_blocks")).step_time_s)
    assert times[1] < times[0]
