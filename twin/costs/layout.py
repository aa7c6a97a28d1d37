"""Where a parallel group's ranks lie: inside one node or across nodes, and how many of them a node holds.

Ranks are numbered over a grid of parallel dimensions, innermost first, and placed consecutively on
nodes of G GPUs (rank r on node r // G). A group is the ranks that differ only along some of the
dimensions (a TP group along 'tp', the data-parallel group along 'cp' and 'dp', ...). The sources
agree on one layout (docs/notes/s27egrad2_rule.md):

- Megatron-LM `megatron/core/parallel_state.py` `initialize_model_parallel(order="tp-cp-ep-dp-pp")`
  (core_r0.8.0 and main): the dense grid TP, CP, DP, PP (innermost first); the expert grid (MoE
  parallel folding: `RankGenerator(tp=expert_tensor_parallel_size, ep=..., dp=expert_data_parallel_size,
  pp=..., cp=1, order=order)`) ETP, EP, EDP, PP over the same ranks and the same PP groups;
- torchtitan `distributed/parallel_dims.py` (build_mesh @ 9dec370: [pp, dp_replicate, dp_shard, cp, tp],
  outermost first; EP borrows dp_shard x cp (x tp with ETP 1) innermost @ 0119de1);
- DeepSeek-V3 (report §3.1, §3.2, §4.2): TP 1, EP 64 on 8 whole nodes, PP 16 outside a stage's 128 GPUs.

The twin counts routed experts un-split over TP (ETP 1: memory.memory_breakdown), so its expert grid
is EP, EDP = TP x CP x DP / EP, PP.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

Grid = tuple[tuple[str, int], ...]   # (dimension, size), innermost first


@dataclass(frozen=True)
class Span:
    """The ranks of one group, the most of them on one node (the NICs its ring uses at once, one a
    GPU), and the nodes it touches."""

    ranks: int
    ranks_per_node: int
    nodes: int

    @property
    def same_node(self) -> bool:
        return self.nodes == 1


def dense_grid(tp: int, cp: int, dp: int, pp: int) -> Grid:
    """Attention and dense layers: TP innermost, then CP, DP, PP (Megatron's 'tp-cp-ep-dp-pp' with EP 1)."""
    return (("tp", tp), ("cp", cp), ("dp", dp), ("pp", pp))


def expert_grid(ep: int, edp: int, pp: int) -> Grid:
    """Routed experts (ETP 1): EP innermost, then the expert-data-parallel ranks, PP."""
    return (("ep", ep), ("edp", edp), ("pp", pp))


@functools.lru_cache(maxsize=4096)
def group_span(grid: Grid, group: frozenset[str] | tuple[str, ...], gpus_per_node: int) -> Span:
    """The span of the group holding rank 0 that varies along the dimensions `group` of `grid`. Every
    group of a grid whose sizes divide one another and the node alike spans the same (power-of-two
    layouts); otherwise rank 0's is the one given."""
    if gpus_per_node < 1 or any(size < 1 for _, size in grid):
        raise ValueError(f"gpus_per_node and every size must be >= 1; got {gpus_per_node}, {grid}")
    names = [name for name, _ in grid]
    unknown = set(group) - set(names)
    if unknown:
        raise ValueError(f"group dimensions {sorted(unknown)} not in the grid's {names}")
    ranks = [0]
    stride = 1
    for name, size in grid:
        if name in group:
            ranks = [r + i * stride for i in range(size) for r in ranks]
        stride *= size
    per_node: dict[int, int] = {}
    for r in ranks:
        per_node[r // gpus_per_node] = per_node.get(r // gpus_per_node, 0) + 1
    return Span(len(ranks), max(per_node.values()), len(per_node))


def pipeline_hop_same_node(src: int, dst: int, stage_ranks: int, gpus_per_node: int) -> bool:
    """Whether pipeline ranks `src` and `dst` (PP outermost: pipeline rank r holds global ranks r x S ...
    (r + 1) x S - 1, S = `stage_ranks`) send to each other inside one node: their first ranks' nodes
    (every pair of a hop alike where S divides the node or the node divides S)."""
    return (src * stage_ranks) // gpus_per_node == (dst * stage_ranks) // gpus_per_node
