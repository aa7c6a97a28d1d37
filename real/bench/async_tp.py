"""Section async_tp (async_tp.csv, two GPUs under torchrun): torch's micro-pipelined tensor
parallelism, the fused ops torchtitan's AsyncTP runs (torch._inductor.config._micro_pipeline_tp
rewrites a TP all-gather feeding a matmul into torch.ops.symm_mem.fused_all_gather_matmul, and a
matmul feeding a TP reduce-scatter into torch.ops.symm_mem.fused_matmul_reduce_scatter), each
beside the parts it is made of, so the twin's model of them (plan.tp_overlap_kind
'torch_async_tp', twin.training.step.StepCosts._tp_task) can be checked on measured rows.

Per case (a GEMM of the per-GPU shapes of torchtitan's Llama 3.1 TP slices, BF16, the gathered or
scattered dimension the tokens), one row per `op`:
  mm          the whole GEMM alone (M x K @ K x N);
  collective  the NCCL all-gather of the M/W x K shard, or reduce-scatter of the M x N output, alone;
  sequential  collective then GEMM (all-gather) or GEMM then collective (reduce-scatter): TP
              without overlap;
  fused       the symmetric-memory op (return_A as the inductor pass asks for the all-gather: the
              gathered input is kept for the weight gradient);
  reduce      (reduce-scatter cases) torch.sum over the W stacked partial sums [W, M/W, N] along
              W, the reduction the fused op ends with (torch/distributed/_symmetric_memory
              _fused_matmul_reduce_scatter_impl);
  p2p_copy    (s10atp) one shard (M/W x K gathered, M/W x N scattered) pulled from the next rank's
              symmetric-memory workspace, every rank at once: the copy-engine transfer of one step
              of the fused op;
  mm_beside_copy  (s10atp) the GEMM with that copy on a second stream (the GEMM's slowdown from
              the transfer beside it).
Timing as the nccl section: windows of back-to-back calls between CUDA events, the slowest rank's
window, median and p10/p90 over windows. A fused op this torch or device cannot run (the CPU dry
run on gloo; symmetric memory needs CUDA and NVLink peers) writes a row with status 'unavailable'
and the error in `detail`, and the section goes on. Split: the 405B slices are held out
(`async_tp_split`), the 70B ones fit.

Section async_tp_405b (s10atp, async_tp.csv, under torchrun on 4 GPUs where the host has them, else
2): the same ops on torchtitan's Llama 3.1 405B TP8 per-GPU linears, every rank's shard 4,096 rows
(the TP8 chunk of a 405B micro-batch of 4 x 8,192 tokens), so M = 4,096 x world; all held out.

Section async_tp_mlm (s27mlm, async_tp.csv, under torchrun): the same ops at the GEMM shapes
TransformerEngine's ring_exchange overlap chunks on a Megatron-LM GPT TP8 rank (qkv_fprop N = 3h/8;
fc1_fprop and fc2_dgrad N = h/2; proj_dgrad N = h/8; K = h), every rank's shard 512 rows (the TP8
chunk of one 4,096-token micro-batch), M = 512 x world, for the README table's 32B, 177B and 462B: a
check of twin.training.step.ADOPT_TE_RING_EXCESS (docs/notes/s27mlm_rule.md), all held out.

Section atp_parts (s10atp, one GPU, atp_parts.csv): the kernels the fused ops are made of, alone,
where the twin's model of them can be checked on one GPU:
  reduce      (op 'reduce') torch.sum of the W stacked partial sums along W, for W = 2, 4, 8 at the
              405B (32,768 x 16,384) and 70B (16,384 x 8,192) outputs, in the flat layout
              [W, M/W, N] (layout 'flat') and in torchtitan's (layout 'seq_sharded': the scatter
              dimension is the sequence of b = 4 sequences, so the reduction reads [W, s/W, b, N]
              and writes [b, s/W, N], as _fused_matmul_reduce_scatter_impl views it);
  chunks      the 405B TP8 linears' GEMMs (BF16 and tensorwise FP8, torchao's torch._scaled_mm)
              whole (op 'full', M = 32,768) and as the 8 chunk GEMMs of M/8 rows torch's fused
              ops issue (op 'chunks_one_stream'; op 'chunks_two_streams': alternating between the
              current and a second stream as _pipelined_all_gather_and_consume and
              _pipelined_produce_and_all2all issue them, so chunks may overlap).
Split: the 70B reductions fit (every W and layout), the 405B reductions and the chunk GEMMs are
held out (the first s10atp campaign wrote fit on the 70B W = 2 flat row only; see
calibration.async_tp.reduce_split).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from twin.costs.flops import gemm_bytes, gemm_flops

from real.bench.device import free_memory
from real.bench.gemm import fp8_gemm_callable
from real.bench.nccl import agreed_over, distributed_env, log, stats, time_windows
from real.sync import synchronize

WINDOWS, QUICK_WINDOWS = 8, 2
# (model slice, kind, M tokens of the whole micro-batch, K, N): torchtitan's Llama 3.1 TP8 per-GPU
# linears (70B: d 8192, FFN 28672 -> 3584 per rank, 64 query heads -> 1024 columns; 405B: d 16384,
# FFN 53248 -> 6656, 128 heads -> 2048), on 16K and 8K tokens
CASES = (
    ("llama3.1-70b/w1", "all_gather", 16384, 8192, 3584),
    ("llama3.1-70b/wq", "all_gather", 16384, 8192, 1024),
    ("llama3.1-70b/w2", "reduce_scatter", 16384, 3584, 8192),
    ("llama3.1-70b/wo", "reduce_scatter", 16384, 1024, 8192),
    ("llama3.1-405b/w1", "all_gather", 8192, 16384, 6656),
    ("llama3.1-405b/w2", "reduce_scatter", 8192, 6656, 16384),
)
QUICK_CASES = (("tiny/w1", "all_gather", 64, 32, 48), ("tiny/w2", "reduce_scatter", 64, 48, 32))


def async_tp_split(shape_tag: str) -> str:
    return "holdout" if shape_tag.startswith(("llama3.1-405b", "megatron-gpt")) else "fit"


def _symm_group_name(dev) -> str:
    """The world group's name with symmetric memory enabled for it (raises where unavailable)."""
    if dev.type != "cuda":
        raise RuntimeError("symmetric memory needs CUDA devices")
    from torch.distributed import _symmetric_memory as symm_mem  # lazy: a private module some torch builds lack; only GPU runs need it
    name = dist.group.WORLD.group_name
    enable = getattr(symm_mem, "enable_symm_mem_for_group", None)
    if enable is not None:
        enable(name)
    return name


def _ops(kind: str, m: int, k: int, n: int, world: int, dev, group_name: str | None) -> dict:
    """op name -> a function issuing one call, its buffers bound (None where unavailable: the error)."""
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    shard_m = m // world
    b = torch.randn(k, n, device=dev, dtype=dt) / k ** 0.5
    ops = {}
    if kind == "all_gather":
        a_shard = torch.randn(shard_m, k, device=dev, dtype=dt)
        # random, not empty: a GEMM on zeros (a fresh allocation) switches little and runs at clocks
        # real operands never reach (s9tt's 'mm' rows of the all-gather cases, 924 TFLOP/s BF16)
        gathered = torch.randn(m, k, device=dev, dtype=dt)
        ops["mm"] = lambda: torch.mm(gathered, b)
        ops["collective"] = lambda: dist.all_gather_into_tensor(gathered, a_shard)
        ops["sequential"] = lambda: (dist.all_gather_into_tensor(gathered, a_shard), torch.mm(gathered, b))
        fused = (lambda: torch.ops.symm_mem.fused_all_gather_matmul(a_shard, [b], 0, group_name, return_A=True))
    else:
        a = torch.randn(m, k, device=dev, dtype=dt)
        out = torch.empty(shard_m, n, device=dev, dtype=dt)
        full = torch.empty(m, n, device=dev, dtype=dt)
        stacked = torch.randn(world, shard_m, n, device=dev, dtype=dt)
        ops["mm"] = lambda: torch.mm(a, b, out=full)
        ops["collective"] = lambda: dist.reduce_scatter_tensor(out, full)
        ops["sequential"] = lambda: (torch.mm(a, b, out=full), dist.reduce_scatter_tensor(out, full))
        ops["reduce"] = lambda: torch.sum(stacked, dim=0)
        fused = (lambda: torch.ops.symm_mem.fused_matmul_reduce_scatter(a, b, "sum", 0, group_name))
    ops["fused"] = fused if group_name is not None else None
    # the copy-engine transfer each step of a fused op makes (a shard pulled from a peer's
    # symmetric-memory buffer: copy_shard, out_chunks[...].copy_(remote_p2p_buf)), alone and beside
    # the GEMM on another stream (the GEMM's slowdown from the transfer's HBM traffic)
    ops["p2p_copy"] = ops["mm_beside_copy"] = None
    if group_name is not None:
        shard_shape = (shard_m, k) if kind == "all_gather" else (shard_m, n)
        try:
            copy = _peer_copy(shard_shape, 2 * shard_m * max(k, n), dt, dev, group_name)
            ops["p2p_copy"], ops["mm_beside_copy"] = copy, _beside(ops["mm"], copy, dev)
        except Exception as exc:   # a torch whose private symmetric-memory API differs: rows say why
            ops["p2p_copy"] = ops["mm_beside_copy"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return ops


def _peer_copy(shape: tuple, workspace_elems: int, dt, dev, group_name: str):
    """A copy of one shard from the next rank's symmetric-memory workspace into local memory (all
    ranks at once, as in a fused op's step). The workspace is asked for at least what this case's
    fused op needs, so the op does not reallocate it under the copy's view."""
    from torch.distributed import _symmetric_memory as symm_mem  # lazy: a private module some torch builds lack; only GPU runs need it
    elem = torch.empty((), dtype=dt).element_size()
    ws = symm_mem.get_symm_mem_workspace(group_name, min_size=workspace_elems * elem)
    src = ws.get_buffer((ws.rank + 1) % ws.world_size, shape, dt, 0)
    dst = torch.empty(shape, device=dev, dtype=dt)
    return lambda: dst.copy_(src)


def _beside(mm, copy, dev):
    """The GEMM on the current stream with the peer copy on a second one, joined after."""
    side = torch.cuda.Stream(device=dev)

    def both():
        main = torch.cuda.current_stream(dev)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            copy()
        mm()
        main.wait_stream(side)
    return both


def _agreed_ok(ok: bool, dev) -> bool:
    """True only where every rank could run the op (ranks must issue the same collectives)."""
    flag = torch.tensor([1.0 if ok else 0.0], device=dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def cases_405b(world: int, quick: bool) -> tuple:
    """Section async_tp_405b's cases: the 405B TP8 per-GPU linears, each rank's shard 4,096 rows
    (a TP8 chunk of one 405B micro-batch), M = 4,096 x world."""
    if quick:
        return (("tiny405/w1", "all_gather", 32 * world, 32, 48), ("tiny405/w2", "reduce_scatter", 32 * world, 48, 32))
    m = 4096 * world
    return (("llama3.1-405b/tp8chunk/w1", "all_gather", m, 16384, 6656),
            ("llama3.1-405b/tp8chunk/wq", "all_gather", m, 16384, 2048),
            ("llama3.1-405b/tp8chunk/w2", "reduce_scatter", m, 6656, 16384),
            ("llama3.1-405b/tp8chunk/wo", "reduce_scatter", m, 2048, 16384))


# Megatron-LM README GPT rows (hidden size) whose TP8 ring_exchange GEMMs section async_tp_mlm times
MLM_HIDDEN = (("megatron-gpt-32b", 7168), ("megatron-gpt-177b", 12288), ("megatron-gpt-462b", 18432))
MLM_CHUNK_ROWS, MLM_TP = 512, 8   # 4,096 tokens a micro-batch over TP 8 (sequence parallel)


def cases_mlm(world: int, quick: bool) -> tuple:
    """Section async_tp_mlm's cases: TE's ring_exchange all-gather GEMMs of a Megatron GPT TP8 rank
    (K = h; N = 3h/8 qkv_fprop, h/2 fc1_fprop = fc2_dgrad, h/8 proj_dgrad), each rank's shard the TP8
    chunk of 512 rows, M = 512 x world."""
    if quick:
        return (("megatron-gpt-tiny/qkv_fprop", "all_gather", 16 * world, 32, 24),)
    m = MLM_CHUNK_ROWS * world
    return tuple((f"{model}/{name}", "all_gather", m, h, n)
                 for model, h in MLM_HIDDEN
                 for name, n in (("qkv_fprop", 3 * h // MLM_TP), ("fc1_fprop", 4 * h // MLM_TP),
                                 ("proj_dgrad", h // MLM_TP)))


def bench_async_tp_mlm(rec, timer, dev, deadline, quick, env):
    bench_async_tp(rec, timer, dev, deadline, quick, env, cases=cases_mlm(dist.get_world_size(), quick))


def bench_async_tp_405b(rec, timer, dev, deadline, quick, env):
    bench_async_tp(rec, timer, dev, deadline, quick, env, cases=cases_405b(dist.get_world_size(), quick))


def bench_async_tp(rec, timer, dev, deadline, quick, env, cases=None):
    world = dist.get_world_size()
    distributed_env(env, dev)
    windows = QUICK_WINDOWS if quick else WINDOWS
    precision = "bf16" if dev.type == "cuda" else "fp32"   # the CPU dry run's matmuls in FP32
    timing = "batched_events" if dev.type == "cuda" else "host_clock"
    try:
        group_name, symm_error = _symm_group_name(dev), ""
    except Exception as exc:   # the CPU dry run, or a torch without symmetric memory
        group_name, symm_error = None, f"{type(exc).__name__}: {exc}"
    env["async_tp_symm_mem"] = symm_error or "enabled"
    for tag, kind, m, k, n in cases or (QUICK_CASES if quick else CASES):
        if agreed_over(deadline, dev):
            log("async_tp: budget spent")
            break
        ops = _ops(kind, m, k, n, world, dev, group_name)
        for op in ("mm", "collective", "sequential", "fused", "reduce", "p2p_copy", "mm_beside_copy"):
            if op not in ops:
                continue
            fn, detail = ops[op], ""
            if fn is None:
                detail = symm_error
            elif isinstance(fn, str):   # could not be set up here: the error
                fn, detail = None, fn
            else:
                try:   # a first call outside the timing: a fused op this torch cannot run fails here
                    fn()
                    synchronize(dev)
                except Exception as exc:
                    fn, detail = None, f"{type(exc).__name__}: {str(exc)[:200]}"
            if not _agreed_ok(fn is not None, dev):
                rec.row("async_tp", bench="async_tp", shape_tag=tag, kind=kind, op=op, m=m, n=n, k=k, world_size=world,
                        precision=precision, status="unavailable", detail=detail or "another rank failed",
                        split=async_tp_split(tag), timing=timing)
                continue
            times, calls = time_windows(fn, dev, windows)
            st = stats(times)
            flops = 2.0 * m * n * k if op in ("mm", "sequential", "fused", "mm_beside_copy") else 0.0
            rec.row("async_tp", bench="async_tp", shape_tag=tag, kind=kind, op=op, m=m, n=n, k=k, world_size=world,
                    precision=precision, status="ok", detail=f"calls_per_window={calls}", split=async_tp_split(tag),
                    timing=timing, flops=flops, achieved_flops_per_s=flops / st["time_s"] if flops else "", **st)
            log(f"async_tp {tag} {op}: {st['time_s'] * 1e3:.3f} ms")
        del ops
        free_memory()


# --- section atp_parts (one GPU): the fused ops' kernels alone --------------------------------------
# (tag, M tokens, N output width): the reduce-scatter outputs of a 405B micro-batch (4 x 8,192 tokens,
# d 16,384) and of s9tt's 70B slice (16,384 tokens, d 8,192)
REDUCE_OUTPUTS = (("llama3.1-405b", 32768, 16384), ("llama3.1-70b", 16384, 8192))
REDUCE_WORLDS = (2, 4, 8)
SEQS_PER_MICROBATCH = 4   # torchtitan's 405B 3D rows: local batch 32 over 8 micro-batches
# torchtitan's Llama 3.1 405B linears on a TP8 rank, (name, n, k) of the GEMMs a fused op chunks:
# all-gather consumers wq, wk, w1 (forward) and the input gradients of wo, w2 (backward, the same
# shapes as wq's and w1's); reduce-scatter producers wo, w2 (forward)
CHUNK_LINEARS = (("wq", 2048, 16384), ("wk", 128, 16384), ("w1", 6656, 16384), ("wo", 16384, 2048),
                 ("w2", 16384, 6656))
CHUNK_TOKENS, CHUNK_WORLD = 32768, 8


def atp_parts_split(op: str, shape_tag: str, world: int, layout: str) -> str:
    """The 70B reductions fit (every W and layout: the reduction's rate is measured per W), the
    405B ones and every chunk-GEMM row are held out (calibration.async_tp.reduce_split splits the
    reductions the same way)."""
    return "fit" if op == "reduce" and shape_tag.startswith("llama3.1-70b") else "holdout"


def reduce_partials(stacked, world: int, layout: str):
    """torch.sum of the W stacked partials, as _fused_matmul_reduce_scatter_impl issues it: `stacked`
    is [M, N], W chunks of M/W rows (chunk w: rank w's partial sums of this rank's rows). Flat: rows
    are tokens, the output [M/W, N]. seq_sharded: rows are [s, b] flattened (the scatter dimension,
    the sequence, moved first), the output [b, s/W, N]."""
    m, n = stacked.shape
    if layout == "flat":
        return torch.sum(stacked.view(world, m // world, n), dim=0)
    b = SEQS_PER_MICROBATCH
    view = stacked.view(world, m // b // world, b, n).movedim(1, 2).movedim(0, 1)   # [b, W, s/W, N]
    return torch.sum(view, dim=1)


def _chunk_calls(m: int, n: int, k: int, chunks: int, kind: str, dev):
    """op -> a function issuing the whole GEMM, or its `chunks` row chunks on one or two streams."""
    a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    rows = m // chunks
    if kind == "bf16":
        full = lambda: torch.nn.functional.linear(a, w)   # noqa: E731
        parts = [(lambda c=c: torch.nn.functional.linear(c, w)) for c in a.split(rows)]
    else:
        full = fp8_gemm_callable(a, w, kind)
        parts = [fp8_gemm_callable(c.contiguous(), w, kind) for c in a.split(rows)]
    side = torch.cuda.Stream(device=dev) if dev.type == "cuda" else None

    def one_stream():
        for p in parts:
            p()

    def two_streams():
        if side is None:   # the CPU dry run: one host thread
            return one_stream()
        main = torch.cuda.current_stream(dev)
        side.wait_stream(main)
        parts[0]()
        for i, p in enumerate(parts[1:], start=1):
            with torch.cuda.stream(main if i % 2 == 0 else side):
                p()
        main.wait_stream(side)

    return {"full": full, "chunks_one_stream": one_stream, "chunks_two_streams": two_streams}


def bench_atp_parts(rec, timer, dev, deadline, quick, env):
    """Section atp_parts (see the module docstring)."""
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    outputs = (("tiny", 64, 32),) if quick else REDUCE_OUTPUTS
    for tag, m, n in outputs:
        for world in REDUCE_WORLDS:
            for layout in ("flat", "seq_sharded"):
                if deadline.over():
                    log("atp_parts: time share spent")
                    return
                stacked = torch.randn(m, n, device=dev, dtype=dt)
                fn = lambda: reduce_partials(stacked, world, layout)   # noqa: E731
                bytes_ = m * n * (1.0 + 1.0 / world) * (2 if dt == torch.bfloat16 else 4)
                r = timer.measure(fn, bytes_=bytes_, batched=True)
                rec.row("atp_parts", bench="atp_parts", shape_tag=tag, op="reduce", m=m, n=n, k="", world_size=world,
                        chunks="", layout=layout, precision="bf16" if dt == torch.bfloat16 else "fp32",
                        split=atp_parts_split("reduce", tag, world, layout), **r)
                log(f"atp_parts reduce {tag} W={world} {layout}: {r['time_s'] * 1e3:.3f} ms")
                del fn, stacked
                free_memory()
    linears = (("tiny/wq", 32, 64), ("tiny/wo", 64, 32)) if quick else CHUNK_LINEARS
    tokens = 256 if quick else CHUNK_TOKENS
    for name, n, k in linears:
        for kind in ("bf16", "fp8-tensor"):
            if deadline.over():
                log("atp_parts: time share spent")
                return
            calls = _chunk_calls(tokens, n, k, CHUNK_WORLD, kind, dev)
            tag = name if quick else f"llama3.1-405b/{name}"
            for op, fn in calls.items():
                r = timer.measure(fn, flops=gemm_flops(tokens, n, k),
                                  bytes_=gemm_bytes(tokens, n, k, 2 if kind == "bf16" else 1), batched=True)
                rec.row("atp_parts", bench="atp_parts", shape_tag=tag, op=op, m=tokens, n=n, k=k, world_size="",
                        chunks=1 if op == "full" else CHUNK_WORLD, layout="", precision=kind,
                        split=atp_parts_split(op, tag, 0, ""), **r)
                log(f"atp_parts {tag} {kind} {op}: {r['time_s'] * 1e3:.3f} ms")
            del calls
            free_memory()
