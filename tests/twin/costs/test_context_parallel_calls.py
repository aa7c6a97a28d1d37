"""Llama 3's all-gather context parallelism (plan.cp_kind 'allgather'): each rank's two query chunks
attend the gathered keys before them (twin.costs.context_parallel.allgather_attention_calls)."""

import dataclasses

import pytest

from twin.costs import compute
from twin.costs.context_parallel import allgather_attention_calls
from twin.costs.flops import Op, OpKind, attention_bwd_flops, attention_flops, attention_pairs
from twin.costs.profile import load_profile
from twin.core.specs import get_gpu
from tests.twin.training.test_step_parallel import scenario, step


def _core(seq_len, batch=1):
    return Op("attn_core", OpKind.ATTENTION, "attn", batch=batch, seq_len=seq_len, heads=16, qk_dim=128, v_dim=128,
              precision="bf16")


def test_pairs_of_a_chunk_over_the_keys_before_it():
    # 4 queries, the last 4 of 10 positions, causal: 4 x 10 less the half square the mask hides,
    # counted as the twin counts a causal square (s^2 / 2, the continuum of s(s+1)/2): 40 - 8 = 32
    assert attention_pairs(4, True, 10) == 32
    assert attention_pairs(4, False, 10) == 40
    assert attention_pairs(8, True) == attention_pairs(8, True, 8) == 32       # the causal square
    assert attention_flops(2, 4, 3, 5, 7, True, 10) == 2.0 * 2 * 3 * 32 * (5 + 7)
    assert attention_bwd_flops(2, 4, 3, 5, 7, True, 10) == 2.5 * attention_flops(2, 4, 3, 5, 7, True, 10)


def test_allgather_calls_hold_the_rank_s_share_of_the_causal_pairs():
    # S = 64 over cp = 4: chunks of c = 8, rank 3 holds chunks 3 and 4 (keys 32 and 40): pairs
    # 8 x 32 - 32 + 8 x 40 - 32 = 512 = S^2 / 2 / cp, what every rank of a load-balanced CP attends
    core = _core(seq_len=64 // 4)
    calls = allgather_attention_calls(core, 4)
    assert [(c.seq_len, c.kv_len, c.causal) for c in calls] == [(8, 32, True), (8, 40, True)]
    assert sum(c.flops for c in calls) == pytest.approx(dataclasses.replace(core, batch=4).flops) == \
        attention_flops(1, 64, 16, 128, 128, True) / 4


def test_the_returned_rank_is_the_slowest_under_the_curve():
    prof, gpu = load_profile("h100"), get_gpu("h100")
    cp, c = 8, 1024
    def rank_s(i, d):   # rank i holds chunks i and 2cp-1-i, each over the keys before its end
        return sum(compute.attention_time_s(dataclasses.replace(_core(2 * c), seq_len=c, kv_len=(j + 1) * c), d, gpu, prof)
                   for j in (i, 2 * cp - 1 - i))
    for d in ("fwd", "bwd"):
        times = [rank_s(i, d) for i in range(cp)]
        mine = sum(compute.attention_time_s(op, d, gpu, prof) for op in allgather_attention_calls(_core(2 * c), cp))
        assert mine == pytest.approx(max(times)) and max(times) == times[cp - 1] > times[0]


def test_a_call_over_long_keys_runs_at_the_curve_s_efficiency_at_its_key_length():
    prof, gpu = load_profile("h100"), get_gpu("h100")
    short, long = _core(4096), dataclasses.replace(_core(4096), kv_len=65536)
    for d in ("fwd", "bwd"):
        eff = prof.attention[d].eff
        per_flop_short = (compute.attention_time_s(short, d, gpu, prof) - prof.launch_s) / short.flops
        per_flop_long = (compute.attention_time_s(long, d, gpu, prof) - prof.launch_s) / long.flops
        assert per_flop_short / per_flop_long == pytest.approx(eff(65536) / eff(4096))


def test_allgather_cp_step_attends_long_keys_faster_than_the_causal_square_of_its_share():
    # the same FLOPs as cp causal squares of seq_len / cp, at the curve's efficiency at 16K and 20K keys
    gather = step(scenario(cp=4, dp=1, seq_len=32768, cp_kind="allgather"))
    ring = step(scenario(cp=4, dp=1, seq_len=32768, cp_kind="ring"))
    assert gather.model_flops_per_step == ring.model_flops_per_step
    assert gather.op_time_s["attn_bwd_input"] < ring.op_time_s["attn_bwd_input"]
