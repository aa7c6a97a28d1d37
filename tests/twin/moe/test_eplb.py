"""EPLB: our numpy reimplementation against the upstream README example.

Test data copied from github.com/deepseek-ai/EPLB, README.md at commit
d52c72d5b2f2fb4c41afbf8eb21366820239913d ("Interface and Example": two layers of 12 experts, 16
replicas, 4 groups, 2 nodes, 8 GPUs). The README prints phy2log only; log2phy and logcnt below
are the upstream eplb.py's outputs for the same call at that commit (run once with torch, not
part of the test).
"""

import numpy as np
import pytest

from twin.moe.eplb import balanced_packing, contiguous_gpu_loads, rebalance_experts, replicate

WEIGHT = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
          [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]

README_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                  [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]

UPSTREAM_LOGCNT = [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1],
                   [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]]

UPSTREAM_LOG2PHY = [[[12, -1], [15, 13], [11, -1], [6, -1], [7, 5], [0, 2], [1, -1], [3, -1], [4, -1], [9, -1], [8, 10], [14, -1]],
                    [[13, -1], [15, 11], [8, -1], [14, -1], [9, -1], [10, 12], [2, 4], [0, -1], [6, 3], [7, -1], [1, -1], [5, -1]]]


def test_readme_example_exact():
    plan = rebalance_experts(np.array(WEIGHT), 16, 4, 2, 8)
    assert plan.policy == "hierarchical"
    assert plan.phy2log_LP.tolist() == README_PHY2LOG
    assert plan.count_LE.tolist() == UPSTREAM_LOGCNT
    assert plan.log2phy_LEX.tolist() == UPSTREAM_LOG2PHY


def test_maps_are_consistent_and_balance_improves():
    rng = np.random.default_rng(3)
    w = rng.pareto(1.5, size=(3, 32)) * 100 + 1
    plan = rebalance_experts(w, 48, 3, 2, 16)          # 3 groups don't divide 2 nodes -> global
    assert plan.policy == "global"
    assert (plan.count_LE.sum(axis=1) == 48).all()
    for layer in range(3):
        for e in range(32):
            slots = [p for p in plan.log2phy_LEX[layer, e] if p >= 0]
            assert len(slots) == plan.count_LE[layer, e]
            assert all(plan.phy2log_LP[layer, p] == e for p in slots)
    before = contiguous_gpu_loads(np.repeat(w, 1, axis=1)[:, :32], 16)
    after = plan.gpu_loads(w)
    assert np.allclose(after.sum(1), w.sum(1))
    assert (after.max(1) < before.max(1)).all()


def test_packing_and_replication_by_hand():
    # items 10, 8, 7, 1 into 2 packs of 2: 10 -> p0, 8 -> p1, 7 -> p1 (8 < 10), 1 -> p0 (p1 full)
    pack, slot = balanced_packing(np.array([[10, 8, 7, 1]]), 2)
    assert pack.tolist() == [[0, 1, 1, 0]] and slot.tolist() == [[0, 0, 1, 1]]
    # weights 9, 3: extra replicas go to 9 (9 > 3), then 9/2 = 4.5 > 3 again -> 9 has 3 copies
    phy2log, rank, count = replicate(np.array([[9.0, 3.0]]), 4)
    assert phy2log.tolist() == [[0, 1, 0, 0]] and rank.tolist() == [[0, 0, 1, 2]] and count.tolist() == [[3, 1]]


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="multiple of 8"):
        rebalance_experts(np.array(WEIGHT), 12, 4, 2, 8)
