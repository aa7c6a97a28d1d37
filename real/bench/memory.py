"""Sections memory and topk (memory.csv): memory-bound ops of a layer (copy, the MLA q/k cat,
RMSNorm, SwiGLU, softmax, the router, FP8 casts) and torch.topk as the router calls it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from real import fp8
from real.bench.device import free_memory
from real.bench.records import log
from real.routing import route


def bench_memory(rec, timer, dev, deadline, quick, env):
    D = 256 if quick else 7168
    tokens_list = [64, 256] if quick else [1024, 4096, 16384, 65536]
    best = 0.0
    for T in tokens_list:
        if deadline.over():
            break
        x = torch.randn(T, D, device=dev, dtype=torch.bfloat16)
        w = torch.ones(D, device=dev, dtype=torch.bfloat16)
        F2 = 2 * (128 if quick else 2048)
        h = torch.randn(T, F2, device=dev, dtype=torch.bfloat16)
        E = 256
        logits = torch.randn(T, E, device=dev, dtype=torch.float32)
        bias = torch.zeros(E, device=dev)
        y = torch.empty_like(x)

        def swiglu():
            a, b = h.chunk(2, dim=-1)
            return F.silu(a) * b

        H, P, R = (4, 32, 16) if quick else (128, 128, 64)   # V3's MLA heads and head dims
        q = torch.randn(T, H, P + R, device=dev, dtype=torch.bfloat16)
        q_pe = torch.randn(T, H, R, device=dev, dtype=torch.bfloat16)
        kv = torch.randn(T, H, 2 * P, device=dev, dtype=torch.bfloat16)
        kpe = torch.randn(T, R, device=dev, dtype=torch.bfloat16)

        def mla_qk_cat():
            # real/model.py MLA._attend_expanded: q and k built by cat of strided split views
            q_nope, k_nope = q[..., :P], kv[..., :P]
            return (torch.cat([q_nope, q_pe], dim=-1),
                    torch.cat([k_nope, kpe[:, None, :].expand(T, H, R)], dim=-1))

        # each input read once (q_nope, q_pe; k_nope, kpe), each output written once, 2 B each
        cat_bytes = 2 * (T * H * (P + R) + T * H * (P + R) + T * H * P + T * R + T * H * (P + R))
        ops = [
            ("copy", lambda: y.copy_(x), 2 * x.numel() * 2, D),
            ("mla_qk_cat", mla_qk_cat, cat_bytes, H * (P + R)),
            ("rmsnorm", lambda: F.rms_norm(x, (D,), w, 1e-6), 2 * x.numel() * 2, D),
            ("swiglu", swiglu, h.numel() * 2 + h.numel() // 2 * 2, F2),
            ("softmax", lambda: torch.softmax(logits, dim=-1), 2 * logits.numel() * 4, E),
            ("router_topk", lambda: route(torch.sigmoid(logits), bias, 8, 8, 4, 2.5),
             logits.numel() * 4 + T * 8 * 12, E),
            ("fp8_quant_1x128", lambda: fp8.quantize_1x128(x), x.numel() * 3 + x.numel() // 128 * 4, D),
            ("fp8_quant_rowwise", lambda: fp8.quantize_rowwise(x), x.numel() * 3 + T * 4, D),
        ]
        for name, fn, nbytes, width in ops:
            r = timer.measure(fn, bytes_=float(nbytes), batched=True)
            rec.row("memory", bench="memory", op=name, tokens=T, width=width, bytes_moved=nbytes, **r)
            if name == "copy":
                best = max(best, r["achieved_bytes_per_s"])
        del x, h, logits, y, q, q_pe, kv, kpe
        free_memory()
    log(f"memory: best copy {best / 1e9:.0f} GB/s (read + write)")


def bench_topk(rec, timer, dev, deadline, quick, env):
    """torch.topk as real/routing.py route() calls it (memory.csv, op `topk<k>`, `width` = the
    reduced dimension, `tokens` = rows): the group top-2 over 32 experts per group, the top-4 of 8
    groups and the top-8 of 256 experts, on float32 scores. A routing step is several of these
    kernels (radix select), which the bandwidth roofline of one streaming kernel does not describe."""
    tokens_list = [64, 256] if quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    for T in tokens_list:
        if deadline.over():
            break
        for rows, width, k in ((T * 8, 32, 2), (T, 8, 4), (T, 256, 8)):
            scores = torch.randn(rows, width, device=dev, dtype=torch.float32)
            nbytes = rows * width * 4 + rows * k * 12   # read the scores, write values and indices
            r = timer.measure(lambda: scores.topk(k, dim=-1), bytes_=float(nbytes), batched=True)
            rec.row("memory", bench="memory", op=f"topk{k}", tokens=rows, width=width, bytes_moved=nbytes, **r)
            del scores
    log("topk: done")


# s15gl2 (issues 13, 14): fitting-split shapes of the memory kernels whose held-out rows
# (bench memory: swiglu and fp8_quant_* at tokens 1,024 / 4,096 / 16,384 / 65,536) share their
# costing terms with the layers (gather_eff: strided elementwise and row gathers; quant_bytes_per_elem:
# real/fp8.py's eager quantization). Every row here has tokens 2,048 / 8,192 / 32,768, a count no
# memory row has, and bench `memory_alone`, which calibration/split.py puts in the fitting split.
ALONE_TOKENS = (2048, 8192, 32768)
ALONE_SWIGLU_WIDTHS = (4096, 2816)       # 2 x moe_intermediate_size: V3's 2,048, V2-Lite's 1,408
ALONE_QUANT_WIDTHS = (7168, 2048)        # hidden sizes: V3's 7,168, V2-Lite's 2,048
ALONE_GATHER_WIDTH = 7168
ALONE_TOP_K = 8                          # V3's routed experts per token: the layer gathers T x K rows


def memory_alone_ops(T: int, dev, quick: bool) -> list[tuple]:
    """(op, width, fn, bytes_moved) of the s15gl2 fitting rows at T tokens. bytes_moved counts each
    input read once and each output written once (2 B per BF16 element), as bench_memory does."""
    ops = []
    for F2 in ((256, 176) if quick else ALONE_SWIGLU_WIDTHS):
        h = torch.randn(T, F2, device=dev, dtype=torch.bfloat16)
        a, b = h.chunk(2, dim=-1)         # strided halves, as real/model.py's experts split w13's output
        half = T * F2 // 2
        ops += [("swiglu", F2, lambda a=a, b=b: F.silu(a) * b, h.numel() * 2 + half * 2),
                ("silu_strided", F2, lambda a=a: F.silu(a), half * 2 * 2),
                ("mul_strided", F2, lambda a=a, b=b: a * b, half * 2 * 3)]
    for D in ((256, 128) if quick else ALONE_QUANT_WIDTHS):
        x = torch.randn(T, D, device=dev, dtype=torch.bfloat16)
        ops += [("fp8_quant_1x128", D, lambda x=x: fp8.quantize_1x128(x), x.numel() * 3 + x.numel() // 128 * 4),
                ("fp8_quant_rowwise", D, lambda x=x: fp8.quantize_rowwise(x), x.numel() * 3 + T * 4)]
    D = 256 if quick else ALONE_GATHER_WIDTH
    N = T * ALONE_TOP_K // 4              # a quarter of the layer's slots: keeps 32,768 tokens in memory
    x = torch.randn(T, D, device=dev, dtype=torch.bfloat16)
    src = torch.randn(N, D, device=dev, dtype=torch.bfloat16)
    idx = torch.randint(0, T, (N,), device=dev)
    pos = torch.randperm(N + 64, device=dev)[:N]        # distinct rows of a padded buffer
    buf = torch.zeros(N + 64, D, device=dev, dtype=torch.bfloat16)
    acc = torch.zeros(T, D, device=dev, dtype=torch.bfloat16)
    zero_src = torch.zeros(N, D, device=dev, dtype=torch.bfloat16)   # accumulating zeros keeps acc finite
    row_bytes = 2 * N * D * 2             # N rows read and N rows written
    ops += [("index_gather", D, lambda: x[idx], row_bytes),                    # x_TD[order // K]
            ("index_copy", D, lambda: buf.index_copy_(0, pos, src), row_bytes),   # into the capacity buffer
            ("index_put_acc", D, lambda: acc.index_put_((idx,), zero_src, accumulate=True), row_bytes)]  # index backward
    return ops


def bench_memory_alone(rec, timer, dev, deadline, quick, env):
    """Section memory_alone (memory_alone.csv): the ops above timed alone as bench_memory times its
    rows (CUDA-graph loop, timer.measure batched), one row each with its clock and versions."""
    for T in ((32, 128) if quick else ALONE_TOKENS):
        if deadline.over():
            break
        for name, width, fn, nbytes in memory_alone_ops(T, dev, quick):
            if deadline.over():
                break
            r = timer.measure(fn, bytes_=float(nbytes), batched=True)
            rec.row("memory_alone", bench="memory_alone", op=name, tokens=T, width=width, bytes_moved=nbytes,
                    split="fit", **r)
        free_memory()
    log("memory_alone: done")
