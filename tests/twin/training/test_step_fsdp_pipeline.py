"""FSDP2 (ZeRO-3) under pipeline parallelism as torch.distributed.pipelining ran it in late 2024:
each stage's gradients are reduce-scattered only once the stage's last backward is done (its
FSDP post-backward called by hand for the whole stage), on the reduce-scatter stream, beside
nothing of that stage; the input gradients sent upstream do not wait for them. Tiny dense model;
formulas, not figures."""

import pytest

from twin.core.scenario import from_dict
from twin.training.results import Perturb
from twin.training.step import (_FsdpUnit, _prepare, fsdp_post_backward_s, fsdp_post_backward_tail_s,
                                simulate_step, step_time_lower_bound_s)

DENSE = {"name": "tiny-dense", "num_layers": 8, "hidden_size": 1024, "vocab_size": 1024, "num_heads": 16,
         "attention": "gqa", "num_kv_heads": 8, "head_dim": 64, "intermediate_size": 4096, "num_dense_layers": 8}


def scenario(pp=2, dp=2, **plan):
    p = {"tp": 1, "pp": pp, "ep": 1, "schedule": "1f1b", "gemm_precision": "bf16", "recompute": "selective",
         "zero_stage": 3, **plan}
    return from_dict({"name": "t", "model": DENSE, "cluster": {"gpu": "h100", "num_gpus": pp * dp}, "plan": p,
                      "workload": {"seq_len": 4096, "global_batch_seqs": 16}})


def test_post_backward_packs_first_then_reduce_scatters_in_turn():
    # copy-ins 1, 2, 0.5 s and reduce-scatters 3, 1, 2 s: the first copy-in alone on the compute
    # stream, then each reduce-scatter, the next copy-in beside it: max(3, 2) + max(1, 0.5) + 2 = 6
    units = [_FsdpUnit(rs_s=3.0, copy_in_s=1.0), _FsdpUnit(rs_s=1.0, copy_in_s=2.0), _FsdpUnit(rs_s=2.0, copy_in_s=0.5)]
    assert fsdp_post_backward_s(units) == (1.0, 6.0)
    assert fsdp_post_backward_s([_FsdpUnit()]) == (0.0, 0.0)


def test_one_chunk_per_rank_exposes_the_whole_stage_reduction_after_its_last_compute():
    sc = scenario(dp=4)
    r = simulate_step(sc, perturb=Perturb(link_bw_scale=0.1))   # slow links: the reduction shows
    schedule, costs, *_ = _prepare(sc, None, Perturb(link_bw_scale=0.1), True)
    for rank in range(2):
        copy_in_s, comm_s = costs.post_backward_s(rank)
        assert comm_s > 0
        assert fsdp_post_backward_tail_s(costs, schedule, rank) == pytest.approx(copy_in_s + comm_s, rel=1e-12)
        # no reduce-scatter left in any op's chains: the input gradients go upstream without waiting
        names = {t.name for op in schedule.programs[rank] for chain in costs.chains(rank, op) for t in chain}
        assert "fsdp_reduce_scatter" not in names
    tails = [fsdp_post_backward_tail_s(costs, schedule, k) for k in range(2)]
    ends = [r.pipeline.last_compute_end_s[k] + tails[k] for k in range(2)]
    assert r.step_time_s == pytest.approx(max(max(ends), r.pipeline.makespan_s) + r.op_time_s["optimizer"], rel=1e-12)
    events = sorted((e for e in r.tail_events if e.name == "fsdp_reduce_scatter"), key=lambda e: e.rank)
    assert [e.rank for e in events] == [0, 1]
    assert [e.end_s - e.start_s for e in events] == pytest.approx(tails)
    assert [e.start_s for e in events] == pytest.approx(list(r.pipeline.last_compute_end_s))


def test_an_earlier_chunk_reduces_beside_the_later_ones():
    # interleaved 1F1B, two chunks per rank: the chunk whose last backward comes first reduces while
    # the rank still computes the other; only the last chunk's reduction (and what the first's
    # leaves over) stays exposed
    sc = scenario(dp=4, schedule="interleaved-1f1b", virtual_stages=2)
    schedule, costs, *_ = _prepare(sc, None, Perturb(), True)
    for rank in range(2):
        last = schedule.programs[rank][-1]
        last_stage = schedule.stage_of(rank, last.backward_part[1])
        other = schedule.stage_of(rank, 1 - last.backward_part[1])
        tail = fsdp_post_backward_tail_s(costs, schedule, rank)
        assert tail >= sum(costs.post_backward_s(last_stage)) * (1 - 1e-12)
        assert tail < sum(costs.post_backward_s(last_stage)) + sum(costs.post_backward_s(other))
    assert step_time_lower_bound_s(sc) <= simulate_step(sc, record_events=False).step_time_s


def test_without_pipeline_the_reduce_scatters_stay_beside_the_backward():
    sc = scenario(pp=1, dp=4)
    schedule, costs, *_ = _prepare(sc, None, Perturb(), True)
    assert fsdp_post_backward_tail_s(costs, schedule, 0) == 0.0
    assert "fsdp_reduce_scatter" in simulate_step(sc, record_events=False).op_time_s


def test_the_screen_adds_the_busiest_tail_as_the_simulator_ends_on_it(monkeypatch):
    import twin.planning.screen as screen_mod
    sc = scenario(dp=4)
    schedule, costs, *_ = _prepare(sc, None, Perturb(), True)
    tail = max(fsdp_post_backward_tail_s(costs, schedule, r) for r in range(2))
    with_tail = screen_mod.screen(sc).step_time_s
    monkeypatch.setattr(screen_mod, "fsdp_post_backward_tail_s", lambda *a: 0.0)
    assert tail > 0 and with_tail - screen_mod.screen(sc).step_time_s == pytest.approx(tail, rel=1e-9)
