"""Megatron-LM's parameter all-gather after the distributed optimizer's step (plan.param_gather_kind
'megatron_chained', core_r0.8.0 --overlap-param-gather): buckets taken from the model's end, each
gathered once the forward reaches the one before; later pipeline ranks gather one bucket from the
step's start. Tiny dense model; formulas, not figures."""

import dataclasses

import pytest

from twin.core.errors import ScenarioError
from twin.core.scenario import from_dict
from twin.costs import comm, compute
from twin.costs.memory import WEIGHT_BYTES
from twin.planning.screen import screen
from twin.training.results import Perturb
from twin.sim.pipeline import simulate_pipeline
from twin.training.step import (_param_gather_s, _prepare, chained_gather_exposed_s, first_rank_gather_buckets,
                                grad_buffer_zero_s, later_chunk_gathers, megatron_buckets, param_gather_release_s,
                                simulate_step, step_time_lower_bound_s)

DENSE = {"name": "tiny-dense", "num_layers": 4, "hidden_size": 1024, "vocab_size": 32768, "num_heads": 16,
         "attention": "gqa", "num_kv_heads": 8, "head_dim": 64, "intermediate_size": 4096, "num_dense_layers": 4}
SLOW = Perturb(link_bw_scale=0.02)   # slow links: the gathers outlast the computation beside them


def scenario(dp=4, **plan):
    p = {"tp": 1, "pp": 1, "ep": 1, "schedule": "1f1b", "gemm_precision": "bf16", "recompute": "selective",
         "zero_stage": 1, "grad_reduce_dtype": "fp32", "overlap_grad_reduce": True,
         "param_gather_kind": "megatron_chained", **plan}
    gpus = p["tp"] * p["pp"] * dp
    return from_dict({"name": "t", "model": DENSE, "cluster": {"gpu": "h100", "num_gpus": gpus}, "plan": p,
                      "workload": {"seq_len": 2048, "global_batch_seqs": 8 * dp}})


def test_buckets_fill_from_the_model_end_and_never_split_a_parameter():
    # forward order a, b, c, d, e: reversed e (30) + d (20) = 50 >= 40 closes; c (50) closes; b + a left
    assert megatron_buckets([10.0, 5.0, 50.0, 20.0, 30.0], 40.0) == [(0, 15.0), (2, 50.0), (3, 50.0)]
    assert megatron_buckets([10.0, 0.0, 20.0], None) == [(0, 30.0)]   # no bucket size: one bucket


def test_each_gather_waits_for_the_forward_to_reach_the_bucket_before():
    # g0 exposed whole; g1 beside the 1 s of forward before bucket 1 (2 s exposed); g2 beside 4 s (hidden)
    assert chained_gather_exposed_s([(0.0, 2.0), (1.0, 3.0), (5.0, 1.0)]) == pytest.approx(2.0 + 2.0)
    assert chained_gather_exposed_s([(0.0, 0.5), (3.0, 1.0)]) == pytest.approx(0.5)


def test_one_stage_step_grows_by_the_chains_exposed_time():
    chained, ideal = scenario(), scenario(param_gather_kind="ideal")
    slow, fast = simulate_step(chained, perturb=SLOW), simulate_step(ideal, perturb=SLOW)
    schedule, costs, _, mems, _, _ = _prepare(chained, None, SLOW, True)
    (wait,) = param_gather_release_s(chained, costs, schedule, mems, SLOW.link_bw_scale)
    whole = comm.ring_collective_time_s(mems[0]["weights"], 4, chained.gpu, chained.dp * 1 <= 8, SLOW.link_bw_scale, 4)
    assert 0 < wait < whole   # part of the gather hides behind the forward, the first bucket does not
    assert slow.step_time_s == pytest.approx(fast.step_time_s + wait, rel=1e-9)
    assert slow.op_time_s["dp_param_gather_wait"] == pytest.approx(wait)
    assert step_time_lower_bound_s(chained, perturb=SLOW) <= slow.step_time_s
    # on the real links the 4 small blocks' gathers hide behind their forwards but the first bucket's
    assert simulate_step(chained).step_time_s > simulate_step(ideal).step_time_s


def test_later_pipeline_ranks_gather_their_whole_stage_from_the_step_start():
    sc = scenario(pp=2, dp=8)
    schedule, costs, _, mems, _, _ = _prepare(sc, None, SLOW, True)
    release = param_gather_release_s(sc, costs, schedule, mems, SLOW.link_bw_scale)
    # rank 1: one bucket (Megatron turns bucketing off past pipeline rank 0), BF16, over DP 8: inside the
    # stage's node (PP outermost: a stage's 8 ranks are one node; twin.costs.layout, s27egrad2)
    one = comm.ring_collective_time_s(mems[1]["weights"] / WEIGHT_BYTES * 2, 8, sc.gpu, True, SLOW.link_bw_scale, 8)
    assert release[1] == pytest.approx(one, rel=1e-12)
    r = simulate_step(sc, perturb=SLOW)
    base = simulate_step(dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, param_gather_kind="ideal")), perturb=SLOW)
    assert 0 < release[0] <= release[1] and r.step_time_s > base.step_time_s   # rank 0 may gather part of its stage beside its forward
    # rank 1 cannot start its first forward before its gather is done: its ops come after it
    assert r.step_time_s >= release[1] + sum(r.pipeline.busy_s[1:2])
    assert {e.rank for e in r.tail_events if e.name == "dp_param_all_gather"} == {0, 1}
    assert step_time_lower_bound_s(sc, perturb=SLOW) <= r.step_time_s


def test_the_screen_charges_the_wait_the_simulator_does():
    sc, ideal = scenario(dp=8), scenario(dp=8, param_gather_kind="ideal")
    schedule, costs, _, mems, _, _ = _prepare(sc, None, Perturb(), True)
    (wait,) = param_gather_release_s(sc, costs, schedule, mems)
    assert screen(sc).step_time_s - screen(ideal).step_time_s == pytest.approx(wait, rel=1e-6)


@pytest.mark.parametrize("plan,needs", [({"zero_stage": 3, "grad_reduce_dtype": "bf16", "overlap_grad_reduce": False}, "zero_stage"),
                                        ({"overlap_grad_reduce": False}, "overlap_grad_reduce"),
                                        ({"overlap_dp_comm": False}, "overlap_dp_comm")])
def test_refused_where_megatron_has_no_such_gather(plan, needs):
    with pytest.raises(ScenarioError, match=rf"plan\.param_gather_kind.*{needs}"):
        scenario(**plan)


def test_the_all_gather_after_the_step_moves_bf16_parameters_whatever_the_gradient_dtype():
    fp32 = scenario(param_gather_kind="ideal", overlap_dp_comm=False)
    bf16 = scenario(param_gather_kind="ideal", overlap_dp_comm=False, grad_reduce_dtype="bf16")
    assert simulate_step(fp32).op_time_s["dp_all_gather"] == pytest.approx(simulate_step(bf16).op_time_s["dp_all_gather"])


def test_interleaved_ranks_wait_for_their_first_chunk_only():
    # Megatron buckets neither later chunks nor later ranks; a later chunk's gather is launched during
    # the chunk before's first forward (later_chunk_gathers): at the step's start a later rank waits for
    # its first chunk's share only
    sc = scenario(pp=2, dp=8, schedule="interleaved-1f1b", virtual_stages=2)
    schedule, costs, _, mems, _, _ = _prepare(sc, None, SLOW, True)
    release = param_gather_release_s(sc, costs, schedule, mems, SLOW.link_bw_scale)
    whole = comm.ring_collective_time_s(mems[1]["weights"], 8, sc.gpu, False, SLOW.link_bw_scale, 8)
    assert 0 < release[1] < whole
    assert step_time_lower_bound_s(sc, perturb=SLOW) <= simulate_step(sc, perturb=SLOW).step_time_s


def _first_forward_starts(pipe, rank: int) -> dict[int, float]:
    """chunk -> start of the rank's first forward of it, from the op spans ("F3.1&B0.0" labels)."""
    out: dict[int, float] = {}
    for r, label, start, _ in pipe.op_spans:
        head = label.split("&")[0]
        if r == rank and head.startswith("F"):
            chunk = int(head[1:].split(".")[1])
            out[chunk] = min(out.get(chunk, start), start)
    return out


def test_a_later_chunk_waits_for_its_gather_launched_in_the_chunk_before():
    # core_r0.8.0: handle k + 1 is launched once handle k is waited for (_finish_param_sync_helper);
    # chunk 1's single bucket follows chunk 0's last bucket, waited for in chunk 0's first forward
    sc = scenario(pp=2, dp=8, schedule="interleaved-1f1b", virtual_stages=2)
    schedule, costs, _, mems, _, _ = _prepare(sc, None, SLOW, True)
    gathers = later_chunk_gathers(sc, costs, schedule, mems, SLOW.link_bw_scale)
    last_bucket_at_s = first_rank_gather_buckets(sc, costs, schedule, mems, SLOW.link_bw_scale)[-1][0]
    assert gathers[0][1][0] == pytest.approx(last_bucket_at_s) and gathers[1][1][0] == 0.0
    for rank in (0, 1):   # the rank's parameters split between its chunks; chunk 1's share gathered
        assert 0 < gathers[rank][1][1] < _param_gather_s(sc, mems[rank]["weights"] / WEIGHT_BYTES, SLOW.link_bw_scale)
    release = param_gather_release_s(sc, costs, schedule, mems, SLOW.link_bw_scale)
    held = simulate_pipeline(schedule, costs, release_s=release, chunk_gathers=gathers)
    free = simulate_pipeline(schedule, costs, release_s=release)
    assert held.makespan_s > free.makespan_s   # on slow links the gather outlasts the forwards between
    for rank in (0, 1):
        starts = _first_forward_starts(held, rank)
        assert starts[1] >= starts[0] + gathers[rank][1][0] + gathers[rank][1][1] - 1e-12
    r = simulate_step(sc, perturb=SLOW)
    assert r.pipeline.makespan_s == pytest.approx(held.makespan_s)
    assert step_time_lower_bound_s(sc, perturb=SLOW) <= r.step_time_s
    # one chunk a rank, or the gather hidden ('ideal'): nothing to hold
    one = scenario(pp=2, dp=8)
    one_schedule, one_costs, _, one_mems, _, _ = _prepare(one, None, SLOW, True)
    assert later_chunk_gathers(one, one_costs, one_schedule, one_mems) is None
    ideal = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, param_gather_kind="ideal"))
    assert later_chunk_gathers(ideal, costs, schedule, mems) is None


def test_the_bubble_leaves_out_what_holds_the_step_start():
    # at one stage there is no pipeline bubble: the memset and the chained gather's wait before the
    # first forward are reported as such (op_time_s), not as bubble
    sc = scenario(grad_buckets="megatron")
    r = simulate_step(sc, perturb=SLOW)
    schedule, costs, _, mems, _, _ = _prepare(sc, None, SLOW, True)
    (release,) = param_gather_release_s(sc, costs, schedule, mems, SLOW.link_bw_scale)
    pipe = r.pipeline
    assert release == pytest.approx(r.op_time_s["grad_buffer_zero"] + r.op_time_s["dp_param_gather_wait"])
    assert release / pipe.makespan_s > 0.05   # held a good part of the step on the slow links
    assert r.bubble_frac == pytest.approx(max(0.0, pipe.makespan_s - pipe.covered_s[0] - release) / pipe.makespan_s, abs=1e-12)
    assert r.bubble_frac < 1e-9


def test_megatron_zeroes_its_gradient_buffer_before_the_first_forward_and_gather():
    # train_step: zero_grad_buffer() (grad_data.zero_(), FP32 here) before optimizer.zero_grad()
    # launches the first bucket's gather: every rank's first op and gather start after the memset
    sc = scenario(pp=2, dp=8, grad_buckets="megatron")
    plain = scenario(pp=2, dp=8)
    schedule, costs, profile, mems, _, _ = _prepare(sc, None, SLOW, True)
    zero = [compute.memory_time_s(m["weights"] / WEIGHT_BYTES * 4, sc.gpu, profile) for m in mems]
    assert grad_buffer_zero_s(sc, costs, mems) == pytest.approx(zero)
    assert grad_buffer_zero_s(plain, costs, mems) == [0.0, 0.0]
    with_zero = param_gather_release_s(sc, costs, schedule, mems, SLOW.link_bw_scale)
    without = param_gather_release_s(plain, costs, schedule, mems, SLOW.link_bw_scale)
    assert with_zero == pytest.approx([w + z for w, z in zip(without, zero)])
    # with the gather hidden ('ideal') the memset alone holds the first forward
    ideal = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, param_gather_kind="ideal"))
    r = simulate_step(ideal)
    assert r.op_time_s["grad_buffer_zero"] == pytest.approx(zero[0]) and "dp_param_gather_wait" not in r.op_time_s
    plain_ideal = dataclasses.replace(plain, plan=dataclasses.replace(plain.plan, param_gather_kind="ideal"))
    assert r.step_time_s > simulate_step(plain_ideal).step_time_s
    assert step_time_lower_bound_s(ideal) <= r.step_time_s
