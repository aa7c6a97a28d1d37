"""Section kernels (kernels.csv): per-kernel GPU time of MoE and MLA layers from the torch
profiler, which tells which kernels of a composed layer the twin mispredicts."""

from __future__ import annotations


import torch
from torch.profiler import ProfilerActivity, profile

from real.bench.device import free_memory, precisions_to_bench
from real.bench.host_dispatch import mla_layer_case
from real.bench.moe_layer import skewed_routing, with_experts
from real.bench.records import log
from real.configs import get_spec
from real.model import MoE, building

KERNEL_REPS = 5


def bench_kernels(rec, timer, dev, deadline, quick, env):
    """Per-kernel GPU time of MoE and MLA layers (kernels.csv): the torch profiler's CUDA kernel
    records over KERNEL_REPS eager repetitions, summed per kernel name and divided by the
    repetitions (`time_s` per repetition, `calls` per repetition). Tells which kernels of a
    composed layer the twin mispredicts, which the layer's total cannot."""
    cases = ([("tiny", 8, 256, 1.0)] if quick else
             [("v3-slice-1l", 128, 1024, 0.0), ("v3-slice-1l", 128, 1024, 1.5), ("v3-slice-1l", 64, 16384, 0.0),
              ("v3-slice-1l", 32, 4096, 1.0), ("v2-lite-slice", 64, 1024, 0.0), ("v2-lite-slice", 64, 16384, 0.0)])
    g = torch.Generator().manual_seed(0)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])

    def trace(config, prec_label, fn, setup=None):
        for _ in range(3):
            fn(setup()) if setup else fn()
        timer.sync()
        with profile(activities=acts) as prof:
            for _ in range(KERNEL_REPS):
                state = setup() if setup else None
                timer.sync()
                fn(state) if setup else fn()
                timer.sync()
        totals = {}
        for ev in prof.events():
            if dev.type == "cuda" and ev.device_type.name != "CUDA":
                continue
            t = ev.device_time if dev.type == "cuda" else ev.cpu_time
            n, s_ = totals.get(ev.name, (0, 0.0))
            totals[ev.name] = (n + 1, s_ + t * 1e-6)
        for name, (n, tot) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            rec.row("kernels", bench="kernels", config=config, precision=prec_label, kernel=name if len(name) <= 240 else name[:120] + "..." + name[-117:],
                    calls=n / KERNEL_REPS, time_s=tot / KERNEL_REPS, reps=KERNEL_REPS,
                    timing="profiler", sm_clock_mhz=timer.tel.sm_clock_mhz())

    for name, E, T, skew in cases:
        if deadline.over():
            break
        spec = with_experts(get_spec(name), E)
        with building(dev):
            moe = MoE(spec)
        x = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
        gy = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16)
        routing = skewed_routing(T, E, spec.top_k, skew, spec.route_scale, dev, g)
        for prec in precisions_to_bench(env):
            cfg = f"moe_layer {name} t{T} e{E} skew{skew:g}"
            trace(cfg + " fwd", prec.label, lambda: moe(x, prec, routing))
            trace(cfg + " bwd", prec.label,
                  lambda o: torch.autograd.grad(o, [x, *moe.parameters()], gy, allow_unused=True),
                  setup=lambda: moe(x, prec, routing))
        log(f"kernels {name} E={E} T={T} skew={skew}: done")
        del moe, x, gy
        free_memory()
    for name, B, S in ([("tiny", 1, 64)] if quick else [("v2-lite-slice", 4, 1024), ("v3-slice-1l", 1, 4096)]):
        mla, cos, sin, x, gx = mla_layer_case(name, B, S, dev)
        for prec in precisions_to_bench(env):
            cfg = f"mla_layer {name} b{B} s{S}"
            trace(cfg + " fwd", prec.label, lambda: mla(x, cos, sin, prec))
            trace(cfg + " bwd", prec.label, lambda o: torch.autograd.grad(o, [x, *mla.parameters()], gx),
                  setup=lambda: mla(x, cos, sin, prec))
        log(f"kernels mla {name}: done")
        del mla, x, gx
        free_memory()

