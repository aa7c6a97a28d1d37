"""plan.tp_overlap_kind 'te_userbuffers' (the default with plan.tp_comm_overlap): what each of
TransformerEngine's overlap methods charges, rebuilt from its pieces (twin/costs/tp_overlap.py),
and the plan screen charging what the simulator charges."""

import dataclasses

import pytest

from tests.twin.training.test_step_parallel import scenario, step
from twin.core.errors import ScenarioError
from twin.costs import comm, compute, tp_overlap
from twin.training.results import Perturb
from twin.training.step import _prepare

TP8_SP = dict(tp=8, sequence_parallel=True, tp_comm_overlap=True, seq_len=8192)


def _costs(**plan):
    sc = scenario(**{**TP8_SP, **plan})
    schedule, costs, profile, *_ = _prepare(sc, None, Perturb(), True)
    return sc, costs, profile


def _tasks(tasks, name):
    return [t.duration_s for t in tasks if t.name == name]


def _within(x, xs) -> bool:
    return any(abs(x - y) <= 1e-12 * max(1.0, abs(y)) for y in xs)


@pytest.mark.parametrize("measured", [False, True])
def test_each_method_charges_its_chunks_its_sms_and_what_stays_exposed(monkeypatch, measured):
    # measured: ADOPT_TP_TRAFFIC_MEASURED (docs/notes/s30mlm_rule.md) at its adopted figures, the SM kernels' today's
    # (TE_SM_GEMM_SLOWDOWN None, TE_SM_COMM_SLOWDOWN 1), the ring's GEMM slowed beside its copy-engine transfers
    from twin.training import step as step_mod
    monkeypatch.setattr(step_mod, "ADOPT_TP_TRAFFIC_MEASURED", measured)
    monkeypatch.setattr(step_mod, "_PREPARED", {})
    sc, costs, profile = _costs()
    assert sc.plan.tp_overlap_kind == "te_userbuffers"   # the default
    ops = costs.blocks[0].ops
    fwd, bwd = costs._forward_tasks(ops), costs._backward_tasks(ops, True)
    slowdown = costs._beside_comm_slowdown(tp_overlap.TE_COMM_SMS)
    assert slowdown == compute.untold_sm_slowdown(profile, "bf16", 16, sc.gpu) > 1.0   # measured (sm_reserve)
    ag_s = costs._collective_s("all_gather", costs.tp_bytes, 8, True)
    rs_s = costs._collective_s("reduce_scatter", costs.tp_bytes, 8, True)
    for key, seg in costs._segments(ops):
        # ring_exchange (in_fwd): the GEMMs sharing the gathered input as 8 chunks beside copy-engine
        # transfers; no SM taken from them
        first = costs._beside_gemms(seg, "in_fwd")
        extra = costs._chunked_extra_s(first, "fwd")
        assert extra > 0 and extra in _tasks(fwd, "tp_chunk_gemms")
        gemm_s, ring_s = costs._compute_s(first, "fwd") + extra, ag_s
        if measured:   # the GEMM slowed while the transfers run; what it costs beyond the chunks a task of its own
            beside, ring_s = tp_overlap.shared_gpu_s(gemm_s, ag_s, step_mod.TE_CE_GEMM_SLOWDOWN, step_mod.TE_CE_COMM_SLOWDOWN)
            assert beside > gemm_s and _within(beside - gemm_s, _tasks(fwd, "tp_ce_gemms"))
            gemm_s = beside
        else:
            assert not _tasks(fwd, "tp_ce_gemms")
        exposed = comm.pipelined_exposed_s("all_gather", ring_s, gemm_s, 8)
        assert _within(exposed, _tasks(fwd, "tp_all_gather")) if exposed > 0 else not _tasks(fwd, "tp_all_gather")
        # pipeline (out_fwd): 4 chunks, each reduce-scatter (a quarter of the buffer) beside the next chunk
        last = costs._beside_gemms(seg, "out_fwd")
        whole = costs._compute_s(last, "fwd")
        chunked = whole + costs._chunked_extra_s(last, "fwd", 4)
        chunk_rs = costs._collective_s("reduce_scatter", costs.tp_bytes / 4, 8, True)
        gemm_end, end = tp_overlap.pipelined_reduce_scatter_s(chunked / 4, chunk_rs, 4, slowdown)
        assert _within(gemm_end - whole, _tasks(fwd, "tp_ub_gemms"))
        assert _within(end - gemm_end, _tasks(fwd, "tp_reduce_scatter"))
        assert end - gemm_end >= chunk_rs   # the last chunk's reduce-scatter has nothing beside it
        # bulk (in_bwd): the layer input re-gathered beside the input-gradient GEMM, then the input
        # gradient reduce-scattered beside the weight-gradient GEMM, each GEMM slowed while they run
        dgrad = tp_overlap.bulk_overlap_s(costs._compute_s(first, "bwd_input"), ag_s, slowdown)
        wgrad = tp_overlap.bulk_overlap_s(costs._compute_s(first, "bwd_weight"), rs_s, slowdown)
        slowed = (dgrad[0] - costs._compute_s(first, "bwd_input")) + (wgrad[0] - costs._compute_s(first, "bwd_weight"))
        assert slowed > 0 and _within(slowed, _tasks(bwd, "tp_ub_gemms_bwd"))
        assert _within(wgrad[1], _tasks(bwd, "tp_reduce_scatter_bwd")) if wgrad[1] > 0 else True
        assert _within(dgrad[1], _tasks(bwd, "tp_ub_all_gather_input_bwd")) if dgrad[1] > 0 else True
    # a shard copied into the userbuffer before each backward all-gather: the output gradient
    # (ring_exchange) and the layer input (bulk), two a part
    copy = compute.memory_time_s(2 * costs.tp_bytes / 8, sc.gpu, profile)
    assert _tasks(bwd, "tp_ub_copy_bwd") == pytest.approx([copy] * 4)
    assert not _tasks(fwd, "tp_ub_copy")   # the forward's layer norm writes into the userbuffer itself


def test_without_the_sm_contention_only_the_chunks_cost(monkeypatch):
    from twin.core.schedules import build_schedule
    from twin.costs.profile import load_profile
    from twin.training.step import StepCosts, routing_loads
    monkeypatch.setattr(StepCosts, "_beside_comm_slowdown", lambda self, sms: 1.0)
    sc = scenario(**TP8_SP)
    costs = StepCosts(sc, build_schedule("1f1b", 2, sc.num_microbatches), load_profile("h100"), routing_loads(sc), 1.0)
    ops = costs.blocks[0].ops
    fwd, bwd = costs._forward_tasks(ops), costs._backward_tasks(ops, True)
    assert _tasks(bwd, "tp_ub_gemms_bwd") == [0.0, 0.0]
    chunk_costs = [costs._chunked_extra_s(costs._beside_gemms(seg, "out_fwd"), "fwd", 4) for _, seg in costs._segments(ops)]
    assert _tasks(fwd, "tp_ub_gemms") == pytest.approx(chunk_costs, rel=1e-12)


def test_a_profile_without_sm_reserve_takes_the_sm_share():
    from twin.core.schedules import build_schedule
    from twin.costs.profile import load_profile
    from twin.training.step import StepCosts, routing_loads
    sc = scenario(**TP8_SP)
    bare = dataclasses.replace(load_profile("h100"), sm_reserve={})
    costs = StepCosts(sc, build_schedule("1f1b", 2, sc.num_microbatches), bare, routing_loads(sc), 1.0)
    assert costs._beside_comm_slowdown(16) == pytest.approx(sc.gpu.num_sms / (sc.gpu.num_sms - 16))


def test_all_reduces_wait_in_line_without_sequence_parallelism():
    # userbuffers overlaps all-gathers and reduce-scatters; Megatron asserts sequence parallelism
    plain = step(scenario(tp=8, seq_len=8192))
    te = step(scenario(tp=8, seq_len=8192, tp_comm_overlap=True))
    assert te.step_time_s == pytest.approx(plain.step_time_s, rel=1e-12)
    ideal = step(scenario(tp=8, seq_len=8192, tp_comm_overlap=True, tp_overlap_kind="ideal"))
    assert ideal.step_time_s < plain.step_time_s


@pytest.mark.parametrize("pp", [1, 2])
def test_the_screen_charges_what_the_simulator_charges(pp):
    from twin.planning.screen import screen
    sim, est = {}, {}
    for kind in ("te_userbuffers", "ideal"):
        sc = scenario(**TP8_SP, pp=pp, tp_overlap_kind=kind)
        sim[kind], est[kind] = step(sc).step_time_s, screen(sc).step_time_s
    assert sim["te_userbuffers"] > sim["ideal"]
    assert est["te_userbuffers"] - est["ideal"] == pytest.approx(sim["te_userbuffers"] - sim["ideal"], rel=1e-9)


def test_a_kind_without_overlap_is_refused():
    with pytest.raises(ScenarioError, match="te_userbuffers"):
        scenario(tp=8, tp_overlap_kind="ideal")
