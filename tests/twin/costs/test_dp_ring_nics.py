"""A data-parallel ring across nodes goes out through as many NICs as it has ranks on a node
(NVIDIA/nccl#412), capped by NVLink; Megatron's rank order puts G / TP of a group's ranks on a node."""

import dataclasses

import pytest

from twin.core.scenario import load_scenario
from twin.costs import comm
from twin.training.step import dp_ranks_per_node
from twin.core.specs import get_gpu


def test_ring_across_nodes_uses_each_ranks_nic_up_to_nvlink():
    gpu = get_gpu("h100")
    one = comm.ring_collective_time_s(16e9, 48, gpu, False, ranks_per_node=1)
    two = comm.ring_collective_time_s(16e9, 48, gpu, False, ranks_per_node=2)
    eight = comm.ring_collective_time_s(16e9, 48, gpu, False, ranks_per_node=8)
    lat = 47 * gpu.scale_out_latency_s
    assert abs((one - lat) / (two - lat) - 2.0) < 1e-9
    # eight NICs (8 x 46 GB/s) reach NVLink's collective bandwidth: the cap applies
    nvlink_bound = 16e9 * 47 / 48 / gpu.nvlink_achieved_bytes_per_s + lat
    assert eight >= nvlink_bound - 1e-12 and eight < two


def test_ranks_per_node_follow_tp_and_stay_one_under_expert_parallelism():
    sc = load_scenario(None)   # V3: EP 64 across nodes, the experts' gradient group one rank a node
    gpu = sc.gpu
    assert sc.plan.ep > 1 and dp_ranks_per_node(sc, gpu) == 1
    for tp, want in ((1, 8), (2, 4), (4, 2), (8, 1)):
        s = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, tp=tp, cp=1, ep=1))
        assert s.dp >= 8 and dp_ranks_per_node(s, gpu) == want



def test_fsdp_collectives_across_nodes_use_the_nodes_nics_as_the_dp_ring():
    """ZeRO-3 (FSDP2) gathers and reduce-scatters over DP x CP ranks: across nodes each of the
    group's G / TP ranks on a node sends through its own NIC (torchtitan's mesh puts TP innermost),
    as the DP ring does, up to NVLink; one rank a node at TP = G."""
    from tests.twin.training.test_step_parallel import scenario
    from twin.costs import memory
    from twin.training.results import Perturb
    from twin.training.step import _prepare

    def block_gather_s(**plan):
        sc = scenario(pp=1, zero_stage=3, **plan)
        costs = _prepare(sc, None, Perturb(), check_memory=False)[1]
        params = memory.block_params_on_gpu(sc.model, True, sc.plan.tp, 1).dense
        return costs, costs._fsdp_s(0)[0].ag_s, params * memory.WEIGHT_BYTES

    costs, ag_s, num_bytes = block_gather_s(dp=16)   # TP1 on 2 nodes: 8 of the group's 16 ranks a node
    gpu = costs.gpu
    assert not costs.fsdp_same_node and costs.fsdp_ranks_per_node == (8, 8)
    bw = min(8 * gpu.scale_out_achieved_bytes_per_s, gpu.nvlink_achieved_bytes_per_s)
    assert ag_s == pytest.approx(num_bytes * 15 / 16 / bw + 15 * gpu.scale_out_latency_s, rel=1e-12)
    assert ag_s < comm.collective_time_s("all_gather", num_bytes, 16, gpu, False) / 4   # one NIC: 8x the transfer
    costs8, ag8_s, num_bytes8 = block_gather_s(dp=2, tp=8)   # TP8: one of the group's ranks a node
    # the dense group one rank a node; the routed experts' (DP x TP / EP = 16 ranks: experts whole on each TP
    # rank) 8 a node (step.dp_reduce_groups; a dense model has none to send)
    assert not costs8.fsdp_same_node and costs8.fsdp_ranks_per_node == (1, 8)
    assert ag8_s == pytest.approx(comm.collective_time_s("all_gather", num_bytes8, 2, gpu, False), rel=1e-12)
