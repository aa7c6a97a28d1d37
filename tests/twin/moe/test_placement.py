import numpy as np
import pytest

from twin.costs.flops import ExpertLoad, expected_nodes_per_token, moe_ops
from twin.moe.placement import (monte_carlo_nodes_per_token, padded_gemm_rows_frac, rank_traffic)
from calibration.moe_skew import gemm_rows_frac
from twin.core.specs import get_model


def test_rows_and_ib_by_hand():
    # 4 experts on 4 ranks, 2 GPUs per node (2 nodes), top-2, 10 tokens per GPU.
    # rows_r = ep*tokens*top_k*share = 80 * [.4, .3, .2, .1] = [32, 24, 16, 8]; mean 20.
    # node shares q = [.7, .3]; P(hit) h = 1 - (1-q)^2 = [.91, .51]; H = 1.42 (<= M = 2).
    # IB received per GPU = tokens*(nodes-1)*h = [9.1, 9.1, 5.1, 5.1];
    # sent per GPU = tokens*(H - h_own) = [5.1, 5.1, 9.1, 9.1]. Balanced: h = .75, 7.5 each way.
    t = rank_traffic(np.array([0.4, 0.3, 0.2, 0.1]), 10, 2, 4, 2, 2)
    assert t.rows_R.tolist() == pytest.approx([32, 24, 16, 8])
    assert t.ib_recv_tokens_R.tolist() == pytest.approx([9.1, 9.1, 5.1, 5.1])
    assert t.ib_send_tokens_R.tolist() == pytest.approx([5.1, 5.1, 9.1, 9.1])
    assert t.nvlink_rows_R.tolist() == pytest.approx([16, 12, 8, 4])      # rows * (g-1)/g, g = 2
    assert t.ib_bytes_R(100.0).tolist() == pytest.approx([910, 910, 910, 910])
    el = t.expert_load()
    assert el.rows_frac == pytest.approx(1.6) and el.ib_frac == pytest.approx(9.1 / 7.5)
    assert el.nodes_per_token == pytest.approx(1.42)


def test_node_limited_cap_by_hand():
    # same layer with M = 1: H = 1.42 > 1, so h scales by 1/1.42 -> [.6408, .3592], H = 1;
    # received on node 0 GPUs = 10 * .6408; balanced h = [.5, .5] -> 5 tokens per GPU.
    el = rank_traffic(np.array([0.4, 0.3, 0.2, 0.1]), 10, 2, 4, 2, 1).expert_load()
    assert el.nodes_per_token == pytest.approx(1.0)
    assert el.ib_frac == pytest.approx(10 * 0.91 / 1.42 / 5)
    # moe_ops never lets a load model exceed the cap
    m = get_model("deepseek-v3")
    capped = {o.name: o for o in moe_ops(m, 4096, 64, 8, 4, ExpertLoad(nodes_per_token=6.0))}
    plain = {o.name: o for o in moe_ops(m, 4096, 64, 8, 4)}
    assert capped["dispatch"].ib_bytes == pytest.approx(plain["dispatch"].ib_bytes)


def test_balanced_shares_match_closed_form():
    for m_cap in (4, 8):
        t = rank_traffic(np.full(256, 1 / 256), 4096, 8, 64, 8, m_cap)
        assert t.nodes_per_token == pytest.approx(expected_nodes_per_token(8, 8, m_cap))
        assert t.expert_load() == ExpertLoad(1.0, 1.0, 1.0, t.nodes_per_token)


def test_monte_carlo_agrees_with_analytic_nodes():
    s = np.random.default_rng(0).dirichlet(np.full(64, 2.0))
    analytic = rank_traffic(s, 100, 8, 16, 4, 4).nodes_per_token
    assert monte_carlo_nodes_per_token(s, 8, 16, 4, 4, num_tokens=4000) == pytest.approx(analytic, rel=0.06)


def test_gemm_row_hypotheses_by_hand():
    # two experts, 200 and 56 rows, mean 128: padded to tiles of 128 -> 256 + 128 = 384 rows
    # against 256 balanced (no padding): 1.5; 'max' = 200/128; 'total' = 1
    c = np.array([200.0, 56.0])
    assert gemm_rows_frac(c, "padded") == pytest.approx(1.5)
    assert gemm_rows_frac(c, "max") == pytest.approx(200 / 128)
    assert gemm_rows_frac(c, "total") == 1.0
    assert padded_gemm_rows_frac(c, 128.0) == pytest.approx(1.5)
    assert padded_gemm_rows_frac(np.full(4, 8192.0), 8192.0) == 1.0
