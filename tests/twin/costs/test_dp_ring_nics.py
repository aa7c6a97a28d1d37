"""A data-parallel ring across nodes goes out through as many NICs as it has ranks on a node
(NVIDIA/nccl#412), capped by NVLink; Megatron's rank order puts G / TP of a group's ranks on a node."""

import dataclasses

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
