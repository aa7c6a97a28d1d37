"""Tensor/sequence parallelism and context parallelism (ring and all-gather) over gloo ranks
(spawned processes) against single-process references: outputs, input gradients and weight
gradients; and the arguments the ring hands PyTorch's private attention kernels."""

import dataclasses
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from real import cp
from real.collectives import CommTimer
from real.configs import get_spec
from real.model import MLA, MoE, RMSNorm, rope_tables
from real.tp import TPMLABlock, TPMoEBlock, allreduce_sequence_parallel_grads
from tests.ports import free_port

TOKENS = 16


def _spawn(fn, world, *args):
    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)


def _entry(rank, world, port, fn, args):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def _close(a, b, name):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def _tp_worker(rank, world, block_kind, sequence_parallel, q_lora_rank):
    spec = dataclasses.replace(get_spec("tiny"), q_lora_rank=q_lora_rank, num_heads=4)
    norm = RMSNorm(spec.hidden_size)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    ref = MLA(spec) if block_kind == "mla" else MoE(spec)
    group = dist.group.WORLD
    block = (TPMLABlock if block_kind == "mla" else TPMoEBlock)(spec, group, sequence_parallel)
    block.load_shard(norm, ref, rank)
    cos, sin = rope_tables(spec.qk_rope_head_dim, TOKENS)
    x_all = torch.randn(TOKENS, spec.hidden_size)
    target = torch.randn_like(x_all)

    def run_ref(x):
        h = norm(x)
        return x + (ref(h[None], cos, sin)[0] if block_kind == "mla" else ref(h))

    x_ref = x_all.clone().requires_grad_()
    y_ref = run_ref(x_ref)
    (y_ref * target).sum().backward()

    shard = slice(rank * TOKENS // world, (rank + 1) * TOKENS // world) if sequence_parallel else slice(None)
    x = x_all[shard].clone().requires_grad_()
    block.comm = CommTimer(torch.device("cpu"))
    y = block(x, cos, sin) if block_kind == "mla" else block(x)
    (y * target[shard]).sum().backward()
    kinds = set(block.comm.totals_s())
    assert kinds == ({"all_gather", "reduce_scatter"} if sequence_parallel else {"all_reduce"}), kinds
    _close(y, y_ref[shard].detach(), "output")
    _close(x.grad, x_ref.grad[shard], "input grad")
    allreduce_sequence_parallel_grads(block)
    # every weight gradient: this rank's shard of the reference's (the shard loader's layout)
    grads = type(block)(spec, group, sequence_parallel)
    with torch.no_grad():
        norm_g = RMSNorm(spec.hidden_size)
        norm_g.weight.copy_(norm.weight.grad)
        ref_g = type(ref)(spec)
        for (name, p), pg in zip(ref.named_parameters(), ref_g.parameters()):
            pg.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    grads.load_shard(norm_g, ref_g, rank)
    for (name, p), want in zip(block.named_parameters(), grads.parameters()):
        if p.grad is None:
            assert not want.abs().any(), name
        else:
            _close(p.grad, want, name)


TP_CASES = [("mla", True, 32), ("mla", False, 32), ("mla", True, 0), ("moe", True, 32), ("moe", False, 32)]


def _two_rank_worker(rank, world):
    for case in TP_CASES:
        _tp_worker(rank, world, *case)
    for kind in cp.CP_KINDS:
        for seq_len in (8, 4):
            _cp_worker(rank, world, seq_len, kind)
        _cp_mla_worker(rank, world, kind)
    _kernel_arguments_worker(rank, world)


def test_tp_blocks_and_context_parallel_attention_match_single_process_on_two_ranks():
    """One spawn (process start-up dominates): TP MLA/MoE blocks with and without sequence
    parallelism, with and without query compression; ring and all-gather attention at two
    lengths; the context-parallel MLA sublayer of each kind; each kind's kernel arguments
    (cuDNN, and the memory-efficient fallback when cuDNN refuses)."""
    _spawn(_two_rank_worker, 2)


CP_COMM_KINDS = {"ring": {"p2p_wait"}, "allgather": {"all_gather", "reduce_scatter"}}


def _cp_worker(rank, world, seq_len, kind="ring"):
    B, H, E, Ev = 2, 3, 12, 8
    scale = 1 / math.sqrt(E)
    q, k, v = (torch.randn(B, H, seq_len, d) for d in (E, E, Ev))
    dout = torch.randn(B, H, seq_len, Ev)
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_in, is_causal=True, scale=scale)
    ref.backward(dout)
    pos = cp.zigzag_positions(seq_len, world, rank)
    mine = [t[..., pos, :].clone().requires_grad_() for t in (q, k, v)]
    timer = CommTimer(torch.device("cpu"))
    out = cp.CP_ATTENTION[kind](*mine, dist.group.WORLD, scale, timer)
    out.backward(dout[..., pos, :])
    torch.testing.assert_close(out, ref[..., pos, :].detach(), msg=f"{kind} output")
    for name, t, r in zip("qkv", mine, ref_in):
        torch.testing.assert_close(t.grad, r.grad[..., pos, :], msg=f"{kind} d{name}")
    assert set(timer.totals_s()) == CP_COMM_KINDS[kind]


def _cp_mla_worker(rank, world, kind):
    spec, S = get_spec("tiny"), 16
    norm, ref = RMSNorm(spec.hidden_size), MLA(spec)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    block = cp.CPMLABlock(spec, dist.group.WORLD, kind)
    block.norm.load_state_dict(norm.state_dict())
    block.attn.load_state_dict(ref.state_dict())
    cos, sin = rope_tables(spec.qk_rope_head_dim, S)
    x_all, target = torch.randn(S, spec.hidden_size), torch.randn(S, spec.hidden_size)
    x_ref = x_all.clone().requires_grad_()
    y_ref = x_ref + ref(norm(x_ref)[None], cos, sin)[0]
    (y_ref * target).sum().backward()
    pos = cp.zigzag_positions(S, world, rank)
    x = x_all[pos].clone().requires_grad_()
    y = block(x, cos[pos], sin[pos])
    (y * target[pos]).sum().backward()
    _close(y, y_ref[pos].detach(), "cp mla output")
    _close(x.grad, x_ref.grad[pos], "cp mla input grad")
    want = dict(ref.named_parameters())
    for name, p in block.named_parameters():  # replicated weights: the ranks' partial grads summed
        dist.all_reduce(p.grad)
        _close(p.grad, norm.weight.grad if name == "norm.weight" else want[name.removeprefix("attn.")].grad, name)


def _three_rank_worker(rank, world):
    for kind in cp.CP_KINDS:
        _cp_worker(rank, world, 12, kind)


def test_context_parallel_attention_matches_full_causal_attention_on_three_ranks():
    """Three ranks: ring key/value gradients travel two hops before reaching their owner; the
    all-gather's middle rank has a chunk that sees keys of every rank."""
    _spawn(_three_rank_worker, 3)


def test_cp_block_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="cp_kind 'ulysses'.*ring, allgather"):
        cp.CPMLABlock(get_spec("tiny"), None, "ulysses")


# --- the CP blocks' calls of PyTorch's private attention kernels, mocked on CPU ---------------
# The mocks compute exact attention independently of real/cp.py and check that each backward
# receives what PyTorch's autograd would hand it after that block's forward. cuDNN (the first
# choice): q, k, v, out and grad_out contiguous in the query's dtype with the forward output's
# strides, the forward's log-sum-exp shape (B, H, s, 1) FP32, its philox tensors and sequence
# bounds, no bias. Memory-efficient (the fallback when cuDNN refuses): out and grad_out in the
# forward output's (B, s, H, Ev) memory layout (the CUDA backward reads out with row stride
# H*Ev), the padded log-sum-exp.


def _scores(q, k, causal, scale):
    s = torch.einsum("bhqe,bhke->bhqk", q.float(), k.float()) * scale
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return s


def _exact_block(q, k, v, causal, scale):
    s = _scores(q, k, causal, scale)
    lse = torch.logsumexp(s, -1)
    return torch.exp(s - lse[..., None]), lse


def _exact_grads(do, q, k, v, o, lse_BHs, causal, scale):
    """The block's gradients under the merged (all blocks') output and log-sum-exp."""
    p = torch.exp(_scores(q, k, causal, scale) - lse_BHs[..., None])
    dof, qf, kf = do.float(), q.float(), k.float()
    dv = torch.einsum("bhqk,bhqe->bhke", p, dof)
    dp = torch.einsum("bhqe,bhke->bhqk", dof, v.float())
    ds = p * (dp - (dof * o.float()).sum(-1, keepdim=True))
    dq = torch.einsum("bhqk,bhke->bhqe", ds, kf) * scale
    dk = torch.einsum("bhqk,bhqe->bhke", ds, qf) * scale
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _forward_of(forwards, seed, offset, q, k, v, causal):
    f = next(f for f in forwards if f["seed"] is seed)  # the forward of this very block
    assert offset is f["offset"], "philox offset not the block forward's"
    assert (q.shape, k.shape, v.shape, causal) == (f["q"], f["k"], f["v"], f["causal"])
    assert q.is_contiguous() and k.is_contiguous() and v.is_contiguous()
    f["used"] += 1
    return f


def _mock_cudnn_ops(forwards):
    def fwd(q, k, v, bias, compute_lse, dropout, causal, debug_mask, *, scale):
        assert bias is None and compute_lse and dropout == 0.0 and not debug_mask
        p, lse = _exact_block(q, k, v, causal, scale)
        out = torch.einsum("bhqk,bhke->bhqe", p, v.float()).to(q.dtype).contiguous()  # q's layout
        seed, offset = torch.empty((), dtype=torch.int64), torch.empty((), dtype=torch.int64)
        forwards.append(dict(q=q.shape, k=k.shape, v=v.shape, causal=causal, out=out, lse=lse[..., None],
                             seed=seed, offset=offset, used=0))
        return out, lse[..., None].contiguous(), None, None, q.shape[-2], k.shape[-2], seed, offset, None

    def bwd(do, q, k, v, o, lse, seed, offset, bias, cum_q, cum_k, max_q, max_k, dropout, causal, *, scale):
        f = _forward_of(forwards, seed, offset, q, k, v, causal)
        assert bias is None and cum_q is None and cum_k is None and dropout == 0.0
        assert (max_q, max_k) == (q.shape[-2], k.shape[-2])
        for name, t in (("out", o), ("grad_out", do)):
            assert t.dtype == q.dtype == f["out"].dtype, (name, t.dtype, q.dtype)
            assert t.shape == f["out"].shape and t.stride() == f["out"].stride(), (name, t.stride())
        assert lse.dtype == torch.float32 and lse.shape == f["lse"].shape and lse.is_contiguous()
        return _exact_grads(do, q, k, v, o, lse[..., 0], causal, scale)
    return fwd, bwd


def _refusing_cudnn_fwd(*args, **kwargs):
    raise RuntimeError("cuDNN refuses these shapes (mock)")


def _mock_efficient_kernels(forwards):
    def fwd(q, k, v, causal, scale):
        p, lse = _exact_block(q, k, v, causal, scale)
        B, H, sq, Ev = *q.shape[:3], v.shape[-1]
        out = torch.empty(B, sq, H, Ev, dtype=q.dtype).transpose(1, 2)  # the kernel's layout
        out.copy_(torch.einsum("bhqk,bhke->bhqe", p, v.float()))
        lse_pad = torch.full((B, H, -(-sq // 32) * 32), float("nan"))
        lse_pad[..., :sq] = lse
        seed, offset = torch.empty((), dtype=torch.int64), torch.empty((), dtype=torch.int64)
        forwards.append(dict(q=q.shape, k=k.shape, v=v.shape, causal=causal, out=out, lse=lse_pad,
                             seed=seed, offset=offset, used=0))
        return out, lse_pad, seed, offset

    def bwd(do, q, k, v, o, lse, seed, offset, causal, scale):
        f = _forward_of(forwards, seed, offset, q, k, v, causal)
        for name, t in (("out", o), ("grad_out", do)):
            assert t.dtype == q.dtype == f["out"].dtype, (name, t.dtype, q.dtype)
            assert t.shape == f["out"].shape and t.stride() == f["out"].stride(), (name, t.stride())
        assert lse.dtype == f["lse"].dtype and lse.shape == f["lse"].shape and lse.is_contiguous()
        return (*_exact_grads(do, q, k, v, o, lse[..., :q.shape[-2]], causal, scale), None)
    return fwd, bwd


def _kernel_arguments_case(rank, world, kind, cudnn_refuses):
    B, H, S, E, Ev = 1, 2, 40, 16, 8  # a rank's 20 positions: chunks of 10, lse padded to 32
    scale = 1 / math.sqrt(E)
    q, k, v = (torch.randn(B, H, S, d).to(torch.bfloat16) for d in (E, E, Ev))
    dout = torch.randn(B, H, S, Ev).to(torch.bfloat16)
    ref_in = [t.float().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_in, is_causal=True, scale=scale)
    ref.backward(dout.float())
    pos = cp.zigzag_positions(S, world, rank)
    mine = [t[..., pos, :].clone().requires_grad_() for t in (q, k, v)]
    forwards = []
    saved = cp._fused, cp.CUDNN_FWD_OP, cp.CUDNN_BWD_OP, cp._efficient_fwd, cp._efficient_bwd, dict(cp.BLOCK_KERNEL)
    cp._fused = lambda q: cp.BLOCK_KERNEL["name"]  # the GPU path on CPU tensors
    cp.BLOCK_KERNEL["name"] = "cudnn"
    cp.CUDNN_FWD_OP, cp.CUDNN_BWD_OP = _mock_cudnn_ops(forwards)
    if cudnn_refuses:
        cp.CUDNN_FWD_OP = _refusing_cudnn_fwd
    cp._efficient_fwd, cp._efficient_bwd = _mock_efficient_kernels(forwards)
    try:
        out = cp.CP_ATTENTION[kind](*mine, dist.group.WORLD, scale)
        out.backward(dout[..., pos, :])
        ran = cp.BLOCK_KERNEL["name"]
    finally:
        cp._fused, cp.CUDNN_FWD_OP, cp.CUDNN_BWD_OP, cp._efficient_fwd, cp._efficient_bwd, state = saved
        cp.BLOCK_KERNEL.update(state)
    assert ran == ("efficient" if cudnn_refuses else "cudnn")
    assert len(forwards) == world and all(f["used"] == 1 for f in forwards)
    loose = dict(rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(out.float(), ref[..., pos, :].detach(), **loose, msg=f"mocked {kind} output")
    for name, t, r in zip("qkv", mine, ref_in):
        assert t.grad.dtype == torch.bfloat16
        torch.testing.assert_close(t.grad.float(), r.grad[..., pos, :], **loose, msg=f"mocked {kind} d{name}")


def _kernel_arguments_worker(rank, world):
    for kind in cp.CP_KINDS:
        for cudnn_refuses in (False, True):
            _kernel_arguments_case(rank, world, kind, cudnn_refuses)


def test_zigzag_positions_cover_the_sequence_once_with_equal_causal_work():
    S, W = 16, 4
    shards = [cp.zigzag_positions(S, W, r) for r in range(W)]
    assert sorted(torch.cat(shards).tolist()) == list(range(S))
    # causal work of a rank = keys visible to its queries = sum of (position + 1)
    assert len({int((s + 1).sum()) for s in shards}) == 1
    with pytest.raises(ValueError, match="does not split"):
        cp.zigzag_positions(10, 4, 0)


def test_math_block_tiles_match_untiled(monkeypatch):
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 3)
    o, lse, rng = cp.block_forward(q, k, v, True, 0.5)
    assert rng is None  # the math path on a CPU
    do = torch.randn_like(o)
    g = cp.block_backward(do, q, k, v, o, lse, rng, True, 0.5)
    monkeypatch.setattr(cp, "MATH_TILE_ROWS", 3)
    o3, lse3, _ = cp.block_forward(q, k, v, True, 0.5)
    g3 = cp.block_backward(do, q, k, v, o3, lse3, None, True, 0.5)
    torch.testing.assert_close(o3, o)
    torch.testing.assert_close(lse3, lse)
    for a, b in zip(g3, g):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kernel", ["cudnn", "efficient"])
def test_fused_kernel_call_shapes_on_meta_tensors(kernel, monkeypatch):
    """The GPU path's calls (the fused attention forward with log-sum-exp, and its backward fed
    the merged output and log-sum-exp) accepted with these arguments and shapes."""
    monkeypatch.setitem(cp.BLOCK_KERNEL, "name", kernel)
    q = torch.empty(1, 4, 100, 192, device="meta", dtype=torch.bfloat16)
    k = torch.empty(1, 4, 60, 192, device="meta", dtype=torch.bfloat16)
    v = torch.empty(1, 4, 60, 128, device="meta", dtype=torch.bfloat16)
    o, lse, kctx = cp.block_forward(q, k, v, False, 0.1)
    assert cp.BLOCK_KERNEL["name"] == kernel and kctx[0] == kernel
    assert o.shape == (1, 4, 100, 128) and o.dtype == torch.float32 and lse.shape == (1, 4, 100)
    o_merged = torch.empty(1, 4, 100, 128, device="meta")  # the blocks' FP32 (B, H, s, Ev) merge
    if kernel == "efficient":
        do_k, q_k, k_k, v_k, o_k, lse_k = cp.efficient_bwd_args(o_merged, q, k, v, o_merged, lse)
        assert o_k.transpose(1, 2).is_contiguous() and do_k.transpose(1, 2).is_contiguous()
        assert lse_k.shape == (1, 4, 128) and lse_k.dtype == torch.float32 and lse_k.is_contiguous()
    else:
        do_k, q_k, k_k, v_k, o_k, lse_k = cp.cudnn_bwd_args(o_merged, q, k, v, o_merged, lse)
        assert o_k.is_contiguous() and do_k.is_contiguous() and lse_k.dtype == torch.float32
        assert kctx[1][0] == (1, 4, 100, 1)  # the forward's log-sum-exp shape, handed back as it was
    assert o_k.dtype == do_k.dtype == torch.bfloat16
    dq, dk, dv = cp.block_backward(o_merged, q, k, v, o_merged, lse, kctx, False, 0.1)
    assert cp.BLOCK_KERNEL["name"] == kernel
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape


def test_first_block_kernel_follows_the_environment(monkeypatch):
    monkeypatch.delenv("REAL_CP_BLOCK_KERNEL", raising=False)
    assert cp._first_kernel() == "cudnn"
    monkeypatch.setenv("REAL_CP_BLOCK_KERNEL", "efficient")  # the campaign's fallback run
    assert cp._first_kernel() == "efficient"
    monkeypatch.setenv("REAL_CP_BLOCK_KERNEL", "flash")
    with pytest.raises(ValueError, match="REAL_CP_BLOCK_KERNEL 'flash'.*cudnn, efficient, math"):
        cp._first_kernel()
