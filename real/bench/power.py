"""Sections power (power.csv) and sustained (sustained.csv): board power of representative
kernels, layers and steps, each looped for >= 2 s; and how much slower compute-bound kernels run
under sustained load than in the short CUDA-graph timing of the other sections."""

from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F

from real import fp8
from real.bench.device import free_memory, precisions_to_bench
from real.bench.gemm import fp8_gemm_callable
from real.bench.moe_layer import skewed_routing
from real.bench.records import log
from real.bench.timing import BATCH_MAX_CALLS, BATCH_WINDOW_S, Timer, capture_graph
from real.bench.whole_model import decode_flops
from real.configs import get_spec
from real.infer import decode_step, prefill
from real.model import MoE, build_model, building
from real.train import MasterAdamW, train_step
from twin.costs.flops import attention_bwd_flops, attention_flops, gemm_flops, train_flops_per_token

def bench_power(rec, timer, dev, deadline, quick, env):
    """Board power of representative kernels, each looped for >= 2 s (power.csv)."""
    t = Timer(dev, timer.tel, 0.2 if quick else 2.0, max_reps=100000, warmup=timer.warmup)

    def pw(config, precision, fn, setup=None, flops=math.nan, bytes_=math.nan):
        if deadline.over():
            return
        r = t.measure(fn, setup=setup, flops=flops, bytes_=bytes_)
        rec.row("power", bench="power", config=config, precision=precision, **r)
        log(f"power {config} {precision}: {r['power_w']:.0f} W, {r['time_s'] * 1e3:.3f} ms")

    if dev.type == "cuda":  # idle board power over 2 s
        e0 = timer.tel.energy_j()
        time.sleep(2.0)
        idle = (timer.tel.energy_j() - e0) / 2.0
        rec.row("power", bench="power", config="idle", precision="", time_s=2.0, reps=1,
                power_w=idle, energy_j=2 * idle)
    sc = 16 if quick else 1
    for m, n, k in [(8192, 4096, 7168), (512, 7168, 2048), (8192, 8192, 8192)]:
        m, n, k = m // sc, n // sc, k // sc
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        fl, cfg = gemm_flops(m, n, k), f"gemm m={m} n={n} k={k}"
        pw(cfg, "bf16", lambda: F.linear(a, w), flops=fl)
        pw(cfg, "fp8-rowwise", fp8_gemm_callable(a, w, "fp8-rowwise"), flops=fl)
        if env["fp8_blockwise_kernel"] and fp8.blockwise_shape_ok(k, n):
            pw(cfg, "fp8-blockwise", fp8_gemm_callable(a, w, "fp8-blockwise"), flops=fl)
    x = torch.randn(2**29 // sc**2, device=dev, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    pw(f"copy bytes={4 * x.numel()}", "bf16", lambda: y.copy_(x), bytes_=4.0 * x.numel())
    del x, y
    B, H, S = (1, 4, 256) if quick else (2, 128, 4096)
    q = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k_ = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, H, S, 128, device=dev, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(B, H, S, 128, device=dev, dtype=torch.bfloat16)
    sdpa = lambda: F.scaled_dot_product_attention(q, k_, v, is_causal=True)
    cfg = f"attention b={B} h={H} s={S}"
    pw(cfg + " fwd", "bf16", sdpa, flops=attention_flops(B, S, H, 192, 128, True))
    pw(cfg + " bwd", "bf16", lambda o: torch.autograd.grad(o, (q, k_, v), g), setup=sdpa,
       flops=attention_bwd_flops(B, S, H, 192, 128, True))
    del q, k_, v, g
    free_memory()
    name = "tiny" if quick else "v3-slice-1l"
    spec = get_spec(name)
    E, T = (8, 256) if quick else (64, 16384)
    spec = dataclasses.replace(spec, num_routed_experts=E)
    with building(dev):
        moe = MoE(spec)
    xm = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    routing = skewed_routing(T, E, spec.top_k, 0.0, spec.route_scale, dev, None)
    fl = gemm_flops(T * spec.top_k, 3 * spec.moe_intermediate_size, spec.hidden_size)
    for prec in precisions_to_bench(env):
        cfg = f"moe_layer {name} E={E} T={T} balanced"
        pw(cfg + " fwd", prec.label, lambda: moe(xm, prec, routing), flops=fl)
        pw(cfg + " bwd", prec.label, lambda o: torch.autograd.grad(o, [xm, *moe.parameters()],
                                                                   torch.ones_like(o), allow_unused=True),
           setup=lambda: moe(xm, prec, routing), flops=2 * fl)
    del moe, xm
    free_memory()
    Bt, St = (2, 64) if quick else (2, 4096)
    model = build_model(spec if quick else get_spec(name), dev, torch.bfloat16, max_seq_len=St)
    opt = MasterAdamW(model.parameters())
    tokens = torch.randint(0, model.spec.vocab_size, (Bt, St), device=dev)
    pw(f"train_step {name} b={Bt} s={St}", "bf16",
       lambda: train_step(model, opt, tokens, torch.roll(tokens, -1, 1)),
       flops=train_flops_per_token(model.spec, St) * Bt * St)
    del model, opt
    free_memory()
    name, Bd, P, G = ("tiny", 4, 16, 400) if quick else ("v3-slice-2l", 64, 512, 1200)
    spec = get_spec(name)
    model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G).eval()
    caches = model.new_caches(Bd, P + G)
    token = [prefill(model, torch.randint(0, spec.vocab_size, (Bd, P), device=dev), caches)]
    pos = [P]

    def step():
        if pos[0] < P + G:  # past the cache end, keep decoding at the last position
            token[0] = decode_step(model, token[0], caches, pos[0])
        else:
            token[0] = decode_step(model, token[0], caches, P + G - 1)
        pos[0] += 1

    pw(f"decode {name} b={Bd} prompt={P}", "bf16", step, flops=decode_flops(spec, Bd, P + G / 2))
    del model, caches
    free_memory()


# bench_sustained: seconds each kernel is replayed back to back, and the NVML sampling window
SUSTAIN_S, SUSTAIN_WINDOW_S = 30.0, 1.0


def bench_sustained(rec, timer, dev, deadline, quick, env):
    """How much slower compute-bound kernels run under sustained load than in the short CUDA-graph
    timing of the other sections (sustained.csv). Each kernel is timed as `gemm`/`attention` time
    it (phase `burst`), then its graph is replayed back to back for SUSTAIN_S seconds, the way a
    training step keeps the GPU busy for hours at its power limit; every SUSTAIN_WINDOW_S window
    is one row (phase `sustained`) with the time per call, SM clock, board power and temperature.
    Analysis (calibration.fit.sustained_ratios) compares the burst time with the mean of the
    windows in the second half."""
    sc = 16 if quick else 1
    hold_s = 0.3 if quick else SUSTAIN_S
    kernels = []
    m, n, k = 8192 // sc, 4096 // sc, 7168 // sc   # a V3 expert up-projection on 8 experts' rows
    a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    fl = gemm_flops(m, n, k)
    kernels.append((f"gemm m={m} n={n} k={k}", "bf16", lambda: F.linear(a, w), fl))
    if dev.type == "cuda":
        kernels.append((f"gemm m={m} n={n} k={k}", "fp8-rowwise", fp8_gemm_callable(a, w, "fp8-rowwise"), fl))
        if env["fp8_blockwise_kernel"] and fp8.blockwise_shape_ok(k, n):
            kernels.append((f"gemm m={m} n={n} k={k}", "fp8-blockwise", fp8_gemm_callable(a, w, "fp8-blockwise"), fl))
    e, tpg = 8, 4096 // sc
    xg = torch.randn(e * tpg, k, device=dev, dtype=torch.bfloat16)
    wg = torch.randn(e, n, k, device=dev, dtype=torch.bfloat16).transpose(-2, -1)
    offs = torch.arange(1, e + 1, device=dev, dtype=torch.int32) * tpg
    if dev.type == "cuda":
        kernels.append((f"grouped_gemm g={e}x{tpg} n={n} k={k}", "bf16",
                        lambda: torch._grouped_mm(xg, wg, offs=offs), e * gemm_flops(tpg, n, k)))
    B, H, S = (1, 4, 256) if quick else (2, 128, 4096)
    q = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16)
    kk = torch.randn(B, H, S, 192, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, H, S, 128, device=dev, dtype=torch.bfloat16)
    kernels.append((f"attention b={B} h={H} s={S} fwd", "bf16",
                    lambda: F.scaled_dot_product_attention(q, kk, v, is_causal=True),
                    attention_flops(B, S, H, 192, 128, True)))
    x = torch.randn(2**28 // sc**2, device=dev, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    kernels.append((f"copy bytes={4 * x.numel()}", "bf16", lambda: y.copy_(x), math.nan))
    for config, prec, fn, flops in kernels:
        if deadline.over():
            break
        burst = timer.measure(fn, flops=flops, batched=True)
        rec.row("sustained", bench="sustained", config=config, precision=prec, phase="burst", window=0,
                elapsed_s=0.0, temperature_c=timer.tel.temperature_c(), **burst)
        _hold(rec, timer, dev, config, prec, fn, flops, hold_s, burst["time_s"])
        log(f"sustained {config} {prec}: burst {burst['time_s'] * 1e3:.3f} ms")
    del a, w, xg, wg, q, kk, v, x, y
    free_memory()


def _hold(rec, timer, dev, config, prec, fn, flops, hold_s, t_call):
    """Replay fn back to back for hold_s seconds; one row per SUSTAIN_WINDOW_S window."""
    n = int(min(BATCH_MAX_CALLS, max(1, math.ceil(BATCH_WINDOW_S / max(t_call, 1e-7)))))
    graph = capture_graph(fn, n, dev) if dev.type == "cuda" else None
    run = graph.replay if graph is not None else (lambda: [fn() for _ in range(n)])
    t0 = time.perf_counter()
    window = 0
    while time.perf_counter() - t0 < hold_s:
        window += 1
        w0, e0 = time.perf_counter(), timer.tel.energy_j()
        calls = 0
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        while time.perf_counter() - w0 < min(SUSTAIN_WINDOW_S, hold_s):
            run()
            calls += n
            if dev.type == "cuda" and calls % (8 * n) == 0:
                torch.cuda.current_stream(dev).synchronize()  # keep the host within a few replays
        if dev.type == "cuda":
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) * 1e-3 / calls
        else:
            t = (time.perf_counter() - w0) / calls
        wall = time.perf_counter() - w0
        power = (timer.tel.energy_j() - e0) / wall
        rec.row("sustained", bench="sustained", config=config, precision=prec, phase="sustained",
                window=window, elapsed_s=time.perf_counter() - t0, temperature_c=timer.tel.temperature_c(),
                time_s=t, time_p10_s=t, time_p90_s=t, reps=calls, flops=flops, bytes=math.nan,
                achieved_flops_per_s=flops / t, achieved_bytes_per_s=math.nan,
                sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz(),
                power_w=power, energy_j=power * t,
                timing="cuda_graph" if graph is not None else "host_clock")
    del graph
