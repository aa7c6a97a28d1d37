"""Section fp8_stack (fp8_stack.csv). DeepSeek's FP8 stack: weight-gradient GEMMs with 1x128
scales on both operands, and the separate single-pass cast kernels the V3 report describes
(§3.3.3, §3.5.2)."""

from __future__ import annotations

import torch

from real import fp8
from real.bench.device import free_memory
from real.bench.gemm import V3_PROJECTIONS_NK, fp8_gemm_callable
from real.bench.records import log
from twin.costs.flops import CAST_BYTES_PER_ELEM, gemm_bytes, gemm_flops

WGRAD_TOKENS = [1024, 2048, 4096, 8192, 16384]
CAST_SHAPES_MK = [(4096, 7168), (32768, 7168), (32768, 2048)]


def _cast_fns(quick: bool):
    """(op name, cast kind of CAST_BYTES_PER_ELEM, fn) of the three cast kernels of the stack, each
    compiled by torch.compile into fused kernels on a GPU (eager on a CPU dry run):
    cast_1x128: BF16 -> FP8 with 1x128 scales along the row (the forward and dgrad operand cast);
    cast_transpose: BF16 -> the transposed FP8 tensor with 128x1 scales (the wgrad operand of an
    output gradient); requant_transpose: a cached 1x128 FP8 activation read back, dequantized,
    transposed and re-quantized to 128x1 (V3 §3.5.2, "Support for Transposed GEMM Operations")."""
    def cast_transpose(x):
        return fp8.quantize_1x128(x.t())

    def requant_transpose(q, s):
        M, K = q.shape
        x = (q.float().view(M, K // fp8.BLOCK, fp8.BLOCK) * s.unsqueeze(-1)).view(M, K)
        return fp8.quantize_1x128(x.t())

    fns = [("cast_1x128", "cast", fp8.quantize_1x128), ("cast_transpose", "cast_transpose", cast_transpose),
           ("requant_transpose", "requant_transpose", requant_transpose)]
    return fns if quick else [(name, kind, torch.compile(fn, dynamic=False)) for name, kind, fn in fns]


def bench_fp8_stack(rec, timer, dev, deadline, quick, env):
    """fp8_stack.csv. (1) Weight-gradient GEMMs of the V3 projections in their real form,
    dW (n_out x k_in) = dY^T X contracted over T tokens, by kernel: `fp8-1d1d` (1x128 scales along
    T on both operands, V3's wgrad recipe; `-f32` with an FP32 output as V3's FP32 gradients take
    it), `fp8-blockwise` (1x128 x 128x128, the forward recipe at the same shape), `fp8-rowwise`,
    `bf16`. m = n_out, n = k_in, k = T. (2) The cast kernels (bench `cast`), bytes_moved at the
    twin's bytes per element of their kind (twin.costs.flops.CAST_BYTES_PER_ELEM)."""
    variant = fp8.wgrad_1d1d_variant(dev)
    env["fp8_wgrad_1d1d_variant"] = variant
    log(f"fp8_stack: 1x128 x 1x128 kernel variant {variant}")
    shapes = [(256, 384), (384, 256)] if quick else V3_PROJECTIONS_NK
    tokens = [256, 512] if quick else WGRAD_TOKENS
    for n_out, k_in in shapes:
        for T in tokens:
            if deadline.over():
                break
            dyt = torch.randn(n_out, T, device=dev, dtype=torch.bfloat16)
            xt = torch.randn(k_in, T, device=dev, dtype=torch.bfloat16)
            kinds = [("bf16", torch.bfloat16), ("fp8-rowwise", torch.bfloat16)]
            if env["fp8_blockwise_kernel"] and fp8.blockwise_shape_ok(T, k_in):
                kinds.append(("fp8-blockwise", torch.bfloat16))
            if variant is not None:
                kinds += [("fp8-1d1d", torch.bfloat16), ("fp8-1d1d-f32", torch.float32)]
            for kind, out_dtype in kinds:
                if kind == "bf16":
                    fn = lambda: dyt @ xt.t()
                elif kind.startswith("fp8-1d1d"):
                    aq, sa = fp8.quantize_1x128(dyt)
                    bq, sb = fp8.quantize_1x128(xt)
                    fn = (lambda aq=aq, sa=sa, bq=bq, sb=sb, o=out_dtype:
                          fp8._wgrad_1d1d_call(aq, sa, bq, sb, o, variant))
                else:
                    fn = fp8_gemm_callable(dyt, xt, kind)
                try:
                    r = timer.measure(fn, flops=gemm_flops(n_out, k_in, T),
                                      bytes_=gemm_bytes(n_out, k_in, T, 2 if kind == "bf16" else 1), batched=True)
                except RuntimeError as e:  # e.g. an FP32 output the kernel refuses: the log says so
                    log(f"fp8_stack: {kind} {n_out}x{k_in}x{T} failed: {e}")
                    continue
                rec.row("fp8_stack", bench="gemm_wgrad", op="dW=dY^T X", m=n_out, n=k_in, k=T, precision=kind,
                        out_dtype=str(out_dtype).removeprefix("torch."), bytes_moved=r["bytes"], **r)
            del dyt, xt
            free_memory()
    log("fp8_stack: wgrad GEMMs done")
    cast_shapes = [(256, 384)] if quick else CAST_SHAPES_MK
    for name, kind, fn in _cast_fns(quick):
        for M, K in cast_shapes:
            if deadline.over():
                break
            x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
            args = (x,) if kind != "requant_transpose" else fp8.quantize_1x128(x)
            nbytes = M * K * CAST_BYTES_PER_ELEM[kind]
            try:
                fn(*args)  # compile outside the timed region
                r = timer.measure(lambda: fn(*args), bytes_=float(nbytes), batched=True)
            except Exception as e:  # a compiler failure must not end the campaign
                log(f"fp8_stack: {name} {M}x{K} failed: {type(e).__name__}: {e}")
                continue
            rec.row("fp8_stack", bench="cast", op=name, m=M, n=0, k=K, precision="fp8", out_dtype="float8_e4m3fn",
                    bytes_moved=nbytes, **r)
            log(f"fp8_stack: {name} {M}x{K}: {r['achieved_bytes_per_s'] / 1e9:.0f} GB/s")
            del x, args
            free_memory()
