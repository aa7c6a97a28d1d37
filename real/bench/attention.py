"""Section attention (attention.csv): the attention core (scaled_dot_product_attention, forward
and backward) and the whole MLA layer (projections + core) at catalog shapes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from real.bench.device import free_memory, nccl_version, precisions_to_bench
from real.bench.records import log
from real.configs import get_spec
from real.model import MLA, building, rope_tables
from twin.costs.flops import attention_bwd_flops, attention_flops, attention_ops


def first_attention_grid(quick: bool) -> list[tuple[int, int, int]]:
    """(heads, batch, seq) of attention.csv's first grid: 16,384 tokens a call at 16 and 32 heads,
    8,192 at 64 and 128, seq 512-16,384."""
    heads_list = [2, 4] if quick else [16, 32, 64, 128]
    seqs = [128, 256] if quick else [512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384]
    grid = []
    for H in heads_list:
        for S in seqs:
            tokens = 512 if quick else (16384 if H <= 32 else 8192)
            grid.append((H, max(1, tokens // S), S))
    return grid


def time_grid(rec, timer, dev, deadline, grid, quick) -> dict:
    """time_sdpa over a grid of (heads, batch, seq) until the deadline -> best FLOP/s per pass."""
    qk, vd = (48, 32) if quick else (192, 128)
    best = {}
    for H, B, S in grid:
        if deadline.over():
            log("attention grid: deadline reached")
            break
        rates = time_sdpa(rec, timer, dev, B, H, S, qk, vd)
        for kk, v in rates.items():
            best[kk] = max(best.get(kk, 0), v)
    return best


def bench_attention(rec, timer, dev, deadline, quick, env):
    best = time_grid(rec, timer, dev, deadline, first_attention_grid(quick), quick)
    for kk, v in best.items():
        log(f"attention best {kk}: {v / 1e12:.0f} TFLOP/s")
    bench_mla_layers(rec, timer, dev, deadline, quick, env)


def bench_attn_first(rec, timer, dev, deadline, quick, env):
    """Section attn_first (s12mla): attention.csv's first grid of attention cores again (no MLA
    layers), so that a run of attn_small beside it gives both grids from one board: the records of
    two boards differ by ~4% (median over shared shapes, H100 and H200, s12mla), more than a
    pooled fit can absorb."""
    time_grid(rec, timer, dev, deadline, first_attention_grid(quick), quick)


def time_sdpa(rec, timer, dev, B: int, H: int, S: int, qk: int, vd: int, layout: str = "bhsd") -> dict:
    """One causal BF16 scaled_dot_product_attention call of batch B, H heads, S tokens: the forward
    (CUDA graph of back-to-back calls) and the backward (CUDA events per call, its forward untimed),
    an attn_fwd and an attn_bwd row; {"fwd"/"bwd": achieved FLOP/s}. layout "bhsd": contiguous
    (B, H, S, D) operands, family `attention` (attention.csv); "bshd_mla": the strides real/'s MLA
    hands SDPA (real/model.py MLA._attend_expanded: q and k (B, S, H, D) transposed, v a slice of
    the (B, S, H, P + O) up-projection), family `attention_layout`."""
    q, k, v = sdpa_operands(B, H, S, qk, vd, dev, layout)
    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    fl = attention_flops(B, S, H, qk, vd, True)
    by = (q.numel() + k.numel() + 2 * v.numel()) * 2.0  # read q, k, v; write o (BF16)
    r = timer.measure(sdpa, flops=fl, bytes_=by, batched=True)
    common = dict(model="", batch=B, seq_len=S, num_heads=H, qk_head_dim=qk, v_head_dim=vd,
                  causal=True, precision="bf16")
    family = "attention"
    if layout != "bhsd":
        family, common = "attention_layout", {**common, "layout": layout}
    rec.row(family, bench="attn_fwd", **common, **r)
    rates = {"fwd": r["achieved_flops_per_s"]}
    g = torch.randn_like(sdpa().detach())   # the output's own strides (contiguous for bhsd)

    def setup():
        return sdpa()

    def bwd(o):
        torch.autograd.grad(o, (q, k, v), g)

    r = timer.measure(bwd, setup=setup, flops=attention_bwd_flops(B, S, H, qk, vd, True),
                      bytes_=2 * by)
    rec.row(family, bench="attn_bwd", **common, **r)
    rates["bwd"] = r["achieved_flops_per_s"]
    del q, k, v, g
    free_memory()
    return rates


def sdpa_operands(B: int, H: int, S: int, qk: int, vd: int, dev, layout: str = "bhsd"):
    """(q, k, v) leaves that require grad, (B, H, S, D) shaped, in the memory layout named."""
    def leaf(t):
        return t.detach().requires_grad_()

    bf16 = dict(device=dev, dtype=torch.bfloat16)
    if layout == "bhsd":
        return (leaf(torch.randn(B, H, S, qk, **bf16)), leaf(torch.randn(B, H, S, qk, **bf16)),
                leaf(torch.randn(B, H, S, vd, **bf16)))
    if layout == "bshd_mla":
        nope = qk - qk // 3   # MLA's no-position part of a key (128 of 192); its values follow it
        kv = torch.randn(B, S, H, nope + vd, **bf16)
        return (leaf(torch.randn(B, S, H, qk, **bf16).transpose(1, 2)),
                leaf(torch.randn(B, S, H, qk, **bf16).transpose(1, 2)),
                leaf(kv[..., nope:].transpose(1, 2)))
    raise ValueError(f"layout {layout!r}: expected bhsd or bshd_mla")


# Section attn_small (s12mla, issue 13): attention calls as small as the MLA layer records make
# (V2-Lite: 16 heads at batch 1 x 4,096 and 4 x 1,024 tokens, batch x heads 16 and 64), where
# attention.csv's grid (16,384 or 8,192 tokens a call) has none: every (heads, batch, seq) with
# batch x seq <= SMALL_MAX_TOKENS and batch x heads x seq >= SMALL_MIN_HEAD_ROWS (smaller calls are
# host-bound in the backward's per-call timing and below every MLA record's call). Heads in
# priority order (V2-Lite's, V3's, then the others), so a run cut by its deadline keeps those.
# The fit/holdout split is calibration/split.py's, from the shape columns (seq 4,096 or 32 heads:
# held out).
SMALL_HEADS = (16, 128, 64, 32)
SMALL_BATCHES = (1, 2, 4, 8)
SMALL_SEQS = (512, 1024, 2048, 3072, 4096, 6144, 8192)
SMALL_MAX_TOKENS = 16384
SMALL_MIN_HEAD_ROWS = 32768
# the MLA records' own calls (heads, batch, seq), also timed in the MLA's layout (attention_layout.csv)
MLA_CALLS = ((16, 1, 4096), (16, 4, 1024), (16, 4, 4096), (128, 1, 4096), (128, 4, 1024))


def small_attention_grid(quick: bool) -> list[tuple[int, int, int]]:
    """(heads, batch, seq) of section attn_small in run order."""
    if quick:
        return [(2, 1, 128), (2, 2, 64), (4, 1, 128)]
    grid = []
    for H in SMALL_HEADS:
        shapes = [(H, B, S) for B in SMALL_BATCHES for S in SMALL_SEQS
                  if B * S <= SMALL_MAX_TOKENS and B * H * S >= SMALL_MIN_HEAD_ROWS]
        grid += sorted(shapes, key=lambda h_b_s: (h_b_s[1] * h_b_s[2], h_b_s[1]))
    return grid


def bench_attn_small(rec, timer, dev, deadline, quick, env):
    """Section attn_small: the MLA records' calls in the MLA's own operand layout (attention_layout.csv),
    then the small-call grid (small_attention_grid) on attention.csv's path (time_sdpa, bhsd)."""
    qk, vd = (48, 32) if quick else (192, 128)
    env.setdefault("nccl_version", nccl_version())   # env.json only: attention.csv keeps its columns
    mla_calls = [(2, 1, 128)] if quick else list(MLA_CALLS)
    for H, B, S in mla_calls:
        if deadline.over():
            return
        time_sdpa(rec, timer, dev, B, H, S, qk, vd, layout="bshd_mla")
    time_grid(rec, timer, dev, deadline, small_attention_grid(quick), quick)


def bench_mla_layers(rec, timer, dev, deadline, quick, env):
    """Whole MLA layers (projections + core), forward and backward (attention.csv mla_layer_*
    rows): the attention section's last part, also run alone by real/bench/host_bound.py."""
    for name in (["tiny"] if quick else ["v3-slice-1l", "v2-lite-slice"]):
        spec = get_spec(name)
        for S, B in ([(64, 2)] if quick else [(1024, 4), (4096, 1), (4096, 4)]):
            if deadline.over():
                break
            for prec in precisions_to_bench(env):
                with building(dev):
                    mla = MLA(spec)
                    cos, sin = rope_tables(spec.qk_rope_head_dim, S)
                x = torch.randn(B, S, spec.hidden_size, device=dev, dtype=torch.bfloat16,
                                requires_grad=True)
                g = torch.randn_like(x)
                fl_fwd = sum(op.flops for op in attention_ops(spec, B, S))
                common = dict(model=name, batch=B, seq_len=S, num_heads=spec.num_heads,
                              qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim,
                              v_head_dim=spec.v_head_dim, causal=True, precision=prec.label)
                r = timer.measure(lambda: mla(x, cos, sin, prec), flops=fl_fwd)
                rec.row("attention", bench="mla_layer_fwd", **common, **r)
                r = timer.measure(lambda o: torch.autograd.grad(o, [x, *mla.parameters()], g),
                                  setup=lambda: mla(x, cos, sin, prec), flops=2 * fl_fwd)
                rec.row("attention", bench="mla_layer_bwd", **common, **r)
                del mla, x, g
                free_memory()
