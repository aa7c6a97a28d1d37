"""Tensor parallelism, with or without sequence parallelism, for an MLA sublayer and an MoE
sublayer (Megatron-LM style), over a torch.distributed group of W ranks.

Both blocks are pre-norm residual sublayers of one sequence (batch 1, tokens first):
    TPMLABlock:  x + MLA(norm(x))        TPMoEBlock:  x + MoE(norm(x))
  - MLA: heads split over the ranks (H/W each): W_qb (or W_q) and W_kvb are column-parallel, W_o
    is row-parallel. The down-projections W_qa and W_kva (replicated, small) run before the
    tensor-parallel region, so with sequence parallelism the all-gather carries the compressed
    latents (Q + C + R values a token, or D + C + R without query compression), not x, as
    Megatron-Core's MLA does.
  - MoE: every expert's FFN width split over the ranks (F/W each; W13 column-, W2 row-parallel),
    the shared experts likewise, the router replicated; all experts on every rank (no EP).
  - sequence_parallel: x, the norms, the down-projections and the router run on this rank's
    T/W tokens; the TP region opens with an all-gather and closes with a reduce-scatter
    (`real/collectives.py`). Without it, x is replicated, the region opens with an identity
    whose backward all-reduces, and closes with an all-reduce.
Replicated parameters (norms, down-projections, router) get partial gradients under sequence
parallelism (each rank sees its tokens only): `allreduce_sequence_parallel_grads` sums them, as
Megatron does for its sequence-parallel parameters. With group None a block runs on one process,
unsharded (the TP1 reference of the benchmarks).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
import torch.nn as nn

from real.collectives import CommTimer, all_gather_tokens, from_tp, to_tp
from real.fp8 import BF16, Precision, linear
from real.model import MLA, MoE, RMSNorm, apply_rope


ROW_ALIGN_ELEMS = 8  # BF16 values in 16 bytes: the row alignment of cuBLAS's vectorised kernels


def _world(group) -> int:
    return dist.get_world_size(group) if group is not None else 1


class _TPBlock(nn.Module):
    def __init__(self, group, sequence_parallel: bool):
        super().__init__()
        self.group, self.world = group, _world(group)
        self.sequence_parallel = bool(sequence_parallel) and group is not None
        self.comm: CommTimer | None = None  # set by benchmarks to time the collectives

    def _enter(self, x):
        return to_tp(x, self.sequence_parallel, self.group, self.comm) if self.group is not None else x

    def _leave(self, y):
        return from_tp(y, self.sequence_parallel, self.group, self.comm) if self.group is not None else y

    def replicated_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError


class TPMLABlock(_TPBlock):
    """x + MLA(norm(x)) with the heads split over the group (see the module docstring)."""

    def __init__(self, spec, group=None, sequence_parallel: bool = True):
        super().__init__(group, sequence_parallel)
        if spec.num_heads % self.world:
            raise ValueError(f"{spec.num_heads} heads do not split over {self.world} TP ranks")
        self.norm = RMSNorm(spec.hidden_size)
        self.attn = MLA(dataclasses.replace(spec, num_heads=spec.num_heads // self.world))

    def forward(self, x_tD: torch.Tensor, cos_SR: torch.Tensor, sin_SR: torch.Tensor,
                precision: Precision = BF16) -> torch.Tensor:
        """x_tD: this rank's tokens of one sequence (all of them without sequence parallelism);
        cos_SR/sin_SR: rope tables of the whole sequence."""
        a = self.attn
        h_tD = self.norm(x_tD)
        q_in_tX = a.q_norm(linear(h_tD, a.wq_a_QD, precision)) if a.Q > 0 else h_tD
        kv_tZ = linear(h_tD, a.wkv_a_ZD, precision)
        c_tC, kpe_tR = kv_tZ.split([a.C, a.R], dim=-1)
        latents_t = torch.cat([q_in_tX, a.kv_norm(c_tC), kpe_tR], dim=-1)
        latents_S = self._enter(latents_t)  # the whole sequence from here on
        S = latents_S.shape[0]
        q_in_SX, c_SC, kpe_SR = latents_S.split([q_in_tX.shape[-1], a.C, a.R], dim=-1)
        q_SX = linear(q_in_SX, a.wq_b_XQ if a.Q > 0 else a.wq_XD, precision)
        q_nope_BSHP, q_pe_BSHR = q_SX.view(1, S, a.H, a.P + a.R).split([a.P, a.R], dim=-1)
        q_pe_BSHR = apply_rope(q_pe_BSHR, cos_SR, sin_SR)
        kpe_BSR = apply_rope(kpe_SR.reshape(1, S, a.R), cos_SR, sin_SR)
        o_BSHO = a._attend_expanded(q_nope_BSHP, q_pe_BSHR, c_SC.reshape(1, S, a.C), kpe_BSR, precision)
        y_SD = linear(o_BSHO.reshape(S, a.H * a.O), a.wo_DU, precision)  # this rank's heads' part
        return x_tD + self._leave(y_SD)

    def replicated_parameters(self):
        a = self.attn
        params = [self.norm.weight, a.wkv_a_ZD, a.kv_norm.weight]
        return params + ([a.wq_a_QD, a.q_norm.weight] if a.Q > 0 else [])

    @torch.no_grad()
    def load_shard(self, norm: RMSNorm, mla: MLA, rank: int):
        """Copy this rank's share of an unsharded (norm, MLA) pair: heads [r*H/W, (r+1)*H/W)."""
        a, Hl = self.attn, self.attn.H
        heads = slice(rank * Hl, (rank + 1) * Hl)
        self.norm.weight.copy_(norm.weight)
        a.wkv_a_ZD.copy_(mla.wkv_a_ZD)
        a.kv_norm.weight.copy_(mla.kv_norm.weight)
        if a.Q > 0:
            a.wq_a_QD.copy_(mla.wq_a_QD)
            a.q_norm.weight.copy_(mla.q_norm.weight)
            a.wq_b_XQ.copy_(mla.wq_b_XQ.view(mla.H, -1, a.Q)[heads].reshape_as(a.wq_b_XQ))
        else:
            a.wq_XD.copy_(mla.wq_XD.view(mla.H, -1, mla.wq_XD.shape[1])[heads].reshape_as(a.wq_XD))
        a.wkv_b_WC.copy_(mla.wkv_b_WC.view(mla.H, -1, a.C)[heads].reshape_as(a.wkv_b_WC))
        a.wo_DU.copy_(mla.wo_DU.view(mla.wo_DU.shape[0], mla.H, a.O)[:, heads].reshape_as(a.wo_DU))


class TPMoEBlock(_TPBlock):
    """x + MoE(norm(x)) with every expert's FFN width split over the group."""

    def __init__(self, spec, group=None, sequence_parallel: bool = True):
        super().__init__(group, sequence_parallel)
        F_ = spec.moe_intermediate_size
        if F_ % self.world:
            raise ValueError(f"moe_intermediate_size {F_} does not split over {self.world} TP ranks")
        self.norm = RMSNorm(spec.hidden_size)
        self.moe = MoE(dataclasses.replace(spec, moe_intermediate_size=F_ // self.world))

    def forward(self, x_tD: torch.Tensor, precision: Precision = BF16,
                routing: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """routing: optional (weights_tK, topk_ids_tK) of this rank's tokens, bypassing the gate."""
        h_tD = self.norm(x_tD)
        w_tK, ids_tK = routing if routing is not None else self.moe.gate(h_tD)
        D, K = h_tD.shape[-1], w_tK.shape[-1]
        # one all-gather for the activations and their routing weights (both differentiable), each
        # row padded to 16 bytes: the experts read h_TD in place, a view with row stride D + K +
        # pad, and cuBLAS runs its fast kernels only on 16-byte-aligned rows (D + K = 2054 for
        # v2-lite: 2-byte alignment, ~20% slower blocks in the first TP campaign)
        pad = -(D + K) % ROW_ALIGN_ELEMS
        parts = [h_tD, w_tK.to(h_tD.dtype)] + ([h_tD.new_zeros(h_tD.shape[0], pad)] if pad else [])
        hw_T = self._enter(torch.cat(parts, dim=-1))
        h_TD, w_TK = hw_T[:, :D], hw_T[:, D:D + K]
        ids_TK = (all_gather_tokens(ids_tK, self.group, self.comm)
                  if self.sequence_parallel else ids_tK)
        y_TD = self.moe.routed(h_TD, w_TK, ids_TK, precision)
        if self.moe.shared is not None:
            y_TD = y_TD + self.moe.shared(h_TD, precision)
        return x_tD + self._leave(y_TD)

    def replicated_parameters(self):
        return [self.norm.weight, self.moe.gate.weight_ED]

    @torch.no_grad()
    def load_shard(self, norm: RMSNorm, moe: MoE, rank: int):
        """Copy this rank's share of an unsharded (norm, MoE) pair: FFN columns [r*F/W, (r+1)*F/W)
        of every expert (gate and up halves of the fused W13 alike) and of the shared experts."""
        self.norm.weight.copy_(norm.weight)
        self.moe.gate.weight_ED.copy_(moe.gate.weight_ED)
        self.moe.gate.bias_E.copy_(moe.gate.bias_E)

        def cols(w_x2FD, Fl):  # fused (..., 2F, D): this rank's slice of each half
            a, b = w_x2FD.chunk(2, dim=-2)
            sl = slice(rank * Fl, (rank + 1) * Fl)
            return torch.cat([a[..., sl, :], b[..., sl, :]], dim=-2)

        Fl = self.moe.w2_EDF.shape[-1]
        self.moe.w13_E2FD.copy_(cols(moe.w13_E2FD, Fl))
        self.moe.w2_EDF.copy_(moe.w2_EDF[..., rank * Fl:(rank + 1) * Fl])
        if moe.shared is not None:
            Fs = self.moe.shared.w2_DF.shape[-1]
            self.moe.shared.w13_2FD.copy_(cols(moe.shared.w13_2FD, Fs))
            self.moe.shared.w2_DF.copy_(moe.shared.w2_DF[:, rank * Fs:(rank + 1) * Fs])


def allreduce_sequence_parallel_grads(block: _TPBlock):
    """Sum the replicated parameters' gradients over the TP group (needed with sequence
    parallelism, where each rank's are those of its own tokens only)."""
    if block.group is None or not block.sequence_parallel:
        return
    for p in block.replicated_parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, group=block.group)
