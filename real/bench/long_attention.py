"""Section long_attn (one GPU, campaign s24long): SDPA's flash kernel (FlashAttention-2, the kernel of
every published long-context row) at the per-GPU call shapes of those rows that no record holds, and
one causal call past the longest one measured (docs/notes/s24long_rule.md).

The call is torchtitan's attention core (torchtitan/models/llama/model.py @ 9dec370): xq (B, q, H, E),
xk / xv (B, kv, K, E) BF16 leaves (B = 1 but for the 70B's local batch of 16), K/V repeated to the H
query heads (`repeat_kv`), transposed to (B, H, L, E), then `F.scaled_dot_product_attention`
restricted to the flash backend; the backward takes the gradients of all three. Masks: 'causal' (a square call, is_causal), 'none' (a non-causal call:
the later calls of PyTorch's load-balanced CP), 'lower_right' (q queries that are the last q of kv
positions, each seeing every earlier key: Llama 3's all-gather CP, arXiv 2407.21783 section 3.3.2;
torch.nn.attention.bias.causal_lower_right, which SDPA hands to the flash kernel as its causal mask).

Shapes (LONG_ATTN_CASES): Llama 3.1 8B (32 heads, 8 KV heads, head 128), 405B under TP 8 (128 / 8
= 16 heads, 8 / 8 = 1 KV head, head 128; meta-llama/Llama-3.1-405B config.json: 128 heads, 8 KV
heads, 16,384 hidden) and 70B under TP 8 (64 / 8 = 8 heads, 1 KV head; Llama-3.1-70B config.json:
64 heads, 8 KV heads). Each row: forward, and forward + backward (phase fwd, fwd_bwd), CUDA events,
the SM clock read after it. The split (fit / holdout) is the rule note's, fixed before any record.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from real.bench.device import free_memory
from real.bench.nccl import log, stats
from real.bench.parallel_blocks import time_reps
from real.bench.torch_cp import sdpa_context, sdpa_kernel_name, repeat_kv
from twin.costs.flops import attention_pairs

MASKS = ("causal", "none", "lower_right")
# (tag, heads, kv heads, head dim, q_len, kv_len, mask, the published rows the call stands for, split, batch);
# cheapest first, so a cut run keeps the rows the rule needs most; the 128K square last
LONG_ATTN_CASES = (
    ("8b", 32, 8, 128, 32768, 32768, "causal", "tt-8b-cp1..cp8 diagonal call (ties this GPU to h100/cp_chunks.csv)", "fit", 1),
    ("405b-tp8", 16, 1, 128, 8192, 8192, "causal", "tt-405b-3d-*, l3-405b-8k-* (8K causal, TP 8)", "fit", 1),
    ("405b-tp8", 16, 1, 128, 32768, 32768, "causal", "tt-405b-4d-cp1..cp8 diagonal call (32K a rank, TP 8)", "fit", 1),
    ("70b-tp8", 8, 1, 128, 8192, 8192, "causal", "a batch-1 8-head call (70B under TP 8)", "holdout", 1),
    ("70b-tp8", 8, 1, 128, 8192, 8192, "causal", "tt-70b-fsdp32-tp8* (local batch 16: one call of 16 sequences)", "holdout", 16),
    ("405b-tp8", 16, 1, 128, 32768, 16384, "none", "tt-405b-4d-cp2..cp8 later calls (all queries, half the keys)", "holdout", 1),
    ("405b-tp8", 16, 1, 128, 16384, 32768, "none", "tt-405b-4d-cp2..cp8 later calls (half the queries, all keys)", "holdout", 1),
    ("405b-tp8", 16, 1, 128, 4096, 65536, "lower_right", "l3-405b-128k-cp16 rank 15 first chunk (4K over 64K)", "fit", 1),
    ("405b-tp8", 16, 1, 128, 4096, 65536, "none", "l3-405b-128k-cp16: the same call without its mask", "fit", 1),
    ("405b-tp8", 16, 1, 128, 4096, 69632, "lower_right", "l3-405b-128k-cp16 rank 15 second chunk (4K over 68K)", "holdout", 1),
    ("405b-tp8", 16, 1, 128, 65536, 65536, "causal", "a 16-head square past every row's call", "holdout", 1),
    ("8b", 32, 8, 128, 131072, 131072, "causal", "a 32-head square past the longest measured (64K)", "holdout", 1),
)
QUICK_CASES = (
    ("tiny", 4, 2, 16, 64, 64, "causal", "dry run", "fit", 1),
    ("tiny", 4, 1, 16, 64, 32, "none", "dry run", "holdout", 1),
    ("tiny", 4, 1, 16, 16, 96, "lower_right", "dry run", "holdout", 1),
)


def call_pairs(q_len: int, kv_len: int, mask: str) -> float:
    """(query, key) pairs the call scores: a causal square or a lower-right causal call by the twin's
    count (twin.costs.flops.attention_pairs), a non-causal call its rectangle."""
    if mask not in MASKS:
        raise ValueError(f"mask {mask!r}: one of {MASKS}")
    if mask == "causal" and q_len != kv_len:
        raise ValueError(f"mask 'causal' is a square call: q_len {q_len} != kv_len {kv_len} (use 'lower_right')")
    return attention_pairs(q_len, mask != "none", kv_len)


def attention_fns(H: int, K: int, E: int, q_len: int, kv_len: int, mask: str, dev, seed: int = 0, batch: int = 1):
    """(fwd, bwd) of torchtitan's attention core at this shape (module docstring); bwd(out) runs the
    backward into xq, xk, xv."""
    call_pairs(q_len, kv_len, mask)   # checks the mask and shape
    g = torch.Generator(device=dev).manual_seed(seed)
    xq = torch.randn(batch, q_len, H, E, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
    xk, xv = (torch.randn(batch, kv_len, K, E, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
              for _ in range(2))
    gy = torch.randn(batch, H, q_len, E, generator=g, device=dev, dtype=torch.bfloat16)
    from torch.nn.attention.bias import causal_lower_right   # lazy: the module imports torch._dynamo (~1.1 s of CPU), which real.bench.cli must not
    bias = causal_lower_right(q_len, kv_len) if mask == "lower_right" else None

    def fwd():
        with sdpa_context("flash", dev):
            keys, values = repeat_kv(xk, H // K).transpose(1, 2), repeat_kv(xv, H // K).transpose(1, 2)
            return F.scaled_dot_product_attention(xq.transpose(1, 2), keys, values, attn_mask=bias,
                                                  is_causal=mask == "causal")

    def bwd(out):
        torch.autograd.grad(out, [xq, xk, xv], gy)

    return fwd, bwd


def time_case(H: int, K: int, E: int, q_len: int, kv_len: int, mask: str, dev, batch: int, reps: int, warmup: int):
    """One case timed: (SDPA kernel name, forward event seconds, forward host seconds, forward + backward event
    seconds, forward + backward host seconds), each a list over `reps` after `warmup`. Its tensors go on return."""
    fwd, bwd = attention_fns(H, K, E, q_len, kv_len, mask, dev, batch=batch)
    kernel = sdpa_kernel_name(fwd, dev)
    tf, _, hf = time_reps(fwd, dev, reps, warmup, None, None)
    ts, _, hs = time_reps(lambda: bwd(fwd()), dev, reps, warmup, None, None)
    return kernel, tf, hf, ts, hs


def bench_long_attn(rec, timer, dev, deadline, quick, env):
    """Section long_attn (one GPU): every case of LONG_ATTN_CASES (QUICK_CASES with --quick), forward
    and forward + backward; a case the backend refuses or that does not fit is logged and skipped."""
    cases = QUICK_CASES if quick else LONG_ATTN_CASES
    for tag, H, K, E, q_len, kv_len, mask, row_for, split, batch in cases:
        if deadline.over():
            log("long_attn: deadline reached")
            return
        big = q_len * kv_len >= 2 ** 32   # the 64K+ squares: fewer repetitions
        reps, warmup = (2, 1) if quick else ((2, 1) if big else (5, 2))
        try:
            kernel, tf, hf, ts, hs = time_case(H, K, E, q_len, kv_len, mask, dev, batch, reps, warmup)
        except (RuntimeError, torch.OutOfMemoryError) as e:   # the backend refused the shape, or it did not fit
            log(f"long_attn {tag} {q_len}x{kv_len} {mask}: {type(e).__name__}: {str(e)[:200]}")
            free_memory()
            continue
        fwd_flops = 2.0 * batch * H * call_pairs(q_len, kv_len, mask) * (E + E)
        common = dict(bench="long_attn", model=tag, sdpa_backend="flash", kernel=kernel, batch=batch, num_heads=H,
                      num_kv_heads=K, head_dim=E, q_len=q_len, kv_len=kv_len, mask=mask, kv_repeat=K < H, row_for=row_for,
                      precision="bf16", split=split)
        for phase, times, hosts, flops in (("fwd", tf, hf, fwd_flops), ("fwd_bwd", ts, hs, 3.5 * fwd_flops)):
            st = stats(times)
            rec.row("long_attn", **common, phase=phase, host_time_s=statistics.median(hosts), **st,
                    timing="per_rep_events" if dev.type == "cuda" else "host_clock", flops=flops, bytes=float("nan"),
                    achieved_flops_per_s=flops / st["time_s"] if st["time_s"] > 0 else float("nan"),
                    achieved_bytes_per_s=float("nan"), sm_clock_mhz=timer.tel.sm_clock_mhz(),
                    mem_clock_mhz=timer.tel.mem_clock_mhz())
        log(f"long_attn {tag} H={H} {q_len}x{kv_len} {mask}: fwd {statistics.median(tf) * 1e3:.2f} ms, "
            f"fwd+bwd {statistics.median(ts) * 1e3:.2f} ms ({kernel}, {split})")
        free_memory()
