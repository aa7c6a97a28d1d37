"""Experts on EP ranks and nodes, and the per-rank rows and bytes that a load gives.

Placement is contiguous as in V3 (§3.2: EP64 over 8 nodes): rank r holds experts
[r*E/ep, (r+1)*E/ep), node n holds ranks [n*g, (n+1)*g) with g GPUs per node. An EPLB plan
(twin.moe.eplb) gives per-GPU loads directly.

Per-rank figures for one MoE layer and one micro-batch, `tokens` per GPU, shares s_e of routed
rows per expert (sum 1), top_k experts per token, `nodes` nodes, M = max nodes per token:

  rows received by rank r   R_r = ep * tokens * top_k * sum_{e on r} s_e      (mean: tokens*top_k)
  node n's slot share       q_n = sum_{e on n} s_e
  P(token reaches node n)   h_n = 1 - (1 - q_n)^top_k     (top_k independent picks; uniform q gives
                                                           the closed form of flops.expected_nodes_per_token)
  distinct nodes per token  H = sum_n h_n; node-limited routing caps it at M: if H > M every h_n
                            is scaled by M / H (a token keeps its M most useful nodes; we spread
                            the cut in proportion, an approximation)
  IB (DeepEP: one copy per remote node, over the rail GPU i -> GPU i):
    received per GPU of n   tokens * (nodes - 1) * h_n
    sent per GPU of n       tokens * (H - h_n)
  NVLink per GPU            R_r * (g - 1) / g rows (rows for its node's other GPUs and forwarding)

Balanced shares give R_r = tokens*top_k and IB tokens*H*(nodes-1)/nodes per GPU, exactly the
figures of flops.moe_ops, so ExpertLoad ratios are 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.costs.flops import ExpertLoad, ep_nodes


@dataclass(frozen=True)
class RankTraffic:
    """Per-rank figures of one layer and micro-batch (arrays over EP ranks), in rows and tokens."""

    rows_R: np.ndarray              # routed rows received per rank
    ib_recv_tokens_R: np.ndarray    # token copies received over IB per GPU
    ib_send_tokens_R: np.ndarray    # token copies sent over IB per GPU
    nvlink_rows_R: np.ndarray       # rows moved over NVLink per GPU
    nodes_per_token: float          # distinct nodes per token after the cap
    balanced_rows: float
    balanced_ib_tokens: float

    def ib_bytes_R(self, row_bytes: float) -> np.ndarray:
        return np.maximum(self.ib_recv_tokens_R, self.ib_send_tokens_R) * row_bytes

    def nvlink_bytes_R(self, row_bytes: float) -> np.ndarray:
        return self.nvlink_rows_R * row_bytes

    @property
    def straggler_rank(self) -> int:
        return int(np.argmax(self.rows_R))

    def expert_load(self, gemm_rows_frac: float | None = None) -> ExpertLoad:
        rows_frac = float(self.rows_R.max() / self.balanced_rows)
        ib = np.maximum(self.ib_recv_tokens_R, self.ib_send_tokens_R).max()
        ib_frac = float(ib / self.balanced_ib_tokens) if self.balanced_ib_tokens else 1.0
        return ExpertLoad(rows_frac, rows_frac if gemm_rows_frac is None else gemm_rows_frac, ib_frac,
                          self.nodes_per_token)


def expert_to_rank(num_experts: int, ep: int) -> np.ndarray:
    if num_experts % ep:
        raise ValueError(f"{num_experts} experts do not split over {ep} EP ranks")
    return np.repeat(np.arange(ep), num_experts // ep)


def rank_to_node(ep: int, gpus_per_node: int) -> np.ndarray:
    return np.arange(ep) // min(ep, gpus_per_node)


def rank_shares(shares_E: np.ndarray, ep: int) -> np.ndarray:
    """Share of the layer's routed rows landing on each rank (contiguous placement)."""
    shares_E = np.asarray(shares_E, dtype=np.float64)
    return shares_E.reshape(ep, -1).sum(axis=1)


def node_hit_probs(node_shares_N: np.ndarray, top_k: int, max_nodes: int) -> np.ndarray:
    """P(a token has at least one expert on node n), with the node-limited cap applied."""
    q = np.asarray(node_shares_N, dtype=np.float64)
    if q.shape[0] <= 1:
        return np.ones_like(q)
    h = 1.0 - (1.0 - q) ** top_k
    total = h.sum()
    if total > max_nodes:
        h = h * (max_nodes / total)
    return h


def rank_traffic(shares_E: np.ndarray, tokens: int, top_k: int, ep: int, gpus_per_node: int,
                 max_nodes_per_token: int, gpu_shares_R: np.ndarray | None = None) -> RankTraffic:
    """Per-rank rows and IB/NVLink traffic of one layer (see the module docstring).
    gpu_shares_R overrides the contiguous placement (e.g. an EPLB plan's per-GPU shares)."""
    shares_E = np.asarray(shares_E, dtype=np.float64)
    shares_E = shares_E / shares_E.sum()
    r_share = rank_shares(shares_E, ep) if gpu_shares_R is None else np.asarray(gpu_shares_R, dtype=np.float64)
    g = min(ep, gpus_per_node)
    nodes = ep_nodes(ep, gpus_per_node)
    node_of = rank_to_node(ep, gpus_per_node)
    rows = ep * tokens * top_k * r_share
    q = np.bincount(node_of, weights=r_share, minlength=nodes)
    h = node_hit_probs(q, top_k, max_nodes_per_token)
    big_h = float(h.sum()) if nodes > 1 else 1.0
    if nodes > 1:
        recv = tokens * (nodes - 1) * h[node_of]
        send = tokens * (big_h - h[node_of])
    else:
        recv = send = np.zeros(ep)
    h_bal = node_hit_probs(np.full(nodes, 1.0 / nodes), top_k, max_nodes_per_token)
    bal_ib = tokens * float(h_bal.sum()) * (nodes - 1) / nodes if nodes > 1 else 0.0
    return RankTraffic(rows, recv, send, rows * (g - 1) / g, big_h, float(tokens * top_k), bal_ib)


TILE_M = 128  # grouped-GEMM row tile (twin/moe/validate.py: uneven groups cost their tile padding)


def padded_gemm_rows_frac(rows_E: np.ndarray, mean_rows: float, tile: int = TILE_M) -> float:
    """Rows one rank's grouped GEMM effectively processes over the balanced rows: its rows plus
    the tile padding of its uneven groups beyond that of balanced groups (validate.py's 'padded'
    hypothesis, chosen on the measured fitting skews)."""
    rows_E = np.asarray(rows_E, dtype=np.float64)
    pad = lambda x: np.ceil(np.asarray(x) / tile - 1e-9) * tile  # noqa: E731
    extra = float(np.sum(pad(rows_E) - rows_E)) - rows_E.shape[0] * float(pad(mean_rows) - mean_rows)
    return (float(rows_E.sum()) + max(0.0, extra)) / (rows_E.shape[0] * mean_rows)


def monte_carlo_nodes_per_token(shares_E: np.ndarray, top_k: int, ep: int, gpus_per_node: int,
                                max_nodes_per_token: int, num_tokens: int = 20000, seed: int = 0) -> float:
    """Check of the analytic node count: tokens pick top_k distinct experts (Gumbel-top-k from
    the shares), restricted to the max_nodes nodes with the highest sum of their best
    top_k / max_nodes keys (V3 §2.1.2 node-limited routing); returns mean distinct nodes."""
    rng = np.random.default_rng(seed)
    shares_E = np.asarray(shares_E, dtype=np.float64)
    e = shares_E.shape[0]
    node_of_e = rank_to_node(ep, gpus_per_node)[expert_to_rank(e, ep)]
    nodes = int(node_of_e.max()) + 1
    keys = np.log(np.maximum(shares_E, 1e-300))[None, :] + rng.gumbel(size=(num_tokens, e))
    if nodes > max_nodes_per_token:
        per = max(1, top_k // max_nodes_per_token)
        by_node = np.stack([np.sort(keys[:, node_of_e == n], axis=1)[:, -per:].sum(1) for n in range(nodes)], axis=1)
        keep = np.argsort(-by_node, axis=1)[:, :max_nodes_per_token]
        allowed = np.zeros((num_tokens, nodes), dtype=bool)
        np.put_along_axis(allowed, keep, True, axis=1)
        keys = np.where(allowed[:, node_of_e], keys, -np.inf)
    top = np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k]
    hit = np.zeros((num_tokens, nodes), dtype=bool)
    np.put_along_axis(hit, node_of_e[top], True, axis=1)
    return float(hit.sum(1).mean())


def scenario_layer_loads(sc, load_model, extra_factor: float = 1.0) -> list:
    """Per-layer routing loads for the step twin: an ExpertLoad per MoE layer (1.0 for dense
    layers), from a LoadModel under the scenario's EP placement; `extra_factor` (the workload's
    routing_imbalance knob) multiplies the rows and IB ratios."""
    m, p = sc.model, sc.plan
    if not m.is_moe:
        return [1.0] * m.num_layers
    shares = load_model.shares_LE(m.num_layers, m.num_routed_experts, m.top_k)
    tokens = sc.tokens_per_microbatch // p.tp
    out = []
    for layer in range(m.num_layers):
        if layer < m.num_dense_layers:
            out.append(1.0)
            continue
        tr = rank_traffic(shares[layer], tokens, m.top_k, p.ep, sc.gpu.gpus_per_node, p.max_nodes_per_token)
        local = m.num_routed_experts // p.ep
        straggler_rows_E = p.ep * tokens * m.top_k * shares[layer].reshape(p.ep, local)[tr.straggler_rank] / shares[layer].sum()
        el = tr.expert_load(padded_gemm_rows_frac(straggler_rows_E, tokens * m.top_k / local))
        if extra_factor != 1.0:
            el = ExpertLoad(el.rows_frac * extra_factor, el.gemm_rows_frac * extra_factor, el.ib_frac * extra_factor,
                            el.nodes_per_token)
        out.append(el)
    return out
