"""A tied embedding cut by the pipeline (Megatron-LM's GPT: the output projection shares the word
embedding's weight): the last stage holds a copy, and after the data-parallel gradient sync the two
copies' gradients are all-reduced between the first and the last stage (finalize_model_grads
_allreduce_word_embedding_grads @ f2e5db4), exposed. Tiny dense model; formulas, not figures."""

import pytest

from twin.core.scenario import from_dict
from twin.core.schedules import build_schedule
from twin.costs import comm
from twin.costs.memory import WEIGHT_BYTES
from twin.training.results import Perturb
from twin.training.step import (_prepare, dp_tail_s, rank_params, exposed_reduce_scatter_s, last_backward_s, simulate_step,
                                step_time_lower_bound_s, tied_embedding_all_reduce_s)

DENSE = {"name": "tiny-dense", "num_layers": 4, "hidden_size": 1024, "vocab_size": 32768, "num_heads": 16,
         "attention": "gqa", "num_kv_heads": 8, "head_dim": 64, "intermediate_size": 4096, "num_dense_layers": 4}


def scenario(tie=True, dp=2, **plan):
    p = {"tp": 1, "pp": 2, "ep": 1, "schedule": "1f1b", "gemm_precision": "bf16", "recompute": "selective",
         "grad_reduce_dtype": "fp32", "overlap_grad_reduce": True, **plan}
    gpus = p["tp"] * p.get("cp", 1) * p["pp"] * dp
    return from_dict({"name": "t", "model": {**DENSE, "tie_embeddings": tie},
                      "cluster": {"gpu": "h100", "num_gpus": gpus}, "plan": p,
                      "workload": {"seq_len": 4096, "global_batch_seqs": 16}})


def test_all_reduce_sums_the_fp32_gradient_of_the_shared_weight_between_the_end_stages():
    sc = scenario(tp=2, dp=8)
    schedule = build_schedule("1f1b", 2, sc.num_microbatches)
    # 32768 x 1024 / TP 2 FP32 gradients = 67,108,864 B, all-reduced over the two end stages; the
    # pipeline spans nodes (its 2 x 8 x 2 GPUs do not fit one node of 8), so over the scale-out link
    grad_bytes = 32768 * 1024 / 2 * 4
    expected = comm.collective_time_s("all_reduce", grad_bytes, 2, sc.gpu, False)
    assert tied_embedding_all_reduce_s(sc, schedule, sc.gpu) == pytest.approx(expected, rel=1e-12)
    # bus traffic 2 (n-1)/n = 1 x the buffer over 46 GB/s, plus two ring steps of latency
    assert expected == pytest.approx(grad_bytes / 46e9 + 2 * 3.7e-6, rel=1e-12)
    # BF16 gradients move half the bytes
    bf16 = scenario(tp=2, dp=8, grad_reduce_dtype="bf16")
    assert tied_embedding_all_reduce_s(bf16, schedule, bf16.gpu) < expected


@pytest.mark.parametrize("tie,pp,schedule,virtual", [(False, 2, "1f1b", 1), (True, 1, "1f1b", 1),
                                                     (True, 2, "dualpipev", 1), (True, 2, "dualpipe", 1)])
def test_no_all_reduce_where_one_rank_holds_both_ends_or_nothing_is_tied(tie, pp, schedule, virtual):
    sc = scenario(tie=tie, pp=pp, schedule=schedule)
    sched = build_schedule(schedule, pp, sc.num_microbatches, virtual)
    assert tied_embedding_all_reduce_s(sc, sched, sc.gpu) == 0.0
    assert "pp_embedding_all_reduce" not in simulate_step(sc, record_events=False).op_time_s


def test_interleaved_end_chunks_on_different_ranks_all_reduce():
    sc = scenario(schedule="interleaved-1f1b", virtual_stages=2)
    sched = build_schedule("interleaved-1f1b", 2, sc.num_microbatches, 2)
    assert tied_embedding_all_reduce_s(sc, sched, sc.gpu) > 0


def test_the_last_stage_holds_its_own_copy_only_across_ranks():
    # PP 2: the last rank keeps the output projection's weight like an untied model; PP 1: shared
    mems = {tie: _prepare(scenario(tie=tie), None, Perturb(), False)[3] for tie in (True, False)}
    assert mems[True][1]["weights"] == pytest.approx(mems[False][1]["weights"], rel=1e-12)
    assert mems[True][0]["weights"] == pytest.approx(mems[False][0]["weights"], rel=1e-12)
    one = {tie: _prepare(scenario(tie=tie, pp=1, dp=4), None, Perturb(), False)[3][0] for tie in (True, False)}
    assert one[False]["weights"] - one[True]["weights"] == pytest.approx(32768 * 1024 * WEIGHT_BYTES, rel=1e-12)


def test_step_ends_after_the_end_stages_sync_then_all_reduce():
    sc = scenario(dp=8)
    r = simulate_step(sc)
    schedule, costs, profile, mems, _, _ = _prepare(sc, None, Perturb(), True)
    tied_s = r.op_time_s["pp_embedding_all_reduce"]
    assert tied_s == pytest.approx(tied_embedding_all_reduce_s(sc, schedule, sc.gpu, costs.measured), rel=1e-12)
    # each end stage's exposed reduce-scatter past its last compute, then the all-reduce, then the optimizer
    synced = max(r.pipeline.last_compute_end_s[k]
                 + exposed_reduce_scatter_s(sc, dp_tail_s(sc, mems[k], rank_params(sc, costs)[k], sc.gpu, profile, 1.0)[0],
                                            last_backward_s(costs, schedule, k)) for k in (0, 1))
    opt_s = r.op_time_s["optimizer"]
    assert r.step_time_s == pytest.approx(max(synced + tied_s, r.pipeline.makespan_s) + opt_s, rel=1e-12)
    events = [e for e in r.tail_events if e.name == "pp_embedding_all_reduce"]
    assert {e.rank for e in events} == {0, 1}
    assert all(e.start_s == pytest.approx(synced) and e.end_s - e.start_s == pytest.approx(tied_s) for e in events)
    # untied, the same pipeline has no such tail and is faster by at least the all-reduce's exposure
    assert step_time_lower_bound_s(sc) <= r.step_time_s
    assert r.step_time_s > simulate_step(scenario(tie=False, dp=8), record_events=False).step_time_s


@pytest.mark.parametrize("pp,schedule,virtual", [(2, "1f1b", 1), (2, "interleaved-1f1b", 2), (1, "1f1b", 1)])
def test_the_screen_counts_the_copy_and_the_all_reduce_as_the_simulator(pp, schedule, virtual):
    from twin.costs.profile import load_profile
    from twin.planning.screen import screen
    from twin.training.step import StepCosts, rank_memory, routing_loads
    sc = scenario(pp=pp, schedule=schedule, virtual_stages=virtual, dp=8 // pp)
    sched = build_schedule(schedule, pp, sc.num_microbatches, virtual)
    costs = StepCosts(sc, sched, load_profile("h100"), routing_loads(sc), 1.0)
    exact = max(rank_memory(sc, costs), key=lambda b: sum(b.values()))
    est = screen(sc)
    assert est.memory_breakdown_bytes == pytest.approx(exact, rel=1e-12)
    # the screen's step carries the all-reduce: untied (the same weights on every rank under PP: the
    # last stage's copy), the same estimate is shorter by exactly it; without PP there is none
    tied_s = tied_embedding_all_reduce_s(sc, sched, sc.gpu, costs.measured)
    assert (tied_s > 0) == (pp > 1)
    if pp > 1:
        untied = screen(scenario(tie=False, pp=pp, schedule=schedule, virtual_stages=virtual, dp=8 // pp))
        assert est.step_time_s - untied.step_time_s == pytest.approx(tied_s, rel=1e-9)


def test_the_trace_names_the_all_reduce():
    from twin.training.trace import step_trace
    sc = scenario(dp=8)
    names = {e["name"] for e in step_trace(sc, simulate_step(sc))["traceEvents"] if e.get("ph") == "X"}
    assert "all_reduce(tied embedding, PP ends)" in names
