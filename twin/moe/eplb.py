"""Expert-parallel load balancer (EPLB): replicate hot experts and place replicas on GPUs.

Our own numpy implementation of the algorithm DeepSeek published as `eplb.py` in
github.com/deepseek-ai/EPLB (commit d52c72d), which the V3 report (§3.4) describes as "redundant
experts": given an estimate of each logical expert's load, make `num_replicas` physical experts
(every logical expert at least once, the hottest ones several times), so that the heaviest GPU
carries as little load as possible.

Two policies, chosen as upstream chooses them:
- hierarchical (expert groups divisible by nodes): (1) pack whole expert groups onto nodes so that
  node loads are even (keeps group-limited routing inside few nodes); (2) inside each node,
  replicate that node's experts; (3) pack the node's replicas onto its GPUs.
- global (otherwise): the same three steps with one group and one node.

Packing is greedy "heaviest item first into the lightest pack that still has room" with every
pack holding the same number of items. Replication repeatedly adds a replica to the expert whose
per-replica load (load / replicas) is largest. Ties go to the lowest index, which is what the
upstream code does on CPU, so outputs match it element for element (see tests/twin/moe).

Shapes: `weight_LE` is (layers, logical experts). Outputs:
  phy2log_LP  logical expert held by each physical slot (slots numbered GPU-major:
              slot p sits on GPU p // (P / num_gpus))
  log2phy_LEX physical slots of each logical expert, padded with -1 to the largest replica count
  count_LE    replicas per logical expert
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def balanced_packing(weight_LN: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign N items per row to `num_packs` packs of exactly N / num_packs items each, heaviest
    item first into the currently lightest pack with room. Returns (pack_LN, slot_in_pack_LN)."""
    weight_LN = np.asarray(weight_LN, dtype=np.float64)
    num_rows, n = weight_LN.shape
    if n % num_packs:
        raise ValueError(f"{n} items do not split evenly into {num_packs} packs")
    per_pack = n // num_packs
    if per_pack == 1:
        return np.tile(np.arange(n), (num_rows, 1)), np.zeros((num_rows, n), dtype=np.int64)
    pack_LN = np.full((num_rows, n), -1, dtype=np.int64)
    slot_LN = np.full((num_rows, n), -1, dtype=np.int64)
    for row in range(num_rows):
        load = [0.0] * num_packs
        filled = [0] * num_packs
        for item in np.argsort(-weight_LN[row], kind="stable"):
            open_packs = [p for p in range(num_packs) if filled[p] < per_pack]
            pack = min(open_packs, key=load.__getitem__)
            pack_LN[row, item] = pack
            slot_LN[row, item] = filled[pack]
            load[pack] += weight_LN[row, item]
            filled[pack] += 1
    return pack_LN, slot_LN


def replicate(weight_LE: np.ndarray, num_physical: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grow E logical experts to `num_physical` replicas, each extra replica going to the expert
    with the largest load per replica. Returns (phy2log_LP, replica_rank_LP, count_LE)."""
    weight_LE = np.asarray(weight_LE, dtype=np.float64)
    num_rows, e = weight_LE.shape
    if num_physical < e:
        raise ValueError(f"{num_physical} physical experts cannot hold {e} logical experts")
    phy2log = np.tile(np.arange(num_physical), (num_rows, 1))
    rank = np.zeros((num_rows, num_physical), dtype=np.int64)
    count = np.ones((num_rows, e), dtype=np.int64)
    rows = np.arange(num_rows)
    for p in range(e, num_physical):
        hot = np.argmax(weight_LE / count, axis=1)   # first maximum on ties
        phy2log[:, p] = hot
        rank[:, p] = count[rows, hot]
        count[rows, hot] += 1
    return phy2log, rank, count


def _inverse(perm_LN: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm_LN)
    rows = np.arange(perm_LN.shape[0])[:, None]
    inv[rows, perm_LN] = np.arange(perm_LN.shape[1])[None, :]
    return inv


def _hierarchical(weight_LE: np.ndarray, num_physical: int, num_groups: int, num_nodes: int,
                  num_gpus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num_layers, e = weight_LE.shape
    for what, a, b in (("experts", e, num_groups), ("expert groups", num_groups, num_nodes),
                       ("GPUs", num_gpus, num_nodes), ("physical experts", num_physical, num_gpus)):
        if a % b:
            raise ValueError(f"{what} ({a}) must be a multiple of {b}")
    group_size = e // num_groups
    groups_per_node = num_groups // num_nodes
    slots_per_gpu = num_physical // num_gpus
    e_node, p_node = e // num_nodes, num_physical // num_nodes

    # (1) groups -> nodes. "Node-major" order: experts renumbered so node n holds [n*e_node, ...)
    group_load_LG = weight_LE.reshape(num_layers, num_groups, group_size).sum(-1)
    gpack, gslot = balanced_packing(group_load_LG, num_nodes)
    first = (gpack * groups_per_node + gslot) * group_size                      # (L, G)
    log2node_order = (first[:, :, None] + np.arange(group_size)).reshape(num_layers, e)
    node_order2log = _inverse(log2node_order)

    # (2) replicate inside each node
    load_node_order = np.take_along_axis(weight_LE, node_order2log, axis=1).reshape(num_layers * num_nodes, e_node)
    phy2nlog, phy_rank, ncount = replicate(load_node_order, p_node)

    # (3) replicas -> GPUs of the node
    replica_load = np.take_along_axis(load_node_order / ncount, phy2nlog, axis=1)
    pack, slot = balanced_packing(replica_load, num_gpus // num_nodes)
    phy2placed = pack * slots_per_gpu + slot
    placed2phy = _inverse(phy2placed)

    placed2nlog = np.take_along_axis(phy2nlog, placed2phy, axis=1)
    placed2nlog = (placed2nlog.reshape(num_layers, num_nodes, p_node)
                   + (np.arange(num_nodes) * e_node)[None, :, None]).reshape(num_layers, num_physical)
    phy2log = np.take_along_axis(node_order2log, placed2nlog, axis=1)
    rank = np.take_along_axis(phy_rank, placed2phy, axis=1).reshape(num_layers, num_physical)
    count = np.take_along_axis(ncount.reshape(num_layers, e), log2node_order, axis=1)
    return phy2log, rank, count


@dataclass(frozen=True)
class EplbPlan:
    phy2log_LP: np.ndarray
    log2phy_LEX: np.ndarray
    count_LE: np.ndarray
    num_gpus: int
    policy: str

    def gpu_loads(self, weight_LE: np.ndarray) -> np.ndarray:
        """(layers, GPUs) load when each expert's load is split evenly over its replicas."""
        weight_LE = np.asarray(weight_LE, dtype=np.float64)
        per_replica = np.take_along_axis(weight_LE / self.count_LE, self.phy2log_LP, axis=1)
        return per_replica.reshape(per_replica.shape[0], self.num_gpus, -1).sum(-1)


def rebalance_experts(weight_LE, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int) -> EplbPlan:
    """Replication and placement plan from per-(layer, logical expert) load estimates."""
    weight_LE = np.asarray(weight_LE, dtype=np.float32).astype(np.float64)
    num_layers, e = weight_LE.shape
    if num_groups % num_nodes == 0:
        policy = "hierarchical"
        phy2log, rank, count = _hierarchical(weight_LE, num_replicas, num_groups, num_nodes, num_gpus)
    else:
        policy = "global"
        phy2log, rank, count = _hierarchical(weight_LE, num_replicas, 1, 1, num_gpus)
    width = int(count.max())
    log2phy = np.full((num_layers, e, width), -1, dtype=np.int64)
    layers = np.repeat(np.arange(num_layers), num_replicas)
    log2phy[layers, phy2log.ravel(), rank.ravel()] = np.tile(np.arange(num_replicas), num_layers)
    return EplbPlan(phy2log, log2phy, count, num_gpus, policy)


def contiguous_gpu_loads(weight_LE, num_gpus: int) -> np.ndarray:
    """(layers, GPUs) load without EPLB: experts placed contiguously, E / num_gpus per GPU."""
    weight_LE = np.asarray(weight_LE, dtype=np.float64)
    return weight_LE.reshape(weight_LE.shape[0], num_gpus, -1).sum(-1)
