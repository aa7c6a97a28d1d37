"""plan.pp_grad_sync (brief s12l3mem): ZeRO-2 under pipeline parallelism reduce-scattering every
(micro-batch, chunk)'s gradients after its backward, queued on the rank's data-parallel link beside
the pipeline (the Llama 3 paper's FSDP), against the default one reduce-scatter after an unsharded
FP32 accumulation (FSDP2 under torch.distributed.pipelining). Tiny dense model; formulas, not figures."""

import dataclasses

import pytest

import twin.core.scenario as scenario_module
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.costs import memory
from twin.planning.screen import screen
from twin.training import step as st
from twin.training.results import Perturb
from twin.training.step import GRAD_REDUCE_BYTES, _dp_ring_s, _prepare, chunk_params, grad_sync_queue, simulate_step

from tests.twin.training.test_step_parallel import scenario

PLAN = {"pp": 2, "zero_stage": 2, "recompute": "none", "schedule": "interleaved-1f1b", "virtual_stages": 2}


def _every(**kw):
    return scenario(dp=4, **{**PLAN, "pp_grad_sync": "every_backward", **kw})


@pytest.mark.parametrize("plan", [{"zero_stage": 1}, {"zero_stage": 3}, {"pp": 1, "schedule": "1f1b", "virtual_stages": 1}])
def test_every_backward_needs_zero2_under_pipelining(plan):
    with pytest.raises(ScenarioError, match="pp_grad_sync"):
        _every(**plan)


def test_gradients_are_sharded_and_the_queue_counted_beside_the_activations():
    last = simulate_step(scenario(dp=4, **PLAN), record_events=False, check_memory=False)
    sc = _every()
    every = simulate_step(sc, record_events=False, check_memory=False)
    held, sharded = last.memory_breakdown_bytes, every.memory_breakdown_bytes
    assert sharded["gradients"] == pytest.approx(held["gradients"] / 4)   # FP32 over the 4 DP ranks
    assert "grad_queue" not in held and sharded["grad_queue"] >= 0.0
    assert sharded["activations"] == pytest.approx(held["activations"])
    # the queue holds at most every micro-batch's gradients of the rank at once, in the reduce dtype
    # (BF16 here: half the FP32 accumulator's bytes)
    assert sharded["grad_queue"] <= held["gradients"] * sc.num_microbatches / 2


def test_the_queue_carries_every_backward_s_reduce_scatter_and_ends_the_step():
    sc = _every()
    result = simulate_step(sc, record_events=True, check_memory=False)
    schedule, costs, *_ = _prepare(sc, None, Perturb(), False)
    queue = grad_sync_queue(sc, costs, schedule, result.pipeline.op_spans, sc.gpu, 1.0)
    for rank, (end_s, busy_s, peak_bytes) in enumerate(queue):
        chunks = [schedule.stage_of(rank, c) for c in range(schedule.num_chunks)]
        width = GRAD_REDUCE_BYTES[sc.plan.grad_reduce_dtype]
        want = sc.num_microbatches * sum(_dp_ring_s(sc, chunk_params(sc, costs, rank, s) * width, sc.gpu, 1.0) for s in chunks)
        assert busy_s == pytest.approx(want)
        assert result.step_time_s >= end_s
    busiest = max(range(schedule.num_ranks), key=lambda r: result.pipeline.busy_s[r])
    assert result.op_time_s["dp_reduce_scatter"] == pytest.approx(queue[busiest][1])


def test_a_slower_link_lengthens_the_step_the_default_does_not_accumulate_beside_it():
    sc = _every()
    fast = simulate_step(sc, record_events=False, check_memory=False)
    slow = simulate_step(sc, perturb=Perturb(link_bw_scale=0.05), record_events=False, check_memory=False)
    assert slow.step_time_s > fast.step_time_s
    assert "fsdp_grad_accum" not in fast.op_time_s
    assert "fsdp_grad_accum" in simulate_step(scenario(dp=4, **PLAN), record_events=False, check_memory=False).op_time_s


def test_memory_counts_the_sharded_gradients_only_with_the_field():
    p = _every().plan
    assert memory.gradients_sharded(p)
    assert not memory.gradients_sharded(dataclasses.replace(p, pp_grad_sync="last_backward"))


def test_the_plan_search_s_lower_bound_stays_below_the_step():
    from twin.training.step import step_time_lower_bound_s
    for sc in (_every(), _every(grad_reduce_dtype="fp32")):
        assert step_time_lower_bound_s(sc) <= simulate_step(sc, record_events=False, check_memory=False).step_time_s


def test_the_screen_counts_the_queue_and_agrees_with_the_simulator_on_what_fits(monkeypatch):
    # the plan search's screen simulates such a plan's pipeline for the gradients its queue holds:
    # the same count as the simulator's, so a GPU between the count without them and with them is
    # refused by both (the screen used to pass it, the simulator to refuse it)
    sc = _every(grad_reduce_dtype="fp32")
    held = simulate_step(sc, record_events=False, check_memory=False).memory_breakdown_bytes
    total = sum(held.values())
    assert held["grad_queue"] > 0
    assert screen(sc).memory_per_gpu_bytes == pytest.approx(total)
    real_gpu = scenario_module.get_gpu
    # the capacity a rank's count may fill: the GPU's less what the process holds outside the allocator
    outside = st.OUTSIDE_ALLOCATOR_BYTES if st.ADOPT_OUTSIDE_ALLOCATOR_RESERVE else 0.0
    for hbm_bytes, fits in ((total - held["grad_queue"] / 2, False), (total * 1.01, True)):
        monkeypatch.setattr(scenario_module, "get_gpu",
                            lambda name, hbm=hbm_bytes + outside: dataclasses.replace(real_gpu(name), hbm_bytes=hbm))
        assert screen(sc).fits is fits
        if fits:
            simulate_step(sc, record_events=False)
        else:
            with pytest.raises(InfeasiblePlan, match="grad_queue"):
                simulate_step(sc, record_events=False)
