"""Context parallelism: causal ring attention over a group of W ranks, load-balanced.

The sequence of S positions is cut into 2W chunks of c = S/(2W); rank r holds chunks r and
2W-1-r (the "zigzag" layout of Megatron-LM and torchtitan), so every rank has the same causal
work. Each rank attends its queries to every rank's keys/values, which travel around the ring
(rank r sends to r+1 and receives from r-1 with P2P, the next block's exchange running while
the current block is attended). The partial outputs merge by their log-sum-exp (the online
softmax). With keys from rank j at rank r:
    j == r: both chunks, causal (the chunks are in position order, so plain causal masking);
    j <  r: all queries see keys chunk j fully, none of chunk 2W-1-j   -> half the keys, no mask;
    j >  r: only query chunk 2W-1-r sees keys, both chunks fully       -> half the queries, no mask.
Backward runs the same ring: keys/values travel again, and their gradients (FP32) travel with
them one step behind, arriving back at their owner after W exchanges.

Per-block attention: on a GPU PyTorch's memory-efficient attention kernel, which returns the
log-sum-exp and whose backward takes the merged output and log-sum-exp (the flash-attention
recurrence); elsewhere (CPU, or if that kernel is refused) an exact math version, tiled over
queries so its score matrix stays bounded. `BLOCK_KERNEL` says which ran. The private kernel is
called exactly as PyTorch's autograd calls it (derivatives.yaml; torch's own ring attention in
torch/distributed/tensor/experimental/_context_parallel): out and grad_out in the query's dtype
and in the forward output's memory layout (B, s, H, Ev) seen as (B, H, s, Ev) -- the CUDA
backward reads `out` with a row stride of H*Ev whatever its strides say (kernel_backward.h
`o_strideM()`), so a (B, H, s, Ev)-contiguous `out` made it read past its buffer: the illegal
memory access of the first 2xH200 campaign --, the log-sum-exp FP32 padded to a multiple of 32
rows, and the philox seed/offset tensors the block's forward returned.

`allgather_attention` is the other context-parallel form (Llama 3, torchtitan): every rank
all-gathers the whole sequence's keys and values (their gradients reduce-scattered back), then
attends its two zigzag query chunks with the public `scaled_dot_product_attention`, each chunk
to the keys up to its end with a causal mask aligned to the bottom right
(`torch.nn.attention.bias.causal_lower_right`); backward by autograd.

`CPMLABlock` is an MLA sublayer (x + MLA(norm(x))) on this rank's positions around the ring.

Tensors are (B, H, s, E): batch, heads, this rank's s = S/W positions, head dim (queries and keys
E, values Ev).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from real.collectives import CommTimer, to_tp
from real.fp8 import BF16, Precision, linear
from real.model import MLA, RMSNorm

MATH_TILE_ROWS = 1024  # math path: query rows per tile (scores tile B*H*1024*keys FP32)
LSE_ALIGN = 32  # the memory-efficient kernel pads its log-sum-exp rows to a multiple of 32
BLOCK_KERNEL = {"name": "efficient"}  # "efficient" or "math" once a GPU call has been refused


def zigzag_positions(seq_len: int, world: int, rank: int) -> torch.Tensor:
    """The positions rank `rank` holds: chunks rank and 2W-1-rank of 2W equal chunks."""
    if seq_len % (2 * world):
        raise ValueError(f"sequence length {seq_len} does not split into {2 * world} chunks")
    c = seq_len // (2 * world)
    return torch.cat([torch.arange(rank * c, (rank + 1) * c),
                      torch.arange((2 * world - 1 - rank) * c, (2 * world - rank) * c)])


# ---------------------------------------------------------------------------------------------
# One block: attention of some query rows to some key rows, with its log-sum-exp
# ---------------------------------------------------------------------------------------------


def _use_efficient(q: torch.Tensor) -> bool:
    return q.device.type in ("cuda", "meta") and BLOCK_KERNEL["name"] == "efficient"


def _efficient_fwd(q, k, v, causal: bool, scale: float):
    """PyTorch's memory-efficient attention forward: (out (B,H,sq,Ev) in q's dtype, laid out
    (B,sq,H,Ev); lse FP32 (B,H,sq padded to 32); philox seed; philox offset)."""
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, causal, scale=scale)


def _efficient_bwd(do, q, k, v, o, lse, seed, offset, causal: bool, scale: float):
    """Its backward, argument for argument as autograd passes them: (dq, dk, dv, dbias)."""
    return torch.ops.aten._scaled_dot_product_efficient_attention_backward(
        do, q, k, v, None, o, lse, seed, offset, 0.0, [True, True, True, False], causal, scale=scale)


def _forward_output_layout(t_BHsE: torch.Tensor) -> torch.Tensor:
    """t with the memory layout the efficient forward gives its output, (B, s, H, E) seen as
    (B, H, s, E): the layout its backward assumes for `out`."""
    return t_BHsE.transpose(1, 2).contiguous().transpose(1, 2)


def _pad_lse(lse_BHs: torch.Tensor) -> torch.Tensor:
    """FP32 log-sum-exp with its rows padded to a multiple of LSE_ALIGN, as the forward returns it."""
    s = lse_BHs.shape[-1]
    pad = -s % LSE_ALIGN
    lse_BHs = lse_BHs.float()
    return torch.nn.functional.pad(lse_BHs, (0, pad)).contiguous() if pad else lse_BHs.contiguous()


def efficient_bwd_args(do, q, k, v, o, lse):
    """The backward's tensor arguments as the forward would have produced them: q, k, v
    contiguous; out and grad_out in q's dtype and the forward output's layout; lse padded FP32."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return (_forward_output_layout(do.to(q.dtype)), q, k, v,
            _forward_output_layout(o.to(q.dtype)), _pad_lse(lse))


def _math_fwd(q, k, v, causal, scale):
    outs, lses = [], []
    cols = torch.arange(k.shape[-2], device=q.device)
    kf, vf = k.float(), v.float()
    for i0 in range(0, q.shape[-2], MATH_TILE_ROWS):
        s = torch.matmul(q[..., i0:i0 + MATH_TILE_ROWS, :].float(), kf.transpose(-2, -1)) * scale
        if causal:
            rows = torch.arange(i0, i0 + s.shape[-2], device=q.device)
            s = s.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
        lse = torch.logsumexp(s, dim=-1)
        outs.append(torch.matmul(torch.exp(s - lse[..., None]), vf))
        lses.append(lse)
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)


def _math_bwd(do, q, k, v, o, lse, causal, scale):
    dqs = []
    dk, dv = torch.zeros_like(k, dtype=torch.float32), torch.zeros_like(v, dtype=torch.float32)
    cols = torch.arange(k.shape[-2], device=q.device)
    kf, vf = k.float(), v.float()
    for i0 in range(0, q.shape[-2], MATH_TILE_ROWS):
        sl = slice(i0, i0 + MATH_TILE_ROWS)
        qf, dof = q[..., sl, :].float(), do[..., sl, :].float()
        s = torch.matmul(qf, kf.transpose(-2, -1)) * scale
        if causal:
            rows = torch.arange(i0, i0 + s.shape[-2], device=q.device)
            s = s.masked_fill(cols[None, :] > rows[:, None], float("-inf"))
        p = torch.exp(s - lse[..., sl, None])
        dv += torch.matmul(p.transpose(-2, -1), dof)
        dp = torch.matmul(dof, vf.transpose(-2, -1))
        delta = (dof * o[..., sl, :].float()).sum(-1, keepdim=True)
        ds = p * (dp - delta)
        dqs.append(torch.matmul(ds, kf) * scale)
        dk += torch.matmul(ds.transpose(-2, -1), qf) * scale
    return torch.cat(dqs, dim=-2), dk, dv


def block_forward(q, k, v, causal: bool, scale: float):
    """(out FP32 (B,H,sq,Ev), lse FP32 (B,H,sq), rng) of q's rows attending to k/v's rows; rng is
    the efficient kernel's (philox seed, philox offset), to hand back to its backward, or None
    when the math path ran."""
    if _use_efficient(q):
        try:
            o, lse, seed, offset = _efficient_fwd(q.contiguous(), k.contiguous(), v.contiguous(), causal, scale)
            return o.float(), lse[..., :q.shape[-2]], (seed, offset)
        except RuntimeError:  # kernel refused these shapes: exact math from here on
            BLOCK_KERNEL["name"] = "math"
    o, lse = _math_fwd(q, k, v, causal, scale)
    return o, lse, None


def block_backward(do, q, k, v, o, lse, rng, causal: bool, scale: float):
    """(dq, dk, dv) of this block given the merged output o and log-sum-exp lse of q's rows and
    the block forward's rng (None: the forward ran the math path, so does the backward)."""
    if rng is not None and _use_efficient(q):
        try:
            dq, dk, dv, _ = _efficient_bwd(*efficient_bwd_args(do, q, k, v, o, lse), *rng, causal, scale)
            return dq, dk, dv
        except RuntimeError:
            BLOCK_KERNEL["name"] = "math"
    return _math_bwd(do, q, k, v, o, lse, causal, scale)


def _merge(out, lse, o_i, lse_i):
    """Online softmax: fold a block's (o_i, lse_i) into the running (out, lse), in place."""
    new = torch.logaddexp(lse, lse_i)
    out.mul_(torch.exp(lse - new)[..., None]).add_(o_i * torch.exp(lse_i - new)[..., None])
    lse.copy_(new)


# ---------------------------------------------------------------------------------------------
# The ring
# ---------------------------------------------------------------------------------------------


def _exchange(tensors, group, timer):
    """Start sending `tensors` to the next rank and receiving like-shaped ones from the previous;
    returns (received buffers, wait function)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    nxt = dist.get_global_rank(group, (rank + 1) % world)
    prv = dist.get_global_rank(group, (rank - 1) % world)
    bufs = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t.contiguous(), nxt, group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, b, prv, group) for b in bufs]
    reqs = dist.batch_isend_irecv(ops)

    def wait():
        with (timer.span("p2p_wait") if timer is not None else contextlib.nullcontext()):
            for r in reqs:
                r.wait()
    return bufs, wait


def _step_plan(rank: int, src: int, c: int):
    """(query rows, key rows, causal) that rank attends with the keys of rank src (see docstring)."""
    if src == rank:
        return slice(None), slice(None), True
    if src < rank:
        return slice(None), slice(0, c), False
    return slice(c, None), slice(None), False


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group, scale, timer):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        c = q.shape[-2] // 2
        out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float32, device=q.device)
        lse = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)
        kv, rngs = (k, v), []
        for step in range(world):
            wait = None
            if step < world - 1:
                nxt_kv, wait = _exchange(kv, group, timer)
            qs, ks, causal = _step_plan(rank, (rank - step) % world, c)
            o_i, lse_i, rng = block_forward(q[..., qs, :], kv[0][..., ks, :], kv[1][..., ks, :], causal, scale)
            rngs.append(rng)
            _merge(out[..., qs, :], lse[..., qs], o_i, lse_i)
            if wait is not None:
                wait()
                kv = tuple(nxt_kv)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.group, ctx.scale, ctx.timer, ctx.rngs = group, scale, timer, rngs
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        group, scale, timer = ctx.group, ctx.scale, ctx.timer
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        c = q.shape[-2] // 2
        dq = torch.zeros_like(q, dtype=torch.float32)
        kv = (k, v)
        dkv = (torch.zeros_like(k, dtype=torch.float32), torch.zeros_like(v, dtype=torch.float32))
        dkv_wait, nxt_dkv = None, None
        for step in range(world):
            kv_wait = None
            if step < world - 1:
                nxt_kv, kv_wait = _exchange(kv, group, timer)
            qs, ks, causal = _step_plan(rank, (rank - step) % world, c)
            dq_i, dk_i, dv_i = block_backward(dout[..., qs, :], q[..., qs, :], kv[0][..., ks, :],
                                              kv[1][..., ks, :], out[..., qs, :], lse[..., qs],
                                              ctx.rngs[step], causal, scale)
            if dkv_wait is not None:  # the gradient of the keys we hold, from the previous rank
                dkv_wait()
                dkv = tuple(nxt_dkv)
            dq[..., qs, :] += dq_i
            dkv[0][..., ks, :] += dk_i
            dkv[1][..., ks, :] += dv_i
            nxt_dkv, dkv_wait = _exchange(dkv, group, timer)  # onward with its keys
            if kv_wait is not None:
                kv_wait()
                kv = tuple(nxt_kv)
        dkv_wait()  # our own keys' gradient, back from the last rank that used them
        return dq.to(q.dtype), nxt_dkv[0].to(k.dtype), nxt_dkv[1].to(v.dtype), None, None, None


def ring_attention(q, k, v, group, scale: float, timer: CommTimer | None = None) -> torch.Tensor:
    """Causal attention of this rank's zigzag shard of queries over the whole sequence's keys and
    values (each rank passing its zigzag shard of k, v). q, k: (B, H, s, E); v: (B, H, s, Ev)."""
    if q.shape[-2] % 2:
        raise ValueError(f"a rank's {q.shape[-2]} positions are not two equal chunks")
    return _RingAttention.apply(q, k, v, group, scale, timer)


# ---------------------------------------------------------------------------------------------
# The all-gather form
# ---------------------------------------------------------------------------------------------


def _gather_sequence(t_BHsE: torch.Tensor, group, timer: CommTimer | None) -> torch.Tensor:
    """Every rank's zigzag shard of t gathered into the whole sequence in position order,
    (B, H, S, E); backward: the gradient reduce-scattered back to each rank's shard."""
    world, s = dist.get_world_size(group), t_BHsE.shape[-2]
    gathered_SBHE = to_tp(t_BHsE.permute(2, 0, 1, 3), True, group, timer)  # rank order
    held = torch.cat([zigzag_positions(s * world, world, r) for r in range(world)])
    return gathered_SBHE.index_select(0, torch.argsort(held).to(t_BHsE.device)).permute(1, 2, 0, 3)


def allgather_attention(q, k, v, group, scale: float, timer: CommTimer | None = None) -> torch.Tensor:
    """Causal attention of this rank's zigzag shard of queries over the whole sequence, the keys
    and values all-gathered first (Llama 3 / torchtitan); same arguments as `ring_attention`.
    Each of the two query chunks attends to the keys up to its own end, causal from the bottom
    right; autograd gives the backward (its gathers' gradients reduce-scattered)."""
    if q.shape[-2] % 2:
        raise ValueError(f"a rank's {q.shape[-2]} positions are not two equal chunks")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    c = q.shape[-2] // 2
    k_BHSE, v_BHSE = _gather_sequence(k, group, timer), _gather_sequence(v, group, timer)
    outs = []
    for half, chunk in enumerate((rank, 2 * world - 1 - rank)):
        end = (chunk + 1) * c  # the chunk's queries see keys [0, end), the last c causally
        outs.append(F.scaled_dot_product_attention(
            q[..., half * c:(half + 1) * c, :], k_BHSE[..., :end, :], v_BHSE[..., :end, :],
            attn_mask=causal_lower_right(c, end), scale=scale))
    return torch.cat(outs, dim=-2)


CP_ATTENTION = {"ring": ring_attention, "allgather": allgather_attention}
CP_KINDS = tuple(CP_ATTENTION)


class CPMLABlock(nn.Module):
    """x + MLA(norm(x)) of one sequence split over a context-parallel group (zigzag positions):
    norm, projections and output projection on this rank's positions, weights replicated (their
    gradients are partial per rank, summed over the group like data-parallel ones); the
    expanded per-head keys and values go around the ring (cp_kind "ring", `ring_attention`) or
    are all-gathered (cp_kind "allgather", `allgather_attention`)."""

    def __init__(self, spec, group, cp_kind: str = "ring"):
        super().__init__()
        if cp_kind not in CP_ATTENTION:
            raise ValueError(f"cp_kind {cp_kind!r}: allowed {', '.join(CP_KINDS)}")
        self.group, self.cp_kind = group, cp_kind
        self.norm = RMSNorm(spec.hidden_size)
        self.attn = MLA(spec)
        self.comm: CommTimer | None = None  # set by benchmarks to time the P2P waits

    def forward(self, x_sD: torch.Tensor, cos_sR: torch.Tensor, sin_sR: torch.Tensor,
                precision: Precision = BF16) -> torch.Tensor:
        """x_sD: this rank's positions (`zigzag_positions`) of one sequence; cos_sR/sin_sR: the
        rope tables at those positions."""
        a, s = self.attn, x_sD.shape[0]
        h_BsD = self.norm(x_sD)[None]
        q_nope_BsHP, q_pe_BsHR = a._queries(h_BsD, cos_sR, sin_sR, precision)
        c_BsC, kpe_BsR = a._latents(h_BsD, cos_sR, sin_sR, precision)
        kv_BsHW = linear(c_BsC, a.wkv_b_WC, precision).view(1, s, a.H, a.P + a.O)
        k_nope_BsHP, v_BsHO = kv_BsHW.split([a.P, a.O], dim=-1)
        q_BHsX = torch.cat([q_nope_BsHP, q_pe_BsHR], dim=-1).transpose(1, 2).contiguous()
        k_BHsX = torch.cat([k_nope_BsHP, kpe_BsR[:, :, None, :].expand(1, s, a.H, a.R)],
                           dim=-1).transpose(1, 2).contiguous()
        o_BHsO = CP_ATTENTION[self.cp_kind](q_BHsX, k_BHsX, v_BsHO.transpose(1, 2).contiguous(),
                                            self.group, a.softmax_scale, self.comm)
        return x_sD + linear(o_BHsO.transpose(1, 2).reshape(s, a.H * a.O), a.wo_DU, precision)
