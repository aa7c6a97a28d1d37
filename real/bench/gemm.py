"""Sections gemm, grouped, grouped_wgrad and grouped_small (gemm.csv): dense GEMMs at the V3
projection shapes and squares, by precision, and grouped (expert) GEMMs in their forward and
weight-gradient forms over (groups, rows per group)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from real import fp8
from real.bench.device import free_memory
from real.bench.records import log
from real.fp8 import Precision
from twin.costs.flops import gemm_bytes, gemm_flops

V3_PROJECTIONS_NK = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168),
                     (7168, 2048)]


def fp8_gemm_callable(a_MK, w_NK, kind: str):
    """Pre-quantized operands and the kernel call, so only the GEMM is timed."""
    if kind == "fp8-tensor":
        aq, bq = a_MK.to(fp8.FP8_DTYPE), w_NK.to(fp8.FP8_DTYPE)
        one = torch.ones((), device=a_MK.device)
        return lambda: torch._scaled_mm(aq, bq.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    if kind == "fp8-rowwise":
        aq, sa = fp8.quantize_rowwise(a_MK)
        bq, sb = fp8.quantize_rowwise(w_NK)
        return lambda: torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb.t(), out_dtype=torch.bfloat16)
    aq, sa = fp8.quantize_1x128(a_MK)  # fp8-blockwise
    bq, sb = fp8.quantize_128x128(w_NK)
    variant = fp8._BLOCKWISE_VARIANT[a_MK.device.type]
    return lambda: fp8._blockwise_call(aq, sa, bq, sb, torch.bfloat16, variant)


def bench_gemm(rec, timer, dev, deadline, quick, env):
    # quick: a CPU dry run's shapes; fp8-tensor's CPU path (torch._scaled_mm with 0-d scales) is ~200x
    # slower than the row-wise one and grows with the rows (m 2048 took 13-34 s a shape there; at m 128
    # and 256 still ~20 s of CPU a dry run, the quick campaign test's most, and under a loaded machine its
    # time share ran out before the memory section: clean-clone CI failures, s26 and s27ci); m 16 and 32
    # and a 128 square: ~3 s
    ms = [16, 32] if quick else [128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144,
                                 8192, 12288, 16384]
    shapes = [(128, 448), (1536, 96), (448, 128)] if quick else V3_PROJECTIONS_NK
    squares = [128] if quick else [512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384]
    kinds = ["bf16", "fp8-rowwise", "fp8-tensor"]
    if env["fp8_blockwise_kernel"]:
        kinds.append("fp8-blockwise")
    cases = [(m, n, k, "v3_proj") for n, k in shapes for m in ms] + [(s, s, s, "square") for s in squares]
    best = {}
    for m, n, k, tag in cases:
        if deadline.over():
            log("gemm: time share spent, skipping the rest")
            break
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        for kind in kinds:
            if kind == "fp8-blockwise" and not fp8.blockwise_shape_ok(k, n):
                continue
            fn = (lambda: F.linear(a, w)) if kind == "bf16" else fp8_gemm_callable(a, w, kind)
            in_bytes = 2 if kind == "bf16" else 1
            r = timer.measure(fn, flops=gemm_flops(m, n, k), bytes_=gemm_bytes(m, n, k, in_bytes), batched=True)
            rec.row("gemm", bench="gemm", m=m, n=n, k=k, groups=1, tokens_per_group=m,
                    precision=kind, shape_tag=tag, **r)
            best[kind] = max(best.get(kind, 0), r["achieved_flops_per_s"])
        del a, w
    for kind, v in best.items():
        log(f"gemm best {kind}: {v / 1e12:.0f} TFLOP/s" + ("  (target BF16 >= 650)" if kind == "bf16" else ""))
    free_memory()


GROUPED_SHAPES_NK = [(4096, 7168), (7168, 2048), (2816, 2048), (2048, 1408)]
GROUPED_GROUPS = [4, 8, 16, 32, 64]
GROUPED_TPGS = [128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192]
# below one 128-row tile per expert and 128 experts: MoE layers at 512-2048 tokens and serving run
# there (added 2026-11-24, section grouped_small)
GROUPED_SMALL_TPGS = [16, 32, 64]
GROUPED_SMALL_GROUPS = [128]
GROUPED_MAX_ROWS = 262144


def _small_grid(quick: bool):
    """(groups, rows per group, keep) of section grouped_small: the combinations outside the main
    grid, with fewer than 128 rows per group or 128 groups."""
    if quick:
        return [16], [8, 16], lambda e, tpg: True
    return (GROUPED_GROUPS + GROUPED_SMALL_GROUPS, GROUPED_SMALL_TPGS + GROUPED_TPGS,
            lambda e, tpg: tpg in GROUPED_SMALL_TPGS or e in GROUPED_SMALL_GROUPS)


def bench_grouped_small(rec, timer, dev, deadline, quick, env):
    groups, tpgs, keep = _small_grid(quick)
    bench_grouped(rec, timer, dev, deadline, quick, env, groups, tpgs, keep)
    bench_grouped_wgrad(rec, timer, dev, deadline, quick, env, groups, tpgs, keep)


def bench_grouped(rec, timer, dev, deadline, quick, env, groups=None, tpgs=None, keep=None, shapes=None,
                  kinds=("bf16", "fp8-rowwise")):
    """Grouped (expert) GEMMs, forward form, BF16 and row-wise FP8, over (groups, rows per group)."""
    groups = groups or ([4, 8] if quick else GROUPED_GROUPS)
    tpgs = tpgs or ([32, 64] if quick else GROUPED_TPGS)
    shapes = shapes or ([(256, 448), (448, 128)] if quick else GROUPED_SHAPES_NK)
    max_rows = 4096 if quick else GROUPED_MAX_ROWS
    keep = keep or (lambda e, tpg: True)
    best = {}
    for n, k in shapes:
        for e in groups:
            w_EKN = torch.randn(e, n, k, device=dev, dtype=torch.bfloat16).transpose(-2, -1)
            w_EKN_q = None
            for tpg in tpgs:
                if e * tpg > max_rows or not keep(e, tpg):
                    continue
                if deadline.over():
                    break
                x = torch.randn(e * tpg, k, device=dev, dtype=torch.bfloat16)
                offs = torch.arange(1, e + 1, device=dev, dtype=torch.int32) * tpg
                for kind in kinds:
                    if kind == "bf16":
                        fn = lambda: torch._grouped_mm(x, w_EKN, offs=offs)
                    elif dev.type == "cuda":
                        xq, sx = fp8.quantize_rowwise(x)
                        if w_EKN_q is None:
                            wq, sw = fp8.quantize_rowwise(w_EKN.transpose(-2, -1).reshape(e * n, k))
                            w_EKN_q = (wq.view(e, n, k).transpose(-2, -1), sw.view(e, n))
                        fn = lambda: torch._scaled_grouped_mm(xq, w_EKN_q[0], sx.squeeze(-1), w_EKN_q[1],
                                                              offs=offs, out_dtype=torch.bfloat16)
                    else:  # CPU dry run: the emulated path of the seam
                        fn = lambda: fp8.grouped_mm(x, w_EKN, offs, Precision("fp8", "emulated"))
                    fl = e * gemm_flops(tpg, n, k)
                    by = e * gemm_bytes(tpg, n, k, 2 if kind == "bf16" else 1)
                    r = timer.measure(fn, flops=fl, bytes_=by, batched=True)
                    rec.row("gemm", bench="grouped_gemm", m=e * tpg, n=n, k=k, groups=e,
                            tokens_per_group=tpg, precision=kind, shape_tag="expert", **r)
                    key = (kind, n, k)
                    best[key] = max(best.get(key, 0), r["achieved_flops_per_s"])
                del x
            del w_EKN, w_EKN_q
            free_memory()
    for (kind, n, k), v in sorted(best.items()):
        tgt = "  (target FP8 >= 1000 on H100)" if kind.startswith("fp8") and (n, k) in V3_PROJECTIONS_NK else ""
        log(f"grouped best {kind} N={n} K={k}: {v / 1e12:.0f} TFLOP/s{tgt}")


def bench_grouped_wgrad(rec, timer, dev, deadline, quick, env, groups=None, tpgs=None, keep=None, shapes=None):
    """Grouped GEMMs in the weight-gradient form real/ runs in the MoE backward (real/fp8.py
    _Fp8GroupedMM: dW_EKN = x_TK^T g_TN per expert, contracted over the expert's rows): BF16
    torch._grouped_mm on a transposed left operand, the same (n, k), group and rows-per-group grid as
    bench_grouped. Rows: bench `grouped_gemm_wgrad`, output n x k per group (n = g's width, k = x's)."""
    groups = groups or ([4, 8] if quick else GROUPED_GROUPS)
    tpgs = tpgs or ([32, 64] if quick else GROUPED_TPGS)
    shapes = shapes or ([(256, 448), (448, 128)] if quick else GROUPED_SHAPES_NK)
    max_rows = 4096 if quick else GROUPED_MAX_ROWS
    keep = keep or (lambda e, tpg: True)
    for n, k in shapes:
        for e in groups:
            for tpg in tpgs:
                if e * tpg > max_rows or deadline.over() or not keep(e, tpg):
                    continue
                x = torch.randn(e * tpg, k, device=dev, dtype=torch.bfloat16)
                g = torch.randn(e * tpg, n, device=dev, dtype=torch.bfloat16)
                offs = torch.arange(1, e + 1, device=dev, dtype=torch.int32) * tpg
                if dev.type == "cuda":
                    fn = lambda: torch._grouped_mm(x.t(), g, offs=offs)
                else:  # CPU dry run: per-group matmuls
                    fn = lambda: [x[i * tpg:(i + 1) * tpg].t() @ g[i * tpg:(i + 1) * tpg] for i in range(e)]
                r = timer.measure(fn, flops=e * gemm_flops(tpg, n, k), bytes_=e * gemm_bytes(tpg, n, k, 2), batched=True)
                rec.row("gemm", bench="grouped_gemm_wgrad", m=e * tpg, n=n, k=k, groups=e, tokens_per_group=tpg,
                        precision="bf16", shape_tag="expert_wgrad", **r)
                del x, g
        log(f"grouped wgrad N={n} K={k}: done")
    free_memory()


# The expert GEMMs of a TP2 MoE block on one rank (real/tp.py TPMoEBlock: every expert's width F
# halved), at the blocks' experts and rows per expert under balanced routing (T x top_k / E for
# T = 2048, 4096, 8192): v3-slice-1l (D 7168, F 2048, 32 experts, top-8) and v2-lite-slice (D 2048,
# F 1408, 64 experts, top-6). Forward form: W13 (n 2F/2, k D), W2 (n D, k F/2) and the backward's
# input gradient of W2 (n F/2, k D); weight-gradient form: W13's and W2's. The full-width (TP1)
# counterparts are in the grouped grid (GROUPED_SHAPES_NK).
TP2_GROUPED = {32: ((2048, 7168), (7168, 1024), (1024, 7168)), 64: ((1408, 2048), (2048, 704), (704, 2048))}
TP2_GROUPED_WGRAD = {32: ((2048, 7168), (7168, 1024)), 64: ((1408, 2048), (2048, 704))}
TP2_GROUPED_TPGS = {32: (512, 1024, 2048), 64: (192, 384, 768)}


def bench_tp_grouped(rec, timer, dev, deadline, quick, env):
    """Section tp_grouped (gemm.csv rows, shape_tag expert / expert_wgrad): the TP2 MoE blocks'
    half-width expert GEMMs, BF16 (TP2_GROUPED)."""
    for e, shapes in TP2_GROUPED.items():
        g, t = ([4], [32]) if quick else ([e], list(TP2_GROUPED_TPGS[e]))
        bench_grouped(rec, timer, dev, deadline, quick, env, groups=g, tpgs=t,
                      shapes=[(256, 448)] if quick else list(shapes), kinds=("bf16",))
        bench_grouped_wgrad(rec, timer, dev, deadline, quick, env, groups=g, tpgs=t,
                            shapes=[(256, 448)] if quick else list(TP2_GROUPED_WGRAD[e]))


# torchtitan's Llama 3.1 linears on a TP8 rank (s9tt): (model, linear, n, d) with n the rank's output
# width, d the model width; wq/wk/wv and w1/w3 separate as torchtitan issues them, qkv and gate_up the
# fused GEMMs the twin otherwise costs
TT_LINEARS = [("llama3.1-70b", "wq", 1024, 8192), ("llama3.1-70b", "wk", 128, 8192), ("llama3.1-70b", "w1", 3584, 8192),
              ("llama3.1-70b", "qkv", 1280, 8192), ("llama3.1-70b", "w13", 7168, 8192),
              ("llama3.1-405b", "wq", 2048, 16384), ("llama3.1-405b", "wk", 128, 16384),
              ("llama3.1-405b", "w1", 6656, 16384), ("llama3.1-405b", "qkv", 2304, 16384),
              ("llama3.1-405b", "w13", 13312, 16384)]
TT_TOKENS = 32768   # one 405B micro-batch (4 x 8,192); a quarter of 70B's 16 x 8,192


def tt_linear_problems(tokens: int, n: int, d: int) -> list[tuple[str, int, int, int]]:
    """(phase, m, n, k) of a linear's three GEMMs as twin.costs.compute.op_time_s poses them: the
    forward x W^T (tokens x n over d), the input gradient dy W (tokens x d over n), the weight
    gradient (d x n over the tokens)."""
    return [("fwd", tokens, n, d), ("bwd_input", tokens, d, n), ("bwd_weight", d, n, tokens)]


def bench_tt_linears(rec, timer, dev, deadline, quick, env):
    """Section tt_linears (gemm.csv, shape_tag tt_linear/<model>/<linear>/<phase>): the GEMMs of
    torchtitan's separate and fused Llama linears on a TP8 rank, BF16 and tensorwise FP8 (torchao's
    torch._scaled_mm), to check the twin's curves on the narrow K/V GEMMs and their K = 128 input
    gradients (plan.unfused_linears)."""
    linears = [("tiny", "wk", 16, 128), ("tiny", "wq", 128, 128)] if quick else TT_LINEARS
    tokens = 256 if quick else TT_TOKENS
    for model, name, n_out, d in linears:
        for phase, m, n, k in tt_linear_problems(tokens, n_out, d):
            if deadline.over():
                log("tt_linears: time share spent, skipping the rest")
                free_memory()
                return
            a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
            for kind in ("bf16", "fp8-tensor"):
                fn = (lambda: F.linear(a, w)) if kind == "bf16" else fp8_gemm_callable(a, w, kind)
                r = timer.measure(fn, flops=gemm_flops(m, n, k), bytes_=gemm_bytes(m, n, k, 2 if kind == "bf16" else 1),
                                  batched=True)
                rec.row("gemm", bench="tt_linear", m=m, n=n, k=k, groups=1, tokens_per_group=m, precision=kind,
                        shape_tag=f"tt_linear/{model}/{name}/{phase}", **r)
            del a, w
    free_memory()
