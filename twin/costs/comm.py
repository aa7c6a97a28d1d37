"""Communication-time cost functions: bytes and topology -> seconds. Pure, no state.

Bandwidths are the GPU catalog's *achieved* figures (published measurements); latencies are the
catalog's small-message latencies. Expert-parallel all-to-all is bounded by the slower of its IB
and NVLink legs (DeepEP moves both concurrently: IB to the target node, then NVLink forwarding).
"""

from __future__ import annotations

from twin.costs.flops import Op
from twin.core.specs import A2A_SMS_SATURATING, GPUSpec


def a2a_link_share(comm_sms: int | None) -> float:
    """Share of the achieved link bandwidths an all-to-all on `comm_sms` SMs reaches:
    min(1, SMs / A2A_SMS_SATURATING); None = not modelled (the links' full figure)."""
    if comm_sms is None:
        return 1.0
    if comm_sms <= 0:
        raise ValueError(f"an expert-parallel all-to-all needs SMs to run on (DeepEP's dispatch and combine are "
                         f"SM kernels); got {comm_sms} SMs")
    return min(1.0, comm_sms / A2A_SMS_SATURATING)


def all_to_all_time_s(op: Op, gpu: GPUSpec, link_bw_scale: float = 1.0, comm_sms: int | None = None) -> float:
    """Dispatch or combine of one micro-batch on one GPU (bytes per GPU are in the op), its kernels
    on `comm_sms` SMs (a2a_link_share; None: as many as saturate the links)."""
    scale = link_bw_scale * a2a_link_share(comm_sms)
    ib_s = op.ib_bytes / (gpu.scale_out_achieved_bytes_per_s * scale) if op.ib_bytes else 0.0
    nvl_s = op.nvlink_bytes / (gpu.nvlink_achieved_bytes_per_s * scale) if op.nvlink_bytes else 0.0
    latency = gpu.scale_out_latency_s if op.ib_bytes else gpu.nvlink_latency_s
    return max(ib_s, nvl_s) + latency


def p2p_time_s(num_bytes: float, gpu: GPUSpec, same_node: bool, link_bw_scale: float = 1.0) -> float:
    """Pipeline send/recv of activations or gradients between neighbouring stages."""
    if same_node:
        return num_bytes / (gpu.nvlink_achieved_bytes_per_s * link_bw_scale) + gpu.nvlink_latency_s
    return num_bytes / (gpu.scale_out_achieved_bytes_per_s * link_bw_scale) + gpu.scale_out_latency_s


def ring_collective_time_s(num_bytes: float, ranks: int, gpu: GPUSpec, same_node: bool, link_bw_scale: float = 1.0,
                           ranks_per_node: int = 1) -> float:
    """Reduce-scatter or all-gather of `num_bytes` (the full buffer) over a ring of `ranks`:
    each GPU sends and receives (ranks - 1) / ranks of it. Across nodes with `ranks_per_node` of
    the ring's ranks on each node, the ring leaves a node once per channel and NCCL spreads its
    channels over those ranks' NICs (one a GPU), so a node's (ranks - 1) / ranks of the buffer
    goes out through ranks_per_node NICs at once; the hops inside the node (NVLink) cap it
    (NVIDIA/nccl#412, an NCCL maintainer: more GPU-attached NICs give more inter-node bandwidth,
    "up to" the node's NVLink bandwidth)."""
    if ranks <= 1:
        return 0.0
    bw = (gpu.nvlink_achieved_bytes_per_s if same_node
          else min(gpu.scale_out_achieved_bytes_per_s * max(1, ranks_per_node), gpu.nvlink_achieved_bytes_per_s))
    lat = gpu.nvlink_latency_s if same_node else gpu.scale_out_latency_s
    return num_bytes * (ranks - 1) / ranks / (bw * link_bw_scale) + (ranks - 1) * lat


# Collectives by their NCCL names. Bus bandwidth (nccl-tests doc/PERFORMANCE.md): a collective on n
# ranks moves `factor x bytes` through each rank's link, bytes being the whole buffer (the
# all-reduce's input, the all-gather's output, the reduce-scatter's input):
#   all_reduce 2(n-1)/n, all_gather and reduce_scatter (n-1)/n, all_to_all (n-1)/n, send_recv 1.
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
# ring steps whose latency a collective pays: 2(n-1) for the all-reduce (reduce-scatter then
# all-gather), n-1 for the others, 1 for a send/recv
_LATENCY_STEPS = {"all_reduce": 2, "all_gather": 1, "reduce_scatter": 1, "all_to_all": 1}


def bus_factor(kind: str, ranks: int) -> float:
    """Bytes each rank's link carries per byte of buffer (nccl-tests' busBw / algBw)."""
    if kind not in COLLECTIVES:
        raise ValueError(f"unknown collective {kind!r}; one of {COLLECTIVES}")
    if kind == "send_recv":
        return 1.0
    if ranks <= 1:
        return 0.0
    return (2.0 if kind == "all_reduce" else 1.0) * (ranks - 1) / ranks


def collective_time_s(kind: str, num_bytes: float, ranks: int, gpu: GPUSpec, same_node: bool,
                      measured: dict | None = None, link_bw_scale: float = 1.0, ranks_per_node: int = 1) -> float:
    """One collective of a `num_bytes` buffer over `ranks` GPUs: bus_factor x bytes over the bus
    bandwidth, plus latency. `measured` is the profile's `collectives` table ({kind: {"latency_s",
    "bus_bytes_per_s", "source"}}, nccl-tests-style measurements within one node); it is used for
    collectives inside a node. Otherwise the catalog's achieved link bandwidth is the bus bandwidth
    (H100: ~370 GB/s of NVLink's 450 for collectives other than all-reduce, an NCCL maintainer in
    nccl-tests#212; the scale-out NIC's 46 GB/s, nccl-tests#290), with the link's small-message
    latency per ring step. Across nodes, `ranks_per_node` of the group's ranks on each node send
    through their own NICs at once, up to the node's NVLink (as ring_collective_time_s: NCCL's
    ring or tree leaves a node once per channel and spreads its channels over the node's NICs,
    NVIDIA/nccl#412); 1 where one rank a node is in the group."""
    if num_bytes <= 0 or (ranks <= 1 and kind != "send_recv"):
        return 0.0
    factor = bus_factor(kind, ranks)
    row = (measured or {}).get(kind) if same_node else None
    if row:
        return row["latency_s"] + factor * num_bytes / (row["bus_bytes_per_s"] * link_bw_scale)
    bw = (gpu.nvlink_achieved_bytes_per_s if same_node
          else min(gpu.scale_out_achieved_bytes_per_s * max(1, ranks_per_node), gpu.nvlink_achieved_bytes_per_s))
    lat = gpu.nvlink_latency_s if same_node else gpu.scale_out_latency_s
    steps = 1 if kind == "send_recv" else _LATENCY_STEPS[kind] * (ranks - 1)
    return factor * num_bytes / (bw * link_bw_scale) + steps * lat


def pipelined_exposed_s(kind: str, comm_s: float, gemm_s: float, ranks: int) -> float:
    """Exposed seconds of a TP collective pipelined with the GEMM that consumes (all-gather) or
    produces (reduce-scatter, all-reduce) it, the GEMM split into one chunk per rank (the
    decomposition of torch's micro-pipelined TP, torch/distributed/_symmetric_memory
    _pipelined_all_gather_and_consume / _pipelined_produce_and_all2all, and of TransformerEngine's
    ring-exchange userbuffers overlap). The ring moves ranks-1 shards of comm_s / (ranks-1) each.
    All-gather: the local shard's chunk runs with no transfer beside it, and chunk i waits for
    shard i, so comm_s - gemm_s (ranks-1)/ranks stays exposed. Reduce-scatter: a shard leaves only
    once its chunk is computed; besides that bound, the last transfer (comm_s / (ranks-1)) can hide
    behind the local chunk (gemm_s / ranks) only. Never less than perfect overlap (comm_s - gemm_s)."""
    if ranks <= 1 or comm_s <= 0:
        return 0.0
    exposed = comm_s - gemm_s * (ranks - 1) / ranks
    if kind != "all_gather":
        exposed = max(exposed, comm_s / (ranks - 1) - gemm_s / ranks)
    return max(0.0, exposed)
