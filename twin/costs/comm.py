"""Communication-time cost functions: bytes and topology -> seconds. Pure, no state.

Bandwidths are the GPU catalog's *achieved* figures (published measurements); latencies are the
catalog's small-message latencies. Expert-parallel all-to-all is bounded by the slower of its IB
and NVLink legs (DeepEP moves both concurrently: IB to the target node, then NVLink forwarding).
"""

from __future__ import annotations

from twin.costs.flops import Op
from twin.core.specs import GPUSpec


def all_to_all_time_s(op: Op, gpu: GPUSpec, link_bw_scale: float = 1.0) -> float:
    """Dispatch or combine of one micro-batch on one GPU (bytes per GPU are in the op)."""
    ib_s = op.ib_bytes / (gpu.scale_out_achieved_bytes_per_s * link_bw_scale) if op.ib_bytes else 0.0
    nvl_s = op.nvlink_bytes / (gpu.nvlink_achieved_bytes_per_s * link_bw_scale) if op.nvlink_bytes else 0.0
    latency = gpu.scale_out_latency_s if op.ib_bytes else gpu.nvlink_latency_s
    return max(ib_s, nvl_s) + latency


def p2p_time_s(num_bytes: float, gpu: GPUSpec, same_node: bool, link_bw_scale: float = 1.0) -> float:
    """Pipeline send/recv of activations or gradients between neighbouring stages."""
    if same_node:
        return num_bytes / (gpu.nvlink_achieved_bytes_per_s * link_bw_scale) + gpu.nvlink_latency_s
    return num_bytes / (gpu.scale_out_achieved_bytes_per_s * link_bw_scale) + gpu.scale_out_latency_s


def ring_collective_time_s(num_bytes: float, ranks: int, gpu: GPUSpec, same_node: bool, link_bw_scale: float = 1.0) -> float:
    """Reduce-scatter or all-gather of `num_bytes` (the full buffer) over a ring of `ranks`:
    each GPU sends and receives (ranks - 1) / ranks of it."""
    if ranks <= 1:
        return 0.0
    bw = gpu.nvlink_achieved_bytes_per_s if same_node else gpu.scale_out_achieved_bytes_per_s
    lat = gpu.nvlink_latency_s if same_node else gpu.scale_out_latency_s
    return num_bytes * (ranks - 1) / ranks / (bw * link_bw_scale) + (ranks - 1) * lat
