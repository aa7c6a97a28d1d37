"""A compact DeepSeek-V3-style model: MLA attention, DeepSeekMoE, auxiliary-loss-free balancing, MTP
(and grouped-query attention for the catalog's GQA models, training only).

Built from a catalog `ModelSpec` (`real.configs.get_spec`). Follows the DeepSeek-V3 technical
report (arXiv 2412.19437) §2.1 (MLA, DeepSeekMoE, bias-based balancing) and §2.2 (MTP); the
GEMM precision is a `Precision` policy (`real/fp8.py`), expert parallelism takes a process
group (`real/ep.py`), and the router's top-k rule and per-expert counts are `real/routing.py`
(shared with `real/ep.py`). Nothing here reads globals: rank, world size and GEMM choice are
passed in.

Shape legend (suffixes on tensor names)
    B batch            S query positions       L key/cache positions     T tokens (= B*S)
    D hidden_size      H heads                 Q q_lora_rank             C kv_lora_rank
    P qk_nope_head_dim R qk_rope_head_dim      O v_head_dim              Y vocab
    F FFN width        E routed experts        K top-k                   G expert groups
    V GQA key-value heads                      A GQA head_dim
    N rows routed to experts (= T*K), sorted by expert; Np the padded row count
e.g. `x_BSD` activations, `w13_E2FD` fused gate/up weights of all experts, `topk_ids_TK`.

Simplifications, on purpose: RoPE without YaRN scaling; the router always uses sigmoid scores
normalised over the chosen experts (V3), also for V2-Lite-shaped configs (V2 uses softmax);
attention in training/prefill expands K/V and calls `scaled_dot_product_attention`, decoding
uses the compressed cache with the up-projections absorbed into the query and output.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from real.ep import combine, dispatch
from real.fp8 import BF16, Precision, grouped_mm, linear
from real.routing import expert_counts, route

GROUP_ALIGN = 16  # grouped GEMM kernels want each expert's row block aligned to 16 rows


def _param(*shape: int, std: float = 0.02) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x_xD: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x_xD, (x_xD.shape[-1],), self.weight, self.eps)


# ------------------------------------------------------------------------------------------
# Rotary embedding (decoupled: only the R-dim part of queries/keys carries position)
# ------------------------------------------------------------------------------------------


def rope_tables(rope_dim: int, max_len: int, theta: float = 10000.0):
    """cos_LR, sin_LR for positions 0..max_len-1 (rotate-half layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, rope_dim, 2).float() / rope_dim)
    angles_LR2 = torch.outer(torch.arange(max_len).float(), inv_freq)
    angles_LR = torch.cat([angles_LR2, angles_LR2], dim=-1)
    return angles_LR.cos(), angles_LR.sin()


def apply_rope(x_BSxR: torch.Tensor, cos_SR: torch.Tensor, sin_SR: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim of x (B, S, [H,] R) by position; cos/sin are (S, R)."""
    if x_BSxR.dim() == 4:
        cos_SR, sin_SR = cos_SR[:, None, :], sin_SR[:, None, :]
    x1, x2 = x_BSxR.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x_BSxR.float() * cos_SR + rotated.float() * sin_SR).to(x_BSxR.dtype)


# ------------------------------------------------------------------------------------------
# Multi-head latent attention
# ------------------------------------------------------------------------------------------


@dataclass
class MLACache:
    """The compressed KV cache of one layer: normalised latent c_BLC and the shared rope key
    kpe_BLR. Per token this is (C + R) values instead of 2*H*head_dim."""

    c_BLC: torch.Tensor
    kpe_BLR: torch.Tensor

    @classmethod
    def empty(cls, batch: int, max_len: int, kv_lora_rank: int, rope_dim: int, *,
              dtype=torch.bfloat16, device=None) -> "MLACache":
        return cls(torch.zeros(batch, max_len, kv_lora_rank, dtype=dtype, device=device),
                   torch.zeros(batch, max_len, rope_dim, dtype=dtype, device=device))

    def rows(self, start: int, stop: int) -> "MLACache":
        """The cache of sequences start..stop-1 (views: prefill fills a batch in chunks)."""
        return MLACache(self.c_BLC[start:stop], self.kpe_BLR[start:stop])


class MLA(nn.Module):
    """Multi-head latent attention (V3 report eqs. 1-11).

    q = W_qb · norm(W_qa · x) (or W_q · x when q_lora_rank == 0), split into a no-position part
    (P per head) and a rope part (R per head); the KV path compresses x to c (C values) plus one
    rope key (R values) shared by all heads; W_kvb expands c into per-head keys (P) and values (O).
    """

    def __init__(self, spec):
        super().__init__()
        D, H = spec.hidden_size, spec.num_heads
        self.H, self.P, self.R, self.O = H, spec.qk_nope_head_dim, spec.qk_rope_head_dim, spec.v_head_dim
        self.C, self.Q = spec.kv_lora_rank, spec.q_lora_rank
        self.softmax_scale = 1.0 / math.sqrt(self.P + self.R)
        if self.Q > 0:
            self.wq_a_QD = _param(self.Q, D)
            self.q_norm = RMSNorm(self.Q)
            self.wq_b_XQ = _param(H * (self.P + self.R), self.Q)  # X = H*(P+R)
        else:
            self.wq_XD = _param(H * (self.P + self.R), D)
        self.wkv_a_ZD = _param(self.C + self.R, D)  # Z = C + R
        self.kv_norm = RMSNorm(self.C)
        self.wkv_b_WC = _param(H * (self.P + self.O), self.C)  # W = H*(P+O)
        self.wo_DU = _param(D, H * self.O)  # U = H*O

    def _queries(self, x_BSD, cos_SR, sin_SR, precision):
        B, S, _ = x_BSD.shape
        if self.Q > 0:
            q_BSX = linear(self.q_norm(linear(x_BSD, self.wq_a_QD, precision)), self.wq_b_XQ, precision)
        else:
            q_BSX = linear(x_BSD, self.wq_XD, precision)
        q_BSHX = q_BSX.view(B, S, self.H, self.P + self.R)
        q_nope_BSHP, q_pe_BSHR = q_BSHX.split([self.P, self.R], dim=-1)
        return q_nope_BSHP, apply_rope(q_pe_BSHR, cos_SR, sin_SR)

    def _latents(self, x_BSD, cos_SR, sin_SR, precision):
        kv_BSZ = linear(x_BSD, self.wkv_a_ZD, precision)
        c_BSC, kpe_BSR = kv_BSZ.split([self.C, self.R], dim=-1)
        return self.kv_norm(c_BSC), apply_rope(kpe_BSR, cos_SR, sin_SR)

    def forward(self, x_BSD: torch.Tensor, cos_SR: torch.Tensor, sin_SR: torch.Tensor,
                precision: Precision = BF16, cache: MLACache | None = None,
                start_pos: int = 0) -> torch.Tensor:
        """x_BSD at positions start_pos..start_pos+S-1 -> attention output (B, S, D).

        No cache (training) or start_pos == 0 (prefill): expand K/V, causal SDPA. With a cache and
        start_pos > 0 (decode): attend over the cached latents with absorbed up-projections."""
        B, S, _ = x_BSD.shape
        q_nope_BSHP, q_pe_BSHR = self._queries(x_BSD, cos_SR, sin_SR, precision)
        c_BSC, kpe_BSR = self._latents(x_BSD, cos_SR, sin_SR, precision)
        if cache is not None:
            cache.c_BLC[:B, start_pos:start_pos + S] = c_BSC
            cache.kpe_BLR[:B, start_pos:start_pos + S] = kpe_BSR
        if cache is None or start_pos == 0:
            o_BSHO = self._attend_expanded(q_nope_BSHP, q_pe_BSHR, c_BSC, kpe_BSR, precision)
        else:
            L = start_pos + S
            o_BSHO = self._attend_absorbed(q_nope_BSHP, q_pe_BSHR, cache.c_BLC[:B, :L],
                                           cache.kpe_BLR[:B, :L], start_pos)
        return linear(o_BSHO.flatten(2), self.wo_DU, precision)

    def _attend_expanded(self, q_nope_BSHP, q_pe_BSHR, c_BSC, kpe_BSR, precision):
        B, S, H, _ = q_nope_BSHP.shape
        kv_BSHW = linear(c_BSC, self.wkv_b_WC, precision).view(B, S, H, self.P + self.O)
        k_nope_BSHP, v_BSHO = kv_BSHW.split([self.P, self.O], dim=-1)
        q_BHSX = torch.cat([q_nope_BSHP, q_pe_BSHR], dim=-1).transpose(1, 2)
        k_BHSX = torch.cat([k_nope_BSHP, kpe_BSR[:, :, None, :].expand(B, S, H, self.R)],
                           dim=-1).transpose(1, 2)
        o_BHSO = F.scaled_dot_product_attention(q_BHSX, k_BHSX, v_BSHO.transpose(1, 2),
                                                is_causal=True, scale=self.softmax_scale)
        return o_BHSO.transpose(1, 2)

    def _attend_absorbed(self, q_nope_BSHP, q_pe_BSHR, c_BLC, kpe_BLR, start_pos):
        """Scores against the latent: q_nope·(W_k c) = (W_k^T q_nope)·c, and values W_v (p·c)."""
        S, L = q_nope_BSHP.shape[1], c_BLC.shape[1]
        wkv_b_HWC = self.wkv_b_WC.view(self.H, self.P + self.O, self.C)
        wk_HPC, wv_HOC = wkv_b_HWC.split([self.P, self.O], dim=1)
        q_abs_BSHC = torch.einsum("bshp,hpc->bshc", q_nope_BSHP, wk_HPC)
        scores_BSHL = (torch.einsum("bshc,blc->bshl", q_abs_BSHC, c_BLC)
                       + torch.einsum("bshr,blr->bshl", q_pe_BSHR, kpe_BLR)).float()
        key_pos_L = torch.arange(L, device=c_BLC.device)
        query_pos_S = torch.arange(start_pos, start_pos + S, device=c_BLC.device)
        future_SL = key_pos_L[None, :] > query_pos_S[:, None]
        scores_BSHL = scores_BSHL.masked_fill(future_SL[None, :, None, :], float("-inf"))
        p_BSHL = torch.softmax(scores_BSHL * self.softmax_scale, dim=-1).to(c_BLC.dtype)
        o_BSHC = torch.einsum("bshl,blc->bshc", p_BSHL, c_BLC)
        return torch.einsum("bshc,hoc->bsho", o_BSHC, wv_HOC)


# ------------------------------------------------------------------------------------------
# Grouped-query attention (Llama/Mixtral/Qwen3)
# ------------------------------------------------------------------------------------------


# the SDPA backends a cached GQA decode may use (all but cuDNN: see GQA._attend_cached)
DECODE_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class GQACache:
    """The KV cache of one GQA layer: keys (after RoPE) and values of the V kv heads,
    k_BVLA and v_BVLA, head-major so decode's SDPA reads each head's positions contiguously."""

    k_BVLA: torch.Tensor
    v_BVLA: torch.Tensor

    @classmethod
    def empty(cls, batch: int, max_len: int, kv_heads: int, head_dim: int, *,
              dtype=torch.bfloat16, device=None) -> "GQACache":
        shape = (batch, kv_heads, max_len, head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    def rows(self, start: int, stop: int) -> "GQACache":
        """The cache of sequences start..stop-1 (views: prefill fills a batch in chunks)."""
        return GQACache(self.k_BVLA[start:stop], self.v_BVLA[start:stop])


def repeat_kv(x_BSVA: torch.Tensor, n_rep: int) -> torch.Tensor:
    """K or V of V heads copied out to V*n_rep query heads (head h reads kv head h // n_rep):
    torchtitan's llama3 repeat_kv (expand + reshape: one copy kernel)."""
    B, S, V, A = x_BSVA.shape
    if n_rep == 1:
        return x_BSVA
    return x_BSVA[:, :, :, None, :].expand(B, S, V, n_rep, A).reshape(B, S, V * n_rep, A)


class GQA(nn.Module):
    """Grouped-query attention as torchtitan's llama3 Attention runs it: separate q/k/v
    projections (H, V, V heads of A), optional per-head RMSNorm of q and k before RoPE (Qwen3's
    q_norm/k_norm, spec.qk_norm), RoPE over the whole head, K/V repeated to H heads, causal SDPA
    (scale 1/sqrt(A)), output projection. With a GQACache: prefill (start_pos 0) writes K and V
    and attends as training does; decode (start_pos > 0) attends the new tokens over the cached
    positions with SDPA's grouped-query mode (enable_gqa: K/V read once per kv head, no repeat)."""

    def __init__(self, spec):
        super().__init__()
        D, H, V, A = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.H, self.V, self.A = H, V, A
        self.wq_XD = _param(H * A, D)   # X = H*A
        self.wk_ZD = _param(V * A, D)   # Z = V*A
        self.wv_ZD = _param(V * A, D)
        self.wo_DX = _param(D, H * A)
        self.q_norm = RMSNorm(A) if spec.qk_norm else None
        self.k_norm = RMSNorm(A) if spec.qk_norm else None

    def forward(self, x_BSD: torch.Tensor, cos_SA: torch.Tensor, sin_SA: torch.Tensor,
                precision: Precision = BF16, cache=None, start_pos: int = 0) -> torch.Tensor:
        """x_BSD at positions start_pos..start_pos+S-1 -> attention output (B, S, D)."""
        if start_pos and cache is None:
            raise ValueError("a GQA forward at start_pos > 0 needs the KV cache of the earlier positions")
        B, S, _ = x_BSD.shape
        q_BSHA = linear(x_BSD, self.wq_XD, precision).view(B, S, self.H, self.A)
        k_BSVA = linear(x_BSD, self.wk_ZD, precision).view(B, S, self.V, self.A)
        v_BSVA = linear(x_BSD, self.wv_ZD, precision).view(B, S, self.V, self.A)
        if self.q_norm is not None:
            q_BSHA, k_BSVA = self.q_norm(q_BSHA), self.k_norm(k_BSVA)
        q_BSHA, k_BSVA = apply_rope(q_BSHA, cos_SA, sin_SA), apply_rope(k_BSVA, cos_SA, sin_SA)
        if cache is not None:
            cache.k_BVLA[:B, :, start_pos:start_pos + S] = k_BSVA.transpose(1, 2)
            cache.v_BVLA[:B, :, start_pos:start_pos + S] = v_BSVA.transpose(1, 2)
        if start_pos == 0:
            n_rep = self.H // self.V
            k_BHSA = repeat_kv(k_BSVA, n_rep).transpose(1, 2)
            v_BHSA = repeat_kv(v_BSVA, n_rep).transpose(1, 2)
            o_BHSA = F.scaled_dot_product_attention(q_BSHA.transpose(1, 2), k_BHSA, v_BHSA, is_causal=True)
        else:
            o_BHSA = self._attend_cached(q_BSHA, cache, start_pos)
        return linear(o_BHSA.transpose(1, 2).flatten(2), self.wo_DX, precision)

    def _attend_cached(self, q_BSHA, cache: GQACache, start_pos: int) -> torch.Tensor:
        """New queries over cache positions 0..start_pos+S-1. One new token (decode) sees every
        cached position: no mask; several see up to their own position (a boolean mask)."""
        B, S = q_BSHA.shape[:2]
        L = start_pos + S
        k_BVLA, v_BVLA = cache.k_BVLA[:B, :, :L], cache.v_BVLA[:B, :, :L]
        mask_SL = None
        if S > 1:
            key_pos_L = torch.arange(L, device=q_BSHA.device)
            query_pos_S = torch.arange(start_pos, L, device=q_BSHA.device)
            mask_SL = key_pos_L[None, :] <= query_pos_S[:, None]
        # never cuDNN's SDPA here: it builds a graph per new key length, i.e. every decode step (37-43 ms a
        # step on one H100 whatever the batch, against 2.1-3.0 ms without it: s20gqa2's records and their
        # diagnostic rerun, calibration/measurements/h100/s20gqa2{,_nocudnn}/); training and prefill keep
        # torch's choice (one key length a shape)
        with sdpa_kernel(DECODE_SDPA_BACKENDS):
            return F.scaled_dot_product_attention(q_BSHA.transpose(1, 2), k_BVLA, v_BVLA, attn_mask=mask_SL,
                                                  enable_gqa=True)


# ------------------------------------------------------------------------------------------
# Feed-forward: dense SwiGLU and DeepSeekMoE
# ------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """SwiGLU FFN with fused gate/up weight: y = W2 (silu(W1 x) * W3 x)."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.w13_2FD = _param(2 * ffn_dim, dim)
        self.w2_DF = _param(dim, ffn_dim)

    def forward(self, x_xD: torch.Tensor, precision: Precision = BF16) -> torch.Tensor:
        a_xF, b_xF = linear(x_xD, self.w13_2FD, precision).chunk(2, dim=-1)
        return linear(F.silu(a_xF) * b_xF, self.w2_DF, precision)


class Gate(nn.Module):
    """Router: sigmoid affinities, group-limited top-k, and the balancing bias (a buffer, no grad).

    `tokens_per_expert_E` accumulates this rank's routed-token counts until `update_bias` reads
    and clears them (the auxiliary-loss-free update, V3 §2.1.2)."""

    def __init__(self, spec):
        super().__init__()
        self.top_k, self.route_scale = spec.top_k, spec.route_scale
        self.num_groups, self.top_k_groups = spec.num_expert_groups, spec.top_k_groups
        E = spec.num_routed_experts
        self.weight_ED = _param(E, spec.hidden_size)
        self.register_buffer("bias_E", torch.zeros(E, dtype=torch.float32), persistent=True)
        self.register_buffer("tokens_per_expert_E", torch.zeros(E, dtype=torch.float32),
                             persistent=False)

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores_TE = torch.sigmoid(F.linear(x_TD, self.weight_ED).float())
        weights_TK, topk_ids_TK = route(scores_TE, self.bias_E, self.top_k, self.num_groups,
                                        self.top_k_groups, self.route_scale)
        with torch.no_grad():
            self.tokens_per_expert_E += expert_counts(topk_ids_TK, self.bias_E.numel()).float()
        return weights_TK.to(x_TD.dtype), topk_ids_TK

    @torch.no_grad()
    def update_bias(self, rate: float, group=None) -> torch.Tensor:
        """b_e += rate * sign(mean load - load_e): overloaded experts become less attractive.
        Loads are summed over `group` (the data/expert-parallel ranks) first. Returns the load."""
        load_E = self.tokens_per_expert_E.clone()
        if group is not None:
            torch.distributed.all_reduce(load_E, group=group)
        self.bias_E += rate * torch.sign(load_E.mean() - load_E)
        self.tokens_per_expert_E.zero_()
        return load_E


def group_offsets(expert_of_row_N: torch.Tensor, counts_E: torch.Tensor, align: int = GROUP_ALIGN):
    """Padded layout for rows sorted by expert: each expert's block starts at a multiple of `align`.

    Returns pos_N (row -> padded row), offs_E (int32 cumulative padded ends) and the static
    capacity Np = N + E*(align-1) rounded up, so no host synchronisation is needed."""
    N, E = expert_of_row_N.numel(), counts_E.numel()
    padded_E = (counts_E + align - 1) // align * align
    end_pad_E = torch.cumsum(padded_E, 0)
    start_pad_E = end_pad_E - padded_E
    start_E = torch.cumsum(counts_E, 0) - counts_E
    row_N = torch.arange(N, device=counts_E.device)
    pos_N = start_pad_E[expert_of_row_N] + row_N - start_E[expert_of_row_N]
    capacity = (N + E * (align - 1) + align - 1) // align * align
    return pos_N, end_pad_E.to(torch.int32), capacity


def expert_ffn(x_ND: torch.Tensor, expert_of_row_N: torch.Tensor, counts_E: torch.Tensor,
               w13_E2FD: torch.Tensor, w2_EDF: torch.Tensor, precision: Precision) -> torch.Tensor:
    """SwiGLU of every routed row through its expert: two grouped GEMMs over all experts.
    Rows must be sorted by expert (expert_of_row_N non-decreasing)."""
    pos_N, offs_E, capacity = group_offsets(expert_of_row_N, counts_E)
    x_NpD = x_ND.new_zeros(capacity, x_ND.shape[1]).index_copy(0, pos_N, x_ND)
    h_Np2F = grouped_mm(x_NpD, w13_E2FD.transpose(-2, -1), offs_E, precision)
    a_NpF, b_NpF = h_Np2F.chunk(2, dim=-1)
    y_NpD = grouped_mm((F.silu(a_NpF) * b_NpF).contiguous(), w2_EDF.transpose(-2, -1), offs_E,
                       precision)
    return y_NpD[pos_N]


class MoE(nn.Module):
    """DeepSeekMoE: shared experts (one dense SwiGLU of width F*num_shared) plus E fine-grained
    routed experts, each token to K of them, outputs weighted by the gate.

    With `ep_group` of size W, this rank holds experts [r*E/W, (r+1)*E/W) and tokens travel by
    all-to-all (`real/ep.py`); without one, all experts are local."""

    def __init__(self, spec, ep_group=None):
        super().__init__()
        D, F_ = spec.hidden_size, spec.moe_intermediate_size
        self.num_experts, self.top_k = spec.num_routed_experts, spec.top_k
        self.ep_group = ep_group
        world = torch.distributed.get_world_size(ep_group) if ep_group is not None else 1
        if self.num_experts % world:
            raise ValueError(f"{self.num_experts} experts do not divide over {world} EP ranks")
        self.num_local_experts = self.num_experts // world
        self.gate = Gate(spec)
        self.w13_E2FD = _param(self.num_local_experts, 2 * F_, D)
        self.w2_EDF = _param(self.num_local_experts, D, F_)
        self.shared = MLP(D, F_ * spec.num_shared_experts) if spec.num_shared_experts else None

    def forward(self, x_BSD: torch.Tensor, precision: Precision = BF16,
                routing: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """routing: optional (weights_TK, topk_ids_TK) overriding the gate (benchmarks of skew)."""
        shape = x_BSD.shape
        x_TD = x_BSD.reshape(-1, shape[-1])
        weights_TK, topk_ids_TK = routing if routing is not None else self.gate(x_TD)
        y_TD = self.routed(x_TD, weights_TK, topk_ids_TK, precision)
        if self.shared is not None:
            y_TD = y_TD + self.shared(x_TD, precision)
        return y_TD.view(shape)

    def routed(self, x_TD, weights_TK, topk_ids_TK, precision):
        T, K = topk_ids_TK.shape
        if self.ep_group is None:
            flat_ids_N = topk_ids_TK.flatten()
            order_N = torch.argsort(flat_ids_N, stable=True)  # sort (token, slot) pairs by expert
            counts_E = expert_counts(flat_ids_N, self.num_experts)
            y_ND = expert_ffn(x_TD[order_N // K], flat_ids_N[order_N], counts_E,
                              self.w13_E2FD, self.w2_EDF, precision)
            y_TKD = y_ND[torch.argsort(order_N)].view(T, K, -1)  # back to (token, slot) order
        else:
            x_ND, expert_of_row_N, counts_e, state = dispatch(
                x_TD, topk_ids_TK, self.num_experts, self.ep_group)
            y_ND = expert_ffn(x_ND, expert_of_row_N, counts_e, self.w13_E2FD, self.w2_EDF, precision)
            y_TKD = combine(y_ND, state, self.ep_group).view(T, K, -1)
        return (y_TKD * weights_TK.unsqueeze(-1)).sum(dim=1)


# ------------------------------------------------------------------------------------------
# Blocks, multi-token prediction, the whole model
# ------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(norm(x)) (MLA, or GQA for attention = "gqa"), then
    x + FFN(norm(x)), FFN dense or MoE."""

    def __init__(self, spec, layer_id: int, ep_group=None):
        super().__init__()
        self.attn_norm, self.ffn_norm = RMSNorm(spec.hidden_size), RMSNorm(spec.hidden_size)
        self.attn = GQA(spec) if spec.attention == "gqa" else MLA(spec)
        is_moe = spec.num_routed_experts > 0 and layer_id >= spec.num_dense_layers
        self.ffn = MoE(spec, ep_group) if is_moe else MLP(spec.hidden_size, spec.intermediate_size)

    def forward(self, x_BSD, cos_SR, sin_SR, precision=BF16, cache=None, start_pos=0):
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), cos_SR, sin_SR, precision, cache, start_pos)
        return x_BSD + self.ffn(self.ffn_norm(x_BSD), precision)


class MTPModule(nn.Module):
    """One multi-token-prediction depth (V3 §2.2): h'_i = Block(M [norm(h_i); norm(emb(t_{i+1}))]),
    predicting token i+2 through the shared output head."""

    def __init__(self, spec, layer_id: int, ep_group=None):
        super().__init__()
        D = spec.hidden_size
        self.h_norm, self.e_norm = RMSNorm(D), RMSNorm(D)
        self.proj_D2D = _param(D, 2 * D)
        self.block = Block(spec, layer_id, ep_group)


class Transformer(nn.Module):
    """Embedding -> blocks -> norm -> head, plus optional MTP modules sharing embedding and head."""

    def __init__(self, spec, ep_group=None, max_seq_len: int = 4096):
        super().__init__()
        if spec.attention not in ("mla", "gqa"):
            raise ValueError(f"real/ implements MLA and GQA attention; {spec.name} uses {spec.attention!r}")
        self.spec = spec
        self.embed_YD = nn.Embedding(spec.vocab_size, spec.hidden_size)
        nn.init.normal_(self.embed_YD.weight, std=0.02)
        self.layers = nn.ModuleList(Block(spec, i, ep_group) for i in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size)
        self.head_YD = None if spec.tie_embeddings else _param(spec.vocab_size, spec.hidden_size)
        self.mtp = nn.ModuleList(MTPModule(spec, spec.num_layers + i, ep_group)
                                 for i in range(spec.num_mtp_modules))
        rope_dim = spec.head_dim if spec.attention == "gqa" else spec.qk_rope_head_dim
        cos_LR, sin_LR = rope_tables(rope_dim, max_seq_len)
        self.register_buffer("cos_LR", cos_LR, persistent=False)
        self.register_buffer("sin_LR", sin_LR, persistent=False)

    def head_weight(self) -> torch.Tensor:
        return self.embed_YD.weight if self.head_YD is None else self.head_YD

    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    def hidden(self, tokens_BS: torch.Tensor, precision: Precision = BF16,
               caches: list[MLACache] | None = None, start_pos: int = 0) -> torch.Tensor:
        """Final hidden states h_BSD (before the last norm) for tokens at start_pos.."""
        S = tokens_BS.shape[1]
        cos_SR = self.cos_LR[start_pos:start_pos + S]
        sin_SR = self.sin_LR[start_pos:start_pos + S]
        x_BSD = self.embed_YD(tokens_BS)
        for i, layer in enumerate(self.layers):
            x_BSD = layer(x_BSD, cos_SR, sin_SR, precision,
                          caches[i] if caches is not None else None, start_pos)
        return x_BSD

    def logits(self, h_BSD: torch.Tensor, precision: Precision = BF16) -> torch.Tensor:
        """Output head in the policy's precision (V3 keeps the head in BF16; so do we for BF16)."""
        return linear(self.norm(h_BSD), self.head_weight(), precision)

    def forward(self, tokens_BS, precision: Precision = BF16, caches=None, start_pos: int = 0):
        """Logits (B, S, Y) for all positions."""
        return self.logits(self.hidden(tokens_BS, precision, caches, start_pos), precision)

    def loss(self, tokens_BS: torch.Tensor, targets_BS: torch.Tensor,
             precision: Precision = BF16, mtp_weight: float = 0.3) -> torch.Tensor:
        """Next-token cross entropy, plus mtp_weight * mean MTP loss (token i+1+k at depth k)."""
        h_BSD = self.hidden(tokens_BS, precision)
        logits_BSY = self.logits(h_BSD, precision)
        loss = F.cross_entropy(logits_BSY.flatten(0, 1).float(), targets_BS.flatten())
        if len(self.mtp) == 0:
            return loss
        S = tokens_BS.shape[1]
        cos_SR, sin_SR = self.cos_LR[:S], self.sin_LR[:S]
        mtp_losses = []
        for k, mtp in enumerate(self.mtp, start=1):
            # depth k: h_i (depth k-1) with emb(token_{i+k}) predicts target_{i+k}
            e_BSD = self.embed_YD(tokens_BS[:, k:])
            h_in_BSD = linear(torch.cat([mtp.h_norm(h_BSD[:, :S - k]), mtp.e_norm(e_BSD)], -1),
                              mtp.proj_D2D, precision)
            h_BSD = mtp.block(h_in_BSD, cos_SR[:S - k], sin_SR[:S - k], precision)
            logits_k = self.logits(h_BSD, precision)
            mtp_losses.append(F.cross_entropy(logits_k.flatten(0, 1).float(),
                                              targets_BS[:, k:].flatten()))
        return loss + mtp_weight * torch.stack(mtp_losses).mean()

    def new_caches(self, batch: int, max_len: int, dtype=None, device=None) -> list[MLACache | GQACache]:
        """One empty cache a layer: MLA's latents, or GQA's K and V per kv head."""
        p, spec = self.embed_YD.weight, self.spec
        kw = dict(dtype=dtype or p.dtype, device=device or p.device)
        if spec.attention == "gqa":
            return [GQACache.empty(batch, max_len, spec.num_kv_heads, spec.head_dim, **kw) for _ in self.layers]
        return [MLACache.empty(batch, max_len, spec.kv_lora_rank, spec.qk_rope_head_dim, **kw) for _ in self.layers]


@contextlib.contextmanager
def building(device, dtype=torch.bfloat16):
    """Modules constructed inside get parameters on `device` in `dtype`, with no host copy
    (buffers created with an explicit dtype, such as the router bias, keep it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def build_model(spec, device="cpu", dtype=torch.bfloat16, ep_group=None,
                max_seq_len: int = 4096) -> Transformer:
    """The model built directly on `device` in `dtype`; router bias and load counters stay FP32."""
    with building(device, dtype):
        return Transformer(spec, ep_group=ep_group, max_seq_len=max_seq_len)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
