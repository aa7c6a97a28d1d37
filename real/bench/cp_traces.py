"""Section cp_traces (s13cp, issue 14): where the CP2 blocks of real/cp.py spend their time, rank
by rank, traced under torchrun (W >= 2 ranks, one GPU each).

For every CP configuration of parallel_blocks' cp_blocks section (`cp_cases`, `cp_mla_cases`:
attention and MLA sublayer blocks, all-gather and ring, fitting and held-out sizes; the fitting
ones first, so a run cut short keeps those), built exactly as that section builds them:
  1. WARMUP repetitions, then MARK_REPS repetitions timed as time_reps times the CP rows (CUDA
     events around each repetition on the compute stream, the host clock around its issue, the
     device synchronised after each and the CommTimer's spans read: comm_detail), with
     host-only marks (perf_counter_ns, `CommTimer.host_marks`) at every P2P post
     (batch_isend_irecv), every P2P wait and every collective call, entry and exit, and the
     repetition's host start and return; no sync inside a repetition;
  2. PROFILED_REPS repetitions the same way under torch.profiler (CPU + CUDA), each inside a host
     range `cp_rep`: every GPU activity (kernel, memcpy, memset) with its stream, start and end,
     the runtime call that launched it (time and thread) and the CPU op that call ran in, and each
     cudaStreamWaitEvent call (a stream made to wait on another: NCCL's work and its waits); the
     same host marks, placed on the profiler's axis by the repetition's host start.
Times are microseconds from the repetition's host start (the host clock just before the call;
the profiler's axis is shifted so that `cp_rep` starts where the host clock said), per rank.

Writes, per rank r (rank 0 also the usual env.json): cp_trace_kernels_rank<r>.csv (the campaign
gzips it), cp_trace_marks_rank<r>.csv, cp_trace_reps_rank<r>.csv (each repetition's device and
host seconds, and its host start on perf_counter_ns, CLOCK_MONOTONIC: one axis for the ranks of
one host, so the ranks' marks can be set side by side). Every row carries the case (bench, block, model, cp, cp_kind, seq_len, num_heads,
split: parallel_blocks' block_split) and the environment. Rows are flushed case by case.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from real.bench.device import free_memory
from real.bench.nccl import agreed_over, distributed_env, log
from real.bench.parallel_blocks import (_cp_attention_fn, _cp_mla_fn, block_split, cp_cases, cp_mla_cases,
                                       CP_KIND_ORDER)
from real.bench.records import DIST_ENV_COLS, ENV_COLS
from real.bench.torch_cp import kernel_category
from real.collectives import CommTimer
from real.configs import get_spec
from real.sync import synchronize

WARMUP, MARK_REPS, PROFILED_REPS = 2, 3, 2
REP_RANGE = "cp_rep"
CASE_COLS = ["bench", "block", "model", "cp", "cp_kind", "seq_len", "num_heads", "qk_head_dim", "v_head_dim",
             "split"]
KERNEL_COLS = [*CASE_COLS, "rank", "rep", "event", "name", "category", "stream", "start_us", "end_us",
               "launch_us", "launch_end_us", "launch_tid", "op", *ENV_COLS, *DIST_ENV_COLS]
MARK_COLS = [*CASE_COLS, "rank", "rep", "profiled", "kind", "phase", "t_us", "tid", *ENV_COLS, *DIST_ENV_COLS]
REP_COLS = [*CASE_COLS, "rank", "rep", "profiled", "device_s", "host_s", "host_start_ns", "main_tid", "comm_detail",
            *ENV_COLS, *DIST_ENV_COLS]
WAIT_CALLS = ("cudaStreamWaitEvent",)


class _Csv:
    """DIR/<name>.csv with a fixed header, the environment filled in, one flush per batch."""

    def __init__(self, path: Path, cols: list[str], env: dict):
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=cols, extrasaction="raise")
        self.w.writeheader()
        self.env = {k: env.get(k, "") for k in cols if k in ENV_COLS + DIST_ENV_COLS}

    def rows(self, rows: list[dict]) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for r in rows:
            out = dict(self.env, timestamp_utc=stamp, **r)
            self.w.writerow({k: (f"{v:.9g}" if isinstance(v, float) and not math.isnan(v) else
                                 "" if isinstance(v, float) else v) for k, v in out.items()})
        self.f.flush()

    def close(self):
        self.f.close()


def trace_cases(quick: bool) -> list[tuple[str, str, int, int]]:
    """(block, model, heads, seq_len) of every CP configuration of the cp_blocks section, the
    fitting ones first (attention before MLA, the section's order), then the held-out ones."""
    spec_heads = {m: get_spec(m).num_heads for m, _ in cp_mla_cases(quick)}
    cases = [("attention", m, h, s) for m, h, s in cp_cases(quick)]
    cases += [("mla", m, spec_heads[m], s) for m, s in cp_mla_cases(quick)]
    fit = [c for c in cases if block_split("cp_block", c[0], c[1], c[3]) == "fit"]
    return fit + [c for c in cases if c not in fit]


# ---------------------------------------------------------------------------------------------
# The profiler's Chrome trace -> activity rows (pure functions of the trace JSON)
# ---------------------------------------------------------------------------------------------


def rep_ranges(events: list[dict]) -> list[tuple[float, float]]:
    """(start_us, end_us) of each `cp_rep` host range, in time order."""
    return sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
                  if e.get("ph") == "X" and e.get("name") == REP_RANGE and e.get("cat") == "user_annotation")


def _innermost_ops(events: list[dict]) -> dict:
    """{External id: CPU op name} of the trace's cpu_op events (the op a runtime call ran in)."""
    return {e["args"]["External id"]: e["name"] for e in events
            if e.get("cat") == "cpu_op" and "External id" in e.get("args", {})}


def activity_rows(trace: dict) -> list[dict]:
    """Every GPU activity of the profiled repetitions and each stream-wait call, one dict each:
    rep (index of the `cp_rep` range its launch fell in), event (kernel | memcpy | memset |
    wait_event), name, category (real/bench/torch_cp.kernel_category; memcpy/memset/wait_event
    for those), stream, start_us / end_us (the activity; NaN for a wait call), launch_us /
    launch_end_us (the runtime call), launch_tid, op (the CPU op the runtime call ran in), the
    times from the start of its repetition's range. Activities launched outside every range are
    left out."""
    events = trace.get("traceEvents", [])
    reps = rep_ranges(events)
    ops = _innermost_ops(events)
    runtime = {}
    rows = []

    def rep_of(ts: float) -> int:
        for i, (a, b) in enumerate(reps):
            if a <= ts <= b:
                return i
        return -1

    for e in events:
        if e.get("cat") not in ("cuda_runtime", "cuda_driver") or e.get("ph") != "X":
            continue
        args = e.get("args", {})
        if "correlation" in args:
            runtime[args["correlation"]] = e
        if e.get("name") in WAIT_CALLS:
            t = float(e["ts"])
            i = rep_of(t)
            if i >= 0:
                rows.append(dict(rep=i, event="wait_event", name=e["name"], category="wait_event", stream="",
                                 start_us=math.nan, end_us=math.nan, launch_us=t - reps[i][0],
                                 launch_end_us=t + float(e.get("dur", 0.0)) - reps[i][0], launch_tid=e.get("tid", ""),
                                 op=ops.get(args.get("External id"), "")))
    for e in events:
        cat = e.get("cat")
        if cat not in ("kernel", "gpu_memcpy", "gpu_memset") or e.get("ph") != "X":
            continue
        args = e.get("args", {})
        call = runtime.get(args.get("correlation"))
        if call is None:
            continue
        t_launch = float(call["ts"])
        i = rep_of(t_launch)
        if i < 0:
            continue
        t0 = reps[i][0]
        kind = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}[cat]
        start = float(e["ts"])
        rows.append(dict(rep=i, event=kind, name=str(e.get("name", ""))[:200],
                         category=kernel_category(e.get("name", "")) if kind == "kernel" else kind,
                         stream=args.get("stream", e.get("tid", "")), start_us=start - t0,
                         end_us=start + float(e.get("dur", 0.0)) - t0, launch_us=t_launch - t0,
                         launch_end_us=t_launch + float(call.get("dur", 0.0)) - t0, launch_tid=call.get("tid", ""),
                         op=ops.get(args.get("External id"), ops.get(call.get("args", {}).get("External id"), ""))))
    return rows


def mark_rows(marks: list[tuple], rep_start_ns: list[int]) -> list[dict]:
    """Host marks (kind, phase, perf_counter_ns, tid) as rows with their repetition (the last
    repetition started at or before the mark) and t_us from that repetition's host start."""
    out = []
    for kind, phase, ns, tid in marks:
        i = max((j for j, s in enumerate(rep_start_ns) if s <= ns), default=-1)
        if i >= 0:
            out.append(dict(rep=i, kind=kind, phase=phase, t_us=(ns - rep_start_ns[i]) * 1e-3, tid=tid))
    return out


# ---------------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------------


def _reps(step, dev, n: int, comm: CommTimer, profiled: bool) -> tuple[list[int], list[float], list, list[dict]]:
    """n repetitions of step(), as time_reps issues them for the CP rows (CUDA events around each
    on the compute stream; the device synchronised after each, where time_reps reads the
    CommTimer's spans; none inside a repetition): (host start ns, host seconds, event pairs, the
    CommTimer's seconds by kind per repetition); marks into comm.host_marks; inside a `cp_rep`
    host range each when profiled."""
    starts, hosts, events, comms = [], [], [], []
    for _ in range(n):
        comm.reset()
        s = e = None
        if dev.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
        t0 = time.perf_counter_ns()
        starts.append(t0)
        comm.mark("rep", "start")
        if profiled:
            with torch.profiler.record_function(REP_RANGE):
                step()
        else:
            step()
        comm.mark("rep", "host_end")
        hosts.append((time.perf_counter_ns() - t0) * 1e-9)
        if e is not None:
            e.record()
            torch.cuda.synchronize(dev)
        events.append((s, e, t0))
        comms.append(comm.totals_s())
    return starts, hosts, events, comms


def _device_s(events) -> list[float]:
    """Seconds between each repetition's CUDA events (NaN off a GPU; after a sync)."""
    return [s.elapsed_time(e) * 1e-3 if s is not None else math.nan for s, e, _ in events]


def _profile(step, dev, comm: CommTimer):
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        starts, hosts, events, comms = _reps(step, dev, PROFILED_REPS, comm, True)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "trace.json")
        prof.export_chrome_trace(p)
        with open(p) as f:
            trace = json.load(f)
    return trace, starts, hosts, events, comms


def _rep_rows(profiled: int, dev_s, hosts, starts, comms, tid) -> list[dict]:
    return [dict(rep=i, profiled=profiled, device_s=d, host_s=h, host_start_ns=t0, main_tid=tid,
                 comm_detail=json.dumps({k: float(f"{v:.6g}") for k, v in sorted(c.items())}))
            for i, (d, h, t0, c) in enumerate(zip(dev_s, hosts, starts, comms))]


def trace_case(block: str, model: str, H: int, S: int, kind: str, group, dev, rank: int, world: int) -> dict:
    """One CP configuration on this rank: {"reps": rows, "marks": rows, "kernels": rows}."""
    spec = get_spec(model)
    marks: list = []
    comm = CommTimer(dev, host_marks=marks)
    if block == "attention":
        E, Ev = spec.qk_nope_head_dim + spec.qk_rope_head_dim, spec.v_head_dim
        step, _ = _cp_attention_fn(kind, H, S, E, Ev, 1 / math.sqrt(E), group, dev, rank, world, comm)
        holder = None
    else:
        step, holder = _cp_mla_fn(spec, group, S, dev, rank, world, kind)
        holder.comm = comm
    for _ in range(WARMUP):
        step()
    synchronize(dev)
    dist.barrier(group=group)
    marks.clear()
    starts, hosts, events, comms = _reps(step, dev, MARK_REPS, comm, False)
    tid = threading.get_native_id()
    reps = _rep_rows(0, _device_s(events), hosts, starts, comms, tid)
    mrows = [dict(m, profiled=0) for m in mark_rows(marks, starts)]
    dist.barrier(group=group)
    marks.clear()
    trace, pstarts, phosts, pevents, pcomms = _profile(step, dev, comm)
    reps += _rep_rows(1, _device_s(pevents), phosts, pstarts, pcomms, tid)
    mrows += [dict(m, profiled=1) for m in mark_rows(marks, pstarts)]
    kernels = activity_rows(trace)
    del step, holder, trace
    free_memory()
    return {"reps": reps, "marks": mrows, "kernels": kernels}


def bench_cp_traces(rec, timer, dev, deadline, quick, env):
    """Section cp_traces (torchrun, W >= 2 ranks): every CP configuration of cp_blocks, both kinds,
    timed with host marks and profiled (module docstring); per-rank CSVs into
    REAL_BENCH_CP_TRACE_DIR (the campaign's part folder; else ./cp_traces); stops at the deadline."""
    group, world, rank = dist.group.WORLD, dist.get_world_size(), dist.get_rank()
    distributed_env(env, dev)
    out = Path(os.environ.get("REAL_BENCH_CP_TRACE_DIR", "cp_traces"))
    out.mkdir(parents=True, exist_ok=True)
    files = {name: _Csv(out / f"cp_trace_{name}_rank{rank}.csv", cols, env)
             for name, cols in (("kernels", KERNEL_COLS), ("marks", MARK_COLS), ("reps", REP_COLS))}
    try:
        for block, model, H, S in trace_cases(quick):
            spec = get_spec(model)
            for kind in CP_KIND_ORDER:
                if agreed_over(deadline, dev):
                    log("cp_traces: deadline reached")
                    return
                t0 = time.perf_counter()
                res = trace_case(block, model, H, S, kind, group, dev, rank, world)
                case = dict(bench="cp_block", block=block, model=model, cp=world, cp_kind=kind, seq_len=S,
                            num_heads=H, qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim,
                            v_head_dim=spec.v_head_dim, split=block_split("cp_block", block, model, S), rank=rank,
                            sm_clock_mhz=timer.tel.sm_clock_mhz(), mem_clock_mhz=timer.tel.mem_clock_mhz())
                for name, rows in res.items():
                    files[name].rows([dict(case, **r) for r in rows])
                dev_ms = [r["device_s"] * 1e3 for r in res["reps"]]
                log(f"cp_traces {block} {model} S={S} cp{world} {kind}: reps {', '.join(f'{d:.2f}' for d in dev_ms)} ms, "
                    f"{len(res['kernels'])} activities, {len(res['marks'])} marks ({time.perf_counter() - t0:.1f} s)")
                dist.barrier(group=group)
    finally:
        for f in files.values():
            f.close()
