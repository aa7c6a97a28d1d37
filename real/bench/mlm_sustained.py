"""Section mlm_sustained (one GPU, opt-in; session s24mlm, issue 14): two kernel-level facts about the
per-GPU work of Megatron-LM's TP 8 GPT rows (calibration/data/published_runs.toml, mlm-gpt-*) that no
record holds.

Why: on the rows whose pipeline bubble is small (119B at V 23, 462B at V 7, the 177B layout on 96 GPUs)
the twin reads 12-16% fast, i.e. its per-micro-batch work is cheaper than Megatron's (s15mlm, s20tt,
s22tt). The twin's one-GPU prediction of the same TP 8 slice of a block is right in a short burst
(dense_block.csv, s8dense: 462B -0.5%, 177B -1.7%, 119B -4.6%), so what is left on one GPU is:

1. part `chunks`: the GEMMs TransformerEngine's userbuffers overlap splits into chunks (Megatron's
   --tp-comm-overlap with TE's default methods, twin.costs.tp_overlap): 'ring_exchange' runs the GEMM
   of an all-gathered input as tp = 8 GEMMs of m/8 = 512 token rows (qkv_fprop, fc1_fprop; proj_dgrad,
   fc2_dgrad), 'pipeline' as 4 GEMMs of 1,024 rows (proj_fprop, fc2_fprop). The twin prices a chunk on
   its GEMM curves at the chunk's shape (compute.chunked_gemm_time_s: +1.6..+4.5% over the whole GEMM
   at 462B, +6..+23% at 32B). Each GEMM is timed whole, as its chunks one after another on one stream
   (the twin's reading), and as its chunks round-robin over 3 streams with nothing between them (TE
   v1.8 issues chunk i on compute stream i % 3, NVTE_COMM_OVERLAP_MAX_STREAMS' default, each waiting
   only for its own chunk's receive: the bound where the transfers are never late). No communication
   runs: the chunks' own cost only. Timing: CUDA graph of back-to-back calls (Timer.measure_batched).
2. part `blocks`: one GPU's TP 8 slice of the GPT block (real/dense.py GPTBlock: LayerNorm, MHA with
   FA2, GeLU 4h, biases; 4,096 tokens, no dropout, as dense_block.csv's rows) forward + backward, timed
   in a burst after FA2_PAUSE_S idle and then held back to back for BLOCK_HOLD_S seconds at the board's
   power limit, one `sustained` row per 1 s window (time per call, board power from the energy
   counter, SM clock, temperature), as a training step holds it. The twin runs a training step on its
   curves scaled by the sustained ratios measured on one BF16 GEMM alone (sustained.csv: 0.90) and on
   attention (0.90), memory-bound kernels 1.0; no record holds a whole block at the limit. Last, the
   BF16 reference GEMM of sustained.csv (m=8192 n=4096 k=7168) held REF_HOLD_S, tying this card to it.

Round 1 (commit 325ef1a) ran every GEMM of part 1 as torch.mm(a, b) with b stored [k, n]: the layout of a
dgrad (dY W, W stored [out, in]) but not of a forward, which Megatron/TE run as x W^T with W stored
[out, in] (F.linear's layout). Section `mlm_chunks` (round 2, s24mlm) runs the forwards in that layout,
adds the 70B and 314B slices, and times each GEMM's variants twice in the order whole, one stream, three
streams, three streams, one stream, whole (a drift within the sequence cancels in each pair's mean).

Rows: part 1 in gemm.csv (bench mlm_chunks; m = the GEMM's token rows, groups = chunks,
tokens_per_group = rows a chunk, shape_tag '<model>/<gemm>/<variant>'), part 2 in sustained.csv (bench
mlm_sustained; config '<model> tp8 block fwd_bwd' or the reference GEMM's).
"""

from __future__ import annotations

import time

import torch

from real.bench.cp_sustained import FA2_PAUSE_S, gemm_cases, hold_eager
from real.bench.device import free_memory
from real.bench.records import log
from real.bench.torch_cp import sdpa_context
from real.dense import build_block, slice_of
from twin.costs.flops import gemm_flops

TP, SEQ = 8, 4096
# the Megatron README table's GPT rows at TP 8 (hidden, heads), the rows' order of interest: the three
# too-fast pipelined layouts first, then 32B (PP 1), so a cut run keeps the first
MLM_ROWS = (("megatron-gpt-462b", 18432, 144), ("megatron-gpt-177b", 12288, 96),
            ("megatron-gpt-119b", 10240, 80), ("megatron-gpt-32b", 7168, 56))
QUICK_ROWS = (("tiny-gpt", 128, 8),)
RING_CHUNKS, PIPELINE_CHUNKS = TP, 4      # TE v1.8: ring_exchange in tp chunks, 'pipeline' num_splits=4
TE_STREAMS = 3                            # TE v1.8: NVTE_COMM_OVERLAP_MAX_STREAMS default
BLOCK_HOLD_S, REF_HOLD_S = 8.0, 6.0


def te_gemms(hidden: int, tokens: int) -> list[tuple[str, int, int, int, int]]:
    """(name, m, n, k, chunks) of the GEMMs TE's userbuffers split at TP 8, as Megatron's GPT layer
    runs them on one GPU (GeLU FFN of 4 x hidden): out[m, n] = in[m, k] x W; ring_exchange ones in
    TP chunks of rows, 'pipeline' ones in 4."""
    d, f = hidden, 4 * hidden
    return [("qkv_fprop", tokens, 3 * d // TP, d, RING_CHUNKS),
            ("fc1_fprop", tokens, f // TP, d, RING_CHUNKS),
            ("proj_dgrad", tokens, d // TP, d, RING_CHUNKS),
            ("fc2_dgrad", tokens, f // TP, d, RING_CHUNKS),
            ("proj_fprop", tokens, d, d // TP, PIPELINE_CHUNKS),
            ("fc2_fprop", tokens, d, f // TP, PIPELINE_CHUNKS)]


def chunk_callables(m: int, n: int, k: int, chunks: int, dev, forward_layout: bool = False) -> dict:
    """variant -> fn: the GEMM out = a @ b (a m x k, b k x n, both row-major: the layout of a
    forward's x W^T with W stored transposed, and of a backward's dY W) whole, as `chunks` row chunks on
    one stream, and as the chunks round-robin over TE_STREAMS streams joined at the end.
    `forward_layout`: b is the transpose view of a weight stored [n, k] (x W^T, F.linear's and TE's
    forward layout) instead of a tensor stored [k, n] (a dgrad's dY W)."""
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(m, k, generator=g, device=dev, dtype=torch.bfloat16)
    if forward_layout:
        b = (torch.randn(n, k, generator=g, device=dev, dtype=torch.bfloat16) * 0.02).t()
    else:
        b = torch.randn(k, n, generator=g, device=dev, dtype=torch.bfloat16) * 0.02
    out = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
    rows = m // chunks
    parts = [(a[i * rows:(i + 1) * rows], out[i * rows:(i + 1) * rows]) for i in range(chunks)]
    streams = [torch.cuda.Stream(dev) for _ in range(TE_STREAMS)] if dev.type == "cuda" else []

    def whole():
        torch.mm(a, b, out=out)

    def one_stream():
        for ai, oi in parts:
            torch.mm(ai, b, out=oi)

    def round_robin():
        if not streams:
            return one_stream()
        cur = torch.cuda.current_stream(dev)
        for s in streams:
            s.wait_stream(cur)
        for i, (ai, oi) in enumerate(parts):
            with torch.cuda.stream(streams[i % len(streams)]):
                torch.mm(ai, b, out=oi)
        for s in streams:
            cur.wait_stream(s)

    return {"whole": whole, f"chunks{chunks}_streams1": one_stream,
            f"chunks{chunks}_streams{TE_STREAMS}": round_robin}


def run_chunks(rec, timer, dev, rows, deadline, quick: bool):
    tokens = 64 if quick else SEQ
    for model, hidden, _heads in rows:
        for name, m, n, k, chunks in te_gemms(hidden, tokens):
            if deadline.over():
                log("mlm_sustained: time share spent in chunks, skipping the rest")
                return
            fns = chunk_callables(m, n, k, chunks, dev)
            for variant, fn in fns.items():
                r = timer.measure_batched(fn, flops=gemm_flops(m, n, k))
                whole = variant == "whole"
                rec.row("gemm", bench="mlm_chunks", m=m, n=n, k=k, groups=1 if whole else chunks,
                        tokens_per_group=m if whole else m // chunks, precision="bf16",
                        shape_tag=f"{model}/{name}/{variant}", **r)
                log(f"mlm_chunks {model} {name} {variant}: {r['time_s'] * 1e6:.1f} us "
                    f"({r['achieved_flops_per_s'] / 1e12:.0f} TFLOP/s, {r['timing']})")
            del fns
        free_memory()


ROUND2_ROWS = MLM_ROWS + (("megatron-gpt-70b", 8192, 64), ("megatron-gpt-314b", 16384, 128))


def run_chunks_round2(rec, timer, dev, rows, deadline, quick: bool):
    """Round 2: forwards in F.linear's layout; variants in the order whole, one stream, three streams,
    three streams, one stream, whole (shape_tag suffix /a for the first of each pair, /b the second)."""
    tokens = 64 if quick else SEQ
    for model, hidden, _heads in rows:
        for name, m, n, k, chunks in te_gemms(hidden, tokens):
            if deadline.over():
                log("mlm_chunks: time share spent, skipping the rest")
                return
            fns = chunk_callables(m, n, k, chunks, dev, forward_layout=name.endswith("fprop"))
            order = list(fns) + list(reversed(fns))
            seen = set()
            for variant in order:
                r = timer.measure_batched(fns[variant], flops=gemm_flops(m, n, k))
                rep = "b" if variant in seen else "a"
                seen.add(variant)
                whole = variant == "whole"
                rec.row("gemm", bench="mlm_chunks2", m=m, n=n, k=k, groups=1 if whole else chunks,
                        tokens_per_group=m if whole else m // chunks, precision="bf16",
                        shape_tag=f"{model}/{name}/{variant}/{rep}", **r)
                log(f"mlm_chunks2 {model} {name} {variant} {rep}: {r['time_s'] * 1e6:.1f} us "
                    f"({r['achieved_flops_per_s'] / 1e12:.0f} TFLOP/s, {r['timing']})")
            del fns
        free_memory()


def bench_mlm_chunks(rec, timer, dev, deadline, quick, env):
    """Section mlm_chunks (round 2): run_chunks_round2 over ROUND2_ROWS (module docstring)."""
    run_chunks_round2(rec, timer, dev, QUICK_ROWS if quick else ROUND2_ROWS, deadline, quick)


def block_fn(model: str, hidden: int, heads: int, dev, quick: bool):
    """(config, fn, flops) of one GPU's TP 8 slice of the GPT block, forward + backward (as
    real/bench/dense_block.py's block_fwd_bwd: gradients of the input and every parameter)."""
    tokens = 32 if quick else SEQ
    shape = slice_of("gpt", hidden, heads, heads, hidden // heads, 4 * hidden, 131072 if not quick else 256, TP)
    torch.manual_seed(0)
    block = build_block(shape).to(dev, torch.bfloat16)
    x = torch.randn(1, tokens, hidden, device=dev, dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn_like(x)
    params = list(block.parameters())
    proj = hidden * shape.head_dim * 4 * shape.num_heads
    ffn = 2 * hidden * shape.ffn
    fwd_flops = 2.0 * tokens * (proj + ffn) + 4.0 * tokens * tokens * shape.num_heads * shape.head_dim / 2

    def fn():
        torch.autograd.grad(block(x), [x, *params], gy)
    return f"{model} tp{TP} b1 s{tokens} block fwd_bwd flash", fn, 3.0 * fwd_flops


def run_blocks(rec, timer, dev, rows, deadline, quick: bool):
    hold_s, ref_hold_s = (0.2, 0.2) if quick else (BLOCK_HOLD_S, REF_HOLD_S)
    pause_s = 0.0 if quick else FA2_PAUSE_S
    items = [("block",) + r for r in rows] + [("ref",)]
    for item in items:
        if deadline.over():
            log("mlm_sustained: time share spent in blocks, skipping the rest")
            break
        if item[0] == "block":
            config, fn, flops = block_fn(*item[1:], dev, quick)
            hold = hold_s
        else:
            config, _prec, fn, flops = gemm_cases(dev, quick)[0]
            hold = ref_hold_s
        time.sleep(pause_s)
        with sdpa_context("flash", dev):
            burst = timer.measure(fn, flops=flops)
            rec.row("sustained", bench="mlm_sustained", config=config, precision="bf16", phase="burst", window=0,
                    elapsed_s=0.0, temperature_c=timer.tel.temperature_c(), **burst)
            windows = hold_eager(rec, timer, dev, config, "bf16", fn, flops, hold, bench="mlm_sustained")
        log(f"mlm_sustained {config}: burst {burst['time_s'] * 1e3:.3f} ms "
            f"({burst['achieved_flops_per_s'] / 1e12:.0f} TFLOP/s), {windows} windows held")
        del fn
        free_memory()


def bench_mlm_sustained(rec, timer, dev, deadline, quick, env):
    """Part chunks (the TE-split GEMMs whole and chunked), then part blocks (the TP 8 block slices
    in a burst and held at the power limit, then the reference GEMM); module docstring."""
    rows = QUICK_ROWS if quick else MLM_ROWS
    run_chunks(rec, timer, dev, rows, deadline, quick)
    run_blocks(rec, timer, dev, rows, deadline, quick)
