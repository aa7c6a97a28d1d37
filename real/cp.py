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
them one step behind, arriving back at their owner after W exchanges (the last hop in the keys'
dtype: the owner only casts them).

Per-block attention: on a GPU cuDNN's fused attention (the kernel PyTorch's public SDPA runs on
Hopper, so the CP rows and their one-GPU reference time the same kernel), called through its
private op, which returns the log-sum-exp, and its backward fed the merged output and log-sum-exp
(the flash-attention recurrence), exactly as PyTorch's autograd calls it (derivatives.yaml) and
as torch's own ring attention does (torch/distributed/tensor/experimental/_context_parallel):
q, k, v, out and grad_out contiguous (B, H, s, E) in the query's dtype -- the layout the forward
gives its output, and the one the cached cuDNN graph was built for --, the log-sum-exp FP32
(B, H, s, 1), and the forward's philox tensors and sequence bounds. If cuDNN refuses a shape, the
memory-efficient kernel (its backward reads `out` with a row stride of H*Ev whatever its strides
say, kernel_backward.h `o_strideM()`: out and grad_out in the forward output's (B, s, H, Ev)
layout, log-sum-exp padded to 32 rows); elsewhere (CPU) an exact math version, tiled over queries
so its score matrix stays bounded. `BLOCK_KERNEL` says which ran. (The first campaigns ran the
memory-efficient kernel, which at MLA's head dims 192/128 is about ten times slower than cuDNN on
an H200: CP2 measured 5x its CP1 reference.)

`allgather_attention` is the other context-parallel form (Llama 3, torchtitan): every rank
all-gathers every rank's keys and values (their gradients reduce-scattered back), then attends
its zigzag queries to each rank's shard with the same blocks, merges and kernels as the ring --
the two forms differ only in how keys and values travel (exposed collectives before and after,
against P2P exchanges overlapped with the blocks).

Tensors are (B, H, s, E): batch, heads, this rank's s = S/W positions, head dim (queries and keys
E, values Ev).
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
import torch.nn as nn

from real.collectives import CommTimer, to_tp
from real.fp8 import BF16, Precision, linear
from real.model import MLA, RMSNorm

MATH_TILE_ROWS = 1024  # math path: query rows per tile (scores tile B*H*1024*keys FP32)
LSE_ALIGN = 32  # the memory-efficient kernel pads its log-sum-exp rows to a multiple of 32
BLOCK_KERNELS = ("cudnn", "efficient", "math")  # tried in this order on a GPU


def _first_kernel() -> str:
    """The kernel a GPU block tries first: cuDNN, or REAL_CP_BLOCK_KERNEL (a campaign's fallback
    run after a fault of the cuDNN path)."""
    name = os.environ.get("REAL_CP_BLOCK_KERNEL", "cudnn")
    if name not in BLOCK_KERNELS:
        raise ValueError(f"REAL_CP_BLOCK_KERNEL {name!r}: allowed {', '.join(BLOCK_KERNELS)}")
    return name


BLOCK_KERNEL = {"name": _first_kernel()}  # the one in use: moves down BLOCK_KERNELS when a GPU call is refused
# PyTorch's private cuDNN attention ops (module attributes so that tests can stand in for them)
CUDNN_FWD_OP = torch.ops.aten._scaled_dot_product_cudnn_attention
CUDNN_BWD_OP = torch.ops.aten._scaled_dot_product_cudnn_attention_backward


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


def _fused(q: torch.Tensor) -> str:
    """The fused kernel a block on q's device runs ("cudnn" or "efficient"), "math" off a GPU."""
    return BLOCK_KERNEL["name"] if q.device.type in ("cuda", "meta") else "math"


def _refused(kernel: str) -> None:
    """A GPU call of `kernel` raised: the next kernel of BLOCK_KERNELS from here on."""
    if BLOCK_KERNEL["name"] == kernel:
        BLOCK_KERNEL["name"] = BLOCK_KERNELS[BLOCK_KERNELS.index(kernel) + 1]


def _cudnn_fwd(q, k, v, causal: bool, scale: float):
    """cuDNN's fused attention forward: (out (B,H,sq,Ev) in q's layout and dtype, lse FP32
    (B,H,sq,1), cum_seq_q, cum_seq_k, max_q, max_k, philox seed, philox offset, debug mask)."""
    return CUDNN_FWD_OP(q, k, v, None, True, 0.0, causal, False, scale=scale)


def _cudnn_bwd(do, q, k, v, o, lse, saved, causal: bool, scale: float):
    """Its backward, argument for argument as autograd passes them; `saved`: what the block
    forward kept of its outputs (`_cudnn_saved`). Returns (dq, dk, dv)."""
    lse_shape, cum_q, cum_k, max_q, max_k, seed, offset = saved
    return CUDNN_BWD_OP(
        do, q, k, v, o, lse.reshape(lse_shape), seed, offset, None, cum_q, cum_k, max_q, max_k, 0.0, causal,
        scale=scale)


def _cudnn_saved(fwd) -> tuple:
    """What the backward needs of a cuDNN forward's outputs: the log-sum-exp's shape, the
    sequence bounds and the philox tensors (not the block's own output or log-sum-exp: the
    backward takes the merged ones)."""
    _, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = fwd
    return tuple(lse.shape), cum_q, cum_k, max_q, max_k, seed, offset


def cudnn_bwd_args(do, q, k, v, o, lse):
    """The cuDNN backward's tensor arguments as the forward would have produced them: q, k, v,
    out and grad_out contiguous (B, H, s, E) in q's dtype, lse FP32 contiguous."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return do.to(q.dtype).contiguous(), q, k, v, o.to(q.dtype).contiguous(), lse.float().contiguous()


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
    """(out FP32 (B,H,sq,Ev) contiguous, lse FP32 (B,H,sq), ctx) of q's rows attending to k/v's rows; ctx is
    what the block's backward needs of its forward: ("cudnn", `_cudnn_saved`),
    ("efficient", philox seed, philox offset) or None when the math path ran."""
    while (kernel := _fused(q)) != "math":
        try:
            qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
            if kernel == "cudnn":
                fwd = _cudnn_fwd(qc, kc, vc, causal, scale)
                return fwd[0].float(), fwd[1].reshape(fwd[0].shape[:-1]), ("cudnn", _cudnn_saved(fwd))
            o, lse, seed, offset = _efficient_fwd(qc, kc, vc, causal, scale)  # o laid out (B, sq, H, Ev)
            return o.float().contiguous(), lse[..., :q.shape[-2]], ("efficient", seed, offset)
        except RuntimeError:  # kernel refused these shapes: the next one from here on
            _refused(kernel)
    o, lse = _math_fwd(q, k, v, causal, scale)
    return o, lse, None


def block_backward(do, q, k, v, o, lse, ctx, causal: bool, scale: float):
    """(dq, dk, dv) of this block given the merged output o and log-sum-exp lse of q's rows and
    the block forward's ctx (None: the forward ran the math path, so does the backward)."""
    if ctx is not None and ctx[0] == "cudnn":
        return _cudnn_bwd(*cudnn_bwd_args(do, q, k, v, o, lse), ctx[1], causal, scale)
    if ctx is not None:
        dq, dk, dv, _ = _efficient_bwd(*efficient_bwd_args(do, q, k, v, o, lse), *ctx[1:], causal, scale)
        return dq, dk, dv
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
    with (timer.host_span("p2p_post") if timer is not None else contextlib.nullcontext()):
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


def _fold_block(q, k, v, rank: int, src: int, scale: float, acc: list):
    """Attend q's rows to the keys of rank src's shard (k, v) as `_step_plan` says and fold the
    block into acc = [out FP32, lse] (both None before the first block, the diagonal one, which
    covers every query row and is taken as it is). Returns the block's kernel context."""
    qs, ks, causal = _step_plan(rank, src, q.shape[-2] // 2)
    o_i, lse_i, kctx = block_forward(q[..., qs, :], k[..., ks, :], v[..., ks, :], causal, scale)
    if acc[0] is None:
        acc[0], acc[1] = o_i, lse_i
    else:
        _merge(acc[0][..., qs, :], acc[1][..., qs], o_i, lse_i)
    return kctx


def _block_grads(dout, q, k, v, out, lse, rank: int, src: int, kctx, scale: float):
    """(query rows, key rows, (dq, dk, dv)) of the block of q's rows and shard src's keys."""
    qs, ks, causal = _step_plan(rank, src, q.shape[-2] // 2)
    grads = block_backward(dout[..., qs, :], q[..., qs, :], k[..., ks, :], v[..., ks, :], out[..., qs, :],
                           lse[..., qs], kctx, causal, scale)
    return qs, ks, grads


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group, scale, timer):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        kv, acc, kctxs = (k, v), [None, None], []
        for step in range(world):
            wait = None
            if step < world - 1:  # the next shard travels while this one is attended
                nxt_kv, wait = _exchange(kv, group, timer)
            kctxs.append(_fold_block(q, *kv, rank, (rank - step) % world, scale, acc))
            if wait is not None:
                wait()
                kv = tuple(nxt_kv)
        out = acc[0].to(q.dtype)
        ctx.save_for_backward(q, k, v, out, acc[1])
        ctx.group, ctx.scale, ctx.timer, ctx.kctxs = group, scale, timer, kctxs
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        group, scale, timer = ctx.group, ctx.scale, ctx.timer
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        dout = dout.contiguous()
        kv, dq, dkv = (k, v), None, None
        dkv_wait, nxt_dkv = None, None
        for step in range(world):
            kv_wait = None
            if step < world - 1:
                nxt_kv, kv_wait = _exchange(kv, group, timer)
            qs, ks, (dq_i, dk_i, dv_i) = _block_grads(dout, q, *kv, out, lse, rank, (rank - step) % world,
                                                      ctx.kctxs[step], scale)
            if step == 0:  # the diagonal block: every query and key row, FP32 accumulators from it
                dq, dkv = dq_i.float(), (dk_i.float(), dv_i.float())
            else:  # the gradient of the keys we hold, from the previous rank, plus this block's
                dkv_wait()
                dkv = tuple(nxt_dkv)
                dq[..., qs, :] += dq_i
                dkv[0][..., ks, :] += dk_i
                dkv[1][..., ks, :] += dv_i
            if step == world - 1:  # the last hop takes the keys' gradients home: the owner only
                dkv = (dkv[0].to(k.dtype), dkv[1].to(v.dtype))  # casts them, so they travel cast
            nxt_dkv, dkv_wait = _exchange(dkv, group, timer)  # onward with its keys
            if kv_wait is not None:
                kv_wait()
                kv = tuple(nxt_kv)
        dkv_wait()  # our own keys' gradient, back from the last rank that used them
        return dq.to(q.dtype), nxt_dkv[0], nxt_dkv[1], None, None, None


def ring_attention(q, k, v, group, scale: float, timer: CommTimer | None = None) -> torch.Tensor:
    """Causal attention of this rank's zigzag shard of queries over the whole sequence's keys and
    values (each rank passing its zigzag shard of k, v). q, k: (B, H, s, E); v: (B, H, s, Ev)."""
    if q.shape[-2] % 2:
        raise ValueError(f"a rank's {q.shape[-2]} positions are not two equal chunks")
    return _RingAttention.apply(q, k, v, group, scale, timer)


# ---------------------------------------------------------------------------------------------
# The all-gather form
# ---------------------------------------------------------------------------------------------


class _GatheredAttention(torch.autograd.Function):
    """This rank's queries against every rank's shard of keys and values, already gathered
    (k_W, v_W: (W, B, H, s, E) in rank order): the ring's blocks without the ring."""

    @staticmethod
    def forward(ctx, q, k_W, v_W, rank, scale):
        world = k_W.shape[0]
        acc, kctxs = [None, None], []
        for step in range(world):
            src = (rank - step) % world
            kctxs.append(_fold_block(q, k_W[src], v_W[src], rank, src, scale, acc))
        out = acc[0].to(q.dtype)
        ctx.save_for_backward(q, k_W, v_W, out, acc[1])
        ctx.rank, ctx.scale, ctx.kctxs = rank, scale, kctxs
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k_W, v_W, out, lse = ctx.saved_tensors
        dout = dout.contiguous()
        dq = torch.zeros_like(q, dtype=torch.float32)
        dk_W, dv_W = torch.zeros_like(k_W), torch.zeros_like(v_W)
        for step in range(k_W.shape[0]):
            src = (ctx.rank - step) % k_W.shape[0]
            qs, ks, (dq_i, dk_i, dv_i) = _block_grads(dout, q, k_W[src], v_W[src], out, lse, ctx.rank, src,
                                                      ctx.kctxs[step], ctx.scale)
            dq[..., qs, :] += dq_i
            dk_W[src][..., ks, :] = dk_i  # one block per shard: its whole gradient from this rank
            dv_W[src][..., ks, :] = dv_i
        return dq.to(q.dtype), dk_W, dv_W, None, None


def allgather_attention(q, k, v, group, scale: float, timer: CommTimer | None = None) -> torch.Tensor:
    """Causal attention of this rank's zigzag shard of queries over the whole sequence, the keys
    and values all-gathered first (Llama 3 / torchtitan); same arguments as `ring_attention`.
    The gathers' backward reduce-scatters the key and value gradients to their owners."""
    if q.shape[-2] % 2:
        raise ValueError(f"a rank's {q.shape[-2]} positions are not two equal chunks")
    k_W = to_tp(k.contiguous()[None], True, group, timer)  # (W, B, H, s, E), rank order
    v_W = to_tp(v.contiguous()[None], True, group, timer)
    return _GatheredAttention.apply(q, k_W, v_W, dist.get_rank(group), scale)


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
