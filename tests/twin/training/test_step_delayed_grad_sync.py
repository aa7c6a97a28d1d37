"""Megatron-LM core_r0.8.0's default --delay-grad-reduce under its interleaved schedule
(twin.training.step.ADOPT_MEGATRON_DELAYED_GRAD_SYNC, docs/notes/s15mlm_rule.md change D): every
chunk's buckets launched together after a backward, chunk c of pipeline rank r after the rank's
backward number last(c) + r, none beside a backward. Both settings of the switch."""

import pytest

from twin.core.scenario import from_dict
from twin.planning.screen import screen
from twin.training import step as step_module
from twin.training.results import Perturb
from twin.training.step import (_prepare, chunk_params, dp_reduce_after_s, dp_tail_s, rank_params, megatron_delays_grad_sync,
                                megatron_grad_prep_s, simulate_step, step_time_lower_bound_s)

DENSE = {"name": "tiny-dense", "num_layers": 8, "hidden_size": 1024, "vocab_size": 1024, "num_heads": 16,
         "attention": "gqa", "num_kv_heads": 8, "head_dim": 64, "intermediate_size": 4096, "num_dense_layers": 8}


def scenario(dp=8, **plan):
    p = {"tp": 1, "pp": 2, "ep": 1, "schedule": "interleaved-1f1b", "virtual_stages": 2, "gemm_precision": "bf16",
         "recompute": "selective", "zero_stage": 1, "grad_reduce_dtype": "fp32", "overlap_grad_reduce": True,
         "grad_buckets": "megatron", **plan}
    gpus = p["tp"] * p["pp"] * dp
    return from_dict({"name": "t", "model": DENSE, "cluster": {"gpu": "h100", "num_gpus": gpus}, "plan": p,
                      "workload": {"seq_len": 4096, "global_batch_seqs": 8 * dp}})


@pytest.fixture
def adopt(monkeypatch):
    """Sets the switch; the step cache keeps costs built under the other setting: cleared both ways."""
    def set_to(value: bool):
        monkeypatch.setattr(step_module, "ADOPT_MEGATRON_DELAYED_GRAD_SYNC", value)
        step_module._PREPARED.clear()
    yield set_to
    step_module._PREPARED.clear()


def _reduce_after(sc, rank):
    schedule, costs, profile, mems, _, _ = _prepare(sc, None, Perturb(), True)
    rs = dp_tail_s(sc, mems[rank], rank_params(sc, costs)[rank], sc.gpu, profile, 1.0)[0]
    params = [chunk_params(sc, costs, rank, schedule.stage_of(rank, c)) for c in range(schedule.num_chunks)]
    preps = [megatron_grad_prep_s(sc, n, profile, rank == 0 and c == 0) for c, n in enumerate(params)]
    return dp_reduce_after_s(sc, costs, schedule, rank, rs), rs, params, preps


def test_only_megatrons_interleaved_overlapped_buckets_are_delayed(adopt):
    adopt(True)
    assert megatron_delays_grad_sync(scenario())
    assert not megatron_delays_grad_sync(scenario(schedule="1f1b", virtual_stages=1))   # rank 0 keeps its hooks
    assert not megatron_delays_grad_sync(scenario(grad_buckets="every_chunk"))
    adopt(False)
    assert not megatron_delays_grad_sync(scenario())


def test_rank_0s_first_chunk_is_reduced_after_its_last_backward_not_beside_it(adopt):
    sc = scenario()
    adopt(False)
    beside, *_ = _reduce_after(sc, 0)
    adopt(True)
    after, rs, params, preps = _reduce_after(sc, 0)
    # the first chunk is the last reduced: launched after the rank's last compute, both chunks' buckets
    # prepared on the compute stream first; the second chunk's reduce-scatter, launched a chunk's
    # backwards earlier, is done by then on these fast links
    share0 = rs * params[0] / sum(params)
    assert after == pytest.approx(preps[0] + preps[1] + share0, rel=1e-12)
    assert after > beside


def test_a_later_rank_launches_each_chunk_its_rank_number_of_backwards_late(adopt):
    # slow links: the later chunk's reduce-scatter is still running when the last one starts, so when
    # it was launched shows in the tail
    slow = scenario(dp=64)
    adopt(False)
    now, *_ = _reduce_after(slow, 1)
    adopt(True)
    delayed, rs, params, preps = _reduce_after(slow, 1)
    assert delayed >= now
    # never less than the first chunk's, launched after the rank's last compute (last(0) + 1 is past it)
    assert delayed >= preps[0] + rs * params[0] / sum(params) - 1e-12


def test_the_step_screen_and_bound_under_both_settings(adopt):
    sc = scenario()
    plain = scenario(schedule="1f1b", virtual_stages=1)
    adopt(False)
    off, plain_off = simulate_step(sc, record_events=False), simulate_step(plain, record_events=False)
    adopt(True)
    on, plain_on = simulate_step(sc, record_events=False), simulate_step(plain, record_events=False)
    assert on.step_time_s > off.step_time_s
    assert plain_on.step_time_s == plain_off.step_time_s   # the non-interleaved schedule keeps rank 0's hooks
    assert step_time_lower_bound_s(sc) <= on.step_time_s
    # the screen drops rank 0's overlap credit too (its tail: the first chunk's share after the preps)
    # and moves with the simulator
    adopt(False)
    screen_off = screen(sc)
    adopt(True)
    screen_on = screen(sc)
    assert screen_on.fits
    assert screen_on.step_time_s - screen_off.step_time_s == pytest.approx(on.step_time_s - off.step_time_s, rel=0.1)
