"""Sections torch_cp (two GPUs, torchrun) and cp_chunks (one GPU): PyTorch's own context
parallelism on a Llama-3.1-8B-shaped attention block, beside the one-GPU attention calls it is
made of.

torch_cp (torch_cp.csv, torch_cp_kernels.csv, torch_cp_timeline.csv, traces/): causal attention of
32 query heads, 8 KV heads repeated to 32 (torchtitan's Llama `repeat_kv` before SDPA), head dim
128, BF16, batch 1, total sequence S over CP = W ranks, forward + backward, run exactly as
torchtitan runs it: `torch.distributed.tensor.experimental.context_parallel` over a 1-D device
mesh (its default load balancer shards the sequence head-tail), `set_rotate_method` "allgather"
(torchtitan's default) and "alltoall", SDPA called inside the context and the backward run inside
it too. Each row: time_s, the slowest rank's forward + backward (CUDA events, ranks aligned after a
barrier), host_time_s the slowest rank's host time to issue it; then two repetitions under
torch.profiler, each kernel's GPU time attributed to the forward or the backward by the host
range that launched it (torch_cp_kernels.csv: calls and seconds per repetition, by rank, phase and
kernel, with its category: attention, nccl, copy, fill, elementwise, reduce), and each phase's
GPU timeline (torch_cp_timeline.csv: span, compute busy, NCCL busy, NCCL time not under any
compute kernel = exposed, idle; and how many aten SDPA ops the phase called).
PyTorch's context parallelism dispatches only the CUDA SDPA kernels (flash, memory-efficient,
cuDNN; the CPU flash op has no sharding rule): off a GPU the section writes no row and says so
(env.json torch_cp_skipped); its profiling and timeline code is exercised on CPU on the one-GPU
references.

cp_chunks (cp_chunks.csv), one GPU: the attention calls context parallelism is made of, alone,
forward and forward + backward (phase fwd, fwd_bwd), cuDNN before flash; each backend's 32K causal
call also profiled once (env.json cp_chunks_kernels_*: its kernels and their times):
  bench llama_causal:   the CP1 reference, torchtitan's path (repeat_kv, then causal SDPA) on L
                        positions, L every total and every per-rank length of the torch_cp sweep;
  bench llama_chunk:    non-causal SDPA of a load-balanced CP2 rank's later calls, s = S/2
                        positions per rank: s queries x s/2 keys and s/2 queries x s keys;
  bench llama_causal_kvcontig: the per-rank causal calls again with K/V contiguous (B, H, s, E),
                        as PyTorch's CP hands them to the kernel;
  bench mla_block:      real/cp.py's per-block kernel (`block_forward`/`block_backward`, cuDNN's
                        fused attention through its private op on a GPU) at the CP2 blocks of the
                        parallel_blocks CP rows (MLA heads, qk 192, v 128): the diagonal s x s
                        causal block and the two non-causal s x s/2 and s/2 x s blocks -- the
                        one-GPU records of the off-diagonal blocks no earlier record measured.
Split: holdout the CP2 rows and the chunk calls of the held-out total lengths (Llama S = 32768,
MLA S = 16384, as the parallel_blocks CP rows), fit otherwise; the causal Llama references are all
fit (each is the per-rank diagonal call of a fitting CP2 row or a total length's reference).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import statistics
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from real import cp as cp_mod
from real.bench.device import free_memory, nccl_version
from real.bench.nccl import agreed_over, distributed_env, log, stats
from real.bench.parallel_blocks import time_reps
from real.configs import get_spec
from real.sync import synchronize
from twin.core.intervals import covered_length, uncovered_length
from twin.costs.flops import attention_flops

# Llama 3.1 8B's attention (meta-llama/Llama-3.1-8B config.json: 32 heads, 8 KV heads, 4096 hidden)
LLAMA_HEADS, LLAMA_KV_HEADS, LLAMA_HEAD_DIM = 32, 8, 128
TORCH_CP_SEQ_LENS = (16384, 32768, 65536, 131072)   # total sequence of the CP2 sweep
QUICK_SEQ_LENS = (64,)
HELD_OUT_TORCH_CP_SEQ_LENS = {32768}
MLA_CHUNK_CASES = ([("v2-lite-slice", 16, s) for s in (4096, 8192, 16384, 32768)]
                   + [("v3-slice-1l", 128, s) for s in (4096, 8192, 16384)])  # parallel_blocks' CP sweep
HELD_OUT_MLA_SEQ_LENS = {16384}
ROTATE_METHODS = ("allgather", "alltoall")
# SDPA backends each Llama case runs with (torch.nn.attention.sdpa_kernel): FlashAttention-2, the
# default on Hopper of the torch releases torchtitan's published CP rows ran; cuDNN, first in
# torchtitan's ScaledDotProductAttention backends today
SDPA_BACKENDS = ("flash", "cudnn")
CHUNK_BACKEND_ORDER = ("cudnn", "flash")   # cp_chunks: the fast backend first (a cut run keeps it)
FLASH_MAX_STANDALONE_LEN = 65536   # cp_chunks: flash's 128K causal reference takes ~14 s on an H100
PHASES = ("fwd", "bwd")
TRACE_SEQ_LENS = {65536}   # torch_cp: the Chrome traces kept (per rank and rotate method)


def torch_cp_split(seq_len: int) -> str:
    return "holdout" if seq_len in HELD_OUT_TORCH_CP_SEQ_LENS else "fit"


def mla_chunk_split(seq_len: int) -> str:
    return "holdout" if seq_len in HELD_OUT_MLA_SEQ_LENS else "fit"


def torch_cp_unavailable(dev) -> str:
    """Why PyTorch's context parallelism cannot run here ('' where it can)."""
    if dev.type != "cuda":
        return ("PyTorch's context parallelism dispatches only the CUDA SDPA kernels (the CPU flash "
                "op has no DTensor sharding rule): skipped off a GPU")
    try:
        from torch.distributed.tensor.experimental import context_parallel  # noqa: F401  # lazy: probes this torch for CP
        from torch.distributed.tensor.experimental._attention import set_rotate_method  # noqa: F401  # lazy: as above
    except ImportError as e:
        return f"torch {torch.__version__} has no context_parallel: {e}"
    return ""


# ---------------------------------------------------------------------------------------------
# Profiler traces: kernels by phase, categories, timelines (pure functions of the trace JSON)
# ---------------------------------------------------------------------------------------------


def kernel_category(name: str) -> str:
    """attention | nccl | copy | fill | reduce | elementwise, from a CUDA kernel's name."""
    n = name.lower()
    if "nccl" in n:
        return "nccl"
    if any(w in n for w in ("flash", "fmha", "attention", "sdpa", "cudnn")):
        return "attention"
    if any(w in n for w in ("catarray", "copy", "cat_", "memcpy", "gather", "index")):
        return "copy"
    if "fill" in n or "zero" in n:
        return "fill"
    if "reduce" in n:
        return "reduce"
    return "elementwise"


def _load_trace(path) -> dict:
    p = str(path)
    with (gzip.open(p, "rt") if p.endswith(".gz") else open(p)) as f:
        return json.load(f)


def phase_ranges(events: list[dict], names=PHASES) -> list[tuple[str, float, float]]:
    """(phase, start_us, end_us) of each host range named in `names` (torch.profiler
    record_function: cat user_annotation), in time order."""
    out = [(e["name"], float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
           if e.get("cat") == "user_annotation" and e.get("name") in names and e.get("ph") == "X"]
    return sorted(out, key=lambda r: r[1])


def _phase_at(ranges, ts: float) -> str:
    for name, t0, t1 in ranges:
        if t0 <= ts <= t1:
            return name
    return ""


def kernels_by_phase(trace: dict, names=PHASES) -> list[dict]:
    """Every GPU kernel of the trace with its phase, the host range (`phase_ranges`) its launch
    (the runtime call of the same correlation id) fell in: {name, phase, category, start_us,
    end_us, stream}. Kernels launched outside every range are left out."""
    events = trace.get("traceEvents", [])
    ranges = phase_ranges(events, names)
    launch_ts = {e["args"]["correlation"]: float(e["ts"]) for e in events
                 if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    out = []
    for e in events:
        if e.get("cat") != "kernel" or e.get("ph") != "X":
            continue
        corr = e.get("args", {}).get("correlation")
        phase = _phase_at(ranges, launch_ts.get(corr, float(e["ts"])))
        if phase:
            t0 = float(e["ts"])
            out.append({"name": e["name"], "phase": phase, "category": kernel_category(e["name"]),
                        "start_us": t0, "end_us": t0 + float(e.get("dur", 0.0)),
                        "stream": e.get("args", {}).get("stream", e.get("tid"))})
    return out


def aten_calls_by_phase(trace: dict, prefix: str = "aten::_scaled_dot_product", names=PHASES) -> dict:
    """{(phase, op name): calls} of the host ops whose name starts with `prefix`, by the range they
    ran in (the backward's ops run on the autograd thread while the main thread's range is open)."""
    events = trace.get("traceEvents", [])
    ranges = phase_ranges(events, names)
    out: dict = {}
    for e in events:
        if e.get("cat") == "cpu_op" and str(e.get("name", "")).startswith(prefix):
            phase = _phase_at(ranges, float(e["ts"]))
            if phase:
                out[(phase, e["name"])] = out.get((phase, e["name"]), 0) + 1
    return out


def phase_timeline(kernels: list[dict], phase: str, reps: int) -> dict:
    """Per repetition (the profiled reps' sums / reps), one phase's GPU timeline on one rank:
    span (first kernel start to last kernel end, summed over the reps' phase windows), compute
    busy (union of non-NCCL kernels), NCCL busy, NCCL not under any compute kernel (exposed
    communication: the rank waits on the other or on the transfer), idle (span less the union of
    all); in seconds."""
    ks = [k for k in kernels if k["phase"] == phase]
    if not ks:
        return {"span_s": 0.0, "compute_s": 0.0, "nccl_s": 0.0, "nccl_exposed_s": 0.0, "idle_s": 0.0}
    # the phase's windows: split the kernels at gaps where another phase's kernels ran
    others = sorted(k["start_us"] for k in kernels if k["phase"] != phase)
    windows, cur = [], []
    for k in sorted(ks, key=lambda k: k["start_us"]):
        if cur and any(cur[-1]["end_us"] <= t < k["start_us"] for t in others):
            windows.append(cur)
            cur = []
        cur.append(k)
    windows.append(cur)
    span = sum(max(k["end_us"] for k in w) - min(k["start_us"] for k in w) for w in windows)
    comp = [(k["start_us"], k["end_us"]) for k in ks if k["category"] != "nccl"]
    nccl = [(k["start_us"], k["end_us"]) for k in ks if k["category"] == "nccl"]
    busy = covered_length(comp + nccl)
    us = 1e-6 / max(1, reps)
    return {"span_s": span * us, "compute_s": covered_length(comp) * us, "nccl_s": covered_length(nccl) * us,
            "nccl_exposed_s": uncovered_length(nccl, comp) * us, "idle_s": max(0.0, span - busy) * us}


def kernel_table(kernels: list[dict], reps: int) -> list[dict]:
    """[{phase, category, kernel, calls, time_s}] per repetition, by phase and kernel name."""
    agg: dict = {}
    for k in kernels:
        key = (k["phase"], k["category"], k["name"])
        n, t = agg.get(key, (0, 0.0))
        agg[key] = (n + 1, t + (k["end_us"] - k["start_us"]) * 1e-6)
    return [{"phase": p, "category": c, "kernel": name[:160], "calls": n / max(1, reps), "time_s": t / max(1, reps)}
            for (p, c, name), (n, t) in sorted(agg.items())]


def profile_phases(fwd, bwd, dev, reps: int, trace_path: str | None = None) -> dict:
    """Run `reps` repetitions of fwd() then bwd(out) under torch.profiler, each in a host range
    named "fwd" / "bwd"; returns the trace's JSON (written to trace_path when given, else to a
    temporary file)."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(reps):
            with torch.profiler.record_function("fwd"):
                out = fwd()
            with torch.profiler.record_function("bwd"):
                bwd(out)
            del out
        synchronize(dev)
    if trace_path:
        prof.export_chrome_trace(trace_path)
        return _load_trace(trace_path)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "trace.json")
        prof.export_chrome_trace(p)
        return _load_trace(p)


# ---------------------------------------------------------------------------------------------
# The Llama attention block, torchtitan's way
# ---------------------------------------------------------------------------------------------


def repeat_kv(x_BsKE: torch.Tensor, n_rep: int) -> torch.Tensor:
    """torchtitan's Llama repeat_kv: (B, s, K, E) -> (B, s, K*n_rep, E), each KV head copied out to
    its n_rep query heads (expand + reshape: one copy kernel)."""
    B, s, K, E = x_BsKE.shape
    if n_rep == 1:
        return x_BsKE
    return x_BsKE[:, :, :, None, :].expand(B, s, K, n_rep, E).reshape(B, s, K * n_rep, E)


def llama_shape(quick: bool) -> tuple[int, int, int]:
    return (4, 2, 16) if quick else (LLAMA_HEADS, LLAMA_KV_HEADS, LLAMA_HEAD_DIM)


def sdpa_context(backend: str, dev):
    """sdpa_kernel restricted to `backend` on a GPU (off a GPU: no restriction, the CPU kernel)."""
    if dev.type != "cuda" or not backend:
        return contextlib.nullcontext()
    return sdpa_kernel([{"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                         "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]])


def llama_attention_fns(s: int, dev, quick: bool, seed: int = 0, causal: bool = True, kv_len: int | None = None,
                        backend: str = "", kv_contiguous: bool = False, compiled: bool = False):
    """(fwd, bwd, inputs) of torchtitan's attention core on s query positions (and kv_len key
    positions, s by default): xq (1, s, H, E), xk/xv (1, kv_len, K, E) BF16 leaves; fwd repeats
    K/V to H heads, transposes to (1, H, s, E) and calls SDPA restricted to `backend` (inside a
    context_parallel context this is PyTorch's CP); bwd(out) takes the gradients of xq, xk, xv.
    kv_contiguous: K and V copied contiguous in (1, H, s, E) before the call, as PyTorch's CP does.
    compiled: the core (repeat_kv, transposes, SDPA) under torch.compile(fullgraph=True), as
    torchtitan's apply_compile @ 9dec370 compiles each block: traced inside a context_parallel
    context, the ring attention's collectives and merges become part of the compiled graph."""
    H, K, E = llama_shape(quick)
    kv_len = s if kv_len is None else kv_len
    g = torch.Generator(device=dev).manual_seed(seed)
    xq = torch.randn(1, s, H, E, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
    xk, xv = (torch.randn(1, kv_len, K, E, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
              for _ in range(2))
    gy = torch.randn(1, H, s, E, generator=g, device=dev, dtype=torch.bfloat16)

    def core(q, k, v):
        keys, values = repeat_kv(k, H // K).transpose(1, 2), repeat_kv(v, H // K).transpose(1, 2)
        if kv_contiguous:
            keys, values = keys.contiguous(), values.contiguous()
        return F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, is_causal=causal)

    # off a GPU aot_eager (dynamo and AOTAutograd, no codegen): the same trace in seconds, as
    # real/bench/dense_block.py does
    backend_fn = "inductor" if dev.type == "cuda" else "aot_eager"
    run = torch.compile(core, fullgraph=True, backend=backend_fn) if compiled else core

    def fwd():
        with sdpa_context(backend, dev):   # outside the compiled frame: the backend is chosen when it traces
            return run(xq, xk, xv)

    def bwd(out):
        torch.autograd.grad(out, [xq, xk, xv], gy)
    return fwd, bwd, (xq, xk, xv)


def _llama_flops(q_len: int, kv_len: int, causal: bool, quick: bool) -> float:
    """Forward + backward FLOPs (backward 2.5x the forward, as twin.costs.flops counts it) of one
    attention call; non-causal calls with q_len != kv_len by their rectangle."""
    H, _, E = llama_shape(quick)
    if causal and q_len == kv_len:
        return 3.5 * attention_flops(1, q_len, H, E, E, causal=True)
    return 3.5 * 4.0 * q_len * kv_len * H * E   # Q K^T and P V: 2 q k E FLOPs each, a head


# ---------------------------------------------------------------------------------------------
# Section cp_chunks (one GPU)
# ---------------------------------------------------------------------------------------------


def _chunk_row(rec, timer, times, hosts, flops: float, **cols):
    st = stats(times)
    rec.row("cp_chunks", **cols, host_time_s=statistics.median(hosts), **st,
            timing="per_rep_events" if timer.device.type == "cuda" else "host_clock", flops=flops, bytes=math.nan,
            achieved_flops_per_s=flops / st["time_s"] if st["time_s"] > 0 else math.nan,
            achieved_bytes_per_s=math.nan, sm_clock_mhz=timer.tel.sm_clock_mhz(),
            mem_clock_mhz=timer.tel.mem_clock_mhz())
    return st


def _time_fwd_and_step(fwd, bwd, dev, reps, warmup):
    """(forward times, hosts), (forward + backward times, hosts) of one call."""
    tf, _, hf = time_reps(lambda: fwd(), dev, reps, warmup, None, None)
    ts, _, hs = time_reps(lambda: bwd(fwd()), dev, reps, warmup, None, None)
    return (tf, hf), (ts, hs)


def llama_chunk_cases(quick: bool) -> list[tuple[str, int, int, bool, int]]:
    """(bench, q_len, kv_len, causal, source total S) of the Llama one-GPU calls: the causal CP1
    references at every total and per-rank length (each once, tagged with the largest S it
    stands for), then the CP2 ranks' non-causal chunk calls, then llama_causal_kvcontig: the
    per-rank causal calls again with K and V made contiguous (B, H, s, E) as PyTorch's CP passes
    them to the kernel (torch's ring attention: key.contiguous(), value.contiguous()), where the
    CP1 reference passes torchtitan's repeat_kv views ((B, s, H, E) memory, transposed)."""
    seqs = QUICK_SEQ_LENS if quick else TORCH_CP_SEQ_LENS
    lengths = sorted({L for S in seqs for L in (S, S // 2)})
    out = [("llama_causal", L, L, True, L if L in seqs else 2 * L) for L in lengths]
    for S in seqs:
        s = S // 2
        out += [("llama_chunk", s, s // 2, False, S), ("llama_chunk", s // 2, s, False, S)]
    out += [("llama_causal_kvcontig", S // 2, S // 2, True, S) for S in seqs if S // 2 <= 65536]
    return out


def mla_chunk_cases(quick: bool) -> list[tuple[str, int, int, int, bool, int]]:
    """(model, heads, q_len, kv_len, causal, S) of real/cp.py's CP2 blocks: the diagonal causal
    block and the two non-causal blocks of a rank holding s = S/2 positions."""
    cases = [("tiny", 2, 64)] if quick else MLA_CHUNK_CASES
    out = []
    for model, H, S in cases:
        s = S // 2
        out += [(model, H, s, s, True, S), (model, H, s, s // 2, False, S), (model, H, s // 2, s, False, S)]
    return out


def _mla_block_fns(H: int, q_len: int, kv_len: int, causal: bool, E: int, Ev: int, dev):
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(1, H, q_len, E, generator=g, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, H, kv_len, E, generator=g, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, H, kv_len, Ev, generator=g, device=dev, dtype=torch.bfloat16)
    gy = torch.randn(1, H, q_len, Ev, generator=g, device=dev, dtype=torch.bfloat16)
    scale = 1 / math.sqrt(E)

    def fwd():
        return cp_mod.block_forward(q, k, v, causal, scale)

    def bwd(res):
        o, lse, kctx = res
        cp_mod.block_backward(gy, q, k, v, o, lse, kctx, causal, scale)
    return fwd, bwd


def _block_kernel(dev) -> str:
    """The kernel real/cp.py's blocks ran (known once one has run: it moves on when refused)."""
    return cp_mod.BLOCK_KERNEL["name"] if dev.type == "cuda" else "math"


def bench_cp_chunks(rec, timer, dev, deadline, quick, env):
    """Section cp_chunks (one GPU): real/cp.py's MLA blocks, then the Llama CP1 references and
    chunk calls for each SDPA backend (module docstring); a case a backend refuses is logged and
    skipped."""
    reps, warmup = (2, 1) if quick else (5, 2)
    for model, H, q_len, kv_len, causal, S in mla_chunk_cases(quick):
        if deadline.over():
            log("cp_chunks: deadline reached")
            return
        spec = get_spec(model)
        E, Ev = spec.qk_nope_head_dim + spec.qk_rope_head_dim, spec.v_head_dim
        fwd, bwd = _mla_block_fns(H, q_len, kv_len, causal, E, Ev, dev)
        (tf, hf), (ts, hs) = _time_fwd_and_step(fwd, bwd, dev, reps, warmup)
        fl = (3.5 * attention_flops(1, q_len, H, E, Ev, causal=True) if causal
              else 3.5 * 2.0 * q_len * kv_len * H * (E + Ev))
        common = dict(bench="mla_block", model=model, sdpa_backend="", kernel=_block_kernel(dev), num_heads=H,
                      num_kv_heads=H, qk_head_dim=E, v_head_dim=Ev, q_len=q_len, kv_len=kv_len,
                      causal=causal, kv_repeat=False, source_seq_len=S, precision="bf16",
                      split=mla_chunk_split(S) if not quick else "fit")
        _chunk_row(rec, timer, tf, hf, fl / 3.5, phase="fwd", **common)
        st = _chunk_row(rec, timer, ts, hs, fl, phase="fwd_bwd", **common)
        log(f"cp_chunks mla_block {model} H={H} {q_len}x{kv_len} causal={causal}: "
            f"fwd {statistics.median(tf) * 1e3:.2f} ms, fwd+bwd {st['time_s'] * 1e3:.2f} ms ({common['kernel']})")
        del fwd, bwd
        free_memory()
    H, K, E = llama_shape(quick)
    for backend in CHUNK_BACKEND_ORDER:
        for bench, q_len, kv_len, causal, S in llama_chunk_cases(quick):
            if deadline.over():
                log("cp_chunks: deadline reached")
                return
            if backend == "flash" and causal and q_len > FLASH_MAX_STANDALONE_LEN:
                continue
            big = q_len * kv_len >= 2 ** 30   # the 32K+ calls: fewer repetitions
            try:
                fwd, bwd, _ = llama_attention_fns(q_len, dev, quick, causal=causal, kv_len=kv_len, backend=backend,
                                                  kv_contiguous=bench == "llama_causal_kvcontig")
                kernel = sdpa_kernel_name(fwd, dev)
                if q_len == kv_len == (64 if quick else 32768):   # which kernels, and how long each
                    ks = kernels_by_phase(profile_phases(fwd, bwd, dev, 1))
                    env[f"cp_chunks_kernels_{bench}_{backend}_{q_len}"] = kernel_table(ks, 1)
                (tf, hf), (ts, hs) = _time_fwd_and_step(fwd, bwd, dev, 3 if big else reps, 1 if big else warmup)
            except RuntimeError as e:   # the backend refused the shape
                log(f"cp_chunks {bench} {backend} {q_len}x{kv_len}: {type(e).__name__}: {str(e)[:200]}")
                free_memory()
                continue
            common = dict(bench=bench, model="llama3.1-8b-attn" if not quick else "tiny", sdpa_backend=backend,
                          kernel=kernel, num_heads=H, num_kv_heads=K, qk_head_dim=E, v_head_dim=E, q_len=q_len,
                          kv_len=kv_len, causal=causal, kv_repeat=True, source_seq_len=S, precision="bf16",
                          split=torch_cp_split(S) if bench == "llama_chunk" and not quick else "fit")
            fl = _llama_flops(q_len, kv_len, causal, quick)
            _chunk_row(rec, timer, tf, hf, fl / 3.5, phase="fwd", **common)
            st = _chunk_row(rec, timer, ts, hs, fl, phase="fwd_bwd", **common)
            log(f"cp_chunks {bench} {backend} {q_len}x{kv_len} causal={causal}: fwd {statistics.median(tf) * 1e3:.2f}"
                f" ms, fwd+bwd {st['time_s'] * 1e3:.2f} ms ({kernel})")
            del fwd, bwd
            free_memory()
    # the profiler path the torch_cp section takes, on the smallest CP1 reference (checks it runs)
    fwd, bwd, _ = llama_attention_fns(llama_chunk_cases(quick)[0][1], dev, quick)
    time_reps(lambda: bwd(fwd()), dev, 1, 1, None, None)
    ks = kernels_by_phase(profile_phases(fwd, bwd, dev, 1))
    env["cp_chunks_profiled_kernels"] = {p: sum(1 for k in ks if k["phase"] == p) for p in PHASES}


def sdpa_kernel_name(fwd, dev) -> str:
    """The kernel SDPA runs for these inputs, read from one profiled forward ("sdpa_<aten op>" off
    a GPU, where the profile has no kernels)."""
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        fwd()
        synchronize(dev)
    ops = [e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")]
    return ops[0].removeprefix("aten::") if ops else "sdpa"


# ---------------------------------------------------------------------------------------------
# Section torch_cp (two GPUs)
# ---------------------------------------------------------------------------------------------


def _torch_cp_api():
    """(init_device_mesh, context_parallel, set_rotate_method): PyTorch's context parallelism as
    torchtitan calls it."""
    from torch.distributed.device_mesh import init_device_mesh  # lazy: only where PyTorch's CP runs (a GPU)
    from torch.distributed.tensor.experimental import context_parallel  # lazy: experimental API, as above
    from torch.distributed.tensor.experimental._attention import set_rotate_method  # lazy: as above
    return init_device_mesh, context_parallel, set_rotate_method


# what bench_torch_cp calls (a test stands in for them on CPU, where PyTorch's CP cannot run)
CP_API = {"unavailable": torch_cp_unavailable, "api": _torch_cp_api}


def _cp_row_cols(S: int, world: int, method: str, quick: bool, kernel: str, backend: str,
                 split: str | None = None, compiled: bool = False) -> dict:
    H, K, E = llama_shape(quick)
    if split is None:
        split = torch_cp_split(S) if not quick else "fit"
    return dict(bench="torch_cp_compiled" if compiled else "torch_cp", model="llama3.1-8b-attn" if not quick else "tiny", cp=world, rotate_method=method,
                sdpa_backend=backend, load_balance="head_tail" if world > 1 else "none", seq_len=S,
                local_len=S // world, num_heads=H, num_kv_heads=K, head_dim=E, kv_repeat=True, causal=True,
                precision="bf16", sdpa_kernel=kernel, split=split)


def cp_mesh_api(env: dict, dev, world: int, section: str):
    """PyTorch's CP over this torchrun world: (device mesh, context_parallel, set_rotate_method),
    or None where this torch or device cannot run it (the reason kept in env and logged)."""
    distributed_env(env, dev)
    why = CP_API["unavailable"](dev)
    if why:
        env["torch_cp_skipped"] = why
        log(f"{section}: {why}")
        return None
    init_device_mesh, context_parallel, set_rotate_method = CP_API["api"]()
    return init_device_mesh(dev.type, (world,)), context_parallel, set_rotate_method


def bench_torch_cp(rec, timer, dev, deadline, quick, env):
    """Section torch_cp (torchrun, W >= 2 ranks): PyTorch's context parallelism of the Llama
    attention block at CP = W, each rotate method and total length (module docstring)."""
    group, world, rank = dist.group.WORLD, dist.get_world_size(), dist.get_rank()
    api = cp_mesh_api(env, dev, world, "torch_cp")
    if api is None:
        return
    mesh, context_parallel, set_rotate_method = api
    reps, warmup = (2, 1) if quick else (6, 2)
    trace_dir = Path(os.environ.get("REAL_BENCH_TRACE_DIR", "") or tempfile.gettempdir())
    seqs = QUICK_SEQ_LENS if quick else TORCH_CP_SEQ_LENS
    for S in seqs:
        for backend in SDPA_BACKENDS:
            for method in ROTATE_METHODS:
                if agreed_over(deadline, dev):
                    log("torch_cp: deadline reached")
                    return
                try:
                    _torch_cp_case(rec, timer, dev, quick, mesh, group, rank, world, S, backend, method,
                                   context_parallel, set_rotate_method, reps, warmup, trace_dir)
                except (RuntimeError, NotImplementedError, ValueError) as e:   # the backend refused
                    log(f"torch_cp S={S} {backend} {method}: {type(e).__name__}: {str(e)[:300]}")
                free_memory()
                dist.barrier(group=group)


def _torch_cp_case(rec, timer, dev, quick, mesh, group, rank, world, S, backend, method, context_parallel,
                   set_rotate_method, reps, warmup, trace_dir, split=None, keep_trace=None, compiled=False):
    """One torch_cp row (and its kernel and timeline rows): S total positions, SDPA `backend`,
    rotate `method`; `split` and `keep_trace` (the Chrome trace kept) as the sweep's rule unless
    given; `compiled`: the core under torch.compile (bench torch_cp_compiled)."""
    fwd, bwd, _ = llama_attention_fns(S // world, dev, quick, seed=rank, backend=backend, compiled=compiled)
    pos = torch.arange(S, device=dev)[None]   # a sequence buffer for the context to shard
    if S >= 131072:   # about half a second a repetition: fewer of them
        reps, warmup = min(reps, 4), 1
    if world > 1:
        set_rotate_method(method)
        ctx = context_parallel(mesh, buffers=[pos], buffer_seq_dims=[1], no_restore_buffers={pos})
    else:   # CP1: torchtitan enters no CP context; the plain call
        ctx = contextlib.nullcontext()
    with ctx:
        times, _, hosts = time_reps(lambda: bwd(fwd()), dev, reps, warmup, None, group)
        if group is not None:
            dist.barrier(group=group)
        keep = (S in TRACE_SEQ_LENS or quick) if keep_trace is None else keep_trace
        tag = "torch_cp_compiled" if compiled else "torch_cp"
        path = str(trace_dir / f"trace_{tag}_{backend}_{method}_S{S}_rank{rank}.json.gz") if keep else None
        trace = profile_phases(fwd, bwd, dev, 2, path)
    kernels = kernels_by_phase(trace)
    calls = aten_calls_by_phase(trace)
    kernel = next((name.removeprefix("aten::") for (p, name) in calls if p == "fwd"), "sdpa")
    cols = _cp_row_cols(S, world, method, quick, kernel, backend, split, compiled)
    H, _, E = llama_shape(quick)
    fl = 3.5 * attention_flops(1, S, H, E, E, causal=True)
    st = stats(times)
    rec.row("torch_cp", **cols, host_time_s=statistics.median(hosts), **st,
            timing="per_rep_events" if dev.type == "cuda" else "host_clock", flops=fl, bytes=math.nan,
            achieved_flops_per_s=fl / st["time_s"], achieved_bytes_per_s=math.nan,
            sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz())
    _write_profile_rows(rec, cols, kernels, calls, rank, world, dev, group)
    log(f"{cols['bench']} S={S} cp{world} {backend} {method}: {st['time_s'] * 1e3:.2f} ms ({kernel})")


def _write_profile_rows(rec, cols, kernels, calls, rank, world, dev, group):
    """Rank 0 writes every rank's kernel table and timelines (gathered as JSON objects)."""
    mine = {"rank": rank, "table": kernel_table(kernels, 2),
            "timeline": {p: phase_timeline(kernels, p, 2) for p in PHASES},
            "calls": {f"{p}|{n}": c / 2 for (p, n), c in calls.items()}}
    got = [None] * world
    if group is None:   # one process (CP1): no group to gather over
        got = [mine]
    else:
        dist.all_gather_object(got, mine, group=group)
    if rank != 0:
        return
    base = {k: v for k, v in cols.items() if k not in ("sdpa_kernel",)}
    for r in got:
        for t in r["table"]:
            rec.row("torch_cp_kernels", **base, rank=r["rank"], phase=t["phase"], category=t["category"],
                    kernel=t["kernel"], calls=t["calls"], time_s=t["time_s"], reps=2, timing="profiler")
        for p, tl in r["timeline"].items():
            sdpa = {n.split("|", 1)[1]: c for n, c in r["calls"].items() if n.startswith(p + "|")}
            rec.row("torch_cp_timeline", **base, rank=r["rank"], phase=p, **tl,
                    sdpa_calls=json.dumps(sdpa), time_s=tl["span_s"], reps=2, timing="profiler")


# ---------------------------------------------------------------------------------------------
# Section torch_cp_scaling (one process, or torchrun over W ranks): torchtitan's 8B CP rows' shapes
# ---------------------------------------------------------------------------------------------

# tokens per rank in every torchtitan Llama 3.1 8B CP row (benchmarks/llama3_h100_202412_torchtitan.md
# Table 2: sequence 32K, 64K, 128K, 256K at CP 1, 2, 4, 8 on 8 GPUs, local batch 1)
SCALING_LOCAL_LEN = 32768
QUICK_SCALING_LOCAL_LEN = 64
SCALING_HELD_OUT_MIN_CP = 4   # CP >= 4 held out: the fit sees CP1 and CP2 only


def scaling_split(cp: int) -> str:
    return "holdout" if cp >= SCALING_HELD_OUT_MIN_CP else "fit"


COMPILE_ENV = "REAL_BENCH_CP_COMPILE"   # "1": torch_cp_scaling runs the core under torch.compile, flash only


def scaling_cases(world: int, compiled: bool = False) -> list[tuple[str, str]]:
    """(SDPA backend, rotate method) of a torch_cp_scaling run over `world` ranks, in run order:
    flash first (the default SDPA kernel of the torch torchtitan's December 2024 rows ran; torch's
    CP then dispatched flash and memory-efficient only), torchtitan's default rotate method
    (allgather) before alltoall; CP1 has no rotate method ('none'). Compiled: flash with
    allgather only (the table's configuration)."""
    methods = ROTATE_METHODS if world > 1 else ("none",)
    if compiled:
        return [("flash", methods[0])]
    return [(b, m) for b in SDPA_BACKENDS for m in methods]


def _one_process_env(env: dict, dev) -> dict:
    """nccl_version and num_gpus of a one-process run (no process group)."""
    env["nccl_version"] = nccl_version() if dev.type == "cuda" else ""
    env["num_gpus"] = 1 if dev.type == "cuda" else 0
    return env


def cp_world(env: dict, dev, section: str):
    """(world, rank, group, mesh, context_parallel, set_rotate_method) of a section run either as one
    process (CP1: no group, no mesh) or under torchrun (PyTorch's CP over every rank); None where this
    torch or device cannot run CP (cp_mesh_api keeps the reason)."""
    multi = dist.is_available() and dist.is_initialized()
    if not multi:
        _one_process_env(env, dev)
        return 1, 0, None, None, None, None
    world = dist.get_world_size()
    api = cp_mesh_api(env, dev, world, section)
    if api is None:
        return None
    return (world, dist.get_rank(), dist.group.WORLD, *api)


def bench_torch_cp_scaling(rec, timer, dev, deadline, quick, env):
    """Section torch_cp_scaling: the torch_cp block with SCALING_LOCAL_LEN positions per rank at
    CP = W, W the process count (one process: CP1, the plain call torchtitan makes at CP1; under
    torchrun: PyTorch's CP over all W ranks, S = W x 32K), each SDPA backend and rotate method
    (`scaling_cases`); rows in the torch_cp families, split by `scaling_split`, a Chrome trace per
    rank of every case. Run at W = 1, 2, 4 it says how a rank's time grows with the CP degree at
    fixed per-rank work (issue 14: torchtitan's CP4/CP8 rows)."""
    world_cp = cp_world(env, dev, "torch_cp_scaling")
    if world_cp is None:
        return
    world, rank, group, mesh, context_parallel, set_rotate_method = world_cp
    multi = group is not None
    reps, warmup = (2, 1) if quick else (6, 2)
    trace_dir = Path(os.environ.get("REAL_BENCH_TRACE_DIR", "") or tempfile.gettempdir())
    S = (QUICK_SCALING_LOCAL_LEN if quick else SCALING_LOCAL_LEN) * world
    compiled = os.environ.get(COMPILE_ENV, "") == "1"
    env["torch_cp_compiled"] = compiled
    for backend, method in scaling_cases(world, compiled):
        if (agreed_over(deadline, dev) if multi else deadline.over()):
            log("torch_cp_scaling: deadline reached")
            return
        try:
            _torch_cp_case(rec, timer, dev, quick, mesh, group, rank, world, S, backend, method, context_parallel,
                           set_rotate_method, reps, warmup, trace_dir, split=scaling_split(world), keep_trace=True,
                           compiled=compiled)
        except (RuntimeError, NotImplementedError, ValueError) as e:   # the backend (or dynamo) refused
            log(f"torch_cp_scaling S={S} cp{world} {backend} {method}: {type(e).__name__}: {str(e)[:300]}")
        free_memory()
        if multi:
            dist.barrier(group=group)
