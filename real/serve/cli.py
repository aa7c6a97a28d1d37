"""`python -m real.serve`: run a plan's load runs and write the three record families.

    python -m real.serve --out DIR --plan gpu1 [--budget-s 70] [--device cpu] [--only a,b]
                         [--pin none|numa|core] [--timing]
    torchrun --standalone --nproc-per-node 2 -m real.serve --out DIR --plan ep2

Under torchrun (WORLD_SIZE > 1) the model's MoE layers are expert-parallel over all ranks (NCCL
on GPUs, gloo on CPUs) with data-parallel attention; a gloo group carries the control flags and
gathers every rank's records to rank 0, which writes them. Steps: build the model (random
weights, the same seed on every rank), capture the decode CUDA graphs (one GPU only), run the
plan's warm-up loads (untimed, unrecorded), then each run, skipping the rest once --budget-s is
spent. env.json records the environment, the plan and the runs done.

--pin sets where each rank's main thread runs (real/serve/hostpin.py; a plan's run may name its own);
--timing records every iteration's host / GPU split and the main thread's CPU;
--host-probe measures the host's speed (real/serve/hostspeed.py) right before and right after each
run, in the same process on every rank, into the run's serve_load row (probe_* columns; under EP
the slowest rank's, the lockstep waiting for it); a run with `co_runner_nice` runs (probes
included) beside a busy process on each rank's main-thread CPU (hostspeed.CoRunner).
--stall-trace records every iteration's host counters (serve_stalls.csv) and each run's whole-host view
(serve_hostrun.csv) (real/serve/stalltrace.py: what stops the engine for 10-30 ms on some hosts);
--kernel-trace profiles the process from after its graphs are captured to its end and writes each iteration's kernels
first launched, CUDA runtime calls (launches, cudaMalloc) and GEMM host time (serve_kernels.csv, serve_apicalls.csv;
real/serve/coldtrace.py, s32cold);
--gc-freeze collects and freezes Python's heap right before each run's load (gc.freeze(), as vLLM and SGLang do
after their warm-up), so a cyclic collection during the run walks only the objects made since.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

from real.bench.device import cuda_pci_bus_id, environment, nccl_version
from real.bench.records import ENV_COLS, log
from real.configs import get_spec
from real.fp8 import BF16
from real.model import build_model
from real.serve.coldtrace import CALL_COLS, KERNEL_COLS, KernelTrace
from real.serve.coldtrace import write as write_trace
from real.serve.engine import Engine, EngineConfig
from real.serve.hostpin import ALLOWED_AT_START, PIN_MODES, apply_pin, gpu_local_cpus
from real.serve.hostspeed import PROBE_KEYS, CoRunner, cpu_info, pause_probe, probe
from real.serve.loadgen import iteration_rows, make_arrivals, request_rows, run_load, stall_rows
from real.serve.plans import PLANS
from real.serve.records import CsvFamilies, summarize
from real.serve.stalltrace import HostCounters, gc_tracked, host_state, run_host_rows, timed_full_collection
from real.telemetry import Telemetry, pynvml


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m real.serve", description="serving load campaign")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--plan", required=True, choices=sorted(PLANS))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu"])
    ap.add_argument("--budget-s", type=float, default=float("inf"),
                    help="no run starts once this many seconds have passed since start")
    ap.add_argument("--only", default="", help="comma list of run names (default: all)")
    ap.add_argument("--pin", default="none", choices=PIN_MODES,
                    help="CPU pinning of each rank's main thread, for runs that name none (default: none)")
    ap.add_argument("--timing", action="store_true",
                    help="record each iteration's host / GPU split and CPU ids (serve_iterations.csv)")
    ap.add_argument("--host-probe", action="store_true",
                    help="measure the host's speed right before and after each run (probe_* columns of serve_load.csv)")
    ap.add_argument("--pause-probe", type=float, default=0.0, metavar="SECONDS",
                    help="before each run's load, launch eager chains for this many seconds and record the host's "
                         "pauses (pause_* columns of serve_load.csv; real/serve/hostspeed.py pause_probe; 0: none)")
    ap.add_argument("--stall-trace", action="store_true",
                    help="record each iteration's host counters (serve_stalls.csv) and each run's host view "
                         "(serve_hostrun.csv); real/serve/stalltrace.py")
    ap.add_argument("--kernel-trace", action="store_true",
                    help="profile every iteration: kernels first launched, runtime calls (real/serve/coldtrace.py)")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.collect() and gc.freeze() right before each run's load (off: Python's GC as it comes)")
    args = ap.parse_args(argv)
    plan = PLANS[args.plan]
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {r.name for r in plan.runs}
    if unknown:
        ap.error(f"--only: unknown run(s) {sorted(unknown)}; plan {args.plan} has "
                 f"{[r.name for r in plan.runs]}")
    return args, plan, names


class RankRun(NamedTuple):
    """One rank's share of a run, as rank 0 gathers it."""

    requests: list          # request_rows
    iterations: list        # iteration_rows
    duration_s: float       # the load's wall time on this rank
    pin_cpus: str           # the CPUs its main thread was pinned to
    probes: dict            # host probes: "before" / "after" (probe), "pause" (pause_probe)
    stall_rows: list        # --stall-trace: per-iteration host counters (stall_rows)
    host_rows: list         # --stall-trace: the run's whole-host view (run_host_rows)


def _gather(obj, rank, group):
    if group is None:
        return [obj]
    out = [None] * dist.get_world_size(group) if rank == 0 else None
    dist.gather_object(obj, out, dst=0, group=group)
    return out


def _agree(flag: bool, group) -> bool:
    """Rank 0's decision, for every rank."""
    if group is None:
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def _clock_reasons(tel: Telemetry):
    """() -> NVML's current clocks event (throttle) reasons bitmask of the board, -1 if unreadable."""
    fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)

    def read() -> int:
        try:
            return int(fn(tel.handle))
        except Exception:  # NVMLError subclasses, or no such call
            return -1
    return read


def _cpu_text(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2 5' (ranges, space-separated: CSV- and ';'-safe)."""
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return " ".join(out)


def probe_columns(per_rank: list[dict]) -> dict:
    """A run's probe_* columns from each rank's {'before': probe, 'after': probe} (empty without
    --host-probe): per measure the slowest rank's before and after, and every rank's mean of the two
    (`probe_launch_ranks_s`, ';' between ranks)."""
    out = {}
    if not per_rank or not all(per_rank):
        return out
    for when in ("before", "after"):
        for k in PROBE_KEYS:
            out[f"probe_{when}_{k}"] = max(p[when][k] for p in per_rank)
    out["probe_launch_ranks_s"] = ";".join(f"{(p['before']['launch_s'] + p['after']['launch_s']) / 2:.4g}"
                                           for p in per_rank)
    return out


def pause_columns(per_rank: list[dict]) -> dict:
    """A run's pause_* columns from each rank's pause probe (empty without --pause-probe): the rank that paused
    most (under EP the lockstep waits for it)."""
    probes = [p for p in per_rank if p]
    return max(probes, key=lambda p: (p["pause_count"], p["pause_window_s"])) if probes else {}


def main(argv=None) -> int:
    t_start = time.perf_counter()
    module_loading = os.environ.get("CUDA_MODULE_LOADING", "default")   # before torch's CUDA init sets LAZY when unset
    args, plan, only = _args(argv)
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and args.device != "cpu"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    gpu_index = local_rank if use_cuda else None
    pin = lambda mode: apply_pin(mode, local_rank, local_world, gpu_index)  # noqa: E731
    pin(args.pin)  # before the process groups, whose threads inherit it
    ep_group = control = None
    if world > 1:
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        ep_group = dist.group.WORLD
        control = dist.new_group(backend="gloo")
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    tel = Telemetry(local_rank, cuda_pci_bus_id(dev) if use_cuda else None)
    env = environment(dev, tel)
    env["nccl_version"] = nccl_version() if use_cuda else ""
    env["pci_bus_id"] = cuda_pci_bus_id(dev) if use_cuda else ""
    env["nvml_pci_bus_id"] = ""
    if tel.available:
        try:
            env["nvml_pci_bus_id"] = str(pynvml.nvmlDeviceGetPciInfo(tel.handle).busId)  # the board read
        except Exception:
            pass
    env["host_cpus"] = {"allowed_at_start": _cpu_text(sorted(ALLOWED_AT_START)), "cpu_count": os.cpu_count(),
                        "gpu_local": _cpu_text(gpu_local_cpus(gpu_index)) if gpu_index is not None else "",
                        "pin_default": args.pin, "timing": args.timing, "host_probe": args.host_probe,
                        "stall_trace": args.stall_trace, "gc_freeze": args.gc_freeze,
                        "kernel_trace": args.kernel_trace,
                        "module_loading": module_loading, "gc_threshold": gc.get_threshold(),
                        **cpu_info()}
    dtype = getattr(torch, plan.dtype_gpu if use_cuda else plan.dtype_cpu)
    spec = get_spec(plan.model)
    cfg = EngineConfig(page_size=plan.page_size, num_pages=plan.num_pages,
                       token_budget=plan.token_budget, max_running=plan.max_running,
                       max_context=plan.max_context, cuda_graphs=True)
    torch.manual_seed(0)
    model = build_model(spec, dev, dtype, ep_group=ep_group, max_seq_len=plan.max_context)
    model.eval()
    engine = Engine(model, cfg)
    engine.timing = args.timing
    if args.timing and tel.available:
        engine.sm_clock = tel.sm_clock_mhz
        engine.clock_reasons = _clock_reasons(tel)
    t = time.perf_counter()
    num_graphs = engine.capture_graphs()
    if rank == 0:
        log(f"{plan.model} on {env['gpu_name']} x{world}: {num_graphs} decode graphs captured in "
            f"{time.perf_counter() - t:.1f} s")
    trace = None
    if args.kernel_trace:
        trace = KernelTrace(engine, use_cuda)
        trace.start()
    for run in plan.warmup:
        t = time.perf_counter()
        run_load(engine, make_arrivals(run, spec.vocab_size, rank, world), run.max_duration_s, control)
        if rank == 0:
            log(f"warm-up {run.name}: {len(engine.finished)} requests in {time.perf_counter() - t:.1f} s")

    settings = {
        "engine": "real.serve", "model": plan.model, "precision": BF16.label,
        "dtype": str(dtype).removeprefix("torch."), "num_gpus": world if use_cuda else 0,
        "ep_size": world, "attention_parallel": "dp", "page_size": cfg.page_size,
        "num_pages": cfg.num_pages, "token_budget": cfg.token_budget,
        "max_running": cfg.max_running, "max_context": cfg.max_context,
        "kv_bytes_per_token": engine.cache.bytes_per_token,
    }
    if engine.graphs is not None:
        settings["graph_batch_buckets"] = " ".join(map(str, engine.graphs.batch_buckets))
        settings["graph_page_buckets"] = " ".join(map(str, engine.graphs.page_buckets))
    records = CsvFamilies(out_dir) if rank == 0 else None
    done, failures = [], []
    graphs = engine.graphs
    for run in plan.runs:
        if only and run.name not in only:
            continue
        if not _agree(time.perf_counter() - t_start < args.budget_s, control):
            log(f"budget of {args.budget_s:.0f} s spent: {run.name} and the rest skipped")
            break
        engine.graphs = graphs if run.cuda_graphs else None
        if trace is not None:
            trace.phase, trace.run_id = "run", run.name
        pin_mode = run.pin or args.pin
        cpus = pin(pin_mode)
        if run.warm_shapes:
            t = time.perf_counter()
            n = engine.warm_shapes(run.warm_shapes)
            if rank == 0 and n:
                log(f"warmed {n} flat batch sizes (up to {run.warm_shapes} tokens) in {time.perf_counter() - t:.1f} s")
        probes, host_rows = {}, []
        try:
            with CoRunner(cpus if run.co_runner_nice is not None else [], run.co_runner_nice):
                if args.host_probe:
                    probes["before"] = probe(dev)
                if args.stall_trace and engine.counters is None:
                    engine.counters = HostCounters(dev)  # on the main thread: its counters
                if args.pause_probe > 0:
                    probes["pause"] = pause_probe(dev, args.pause_probe,
                                                  engine.counters.thread_now if args.stall_trace else None)
                if args.gc_freeze:
                    gc.collect()
                    gc.freeze()
                if args.stall_trace:
                    tracked, host_before = gc_tracked(), host_state()
                duration = run_load(engine, make_arrivals(run, spec.vocab_size, rank, world),
                                    run.max_duration_s, control)
                if args.stall_trace:
                    host_rows = run_host_rows(host_before, host_state(), run.name, rank, tracked)
                if args.host_probe:
                    probes["after"] = probe(dev)
        except Exception as e:  # one GPU: note it and go on; EP ranks would be out of step, so stop
            if world > 1:
                raise
            traceback.print_exc()
            failures.append(f"{run.name}: {type(e).__name__}: {e}")
            continue
        gathered = _gather((request_rows(engine, run.name, rank), iteration_rows(engine, run.name, rank),
                            duration, _cpu_text(cpus), probes, stall_rows(engine, run.name, rank), host_rows),
                           rank, control)
        if rank != 0:
            continue
        parts = [RankRun(*g) for g in gathered]   # plain tuples over the wire, named here
        reqs = [r for p in parts for r in p.requests]
        iters = [it for p in parts for it in p.iterations]
        summary = summarize(reqs, iters, max(p.duration_s for p in parts))
        row = {**{k: v for k, v in dataclasses.asdict(run).items()
                  if k not in ("name", "cuda_graphs", "input_len", "output_len")},
               "warm_shapes": engine.warmed_tokens,
               "pin": pin_mode, "pin_cpus": ";".join(p.pin_cpus for p in parts),
               "input_len_spec": run.input_len, "output_len_spec": run.output_len,
               **settings, "cuda_graphs": int(engine.graphs is not None), **summary,
               "run_id": run.name, **{k: env.get(k, "") for k in ENV_COLS},
               "nccl_version": env["nccl_version"], "gc_frozen": int(args.gc_freeze),
               "run_t0_monotonic_s": engine.t0 if args.stall_trace else "",
               "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # clocks read right after the run, as real/bench does
        row["sm_clock_mhz"], row["mem_clock_mhz"] = tel.sm_clock_mhz(), tel.mem_clock_mhz()
        row.update(cpu_info())
        row.update(probe_columns([{k: v for k, v in p.probes.items() if k != "pause"} for p in parts]))
        row.update(pause_columns([p.probes.get("pause", {}) for p in parts]))
        records.row("serve_load", row)
        for r in reqs:
            records.row("serve_requests", r)
        for it in iters:
            records.row("serve_iterations", it)
        for p in parts:
            for r in p.stall_rows:
                records.row("serve_stalls", r)
            for r in p.host_rows:
                records.row("serve_hostrun", r)
        records.flush()
        done.append(run.name)
        log(f"{run.name}: {summary['num_completed']}/{summary['num_requests']} requests, "
            f"{summary['output_tokens_per_s']:.0f} out tok/s, {summary['input_tokens_per_s']:.0f} in tok/s, "
            f"TTFT p50 {summary['ttft_p50_s'] * 1e3:.1f} ms, TPOT p50 {summary['tpot_p50_s'] * 1e3:.2f} ms, "
            f"{summary['num_iterations']} iterations in {summary['duration_s']:.2f} s")
    if trace is not None and rank == 0:
        t = time.perf_counter()
        krows, calls = trace.stop()
        fixed = {"model": plan.model, "module_loading": module_loading,
                 **{k: env.get(k, "") for k in ENV_COLS},
                 "sm_clock_mhz": tel.sm_clock_mhz(), "mem_clock_mhz": tel.mem_clock_mhz(),
                 "power_limit_w": env.get("power_limit_w", ""), "driver_version": env.get("driver_version", ""),
                 "nccl_version": env["nccl_version"], "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_trace(out_dir / "serve_kernels.csv", KERNEL_COLS, krows, fixed)
        write_trace(out_dir / "serve_apicalls.csv", CALL_COLS, calls, fixed)
        log(f"kernel trace: {len(krows)} ranges, {len(calls)} slow calls, parsed in {time.perf_counter() - t:.1f} s")
    if args.stall_trace:  # after the last run: what a full collection of this heap costs on this host
        env["gc_tracked_before_full"] = gc_tracked()
        env["gc_full_collect_s"] = timed_full_collection()
    if rank == 0:
        records.close()
        env.update(plan=dataclasses.asdict(plan), settings=settings, runs_done=done, failures=failures,
                   world_size=world, decode_graphs=num_graphs,
                   elapsed_s=time.perf_counter() - t_start)
        (out_dir / "env.json").write_text(json.dumps(env, indent=2, default=str))
    if world > 1:
        dist.barrier(group=control)
        dist.destroy_process_group()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
