"""s27egrad2: every reduction group's span (inside one node or across nodes, its ranks a node) from one rank
layout, twin.costs.layout (Megatron-LM's 'tp-cp-ep-dp-pp' grids with ETP 1, torchtitan's mesh, DeepSeek-V3's
EP64 on whole nodes; docs/notes/s27egrad2_rule.md, ADOPT_GROUP_SPANS). A few CPU-seconds."""

import dataclasses

import pytest

from twin.core.scenario import from_dict, load_scenario
from twin.costs import comm, layout, memory
from twin.costs.flops import ep_nodes
from twin.training import step as step_module
from twin.training.results import Perturb
from twin.training.step import (GRAD_REDUCE_BYTES, ReduceGroup, _param_gather_s, _prepare, dp_reduce_groups, dp_tail_s,
                                group_spans, rank_params)


@pytest.fixture
def switch(monkeypatch):
    """Sets ADOPT_GROUP_SPANS (or the switch named); the step cache keeps costs built under the other setting: cleared both ways."""
    def set_to(value: bool, name: str = "ADOPT_GROUP_SPANS"):
        monkeypatch.setattr(step_module, name, value)
        step_module._PREPARED.clear()
    yield set_to
    step_module._PREPARED.clear()


def _megatron_groups(grid, group, world):
    """Megatron-LM's RankGenerator by brute force: a rank's coordinates in the grid (innermost first, mixed
    radix); a group is the ranks sharing every coordinate outside `group`."""
    sizes = [n for _, n in grid]
    groups: dict = {}
    for rank in range(world):
        coords, rest = [], rank
        for n in sizes:
            coords.append(rest % n)
            rest //= n
        key = tuple(c for (name, _), c in zip(grid, coords) if name not in group)
        groups.setdefault(key, []).append(rank)
    return list(groups.values())


@pytest.mark.parametrize("tp,cp,dp,pp,ep", [(1, 1, 16, 16, 64 // 8), (2, 1, 8, 2, 4), (1, 2, 4, 2, 8), (8, 2, 4, 2, 16),
                                            (4, 1, 2, 2, 1), (1, 1, 2, 2, 2)])
def test_every_group_of_a_layout_spans_as_megatrons_rank_generator_lays_it_out(tp, cp, dp, pp, ep):
    node = 8
    world = tp * cp * dp * pp
    for grid, group in [(layout.dense_grid(tp, cp, dp, pp), g) for g in (("tp",), ("cp",), ("cp", "dp"))] + \
                       [(layout.expert_grid(ep, tp * cp * dp // ep, pp), g) for g in (("ep",), ("edp",))]:
        want = set()
        for ranks in _megatron_groups(grid, group, world):
            per_node = [sum(1 for r in ranks if r // node == n) for n in {r // node for r in ranks}]
            want.add((len(ranks), max(per_node), len(per_node)))
        assert len(want) == 1, (grid, group, want)   # power-of-two layouts: every group alike
        span = layout.group_span(grid, group, node)
        assert (span.ranks, span.ranks_per_node, span.nodes) == want.pop(), (grid, group)


def test_v3s_groups_are_the_reports_layout_and_the_all_to_alls():
    """DeepSeek-V3 (report §3.2, §4.2): a PP16 stage's 128 GPUs on 16 nodes; EP64 on 8 whole nodes; each
    expert's 2 replicas on two nodes. The EP span is the all-to-all's (flops.ep_nodes, min(ep, G)) at any EP."""
    sc = load_scenario(None)
    spans = group_spans(sc, sc.gpu)
    got = {k: (s.ranks, s.ranks_per_node, s.nodes) for k, s in spans.items()}
    assert got == {"tp": (1, 1, 1), "cp": (1, 1, 1), "dense": (128, 8, 16), "expert": (2, 1, 2), "ep": (64, 8, 8)}
    for ep in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        s = layout.group_span(layout.expert_grid(ep, 256 // ep, 1), ("ep",), 8)
        assert (s.nodes, s.ranks_per_node) == (ep_nodes(ep, 8), min(ep, 8))


def test_a_stage_that_fits_a_node_reduces_inside_it_whatever_pp(switch):
    """PP outermost (all three sources): PP2 x DP2 on 4 GPUs is one node; TP2 x DP8 x PP2 puts a stage's 16
    ranks on 2 nodes, the DP group 4 a node (G / TP). The rule before needed PP 1 to stay inside a node."""
    assert layout.group_span(layout.dense_grid(1, 1, 2, 2), ("cp", "dp"), 8) == layout.Span(2, 2, 1)
    assert layout.group_span(layout.dense_grid(2, 1, 8, 2), ("cp", "dp"), 8) == layout.Span(8, 4, 2)
    sc = from_dict({"name": "t", "model": {"name": "mixtral-mla-slice", "num_layers": 4, "num_mtp_modules": 0},
                    "cluster": {"gpu": "h100", "num_gpus": 4},
                    "plan": {"tp": 1, "pp": 2, "ep": 2, "schedule": "1f1b", "zero_stage": 3, "gemm_precision": "bf16"},
                    "workload": {"seq_len": 2048, "global_batch_seqs": 8}})
    switch(False)
    assert dp_reduce_groups(sc, sc.gpu) == (ReduceGroup(2, False, 2), ReduceGroup(1, False, 1))
    assert _prepare(sc, None, Perturb(), check_memory=False)[1].fsdp_same_nodes == (False, False)
    switch(True)
    assert dp_reduce_groups(sc, sc.gpu) == (ReduceGroup(2, True, 2), ReduceGroup(1, True, 1))
    assert _prepare(sc, None, Perturb(), check_memory=False)[1].fsdp_same_nodes == (True, True)


# `twin scenario from-bench calibration/measurements/h200x4/s25idle/mixtral-mla-slice --where schedule=zb1p
# --where pp=2` (real/'s PP2 x EP2 rows), but grad_reduce_groups left at its default (from-bench writes by_group)
BENCH_PP2_EP2 = {"name": "bench-mixtral-mla-slice-pp2ep2-zb1p-n6",
                 "model": {"name": "mixtral-mla-slice", "num_layers": 8, "num_mtp_modules": 0},
                 "cluster": {"gpu": "h200", "num_gpus": 4},
                 "plan": {"tp": 1, "cp": 1, "pp": 2, "ep": 2, "schedule": "zb1p", "micro_batch_seqs": 1, "zero_stage": 0,
                          "recompute": "none", "gemm_precision": "bf16", "kernels": "eager", "overlap_dp_comm": False,
                          "stage_cut": "even", "optimizer_kernel": "none", "grad_accumulate": "autograd"},
                 "workload": {"seq_len": 2048, "global_batch_seqs": 12, "routing_imbalance": 1.0}}


def test_the_from_bench_pp2_ep2_default_reduction_is_the_nvlink_all_reduce_by_hand(switch):
    """The rule's C2: real/'s PP2 x EP2 on 4 H200s (ZeRO 0, DP 2; the experts have one replica, EDP 1) with the
    default grad_reduce_groups: each rank's reduction is its dense gradients' all-reduce (two rings) over
    NVLink, by hand. Round 1's rule priced it over IB (7.1 ms; real/'s by_group measured 2.5 ms)."""
    sc = from_dict(BENCH_PP2_EP2)
    assert (sc.dp, sc.plan.ep, sc.plan.pp, sc.plan.zero_stage, sc.plan.grad_reduce_groups) == (2, 2, 2, 0, "dense_and_expert")
    got = {}
    for adopt in (False, True):
        switch(adopt)
        _, costs, profile, mems, _, _ = _prepare(sc, None, Perturb(), check_memory=False)
        held = rank_params(sc, costs)
        got[adopt] = [dp_tail_s(sc, mems[r], held[r], sc.gpu, profile, 1.0)[0] for r in range(2)]
    for r in range(2):
        nbytes = held[r].dense * GRAD_REDUCE_BYTES[sc.plan.grad_reduce_dtype]
        want = 2 * comm.ring_collective_time_s(nbytes, 2, sc.gpu, True)
        assert got[True][r] == pytest.approx(want, rel=1e-12)
        assert got[True][r] < got[False][r] / 3
    print(f"PP2 x EP2 from-bench default reduction: rule before {max(got[False]) * 1e3:.2f} ms, "
          f"spans {max(got[True]) * 1e3:.2f} ms")


def test_megatrons_parameter_gather_splits_its_dense_and_expert_buffers_over_their_groups(switch):
    """EP 4 on 16 GPUs: a bucket's expert share over the expert group (4 ranks, 2 a node), the rest over DP
    (16 ranks, 8 a node); EP 1 and a dense share of 1 stay the one ring they were."""
    sc = from_dict({"name": "t", "model": {"name": "mixtral-mla-slice", "num_layers": 4, "num_mtp_modules": 0},
                    "cluster": {"gpu": "h100", "num_gpus": 16},
                    "plan": {"tp": 1, "pp": 1, "ep": 4, "schedule": "1f1b", "zero_stage": 1, "gemm_precision": "bf16"},
                    "workload": {"seq_len": 2048, "global_batch_seqs": 32}})
    gpu, n, frac = sc.gpu, 1e9, 0.25
    switch(True)
    dense, expert = dp_reduce_groups(sc, gpu)
    assert (dense, expert) == (ReduceGroup(16, False, 8), ReduceGroup(4, False, 2))
    ring = lambda nbytes, g: comm.ring_collective_time_s(nbytes, g.ranks, gpu, g.same_node, 1.0, g.ranks_per_node)  # noqa: E731
    assert _param_gather_s(sc, n, 1.0, frac) == pytest.approx(
        ring(n * (1 - frac) * memory.WEIGHT_BYTES, dense) + ring(n * frac * memory.WEIGHT_BYTES, expert), rel=1e-12)
    switch(False)   # the rule before: one buffer over DP, one NIC a node under EP
    assert _param_gather_s(sc, n, 1.0, frac) == pytest.approx(
        ring(n * memory.WEIGHT_BYTES, ReduceGroup(16, False, 1)), rel=1e-12)
    dense_only = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, ep=1))
    before = _param_gather_s(dense_only, n, 1.0, 0.0)
    switch(True)
    assert _param_gather_s(dense_only, n, 1.0, 0.0) == pytest.approx(before, rel=1e-12)


def test_a_context_parallel_all_gather_across_nodes_uses_the_groups_nics(switch):
    """TP2 x CP8: the CP group strides by TP, 4 of its ranks a node on 2 nodes; its all-gathers go out
    through 4 NICs a node (the rule before: one). The ring's send/recv stays one pair on one NIC."""
    assert layout.group_span(layout.dense_grid(2, 8, 1, 1), ("cp",), 8) == layout.Span(8, 4, 2)
    sc = from_dict({"name": "t", "model": {"name": "llama3-8b", "num_layers": 2},
                    "cluster": {"gpu": "h100", "num_gpus": 16},
                    "plan": {"tp": 2, "cp": 8, "cp_kind": "allgather", "pp": 1, "ep": 1, "schedule": "1f1b",
                             "zero_stage": 1, "gemm_precision": "bf16"},
                    "workload": {"seq_len": 32768, "global_batch_seqs": 1}})
    for adopt, per_node in ((False, 1), (True, 4)):
        switch(adopt)
        costs = _prepare(sc, None, Perturb(), check_memory=False)[1]
        assert (costs.cp_same_node, costs.cp_ranks_per_node) == (False, per_node)


@pytest.mark.parametrize("grid,group", [(layout.dense_grid(8, 1, 128, 16), ("cp", "dp")),
                                        (layout.expert_grid(64, 2, 16), ("edp",))])
def test_the_span_is_its_closed_form(grid, group):
    """G / TP of the dense group a node, G / EP of the expert group (one where EP >= G): the inline formulas
    of the rule before, where they held (across nodes)."""
    s = layout.group_span(grid, group, 8)
    size = dict(grid)
    if "dp" in group:
        assert s.ranks_per_node == max(1, min(size["dp"] * size["cp"], 8 // size["tp"]))
    else:
        assert s.ranks_per_node == max(1, min(size["edp"], 8 // size["ep"]))


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="not in the grid"):
        layout.group_span(layout.dense_grid(1, 1, 2, 2), ("ep",), 8)
    with pytest.raises(ValueError, match=">= 1"):
        layout.group_span(layout.dense_grid(1, 1, 2, 2), ("dp",), 0)


def _pp16():
    """A 16-layer slice in PP16 (1F1B) on 16 H100s, one block a stage."""
    return from_dict({"name": "t", "model": {"name": "mixtral-mla-slice", "num_layers": 16, "num_mtp_modules": 0},
                      "cluster": {"gpu": "h100", "num_gpus": 16},
                      "plan": {"tp": 1, "pp": 16, "ep": 1, "schedule": "1f1b", "zero_stage": 1, "gemm_precision": "bf16"},
                      "workload": {"seq_len": 2048, "global_batch_seqs": 32}})


def test_a_pipeline_hop_crosses_a_node_where_the_layout_puts_its_two_stages_apart(switch):
    """Part B's C1B and C2B: PP16 on 16 GPUs (a stage one GPU): the hop 7 -> 8 over IB, the other 14 over NVLink,
    each comm.p2p_time_s by hand; a stage of 8 GPUs (DP 8): every hop across nodes; a pipeline in one node: none.
    The step does not fall (the rule before: every hop over NVLink)."""
    sc = _pp16()
    switch(False, "ADOPT_PP_PAIR_SPANS")
    before = step_module.simulate_step(sc, record_events=False).step_time_s
    switch(True, "ADOPT_PP_PAIR_SPANS")
    costs = _prepare(sc, None, Perturb(), check_memory=False)[1]
    act_bytes = 2048 * sc.model.hidden_size * 2
    for r in range(15):
        want = comm.p2p_time_s(act_bytes, sc.gpu, r != 7)
        assert costs.p2p_s(r, r + 1, "F") == pytest.approx(want, rel=1e-12) == costs.p2p_s(r + 1, r, "B")
    after = step_module.simulate_step(sc, record_events=False).step_time_s
    assert after >= before
    print(f"PP16 on 16 GPUs: step {before:.5f} -> {after:.5f} s")
    assert not any(layout.pipeline_hop_same_node(r, r + 1, 8, 8) for r in range(15))
    assert all(layout.pipeline_hop_same_node(r, r + 1, 2, 8) for r in range(3))
