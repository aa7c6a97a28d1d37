"""Section sm_reserve (sm_reserve.csv): SMs held by communication kernels, and what that costs
the GEMMs beside them (and the reverse)."""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F

from real import fp8
from real.bench.device import free_memory
from real.bench.gemm import V3_PROJECTIONS_NK, fp8_gemm_callable
from real.bench.records import log
from real.bench.timing import capture_graph
from twin.costs.flops import gemm_flops

RESERVED_SMS = [8, 20, 32, 66]      # V3 holds 20 (V3 §3.2.2), DeepEP's benchmark 24
HOLDER_TARGET_S = 0.04              # one holder launch: ~40 ms alone
HOLD_COPY_BYTES = 2**28             # the copy holder's buffer (256 MiB), streamed `passes` times
# elements per program and iteration: 32 FP32 chains (16 BF16 values) a thread keep each program's
# registers high enough that no GEMM CTA fits beside it on its SM (n_regs goes to env.json)
HOLD_SPIN_BLOCK, HOLD_COPY_BLOCK = 32768, 16384
SLEEP_CYCLES = 400_000              # ~0.2 ms: the holder's CTAs take their SMs before the GEMMs
SM_RESERVE_TRIALS = 3


def _holder(mode: str, sms: int, dev, target_s: float):
    """(launch, bytes moved per launch, seconds per launch alone) of a kernel holding `sms` SMs
    for about target_s (real/sm_hold_kernels.py)."""
    from real import sm_hold_kernels as hk  # lazy: Triton kernels; CPU machines have no triton

    if mode == "copy":
        n = HOLD_COPY_BYTES // 2
        src = torch.empty(n, device=dev, dtype=torch.bfloat16).normal_()
        dst = torch.empty_like(src)

        def run(units):
            return hk.hold_copy[(sms,)](src, dst, n, units, BLOCK=HOLD_COPY_BLOCK, num_warps=hk.HOLD_WARPS)
        per_unit_bytes = 2.0 * HOLD_COPY_BYTES
    else:
        out = torch.empty(sms * HOLD_SPIN_BLOCK, device=dev, dtype=torch.float32)

        def run(units):
            return hk.hold_spin[(sms,)](out, units * 10_000, BLOCK=HOLD_SPIN_BLOCK, num_warps=hk.HOLD_WARPS)
        per_unit_bytes = 0.0

    def timed(units) -> float:
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        run(units)
        e1.record()
        e1.synchronize()
        return e0.elapsed_time(e1) * 1e-3

    compiled = run(1)  # compile
    torch.cuda.synchronize(dev)
    regs = getattr(compiled, "n_regs", None)
    units = max(1, round(target_s / timed(1)))
    alone_s = statistics.median(timed(units) for _ in range(3))
    return (lambda: run(units)), per_unit_bytes * units, alone_s, regs


def _gemm_beside_holder(graph, calls: int, replays: int, launch_holder, dev) -> dict:
    """Launch the holder (if any) on one stream and, on another, `replays` replays of a graph of
    `calls` GEMMs. With a holder: the median GEMM time of the replays that ran wholly inside the
    holder's span, the span, and whether the GEMMs covered it all (so it ran beside GEMMs).
    Without: the median over all replays (the paired solo time, same clocks and method)."""
    hold_stream, gemm_stream = torch.cuda.Stream(dev), torch.cuda.Stream(dev)
    torch.cuda.synchronize(dev)
    h0, h1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    marks = [torch.cuda.Event(enable_timing=True) for _ in range(replays + 1)]
    with torch.cuda.stream(hold_stream):
        h0.record()
        if launch_holder is not None:
            launch_holder()
        h1.record()
    with torch.cuda.stream(gemm_stream):
        torch.cuda._sleep(SLEEP_CYCLES)
        marks[0].record()
        for i in range(replays):
            graph.replay()
            marks[i + 1].record()
    torch.cuda.synchronize(dev)
    at = [h0.elapsed_time(m) * 1e-3 for m in marks]
    per_call = [(at[i + 1] - at[i]) / calls for i in range(replays)]
    if launch_holder is None:
        return {"gemm_s": statistics.median(per_call), "replays_inside": replays, "holder_s": math.nan,
                "covered": False, "gemm_start_s": at[0]}
    hold_end = h0.elapsed_time(h1) * 1e-3
    inside = [t for i, t in enumerate(per_call) if at[i] >= 0 and at[i + 1] <= hold_end]
    return {"gemm_s": statistics.median(inside) if inside else math.nan, "replays_inside": len(inside),
            "holder_s": hold_end, "covered": at[0] <= 0.001 and at[-1] >= hold_end, "gemm_start_s": at[0]}


def _set_carveout(sms):
    """cuBLAS(Lt) told to leave `sms` SMs free (None: no carveout)."""
    setter = getattr(torch._C, "_set_sm_carveout_experimental", None)
    if setter is None:
        raise RuntimeError("this torch has no _set_sm_carveout_experimental")
    setter(sms)


def bench_sm_reserve(rec, timer, dev, deadline, quick, env):
    """sm_reserve.csv: what holding SMs for communication costs the GEMMs beside it, and the
    reverse. For the V3 projections at 4,096 tokens, by precision, each GEMM is timed alone
    (CUDA graph) and then, per reserved SM count:
      mode `spin`: beside a kernel holding that many SMs without memory traffic;
      mode `copy`: beside a kernel holding them and streaming HBM -> HBM (a comm kernel's SM work);
        the holder's own span beside the GEMMs against alone (holder_s, holder_solo_s) is the
        comm side: how much slower an SM-bound data mover runs while GEMMs share the GPU;
      mode `carveout`: alone, with cuBLAS told to leave that many SMs free
        (torch._C._set_sm_carveout_experimental), as DeepGEMM is told its SM count.
    CUDA only (Triton holder kernels); a CPU run records nothing."""
    if dev.type != "cuda":
        log("sm_reserve: needs CUDA (Triton holder kernels); nothing recorded")
        return
    env["sm_reserve_modes"] = ["spin", "copy", "carveout"]
    shapes = V3_PROJECTIONS_NK[:2] if quick else V3_PROJECTIONS_NK
    precisions = ["bf16", "fp8-rowwise"] + (["fp8-blockwise"] if env["fp8_blockwise_kernel"] else [])
    m = 4096
    holders = {}
    for n, k in shapes:
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        for prec in precisions:
            if deadline.over():
                break
            if prec == "fp8-blockwise" and not fp8.blockwise_shape_ok(k, n):
                continue
            fn = (lambda: F.linear(a, w)) if prec == "bf16" else fp8_gemm_callable(a, w, prec)
            solo = timer.measure(fn, flops=gemm_flops(m, n, k), batched=True)
            calls = max(1, math.ceil(0.004 / solo["time_s"]))          # ~4 ms a replay
            graph = capture_graph(fn, calls, dev)
            for sms in RESERVED_SMS:
                for mode in ("spin", "copy"):
                    if (mode, sms) not in holders:
                        holders[(mode, sms)] = _holder(mode, sms, dev, HOLDER_TARGET_S)
                        env[f"sm_reserve_holder_regs_{mode}"] = holders[(mode, sms)][3]
                    launch, hbytes, alone_s, _ = holders[(mode, sms)]
                    # the GEMMs must outlast the holder even at 2x their solo time
                    replays = math.ceil(2.5 * alone_s / (calls * solo["time_s"])) + 2
                    for trial in range(SM_RESERVE_TRIALS):
                        # solo and beside back to back: the ratio is taken at one clock state
                        alone = _gemm_beside_holder(graph, calls, max(3, replays // 3), None, dev)
                        r = _gemm_beside_holder(graph, calls, replays, launch, dev)
                        t = r["gemm_s"]
                        if not r["replays_inside"]:
                            log(f"sm_reserve: {mode} {sms}: no GEMM replay inside the holder "
                                f"(GEMMs began {r['gemm_start_s'] * 1e3:.2f} ms after it, it lasted {r['holder_s'] * 1e3:.1f} ms)")
                        rec.row("sm_reserve", bench="sm_reserve", mode=mode, reserved_sms=sms, m=m, n=n, k=k,
                                precision=prec, trial=trial, time_solo_s=alone["gemm_s"],
                                replays_inside=r["replays_inside"], gemm_start_s=r["gemm_start_s"],
                                holder_s=r["holder_s"], holder_solo_s=alone_s, holder_bytes=hbytes,
                                holder_covered=r["covered"], time_s=t, time_p10_s=t, time_p90_s=t,
                                reps=r["replays_inside"] * calls, timing="cuda_graph_beside_holder",
                                flops=gemm_flops(m, n, k), bytes=math.nan,
                                achieved_flops_per_s=gemm_flops(m, n, k) / t, achieved_bytes_per_s=math.nan,
                                sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz())
                told = None
                try:
                    _set_carveout(sms)
                    told = timer.measure(fn, flops=gemm_flops(m, n, k), batched=True)
                except Exception as e:  # no carveout in this torch, or the kernel refuses it
                    log(f"sm_reserve: carveout {sms} failed: {type(e).__name__}: {e}")
                finally:
                    try:
                        _set_carveout(None)
                    except Exception:
                        pass
                if told is not None:
                    rec.row("sm_reserve", bench="sm_reserve", mode="carveout", reserved_sms=sms, m=m, n=n, k=k,
                            precision=prec, trial=0, time_solo_s=solo["time_s"], replays_inside=0,
                            gemm_start_s=math.nan, holder_s=math.nan,
                            holder_solo_s=math.nan, holder_bytes=0.0, holder_covered=False, **told)
            log(f"sm_reserve: {prec} {m}x{n}x{k} alone {solo['time_s'] * 1e6:.0f} us")
            del graph
        del a, w
        free_memory()
