"""Section attention (attention.csv): the attention core (scaled_dot_product_attention, forward
and backward) and the whole MLA layer (projections + core) at catalog shapes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from real.bench.device import free_memory, precisions_to_bench
from real.bench.records import log
from real.configs import get_spec
from real.model import MLA, building, rope_tables
from twin.costs.flops import attention_bwd_flops, attention_flops, attention_ops


def bench_attention(rec, timer, dev, deadline, quick, env):
    heads_list = [2, 4] if quick else [16, 32, 64, 128]
    seqs = [128, 256] if quick else [512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384]
    qk, vd = (48, 32) if quick else (192, 128)
    best = {}
    for H in heads_list:
        for S in seqs:
            if deadline.over():
                break
            tokens = 512 if quick else (16384 if H <= 32 else 8192)
            B = max(1, tokens // S)
            q = torch.randn(B, H, S, qk, device=dev, dtype=torch.bfloat16, requires_grad=True)
            k = torch.randn(B, H, S, qk, device=dev, dtype=torch.bfloat16, requires_grad=True)
            v = torch.randn(B, H, S, vd, device=dev, dtype=torch.bfloat16, requires_grad=True)
            sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
            fl = attention_flops(B, S, H, qk, vd, True)
            by = (q.numel() + k.numel() + 2 * v.numel()) * 2.0  # read q, k, v; write o (BF16)
            r = timer.measure(sdpa, flops=fl, bytes_=by, batched=True)
            common = dict(model="", batch=B, seq_len=S, num_heads=H, qk_head_dim=qk, v_head_dim=vd,
                          causal=True, precision="bf16")
            rec.row("attention", bench="attn_fwd", **common, **r)
            best["fwd"] = max(best.get("fwd", 0), r["achieved_flops_per_s"])
            g = torch.randn(B, H, S, vd, device=dev, dtype=torch.bfloat16)

            def setup():
                return sdpa()

            def bwd(o):
                torch.autograd.grad(o, (q, k, v), g)

            r = timer.measure(bwd, setup=setup, flops=attention_bwd_flops(B, S, H, qk, vd, True),
                              bytes_=2 * by)
            rec.row("attention", bench="attn_bwd", **common, **r)
            best["bwd"] = max(best.get("bwd", 0), r["achieved_flops_per_s"])
            del q, k, v, g
            free_memory()
    for kk, v in best.items():
        log(f"attention best {kk}: {v / 1e12:.0f} TFLOP/s")
    bench_mla_layers(rec, timer, dev, deadline, quick, env)


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
