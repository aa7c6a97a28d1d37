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
