"""Section cp_block (issue 14, session s17cp): one torchtitan Llama-3.1-8B TransformerBlock at
32K positions a rank under PyTorch's context parallelism, with full activation checkpointing
inside torch.compile, as torchtitan 9dec370 runs its Table 2 rows (benchmarks/
llama3_h100_202412_torchtitan.md: FSDP + CP + torch.compile + Float8, local batch 1, full AC).

What the s10cp/s10cpc records (section torch_cp_scaling) do not hold: the whole block around the
attention core (norms, projections, RoPE, SwiGLU: real/dense.py's LlamaBlock), and torchtitan's full
AC, `ptd_checkpoint_wrapper(block, preserve_rng_state=False)` (parallelize_llama.py @ 9dec370 line
234), compiled with it: apply_ac wraps each block before apply_compile calls
`torch.compile(block, fullgraph=True)` (line 303), so the checkpoint and the ring attention are
traced into one joint graph, and its partitioner decides which collectives the backward re-runs.
SDPA is restricted as torchtitan's train context does under CP (utils.py @ 9dec370 lines 209-216:
`sdpa_kernel([FLASH_ATTENTION, EFFICIENT_ATTENTION])`), the rotate method torchtitan's default
('allgather', config_manager.py line 365). BF16 linears (torchao's Float8 is not in the GPU image), or
with REAL_BENCH_CP_BLOCK_FLOAT8=1 (session s18tt) real.fp8's tensorwise Float8 linears, torchao's recipe.
(Session s18fp8: s18tt's implementation gave zero gradients compiled on CUDA; real.fp8.TENSORWISE_IMPL's
default since session 19, "function" (torchao's pattern), is right compiled on an H100 and fuses the
casts; the custom ops are right but leave them unfused, docs/notes/s18fp8.md.)

Run at W = 1 (one process, the plain block: torchtitan's CP1 row enters no CP context), 2 and 4
(torchrun), it says how one rank's block time grows with the CP degree at fixed per-rank work,
and how many K/V all-gathers and dK/dV hand-overs a block's step runs (the kernel table).

Rows in the torch_cp families (bench cp_block_compiled, or cp_block with REAL_BENCH_CP_BLOCK_COMPILE=0;
model llama3.1-8b-block): torch_cp.csv the slowest rank's forward + backward (CUDA events),
torch_cp_kernels.csv / torch_cp_timeline.csv every rank's kernels and timeline per phase (the
backward holds the recomputed forward). env.json cp_block_memory: every rank's peak allocated and
reserved bytes and the caching allocator's retries (torch.cuda.memory_stats num_alloc_retries);
with Float8 linears at CP1, cp_block_grad_rel_error: each gradient's relative error against the same
block eager in BF16 (reference_grads), and cp_block_grads_ok: all of them within GRADS_OK_REL_ERROR
(false marks a record whose timed backward is not the block's; calibration.cp_block's `complete` flags
a backward without FA2's backward kernel).
Split: CP4 and up held out (torch_cp.scaling_split), as s10cp.
With REAL_BENCH_CP_BLOCK_MODEL=llama3.1-405b-tp8-block (session s29cp) the block is one GPU's TP 8 slice
of Llama 3.1 405B (16 heads, one K/V head repeated to 16, FFN 6656, hidden 16384), as torchtitan's 4D
rows run it, without the TP collectives (their AsyncTP ops need symmetric memory on 8 GPUs).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.nn.attention import SDPBackend, sdpa_kernel

from real.bench.device import free_memory
from real.bench.nccl import agreed_over, log, stats
from real.bench.parallel_blocks import time_reps
from real.bench.torch_cp import (_write_profile_rows, aten_calls_by_phase, cp_world,
                                 kernels_by_phase, profile_phases, scaling_split)
from real.dense import build_block, rope_freqs_cis, slice_of

LOCAL_LEN, QUICK_LOCAL_LEN = 32768, 64   # positions a rank: every torchtitan 8B CP row holds 32K
COMPILE_ENV = "REAL_BENCH_CP_BLOCK_COMPILE"   # "0": the block eager (default: compiled, the table's)
FLOAT8_ENV = "REAL_BENCH_CP_BLOCK_FLOAT8"     # "1": torchao's tensorwise Float8 linears (s18tt; default BF16)
MODEL_ENV = "REAL_BENCH_CP_BLOCK_MODEL"       # a key of MODELS (default the 8B block; s29cp: "llama3.1-405b-tp8-block")
# Llama 3.1 8B (meta-llama/Llama-3.1-8B config.json): hidden 4096, 32 heads, 8 K/V heads, head 128,
# FFN 14336, vocabulary 128256 (unused: no head here)
LLAMA_8B = dict(hidden_size=4096, num_heads=32, num_kv_heads=8, head_dim=128, ffn=14336, vocab=128256)
# Llama 3.1 405B (meta-llama/Llama-3.1-405B config.json): hidden 16384, 128 heads, 8 K/V heads, head 128, FFN
# 53248; torchtitan's 4D rows (Table 6) slice it TP 8: 16 heads and one K/V head a GPU (slice_of), FFN 6656
LLAMA_405B = dict(hidden_size=16384, num_heads=128, num_kv_heads=8, head_dim=128, ffn=53248, vocab=128256)
MODELS = {"llama3.1-8b-block": (LLAMA_8B, 1), "llama3.1-405b-tp8-block": (LLAMA_405B, 8)}   # name: (shape, tp)
QUICK_SHAPE = dict(hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, ffn=128, vocab=256)
# A Float8 block's gradients are the block's if every leaf's lies within this relative error of the
# block eager in BF16: FP8 rounding reads 0.08-0.16 (s18tt run 2, the eager Float8 block at 32K, H100),
# s18tt's compiled failure (zero gradients through the linears) 0.96-1.0
GRADS_OK_REL_ERROR = 0.5


def block_shape(quick: bool, model: str = "llama3.1-8b-block"):
    """One GPU's block shape: the tiny block (quick), or MODELS[model]'s TP slice (without its TP
    collectives: the compute one GPU runs; s29cp's 405B slice)."""
    if quick:
        return slice_of("llama", tp=1, **QUICK_SHAPE)
    shape, tp = MODELS[model]
    return slice_of("llama", tp=tp, **shape)


def _torchtitan_sdpa(dev):
    """torchtitan's SDPA restriction under CP (flash, then memory-efficient); none off a GPU."""
    if dev.type != "cuda":
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])


def block_fns(s: int, dev, quick: bool, seed: int = 0, compiled: bool = True, float8: bool = False,
              model: str = "llama3.1-8b-block"):
    """(fwd, bwd, block) of one checkpointed Llama block on s positions: x_BSD a BF16 leaf, the
    block under ptd_checkpoint_wrapper (full AC), compiled with fullgraph=True around the wrapper
    when `compiled` (inductor on a GPU; aot_eager off it: the same dynamo and AOTAutograd trace);
    bwd(out) takes the gradients of x and every parameter (recomputing the forward). `float8`: the
    linears as torchao's tensorwise Float8Linear (real.fp8.tensorwise_linear). `model`: a key of
    MODELS (block_shape)."""
    shape = block_shape(quick, model)
    torch.manual_seed(seed)
    block = build_block(shape, float8=float8).to(device=dev, dtype=torch.bfloat16)
    wrapped = checkpoint_wrapper(block, preserve_rng_state=False)
    backend = "inductor" if dev.type == "cuda" else "aot_eager"
    run = torch.compile(wrapped, fullgraph=True, backend=backend) if compiled else wrapped
    g = torch.Generator(device=dev).manual_seed(seed)
    x_BSD = torch.randn(1, s, shape.hidden_size, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
    gy_BSD = torch.randn(1, s, shape.hidden_size, generator=g, device=dev, dtype=torch.bfloat16)
    freqs_cis_SK2 = rope_freqs_cis(shape.head_dim, s).to(dev)
    leaves = [x_BSD, *block.parameters()]

    def fwd():
        with _torchtitan_sdpa(dev):
            return run(x_BSD, freqs_cis_SK2)

    def bwd(out):
        with _torchtitan_sdpa(dev):
            return torch.autograd.grad(out, leaves, gy_BSD)
    bwd.reference = lambda: reference_grads(block, x_BSD, freqs_cis_SK2, gy_BSD, dev)
    return fwd, bwd, block


def reference_grads(block, x_BSD, freqs_cis_SK2, gy_BSD, dev) -> tuple:
    """The gradients of x and every parameter from the same block eager, without checkpointing,
    its linears in BF16: what a Float8 or compiled run's gradients should be close to."""
    float8, block.float8 = block.float8, False
    try:
        with _torchtitan_sdpa(dev):
            return torch.autograd.grad(block(x_BSD, freqs_cis_SK2), [x_BSD, *block.parameters()], gy_BSD)
    finally:
        block.float8 = float8


def grad_rel_errors(block, grads, reference) -> dict:
    """{leaf name: |g - g_ref| / |g_ref|} over x and the block's parameters (Frobenius norms)."""
    names = ["x", *(n for n, _ in block.named_parameters())]
    return {n: float((g.float() - r.float()).norm() / r.float().norm().clamp(min=1e-30))
            for n, g, r in zip(names, grads, reference)}


def grads_ok(rel_errors: dict) -> bool:
    """Are a Float8 block's gradients the block's (grad_rel_errors within GRADS_OK_REL_ERROR)?"""
    return max(rel_errors.values()) < GRADS_OK_REL_ERROR


def memory_stats(dev) -> dict:
    """Peak allocated / reserved bytes and allocator retries since the last reset (zeros off a GPU)."""
    if dev.type != "cuda":
        return {"peak_allocated_bytes": 0, "peak_reserved_bytes": 0, "num_alloc_retries": 0}
    m = torch.cuda.memory_stats(dev)
    return {"peak_allocated_bytes": int(m.get("allocated_bytes.all.peak", 0)),
            "peak_reserved_bytes": int(m.get("reserved_bytes.all.peak", 0)),
            "num_alloc_retries": int(m.get("num_alloc_retries", 0))}


def _row_cols(S: int, world: int, quick: bool, compiled: bool, kernel: str, float8: bool = False,
              model: str = "llama3.1-8b-block") -> dict:
    shape = block_shape(quick, model)
    return dict(bench="cp_block_compiled" if compiled else "cp_block",
                model=model if not quick else "tiny-block", cp=world,
                rotate_method="allgather" if world > 1 else "none", sdpa_backend="flash",
                load_balance="head_tail" if world > 1 else "none", seq_len=S, local_len=S // world,
                num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim,
                kv_repeat=True, causal=True, precision="fp8-tensorwise" if float8 else "bf16", sdpa_kernel=kernel,
                split=scaling_split(world))


def block_flops(s: int, quick: bool, model: str = "llama3.1-8b-block") -> float:
    """FLOPs of one block's step on s positions with full AC: the linears 2 x params x s, three
    times forward (forward, recomputation) and twice more backward, 8 x params x s in all; causal
    attention 4 s^2 H K / 2 a forward pass, 2.5x backward, (2 + 2.5) of them: from the shapes."""
    sh = block_shape(quick, model)
    params = sh.hidden_size * (2 * sh.num_heads + 2 * sh.num_kv_heads) * sh.head_dim + 3 * sh.hidden_size * sh.ffn
    attn = 2.0 * s * s * sh.num_heads * sh.head_dim
    return 8.0 * params * s + 4.5 * attn


def bench_cp_block(rec, timer, dev, deadline, quick, env):
    """Section cp_block: one process (CP1, the plain block) or torchrun over W ranks (PyTorch's CP
    over all W, S = W x 32K); the module docstring says what is recorded."""
    world_cp = cp_world(env, dev, "cp_block")
    if world_cp is None:
        return
    world, rank, group, mesh, context_parallel, set_rotate_method = world_cp
    multi = group is not None
    compiled = os.environ.get(COMPILE_ENV, "1") != "0"
    float8 = os.environ.get(FLOAT8_ENV, "0") == "1"
    model = os.environ.get(MODEL_ENV, "") or "llama3.1-8b-block"
    if model not in MODELS:
        log(f"cp_block: {MODEL_ENV} {model!r}: not a block here (allowed: {', '.join(MODELS)})")
        env["cp_block_error"] = f"{MODEL_ENV} {model!r} unknown"
        return
    env["cp_block_compiled"], env["cp_block_float8"], env["cp_block_model"] = compiled, float8, model
    s = QUICK_LOCAL_LEN if quick else LOCAL_LEN
    S = s * world
    reps, warmup = (2, 1) if quick else (4, 2)
    trace_dir = Path(os.environ.get("REAL_BENCH_TRACE_DIR", "") or tempfile.gettempdir())
    if (agreed_over(deadline, dev) if multi else deadline.over()):
        log("cp_block: deadline reached")
        return
    fwd, bwd, block = block_fns(s, dev, quick, seed=rank, compiled=compiled, float8=float8, model=model)
    pos = torch.arange(S, device=dev)[None]   # a sequence buffer for the context to shard
    if world > 1:
        set_rotate_method("allgather")
        ctx = context_parallel(mesh, buffers=[pos], buffer_seq_dims=[1], no_restore_buffers={pos})
    else:
        ctx = contextlib.nullcontext()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        with ctx:
            times, _, hosts = time_reps(lambda: bwd(fwd()), dev, reps, warmup, None, group)
            mem = memory_stats(dev)
            if group is not None:
                dist.barrier(group=group)
            tag = ("cp_block_compiled" if compiled else "cp_block") + ("_fp8" if float8 else "")
            trace = profile_phases(fwd, bwd, dev, 2, str(trace_dir / f"trace_{tag}_S{S}_rank{rank}.json.gz"))
            if float8 and world == 1:   # are the gradients the block's? (s18tt run 1: the compiled
                # Float8 block's backward ran no FA2 backward kernel)
                errs = grad_rel_errors(block, bwd(fwd()), bwd.reference())
                env["cp_block_grad_rel_error"], env["cp_block_grads_ok"] = errs, grads_ok(errs)
                if not env["cp_block_grads_ok"]:   # the record is timed but is not the block's training
                    log(f"cp_block S={S}: GRADIENTS WRONG (relative error against BF16 eager up to "
                        f"{max(errs.values()):.2f}); env cp_block_grads_ok false")
    except (RuntimeError, NotImplementedError, ValueError) as e:   # dynamo or the CP dispatch refused
        log(f"cp_block S={S} cp{world}: {type(e).__name__}: {str(e)[:300]}")
        env["cp_block_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        return
    finally:
        free_memory()
    mems = [None] * world
    if group is None:
        mems = [mem]
    else:
        dist.all_gather_object(mems, mem, group=group)
    env["cp_block_memory"] = [{"rank": r, **m} for r, m in enumerate(mems)]
    kernels = kernels_by_phase(trace)
    calls = aten_calls_by_phase(trace)
    kernel = next((name.removeprefix("aten::") for (p, name) in calls if p == "fwd"), "sdpa")
    cols = _row_cols(S, world, quick, compiled, kernel, float8, model)
    fl = block_flops(s, quick, model)
    st = stats(times)
    rec.row("torch_cp", **cols, host_time_s=statistics.median(hosts), **st,
            timing="per_rep_events" if dev.type == "cuda" else "host_clock", flops=fl, bytes=float("nan"),
            achieved_flops_per_s=fl / st["time_s"], achieved_bytes_per_s=float("nan"),
            sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz())
    _write_profile_rows(rec, cols, kernels, calls, rank, world, dev, group)
    log(f"{cols['bench']} S={S} cp{world}: {st['time_s'] * 1e3:.2f} ms ({kernel}); "
        f"peak reserved {max(m['peak_reserved_bytes'] for m in mems) / 2**30:.1f} GiB, "
        f"alloc retries {max(m['num_alloc_retries'] for m in mems)}")
    if group is not None:
        dist.barrier(group=group)
