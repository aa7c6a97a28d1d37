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
queries so its score matrix stays bounded. `BLOCK_KERNEL` says which ran.

`CPMLABlock` is an MLA sublayer (x + MLA(norm(x))) on this rank's positions around the ring.

Tensors are (B, H, s, E): batch, heads, this rank's s = S/W positions, head dim (queries and keys
E, values Ev).
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn as nn

from real.collectives import CommTimer
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


def _pad_lse(lse_BHs: torch.Tensor) -> torch.Tensor:
    s = lse_BHs.shape[-1]
    pad = -s % LSE_ALIGN
    return torch.nn.functional.pad(lse_BHs, (0, pad)).contiguous() if pad else lse_BHs.contiguous()


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
    """(out FP32 (B,H,sq,Ev), lse FP32 (B,H,sq)) of q's rows attending to k/v's rows."""
    if _use_efficient(q):
        try:
            o, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(
                q.contiguous(), k.contiguous(), v.contiguous(), None, True, 0.0, causal, scale=scale)
            return o.float(), lse[..., :q.shape[-2]]
        except RuntimeError:  # kernel refused these shapes: exact math from here on
            BLOCK_KERNEL["name"] = "math"
    return _math_fwd(q, k, v, causal, scale)


def block_backward(do, q, k, v, o, lse, causal: bool, scale: float):
    """(dq, dk, dv) of this block given the merged output o and log-sum-exp lse of q's rows."""
    if _use_efficient(q):
        try:
            seed = torch.zeros((), dtype=torch.int64, device=q.device)
            dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
                do.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(), None, o.contiguous(),
                _pad_lse(lse), seed, seed, 0.0, [True, True, True, False], causal, scale=scale)
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
        kv = (k, v)
        for step in range(world):
            wait = None
            if step < world - 1:
                nxt_kv, wait = _exchange(kv, group, timer)
            qs, ks, causal = _step_plan(rank, (rank - step) % world, c)
            o_i, lse_i = block_forward(q[..., qs, :], kv[0][..., ks, :], kv[1][..., ks, :], causal, scale)
            _merge(out[..., qs, :], lse[..., qs], o_i, lse_i)
            if wait is not None:
                wait()
                kv = tuple(nxt_kv)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.group, ctx.scale, ctx.timer = group, scale, timer
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
                                              causal, scale)
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


class CPMLABlock(nn.Module):
    """x + MLA(norm(x)) of one sequence split over a context-parallel group (zigzag positions):
    norm, projections and output projection on this rank's positions, weights replicated (their
    gradients are partial per rank, summed over the group like data-parallel ones); the
    expanded per-head keys and values go around the ring (`ring_attention`)."""

    def __init__(self, spec, group):
        super().__init__()
        self.group = group
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
        o_BHsO = ring_attention(q_BHsX, k_BHsX, v_BsHO.transpose(1, 2).contiguous(), self.group,
                                a.softmax_scale, self.comm)
        return x_sD + linear(o_BHsO.transpose(1, 2).reshape(s, a.H * a.O), a.wo_DU, precision)
