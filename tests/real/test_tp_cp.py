"""Tensor/sequence parallelism and ring context parallelism over gloo ranks (spawned processes)
against single-process references: outputs, input gradients and weight gradients."""

import dataclasses
import math
import socket

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

TOKENS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, world, *args):
    mp.spawn(_entry, args=(world, _free_port(), fn, args), nprocs=world, join=True)


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
    for seq_len in (8, 4):
        _cp_worker(rank, world, seq_len)
    _cp_mla_worker(rank, world)


def test_tp_blocks_and_ring_attention_match_single_process_on_two_ranks():
    """One spawn (process start-up dominates): TP MLA/MoE blocks with and without sequence
    parallelism, with and without query compression; ring attention at two lengths; the
    context-parallel MLA sublayer."""
    _spawn(_two_rank_worker, 2)


def _cp_worker(rank, world, seq_len):
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
    out = cp.ring_attention(*mine, dist.group.WORLD, scale, timer)
    out.backward(dout[..., pos, :])
    torch.testing.assert_close(out, ref[..., pos, :].detach())
    for name, t, r in zip("qkv", mine, ref_in):
        torch.testing.assert_close(t.grad, r.grad[..., pos, :], msg=f"d{name}")
    assert set(timer.totals_s()) == {"p2p_wait"}


def _cp_mla_worker(rank, world):
    spec, S = get_spec("tiny"), 16
    norm, ref = RMSNorm(spec.hidden_size), MLA(spec)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    block = cp.CPMLABlock(spec, dist.group.WORLD)
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


def test_ring_attention_matches_full_causal_attention_on_three_ranks():
    """Three ranks: key/value gradients travel two hops before reaching their owner."""
    _spawn(_cp_worker, 3, 12)


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
    o, lse = cp.block_forward(q, k, v, True, 0.5)
    do = torch.randn_like(o)
    g = cp.block_backward(do, q, k, v, o, lse, True, 0.5)
    monkeypatch.setattr(cp, "MATH_TILE_ROWS", 3)
    o3, lse3 = cp.block_forward(q, k, v, True, 0.5)
    g3 = cp.block_backward(do, q, k, v, o3, lse3, True, 0.5)
    torch.testing.assert_close(o3, o)
    torch.testing.assert_close(lse3, lse)
    for a, b in zip(g3, g):
        torch.testing.assert_close(a, b)


def test_efficient_kernel_call_shapes_on_meta_tensors():
    """The GPU path's calls (memory-efficient attention forward with log-sum-exp, and its backward
    fed the merged output and padded log-sum-exp) accepted with these arguments and shapes."""
    q = torch.empty(1, 4, 100, 192, device="meta", dtype=torch.bfloat16)
    k = torch.empty(1, 4, 60, 192, device="meta", dtype=torch.bfloat16)
    v = torch.empty(1, 4, 60, 128, device="meta", dtype=torch.bfloat16)
    o, lse = cp.block_forward(q, k, v, False, 0.1)
    assert cp.BLOCK_KERNEL["name"] == "efficient"
    assert o.shape == (1, 4, 100, 128) and o.dtype == torch.float32 and lse.shape == (1, 4, 100)
    dq, dk, dv = cp.block_backward(o.to(q.dtype), q, k, v, o.to(q.dtype), lse, False, 0.1)
    assert cp.BLOCK_KERNEL["name"] == "efficient"
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
