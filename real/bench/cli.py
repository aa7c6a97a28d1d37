"""`python -m real.bench`: run the named sections (or the default list), write DIR/env.json and
one CSV per family, and keep going past a section that fails (the log and env.json say which)."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from real.bench.async_tp import bench_async_tp, bench_async_tp_405b, bench_async_tp_mlm, bench_atp_parts
from real.bench.attention import bench_attention, bench_attn_first, bench_attn_small
from real.bench.cp_sustained import bench_cp_sustained, bench_fa2_sustained
from real.bench.cp_traces import bench_cp_traces
from real.bench.decode_gemm import bench_decode_drift, bench_decode_gemm
from real.bench.device import environment, free_memory
from real.bench.copy_load import bench_copy_load
from real.bench.cp_block import bench_cp_block
from real.bench.duty_sweep import bench_duty_sweep
from real.bench.power_activity import bench_power_activity
from real.bench.ep import bench_ep
from real.bench.ep_fresh import bench_ep_fresh
from real.bench.ep_models import bench_ep_models
from real.bench.ep_kernels import bench_ep_kernels
from real.bench.fp8_stack import bench_fp8_stack
from real.bench.host_bound import bench_host_bound
from real.bench.host_input import bench_host_input
from real.bench.host_steps import bench_host_steps
from real.bench.step_probe import bench_step_probe, bench_step_probe_each
from real.bench.host_dispatch import bench_host_dispatch
from real.bench.gemm_in_layer import bench_gemm_in_layer
from real.bench.gemm import (bench_gemm, bench_grouped, bench_grouped_small, bench_grouped_wgrad, bench_tp_grouped,
                             bench_tt_linears)
from real.bench.kernels import bench_kernels
from real.bench.mla_host import bench_mla_host
from real.bench.mla_paired import bench_mla_paired
from real.bench.mlm_sustained import bench_mlm_chunks, bench_mlm_sustained
from real.bench.long_attention import bench_long_attn
from real.bench.memory import bench_memory, bench_memory_alone, bench_topk
from real.bench.moe_layer import bench_moe
from real.bench.nccl import bench_nccl
from real.bench.parallel_blocks import (bench_cp_allgather, bench_cp_blocks, bench_cp_ring, bench_parallel_blocks,
                                       bench_tp_blocks, bench_tp_traces)
from real.bench.power import bench_power, bench_sustained
from real.bench.records import NoRecorder, Recorder, log
from real.bench.sections import DEFAULT_SECTIONS, MULTI_GPU_SECTIONS, SECTION_SHARES
from real.bench.sm_reserve import bench_sm_reserve
from real.bench.timing import Deadline, Timer
from real.bench.torch_cp import bench_cp_chunks, bench_torch_cp, bench_torch_cp_scaling
from real.bench.tp_beside import bench_tp_beside
from real.bench.train_trace import bench_train_trace
from real.bench.wgrad_accum import bench_wgrad_accum
from real.bench.whole_model import bench_expert_load, bench_serve, bench_train
from real.telemetry import Telemetry

_FUNCTIONS = {
    "gemm": bench_gemm, "grouped": bench_grouped, "memory": bench_memory,
    "attention": bench_attention, "moe": bench_moe, "train": bench_train,
    "serve": bench_serve, "expert_load": bench_expert_load,
    "power": bench_power, "sustained": bench_sustained, "kernels": bench_kernels,
    "grouped_wgrad": bench_grouped_wgrad, "grouped_small": bench_grouped_small,
    "topk": bench_topk, "fp8_stack": bench_fp8_stack, "sm_reserve": bench_sm_reserve,
    "ep": bench_ep, "ep_kernels": bench_ep_kernels, "nccl": bench_nccl, "parallel_blocks": bench_parallel_blocks,
    "cp_allgather": bench_cp_allgather, "cp_ring": bench_cp_ring,
    "tp_blocks": bench_tp_blocks, "cp_blocks": bench_cp_blocks,
    "host_dispatch": bench_host_dispatch, "wgrad_accum": bench_wgrad_accum, "host_bound": bench_host_bound,
    "torch_cp": bench_torch_cp, "torch_cp_scaling": bench_torch_cp_scaling, "cp_chunks": bench_cp_chunks, "tp_traces": bench_tp_traces,
    "tp_grouped": bench_tp_grouped, "tp_beside": bench_tp_beside,
    "decode_gemm": bench_decode_gemm, "decode_drift": bench_decode_drift,
    "mla_host": bench_mla_host,
    "mla_paired": bench_mla_paired, "async_tp": bench_async_tp, "tt_linears": bench_tt_linears,
    "async_tp_405b": bench_async_tp_405b, "async_tp_mlm": bench_async_tp_mlm, "atp_parts": bench_atp_parts, "cp_sustained": bench_cp_sustained,
    "fa2_sustained": bench_fa2_sustained, "attn_small": bench_attn_small,
    "attn_first": bench_attn_first, "cp_traces": bench_cp_traces, "duty_sweep": bench_duty_sweep, "power_activity": bench_power_activity,
    "gemm_in_layer": bench_gemm_in_layer, "memory_alone": bench_memory_alone, "copy_load": bench_copy_load, "cp_block": bench_cp_block,
    "ep_fresh": bench_ep_fresh,
    "host_input": bench_host_input, "host_steps": bench_host_steps, "step_probe": bench_step_probe, "step_probe_each": bench_step_probe_each, "ep_models": bench_ep_models,
    "mlm_sustained": bench_mlm_sustained, "mlm_chunks": bench_mlm_chunks,
    "long_attn": bench_long_attn, "train_trace": bench_train_trace,
}
assert _FUNCTIONS.keys() == SECTION_SHARES.keys(), "every section in sections.py has one function here"
# name -> (function, share of the time budget), in run order
SECTIONS = {name: (_FUNCTIONS[name], share) for name, share in SECTION_SHARES.items()}


def _check_args(ap: argparse.ArgumentParser, args, world_size: int) -> None:
    """Refuse before any work (argparse's one line, exit 2; s25walk): an unknown section (a KeyError traceback
    after env.json was written), a section of several ranks outside torchrun (each failed in turn: "Default
    process group has not been initialized"), and a budget or timed time that is not a positive number (a
    budget of -5 s timed nothing and said "all sections ran")."""
    names = [s for s in args.only.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        ap.error(f"argument --only: got {','.join(unknown)!r}; allowed: a comma list of {','.join(SECTIONS)}")
    several = [s for s in names if s in MULTI_GPU_SECTIONS]
    if several and world_size < 2:
        ap.error(f"argument --only: {','.join(several)} run on 2 or more ranks: torchrun --standalone --nproc-per-node 2 "
                 f"-m real.bench --out DIR --only {','.join(several)} (gloo ranks on a CPU)")
    for option, value in (("--budget-s", args.budget_s), ("--min-time-s", args.min_time_s)):
        if not (math.isfinite(value) and value > 0):
            ap.error(f"argument {option}: got {value!r}; allowed: a positive number of seconds")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real.bench", description="real/ benchmark campaign")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a CPU dry run")
    ap.add_argument("--only", default="", help=f"comma list of {','.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=450.0, help="whole-campaign time budget")
    ap.add_argument("--min-time-s", type=float, default=0.1, help="timed time per configuration")
    args = ap.parse_args(argv)
    _check_args(ap, args, int(os.environ.get("WORLD_SIZE", 1)))
    args.out.mkdir(parents=True, exist_ok=True)
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:  # torchrun: expert parallel over all ranks
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type != "cuda":
            # gloo connects its full mesh inside init_process_group, and a rank returns from it as soon as
            # its own side is up (no barrier since torch 2.1: TORCH_DIST_INIT_BARRIER). A rank whose
            # sections then make no collective (on a CPU, PyTorch's CP skips) could finish and exit while a
            # slower rank still connects to it: that rank's init fails ("Connection closed by peer") and,
            # were it rank 0, writes no env.json (s8cp's CPU dry run on a loaded CI machine). The barrier
            # lets no rank go on before every rank is connected. (NCCL connects at the first collective,
            # which every rank makes or none.)
            dist.barrier()
    tel = Telemetry(local_rank)
    env = environment(dev, tel)
    env["sections"] = args.only or "all"
    env["world_size"] = int(os.environ.get("WORLD_SIZE", 1))
    if rank == 0:
        (args.out / "env.json").write_text(json.dumps(env, indent=2, default=str))
        log(f"env: {json.dumps(env, default=str)}")
    rec = Recorder(args.out, env) if rank == 0 else NoRecorder()
    timer = Timer(dev, tel, args.min_time_s if not args.quick else 0.0,
                  max_reps=100 if not args.quick else 3, warmup=3 if not args.quick else 1)
    deadline = Deadline(args.budget_s)
    names = [s for s in args.only.split(",") if s] or list(DEFAULT_SECTIONS)
    failures = []
    for name in names:
        fn, share = SECTIONS[name]
        deadline.start(share if len(names) > 1 else 1.0)
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            fn(rec, timer, dev, deadline, args.quick, env)
        except Exception as e:  # keep the campaign going; the log says what broke
            traceback.print_exc()
            failures.append(f"{name}: {type(e).__name__}: {e}")
            free_memory()
        log(f"== {name} done in {time.perf_counter() - t0:.1f} s")
    rec.close()
    env["failures"] = failures
    env["elapsed_s"] = time.perf_counter() - deadline.t0
    if rank == 0:
        (args.out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    log(f"failures: {failures}" if failures else "all sections ran")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and dist.is_initialized():
        dist.destroy_process_group()   # gloo ranks abort at exit without it (s14mlm's dry run)
    return 1 if failures else 0
