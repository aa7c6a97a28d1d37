"""Section cp_sustained (one GPU, opt-in): the board power and SM clock of the attention calls a
torchtitan Llama 3.1 8B context-parallel rank runs, held for seconds at a time as a training step
holds them, beside the GEMMs the twin's power-limit derivation was made from (sustained.csv rows).

Why: the twin runs torchtitan's H100s at their 500 W limit by one clock factor derived from a
sustained BF16 GEMM (calibration/power_cap.py: 713 W at 1,350 MHz at our 700 W limit), and applies
it to every compute-bound kernel, attention included. On the 8B CP rows (Table 2) the attention
calls are 53-90% of the step; FlashAttention-2 ran near the maximum clock in our CP records
(h100x4/torch_cp_scaling: 1,890-1,950 MHz where cuDNN ran at 1,365-1,665 MHz), so its draw, not the
GEMM's, says how a 500 W limit slows it. This section measures that draw.

Each kernel: the burst time (Timer.measure), then SUSTAIN_S seconds of back-to-back calls (no CUDA
graph: a call is tens of milliseconds), one `sustained` row per window with the time per call,
the mean board power over the window (energy counter), the SM clock and temperature sampled while
the next call runs. The attention kernels (flash SDPA, BF16, 32 heads of 128, K/V repeated to 32
heads as torchtitan's repeat_kv does) are a rank's calls under full activation checkpointing:
forward, recomputed forward, backward, one after another:
  - causal 32K x 32K: CP1's call, and every CP rank's diagonal call;
  - 16K queries over 32K keys and 32K queries over 16K keys, non-causal: the off-diagonal calls of
    PyTorch's load-balanced CP (torch/distributed/tensor/experimental/_attention.py, branches
    i > rank and i <= rank).
The GEMMs: the V3 expert shape of sustained.csv in BF16 (ties this machine to that record) and
torchtitan's 8B w1 at 32K tokens in tensorwise FP8 (torchao Float8Linear's torch._scaled_mm).
Rows go to the `sustained` family (sustained.csv): calibration.power_cap reads them by config.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from real.bench.device import free_memory
from real.bench.gemm import fp8_gemm_callable
from real.bench.records import log
from real.bench.torch_cp import sdpa_context
from twin.costs.flops import gemm_flops

CP_SUSTAIN_S, CP_WINDOW_S = 15.0, 1.0   # seconds each kernel is held, and one row's window
LLAMA_8B = {"heads": 32, "head_dim": 128, "local_len": 32768, "ffn": 14336, "hidden": 4096}
QUICK_8B = {"heads": 4, "head_dim": 16, "local_len": 128, "ffn": 64, "hidden": 32}


def attention_cases(quick: bool) -> list[tuple[int, int, bool]]:
    """(q_len, kv_len, causal) of a CP rank's calls at 32K tokens a rank (tiny under quick)."""
    s = (QUICK_8B if quick else LLAMA_8B)["local_len"]
    return [(s, s, True), (s // 2, s, False), (s, s // 2, False)]


def attention_config(q_len: int, kv_len: int, causal: bool, heads: int, head_dim: int) -> str:
    """The sustained.csv config of an attention case (calibration.power_cap selects by it)."""
    mask = "causal" if causal else "full"
    return f"attention flash h={heads} d={head_dim} q={q_len} kv={kv_len} {mask} fwd_recompute_bwd"


def full_ac_attention_fn(q_len: int, kv_len: int, causal: bool, heads: int, head_dim: int, dev):
    """(fn, flops): one layer's attention under full activation checkpointing: the forward, its
    recomputation and the backward of one flash SDPA call, BF16 (off a GPU: the CPU kernel)."""
    g = torch.Generator(device=dev).manual_seed(0)
    shape_q, shape_kv = (1, heads, q_len, head_dim), (1, heads, kv_len, head_dim)
    q = torch.randn(shape_q, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
    k, v = (torch.randn(shape_kv, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_() for _ in range(2))
    gy = torch.randn(shape_q, generator=g, device=dev, dtype=torch.bfloat16)

    def fn():
        with sdpa_context("flash", dev):
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)     # the forward
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # its recomputation
            torch.autograd.grad(out, (q, k, v), gy)                            # the backward
    pairs = q_len * kv_len / 2 if causal else q_len * kv_len
    fwd = 4.0 * pairs * heads * head_dim
    return fn, fwd * (2 + 2.5)


def gemm_cases(dev, quick: bool) -> list[tuple[str, str, object, float]]:
    """(config, precision, fn, flops) of the reference GEMMs (the FP8 one on a GPU only)."""
    sc = 16 if quick else 1
    m, n, k = 8192 // sc, 4096 // sc, 7168 // sc   # sustained.csv's V3 expert up-projection
    a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    cases = [(f"gemm m={m} n={n} k={k}", "bf16", lambda: F.linear(a, w), gemm_flops(m, n, k))]
    if dev.type == "cuda":
        d = QUICK_8B if quick else LLAMA_8B
        m8, n8, k8 = d["local_len"], d["ffn"], d["hidden"]   # torchtitan 8B w1 over 32K tokens
        a8 = torch.randn(m8, k8, device=dev, dtype=torch.bfloat16)
        w8 = torch.randn(n8, k8, device=dev, dtype=torch.bfloat16)
        cases.append((f"gemm m={m8} n={n8} k={k8}", "fp8-tensor", fp8_gemm_callable(a8, w8, "fp8-tensor"),
                      gemm_flops(m8, n8, k8)))
    return cases


def hold_eager(rec, timer, dev, config: str, precision: str, fn, flops: float, hold_s: float,
               window_s: float = CP_WINDOW_S, bench: str = "cp_sustained") -> int:
    """Call fn back to back for hold_s seconds, one call kept in flight; one `sustained` row per
    window: time per call (CUDA events, else the host clock), mean board power (energy counter),
    SM clock and temperature sampled while a call runs. Returns the windows written."""
    t0 = time.perf_counter()
    window = 0
    while time.perf_counter() - t0 < hold_s:
        window += 1
        w0, e0 = time.perf_counter(), timer.tel.energy_j()
        calls, clocks = 0, []
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        prev = None
        while time.perf_counter() - w0 < min(window_s, hold_s):
            fn()
            calls += 1
            if dev.type == "cuda":
                done = torch.cuda.Event()
                done.record()
                if prev is not None:
                    prev.synchronize()   # the call before this one: this one is still running
                clocks.append(timer.tel.sm_clock_mhz())
                prev = done
        if dev.type == "cuda":
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) * 1e-3 / calls
        else:
            t = (time.perf_counter() - w0) / calls
        wall = time.perf_counter() - w0
        power = (timer.tel.energy_j() - e0) / wall
        clock = sorted(clocks)[len(clocks) // 2] if clocks else timer.tel.sm_clock_mhz()
        rec.row("sustained", bench=bench, config=config, precision=precision, phase="sustained",
                window=window, elapsed_s=time.perf_counter() - t0, temperature_c=timer.tel.temperature_c(),
                time_s=t, time_p10_s=t, time_p90_s=t, reps=calls, timing="window_events" if dev.type == "cuda"
                else "host_clock", flops=flops, bytes=math.nan, achieved_flops_per_s=flops / t,
                achieved_bytes_per_s=math.nan, sm_clock_mhz=clock, mem_clock_mhz=timer.tel.mem_clock_mhz(),
                power_w=power, energy_j=power * t)
    return window


def bench_cp_sustained(rec, timer, dev, deadline, quick, env):
    """The attention calls of a torchtitan 8B CP rank and two reference GEMMs, each timed (burst)
    and then held CP_SUSTAIN_S seconds (module docstring); rows in sustained.csv."""
    d = QUICK_8B if quick else LLAMA_8B
    hold_s = 0.2 if quick else CP_SUSTAIN_S
    kernels = []
    for q_len, kv_len, causal in attention_cases(quick):
        fn, fl = full_ac_attention_fn(q_len, kv_len, causal, d["heads"], d["head_dim"], dev)
        kernels.append((attention_config(q_len, kv_len, causal, d["heads"], d["head_dim"]), "bf16", fn, fl))
    kernels += gemm_cases(dev, quick)
    for config, prec, fn, flops in kernels:
        if deadline.over():
            log("cp_sustained: time share spent, skipping the rest")
            break
        burst = timer.measure(fn, flops=flops)
        rec.row("sustained", bench="cp_sustained", config=config, precision=prec, phase="burst", window=0,
                elapsed_s=0.0, temperature_c=timer.tel.temperature_c(), **burst)
        windows = hold_eager(rec, timer, dev, config, prec, fn, flops, hold_s)
        log(f"cp_sustained {config} {prec}: burst {burst['time_s'] * 1e3:.2f} ms "
            f"({burst['achieved_flops_per_s'] / 1e12:.0f} TFLOP/s), {windows} windows held")
    del kernels
    free_memory()


# Section fa2_sustained (s11fa2): FlashAttention-2's own draw and clock per call length, forward and
# backward apart, at the lengths torchtitan's rows call: 8K causal (the 8B/70B/405B rows at seq 8192),
# 16K causal, and 32K causal (the CP rows). Each length runs batch 64K/len so every call covers 64K
# query tokens (an 8K forward of ~3 ms, so the host's clock sampling never starves the GPU).
# The V3 BF16 GEMM of sustained.csv is held last, tying this machine's limit to that record. Each
# kernel's burst follows FA2_PAUSE_S of idle, so no burst inherits the clock of the kernel before it.
FA2_SUSTAIN_S = 10.0   # seconds each kernel is held (s11cp8b's 32K calls settled within 2 s)
FA2_PAUSE_S = 2.0      # idle before each burst: every burst starts from the same cooler, unthrottled state
FA2_LENGTHS = (8192, 32768, 16384)   # 8K and 32K (the rows' calls) first: a cut run keeps them
FA2_TOKENS = 65536     # query tokens a call covers: batch = FA2_TOKENS // length (8K fwd ~3 ms)


def fa2_cases(quick: bool) -> list[tuple[int, int]]:
    """(seq_len, batch) of the FA2 calls held (tiny under quick)."""
    lengths = (32, 128, 64) if quick else FA2_LENGTHS
    tokens = 128 if quick else FA2_TOKENS
    return [(s, max(1, tokens // s)) for s in lengths]


def fa2_config(seq_len: int, batch: int, heads: int, head_dim: int, pass_: str) -> str:
    """The sustained.csv config of one FA2 pass (calibration.power_cap selects by it)."""
    return f"attention flash h={heads} d={head_dim} b={batch} q={seq_len} kv={seq_len} causal {pass_}"


def fa2_pass_fns(seq_len: int, batch: int, heads: int, head_dim: int, dev):
    """{"fwd": (fn, flops), "bwd": (fn, flops)}: one causal flash SDPA call's forward, and its
    backward alone (the graph kept, so each call is the backward kernel only), BF16."""
    g = torch.Generator(device=dev).manual_seed(0)
    shape = (batch, heads, seq_len, head_dim)
    q, k, v = (torch.randn(shape, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
    gy = torch.randn(shape, generator=g, device=dev, dtype=torch.bfloat16)
    with sdpa_context("flash", dev):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwd():
        with sdpa_context("flash", dev), torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def bwd():
        with sdpa_context("flash", dev):
            torch.autograd.grad(out, (q, k, v), gy, retain_graph=True)
    fwd_flops = 4.0 * batch * heads * head_dim * seq_len * seq_len / 2
    return {"fwd": (fwd, fwd_flops), "bwd": (bwd, 2.5 * fwd_flops)}


def bench_fa2_sustained(rec, timer, dev, deadline, quick, env):
    """FA2 forward and backward per call length, each timed (burst, after FA2_PAUSE_S idle) then held
    FA2_SUSTAIN_S seconds, then the V3 BF16 reference GEMM as long; rows in sustained.csv (bench fa2_sustained)."""
    d = QUICK_8B if quick else LLAMA_8B
    hold_s = 0.2 if quick else FA2_SUSTAIN_S
    gemm = gemm_cases(dev, quick)[0]
    pause_s = 0.0 if quick else FA2_PAUSE_S
    for item in fa2_cases(quick) + [None]:
        if deadline.over():
            log("fa2_sustained: time share spent, skipping the rest")
            break
        if item is None:
            kernels = [gemm]
        else:
            s, b = item
            fns = fa2_pass_fns(s, b, d["heads"], d["head_dim"], dev)
            kernels = [(fa2_config(s, b, d["heads"], d["head_dim"], p), "bf16", fn, fl) for p, (fn, fl) in fns.items()]
            del fns
        for config, prec, fn, flops in kernels:
            if deadline.over():
                break
            time.sleep(pause_s)
            burst = timer.measure(fn, flops=flops)
            rec.row("sustained", bench="fa2_sustained", config=config, precision=prec, phase="burst", window=0,
                    elapsed_s=0.0, temperature_c=timer.tel.temperature_c(), **burst)
            windows = hold_eager(rec, timer, dev, config, prec, fn, flops, hold_s, bench="fa2_sustained")
            log(f"fa2_sustained {config} {prec}: burst {burst['time_s'] * 1e3:.2f} ms "
                f"({burst['achieved_flops_per_s'] / 1e12:.0f} TFLOP/s), {windows} windows held")
        del kernels
        free_memory()
