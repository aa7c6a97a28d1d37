"""Section async_tp (async_tp.csv, two GPUs under torchrun): torch's micro-pipelined tensor
parallelism, the fused ops torchtitan's AsyncTP runs (torch._inductor.config._micro_pipeline_tp
rewrites a TP all-gather feeding a matmul into torch.ops.symm_mem.fused_all_gather_matmul, and a
matmul feeding a TP reduce-scatter into torch.ops.symm_mem.fused_matmul_reduce_scatter), each
beside the parts it is made of, so the twin's model of them (plan.tp_overlap_kind
'torch_async_tp', twin.training.step.StepCosts._tp_task) can be checked on measured rows.

Per case (a GEMM of the per-GPU shapes of torchtitan's Llama 3.1 TP slices, BF16, the gathered or
scattered dimension the tokens), one row per `op`:
  mm          the whole GEMM alone (M x K @ K x N);
  collective  the NCCL all-gather of the M/W x K shard, or reduce-scatter of the M x N output, alone;
  sequential  collective then GEMM (all-gather) or GEMM then collective (reduce-scatter): TP
              without overlap;
  fused       the symmetric-memory op (return_A as the inductor pass asks for the all-gather: the
              gathered input is kept for the weight gradient);
  reduce      (reduce-scatter cases) torch.sum over the W stacked partial sums [W, M/W, N] along
              W, the reduction the fused op ends with (torch/distributed/_symmetric_memory
              _fused_matmul_reduce_scatter_impl).
Timing as the nccl section: windows of back-to-back calls between CUDA events, the slowest rank's
window, median and p10/p90 over windows. A fused op this torch or device cannot run (the CPU dry
run on gloo; symmetric memory needs CUDA and NVLink peers) writes a row with status 'unavailable'
and the error in `detail`, and the section goes on. Split: the 405B slices are held out
(`async_tp_split`), the 70B ones fit.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from real.bench.device import free_memory
from real.bench.nccl import agreed_over, distributed_env, log, stats, time_windows

WINDOWS, QUICK_WINDOWS = 8, 2
# (model slice, kind, M tokens of the whole micro-batch, K, N): torchtitan's Llama 3.1 TP8 per-GPU
# linears (70B: d 8192, FFN 28672 -> 3584 per rank, 64 query heads -> 1024 columns; 405B: d 16384,
# FFN 53248 -> 6656, 128 heads -> 2048), on 16K and 8K tokens
CASES = (
    ("llama3.1-70b/w1", "all_gather", 16384, 8192, 3584),
    ("llama3.1-70b/wq", "all_gather", 16384, 8192, 1024),
    ("llama3.1-70b/w2", "reduce_scatter", 16384, 3584, 8192),
    ("llama3.1-70b/wo", "reduce_scatter", 16384, 1024, 8192),
    ("llama3.1-405b/w1", "all_gather", 8192, 16384, 6656),
    ("llama3.1-405b/w2", "reduce_scatter", 8192, 6656, 16384),
)
QUICK_CASES = (("tiny/w1", "all_gather", 64, 32, 48), ("tiny/w2", "reduce_scatter", 64, 48, 32))


def async_tp_split(shape_tag: str) -> str:
    return "holdout" if shape_tag.startswith("llama3.1-405b") else "fit"


def _symm_group_name(dev) -> str:
    """The world group's name with symmetric memory enabled for it (raises where unavailable)."""
    if dev.type != "cuda":
        raise RuntimeError("symmetric memory needs CUDA devices")
    from torch.distributed import _symmetric_memory as symm_mem  # lazy: a private module some torch builds lack; only GPU runs need it
    name = dist.group.WORLD.group_name
    enable = getattr(symm_mem, "enable_symm_mem_for_group", None)
    if enable is not None:
        enable(name)
    return name


def _ops(kind: str, m: int, k: int, n: int, world: int, dev, group_name: str | None) -> dict:
    """op name -> a function issuing one call, its buffers bound (None where unavailable: the error)."""
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    shard_m = m // world
    b = torch.randn(k, n, device=dev, dtype=dt) / k ** 0.5
    ops = {}
    if kind == "all_gather":
        a_shard = torch.randn(shard_m, k, device=dev, dtype=dt)
        gathered = torch.empty(m, k, device=dev, dtype=dt)
        ops["mm"] = lambda: torch.mm(gathered, b)
        ops["collective"] = lambda: dist.all_gather_into_tensor(gathered, a_shard)
        ops["sequential"] = lambda: (dist.all_gather_into_tensor(gathered, a_shard), torch.mm(gathered, b))
        fused = (lambda: torch.ops.symm_mem.fused_all_gather_matmul(a_shard, [b], 0, group_name, return_A=True))
    else:
        a = torch.randn(m, k, device=dev, dtype=dt)
        out = torch.empty(shard_m, n, device=dev, dtype=dt)
        full = torch.empty(m, n, device=dev, dtype=dt)
        stacked = torch.randn(world, shard_m, n, device=dev, dtype=dt)
        ops["mm"] = lambda: torch.mm(a, b, out=full)
        ops["collective"] = lambda: dist.reduce_scatter_tensor(out, full)
        ops["sequential"] = lambda: (torch.mm(a, b, out=full), dist.reduce_scatter_tensor(out, full))
        ops["reduce"] = lambda: torch.sum(stacked, dim=0)
        fused = (lambda: torch.ops.symm_mem.fused_matmul_reduce_scatter(a, b, "sum", 0, group_name))
    ops["fused"] = fused if group_name is not None else None
    return ops


def _agreed_ok(ok: bool, dev) -> bool:
    """True only where every rank could run the op (ranks must issue the same collectives)."""
    flag = torch.tensor([1.0 if ok else 0.0], device=dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def bench_async_tp(rec, timer, dev, deadline, quick, env):
    world = dist.get_world_size()
    distributed_env(env, dev)
    windows = QUICK_WINDOWS if quick else WINDOWS
    precision = "bf16" if dev.type == "cuda" else "fp32"   # the CPU dry run's matmuls in FP32
    timing = "batched_events" if dev.type == "cuda" else "host_clock"
    try:
        group_name, symm_error = _symm_group_name(dev), ""
    except Exception as exc:   # the CPU dry run, or a torch without symmetric memory
        group_name, symm_error = None, f"{type(exc).__name__}: {exc}"
    env["async_tp_symm_mem"] = symm_error or "enabled"
    for tag, kind, m, k, n in (QUICK_CASES if quick else CASES):
        if agreed_over(deadline, dev):
            log("async_tp: budget spent")
            break
        ops = _ops(kind, m, k, n, world, dev, group_name)
        for op in ("mm", "collective", "sequential", "fused", "reduce"):
            if op not in ops:
                continue
            fn, detail = ops[op], ""
            if fn is None:
                detail = symm_error
            else:
                try:   # a first call outside the timing: a fused op this torch cannot run fails here
                    fn()
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                except Exception as exc:
                    fn, detail = None, f"{type(exc).__name__}: {str(exc)[:200]}"
            if not _agreed_ok(fn is not None, dev):
                rec.row("async_tp", bench="async_tp", shape_tag=tag, kind=kind, op=op, m=m, n=n, k=k, world_size=world,
                        precision=precision, status="unavailable", detail=detail or "another rank failed",
                        split=async_tp_split(tag), timing=timing)
                continue
            times, calls = time_windows(fn, dev, windows)
            st = stats(times)
            flops = 2.0 * m * n * k if op in ("mm", "sequential", "fused") else 0.0
            rec.row("async_tp", bench="async_tp", shape_tag=tag, kind=kind, op=op, m=m, n=n, k=k, world_size=world,
                    precision=precision, status="ok", detail=f"calls_per_window={calls}", split=async_tp_split(tag),
                    timing=timing, flops=flops, achieved_flops_per_s=flops / st["time_s"] if flops else "", **st)
            log(f"async_tp {tag} {op}: {st['time_s'] * 1e3:.3f} ms")
        del ops
        free_memory()
