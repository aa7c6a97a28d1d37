"""Section parallel_blocks (parallel_blocks.csv): tensor- and context-parallel blocks, forward +
backward, under torchrun with W >= 2 ranks (tp = W or cp = W), each beside its one-GPU
reference (tp = cp = 1, run on rank 0 while the others wait).

  bench tp_block, block mla:  x + MLA(norm(x))  (real/tp.py TPMLABlock), heads split over W
  bench tp_block, block moe:  x + MoE(norm(x))  (TPMoEBlock), every expert's width split over W,
                              balanced routing injected (skew 0, round-robin)
      sequence_parallel true: all-gather in, reduce-scatter out; false: all-reduce out.
      tokens = seq_len = the whole sequence (batch 1); each rank holds tokens/W with SP.
  bench cp_block, block attention: causal ring attention (real/cp.py) of MLA-shaped heads
      (qk 192, v 128) over seq_len positions, each rank seq_len/W (zigzag); the reference is
      causal `scaled_dot_product_attention` on the whole sequence.
  bench cp_block, block mla: x + MLA(norm(x)) with the positions split (real/cp.py CPMLABlock:
      projections local, expanded K/V around the ring); the reference is the unsplit sublayer.
time_s: the median over repetitions of forward + backward (input and weight gradients), each
repetition timed by CUDA events on every rank and taken as the slowest rank's (ranks start
together after a barrier). comm_time_s: rank 0's median per repetition of the time its stream
spent in the collectives (`real/collectives.py` CommTimer: all-gather/reduce-scatter/all-reduce
for TP, all exposed; for CP the waits for the ring's P2P exchanges, i.e. the exposed part of
the overlapped transfer); comm_detail the same by kind (JSON).
Split (`block_split`): holdout the middle size of each sweep (tp tokens 4096, cp seq_len 16384)
and every row of v2-lite-slice's MoE; fit otherwise.
"""

from __future__ import annotations

import json
import math
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from real import cp as cp_mod
from real.bench.device import free_memory
from real.bench.moe_layer import skewed_routing
from real.bench.nccl import agreed_over, distributed_env, log, stats
from real.collectives import CommTimer
from real.configs import get_spec
from real.model import building, rope_tables
from real.tp import TPMLABlock, TPMoEBlock
from twin.costs.flops import attention_flops, gemm_flops

HELD_OUT_TP_TOKENS = {4096}
HELD_OUT_CP_SEQ_LENS = {16384}
HELD_OUT_TP_MOE_MODELS = {"v2-lite-slice"}


def block_split(bench: str, block: str, model: str, tokens: int) -> str:
    if bench == "cp_block":
        return "holdout" if tokens in HELD_OUT_CP_SEQ_LENS else "fit"
    if tokens in HELD_OUT_TP_TOKENS or (block == "moe" and model in HELD_OUT_TP_MOE_MODELS):
        return "holdout"
    return "fit"


def tp_cases(quick: bool):
    """(block, model, tokens) of the TP sweep."""
    if quick:
        return [("mla", "tiny", 32), ("moe", "tiny", 32)]
    out = []
    for block in ("mla", "moe"):
        for model in ("v3-slice-1l", "v2-lite-slice"):
            out += [(block, model, t) for t in (2048, 4096, 8192)]
    return out


def cp_cases(quick: bool):
    """(model, heads, seq_len) of the CP sweep: MLA-shaped heads of the model."""
    if quick:
        return [("tiny", 2, 32)]
    return ([("v2-lite-slice", 16, s) for s in (4096, 8192, 16384, 32768)]
            + [("v3-slice-1l", 128, s) for s in (4096, 8192, 16384)])


def common_kernel(dev) -> str:
    """Which per-block attention kernel the ring ran (real/cp.py)."""
    return cp_mod.BLOCK_KERNEL["name"] if dev.type == "cuda" else "math"


def cp_mla_cases(quick: bool):
    """(model, seq_len) of the context-parallel MLA sublayer sweep."""
    if quick:
        return [("tiny", 32)]
    return ([("v2-lite-slice", s) for s in (4096, 8192, 16384, 32768)]
            + [("v3-slice-1l", s) for s in (4096, 8192, 16384)])


def time_reps(fn, dev, reps: int, warmup: int, comm: CommTimer | None, group) -> tuple[list, list]:
    """Seconds per repetition of fn() (the slowest rank's when group is not None) and, per
    repetition, this rank's collective time by kind."""
    for _ in range(warmup):
        fn()
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
    if group is not None:
        dist.barrier(group=group)
    handles, comms = [], []
    for _ in range(reps):
        if comm is not None:
            comm.reset()
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            handles.append((s, e))
        else:
            t0 = time.perf_counter()
            fn()
            handles.append(time.perf_counter() - t0)
        if comm is not None:
            if cuda:
                torch.cuda.synchronize(dev)
            comms.append(comm.totals_s())
    if cuda:
        torch.cuda.synchronize(dev)
    times = [s.elapsed_time(e) * 1e-3 for s, e in handles] if cuda else handles
    if group is not None:
        t = torch.tensor(times, device=dev, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        times = t.tolist()
    return times, comms


def _comm_cols(comms: list[dict]) -> dict:
    if not comms:
        return {"comm_time_s": math.nan, "comm_detail": ""}
    kinds = sorted({k for c in comms for k in c})
    detail = {k: statistics.median(c.get(k, 0.0) for c in comms) for k in kinds}
    return {"comm_time_s": statistics.median(sum(c.values()) for c in comms),
            "comm_detail": json.dumps({k: float(f"{v:.6g}") for k, v in detail.items()})}


def _row(rec, env, timer, times, comms, **cols):
    st = stats(times)
    fl = cols.pop("flops", math.nan)
    rec.row("parallel_blocks", **cols, **_comm_cols(comms), **st,
            timing="per_rep_events" if env.get("num_gpus") else "host_clock",
            flops=fl, bytes=math.nan, achieved_flops_per_s=fl / st["time_s"],
            achieved_bytes_per_s=math.nan, sm_clock_mhz=timer.tel.sm_clock_mhz(),
            mem_clock_mhz=timer.tel.mem_clock_mhz())
    return st


def _tp_block_fn(block_kind, spec, group, sp, T, dev, rank, world):
    """A fwd+bwd closure of a TP block (group None: the one-GPU reference) and its block."""
    with building(dev):
        block = (TPMLABlock if block_kind == "mla" else TPMoEBlock)(spec, group, sp)
    shard = slice(rank * T // world, (rank + 1) * T // world) if (group is not None and sp) else slice(None)
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(T, spec.hidden_size, generator=g).to(dev, torch.bfloat16)
    x = x_all[shard].clone().requires_grad_()
    gy = torch.randn_like(x)
    params = [p for p in block.parameters() if p.requires_grad]
    if block_kind == "mla":
        cos, sin = (t.to(dev) for t in rope_tables(spec.qk_rope_head_dim, T))

        def fwd():
            return block(x, cos, sin)
    else:
        w, ids = skewed_routing(T, spec.num_routed_experts, spec.top_k, 0.0, spec.route_scale, dev, g)
        routing = (w[shard], ids[shard])

        def fwd():
            return block(x, routing=routing)

    def step():
        torch.autograd.grad(fwd(), [x, *params], gy, allow_unused=True)
    return step, block


def _tp_flops(block_kind, spec, T) -> float:
    """Forward + backward FLOPs of the whole (unsharded) block, 3x the forward's GEMMs plus
    attention (forward 1x, backward 2.5x as twin.costs.flops counts it)."""
    D = spec.hidden_size
    if block_kind == "moe":
        Fe = spec.moe_intermediate_size
        return 3 * (gemm_flops(T * spec.top_k, 3 * Fe, D) + gemm_flops(T, 3 * Fe * spec.num_shared_experts, D))
    H, P, R, O, C, Q = (spec.num_heads, spec.qk_nope_head_dim, spec.qk_rope_head_dim, spec.v_head_dim,
                        spec.kv_lora_rank, spec.q_lora_rank)
    proj = (gemm_flops(T, Q, D) + gemm_flops(T, H * (P + R), Q) if Q else gemm_flops(T, H * (P + R), D))
    proj += gemm_flops(T, C + R, D) + gemm_flops(T, H * (P + O), C) + gemm_flops(T, D, H * O)
    return 3 * proj + 3.5 * attention_flops(1, T, H, P + R, O, causal=True)


def _cp_mla_fn(spec, group, S, dev, rank, world):
    """A fwd+bwd closure of the CP MLA sublayer on this rank's zigzag positions (group None: the
    unsplit sublayer, TPMLABlock without a group), and its block."""
    with building(dev):
        block = cp_mod.CPMLABlock(spec, group) if group is not None else TPMLABlock(spec, None)
    pos = (cp_mod.zigzag_positions(S, world, rank) if group is not None else torch.arange(S)).to(dev)
    cos, sin = (t.to(dev)[pos] for t in rope_tables(spec.qk_rope_head_dim, S))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(S, spec.hidden_size, generator=g).to(dev, torch.bfloat16)[pos].requires_grad_()
    gy = torch.randn_like(x)
    params = list(block.parameters())

    def step():
        torch.autograd.grad(block(x, cos, sin), [x, *params], gy)
    return step, block


def bench_parallel_blocks(rec, timer, dev, deadline, quick, env):
    group, world, rank = dist.group.WORLD, dist.get_world_size(), dist.get_rank()
    distributed_env(env, dev)
    reps, warmup = (2, 1) if quick else (6, 2)
    for block_kind, model, T in tp_cases(quick):
        spec = get_spec(model)
        common = dict(bench="tp_block", block=block_kind, model=model, cp=1, tokens=T, seq_len=T, batch=1,
                      hidden_size=spec.hidden_size, num_heads=spec.num_heads,
                      qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim, v_head_dim=spec.v_head_dim,
                      num_experts=spec.num_routed_experts if block_kind == "moe" else "",
                      top_k=spec.top_k if block_kind == "moe" else "",
                      moe_intermediate_size=spec.moe_intermediate_size if block_kind == "moe" else "",
                      skew=0.0 if block_kind == "moe" else "", precision="bf16", attn_kernel="",
                      flops=_tp_flops(block_kind, spec, T),
                      split=block_split("tp_block", block_kind, model, T))
        for sp in (True, False):
            if agreed_over(deadline, dev):
                log("parallel_blocks: deadline reached")
                return
            step, block = _tp_block_fn(block_kind, spec, group, sp, T, dev, rank, world)
            block.comm = CommTimer(dev)
            times, comms = time_reps(step, dev, reps, warmup, block.comm, group)
            st = _row(rec, env, timer, times, comms if rank == 0 else [], tp=world,
                      sequence_parallel=sp, **common)
            log(f"tp_block {block_kind} {model} T={T} tp{world} sp={sp}: {st['time_s'] * 1e3:.2f} ms")
            del step, block
            free_memory()
        if rank == 0:  # the one-GPU reference
            step, block = _tp_block_fn(block_kind, spec, None, False, T, dev, 0, 1)
            times, _ = time_reps(step, dev, reps, warmup, None, None)
            st = _row(rec, env, timer, times, [], tp=1, sequence_parallel=False, **common)
            log(f"tp_block {block_kind} {model} T={T} tp1: {st['time_s'] * 1e3:.2f} ms")
            del step, block
            free_memory()
        dist.barrier()
    for model, H, S in cp_cases(quick):
        if agreed_over(deadline, dev):
            log("parallel_blocks: deadline reached")
            return
        spec = get_spec(model)
        E, Ev = spec.qk_nope_head_dim + spec.qk_rope_head_dim, spec.v_head_dim
        scale = 1 / math.sqrt(E)
        common = dict(bench="cp_block", block="attention", model=model, tp=1, sequence_parallel=False,
                      tokens=S, seq_len=S, batch=1, hidden_size=spec.hidden_size, num_heads=H,
                      qk_head_dim=E, v_head_dim=Ev, num_experts="", top_k="", moe_intermediate_size="",
                      skew="", precision="bf16", flops=3.5 * attention_flops(1, S, H, E, Ev, causal=True),
                      split=block_split("cp_block", "attention", model, S))
        g = torch.Generator().manual_seed(rank)
        q, k, v = (torch.randn(1, H, S // world, d, generator=g).to(dev, torch.bfloat16).requires_grad_()
                   for d in (E, E, Ev))
        gy = torch.randn(1, H, S // world, Ev, generator=g).to(dev, torch.bfloat16)
        comm = CommTimer(dev)

        def step():
            torch.autograd.grad(cp_mod.ring_attention(q, k, v, group, scale, comm), [q, k, v], gy)
        times, comms = time_reps(step, dev, reps, warmup, comm, group)
        st = _row(rec, env, timer, times, comms if rank == 0 else [], cp=world,
                  attn_kernel=common_kernel(dev), **common)
        log(f"cp_block {model} S={S} cp{world}: {st['time_s'] * 1e3:.2f} ms "
            f"({common_kernel(dev)} blocks)")
        del q, k, v, gy, step
        free_memory()
        if rank == 0:
            q, k, v = (torch.randn(1, H, S, d, generator=g).to(dev, torch.bfloat16).requires_grad_()
                       for d in (E, E, Ev))
            gy = torch.randn(1, H, S, Ev, generator=g).to(dev, torch.bfloat16)

            def ref_step():
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
                torch.autograd.grad(o, [q, k, v], gy)
            times, _ = time_reps(ref_step, dev, reps, warmup, None, None)
            st = _row(rec, env, timer, times, [], cp=1, attn_kernel="sdpa", **common)
            log(f"cp_block {model} S={S} cp1: {st['time_s'] * 1e3:.2f} ms")
            del q, k, v, gy, ref_step
            free_memory()
        dist.barrier()
    for model, S in cp_mla_cases(quick):
        if agreed_over(deadline, dev):
            log("parallel_blocks: deadline reached")
            return
        spec = get_spec(model)
        common = dict(bench="cp_block", block="mla", model=model, tp=1, sequence_parallel=False,
                      tokens=S, seq_len=S, batch=1, hidden_size=spec.hidden_size, num_heads=spec.num_heads,
                      qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim, v_head_dim=spec.v_head_dim,
                      num_experts="", top_k="", moe_intermediate_size="", skew="", precision="bf16",
                      flops=_tp_flops("mla", spec, S), split=block_split("cp_block", "mla", model, S))
        step, block = _cp_mla_fn(spec, group, S, dev, rank, world)
        block.comm = CommTimer(dev)
        times, comms = time_reps(step, dev, reps, warmup, block.comm, group)
        st = _row(rec, env, timer, times, comms if rank == 0 else [], cp=world,
                  attn_kernel=common_kernel(dev), **common)
        log(f"cp_block mla {model} S={S} cp{world}: {st['time_s'] * 1e3:.2f} ms")
        del step, block
        free_memory()
        if rank == 0:
            step, block = _cp_mla_fn(spec, None, S, dev, 0, 1)
            times, _ = time_reps(step, dev, reps, warmup, None, None)
            st = _row(rec, env, timer, times, [], cp=1, attn_kernel="sdpa", **common)
            log(f"cp_block mla {model} S={S} cp1: {st['time_s'] * 1e3:.2f} ms")
            del step, block
            free_memory()
        dist.barrier()
