"""Section train_trace (session s33train, issue 13): torch.profiler kernel traces of whole training steps, the steps
bench_train times (real.train.train_step: AdamW over FP32 masters, the balancing-bias update, the loss read back),
so that a step's time can be placed among its kernels, their categories and the gaps between them.

Per case (REAL_BENCH_TRAIN_TRACE_CASES "model:seq_len:b1,b2:precision;..."; precision bf16 | fp8 (the device's FP8
label) | all), after WARMUP steps:
  timed      REPS steps timed as bench_train times them (CUDA events around each step; the step ends in loss.item())
             -> train_trace_steps.csv rows mode=timed (time_s the median; the statistics columns)
  cuda_only  PROFILED steps under torch.profiler with the CUDA activity only (no CPU-op tracing: the host runs as in
             the timed steps); every kernel / memcpy / memset -> train_kernels.csv (mode cuda_only, phase blank), and
             per step a train_trace_steps.csv row: the step's event time, its GPU span (first kernel start to last end),
             kernel sum, busy union, gap (span - busy), kernel count
  with_host  PROFILED steps with CPU and CUDA activities and record_function ranges per phase (fwd: zero_grad + loss,
             bwd: backward, opt: the AdamW step, tail: the bias update and the loss read back): every kernel with its
             phase (of its launch) and its launch's host time -> train_kernels.csv (mode with_host), and per step a
             row as above (the CPU-op tracing slows the host: these steps' gaps are an upper bound)
Kernel times are in us from the step's first kernel start (start_us / end_us), launch_us from the step's host start.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from real.bench.device import free_memory, precisions_to_bench
from real.bench.kernel_names import kernel_category
from real.bench.records import log
from real.configs import get_spec
from real.model import build_model
from real.train import MasterAdamW

CASES_ENV = "REAL_BENCH_TRAIN_TRACE_CASES"
DEFAULT_CASES = "olmoe-slice:3072:1,2:bf16;llama3-8b-slice:2048:3:bf16;olmoe-slice:3072:1:fp8"
QUICK_CASES = "tiny:32:2:all"
WARMUP, REPS, PROFILED = 3, 5, 2
PHASES = ("fwd", "bwd", "opt", "tail")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def parse_cases(text: str) -> list[tuple[str, int, list[int], str]]:
    """"model:seq_len:b1,b2:precision;..." -> [(model, seq_len, [b1, b2], precision)]; precision bf16 | fp8 | all."""
    cases = []
    for item in filter(None, (x.strip() for x in text.split(";"))):
        name, seq_len, batches, prec = item.split(":")
        if prec not in ("bf16", "fp8", "all"):
            raise SystemExit(f"{CASES_ENV}: precision {prec!r} in {item!r}; allowed: bf16, fp8, all")
        cases.append((name, int(seq_len), [int(b) for b in batches.split(",")], prec))
    return cases


def _precisions(env: dict, which: str):
    return [p for p in precisions_to_bench(env) if which == "all" or p.label.startswith(which)]


def phased_step(model, opt, tokens, targets, precision, bias_update_rate: float = 1e-3) -> float:
    """real.train.train_step's body (the same calls in the same order; no group) with a record_function range a
    phase."""
    with record_function("fwd"):
        opt.zero_grad()
        loss = model.loss(tokens, targets, precision)
    with record_function("bwd"):
        loss.backward()
    with record_function("opt"):
        opt.step()
    with record_function("tail"):
        for moe in model.moe_layers():
            moe.gate.update_bias(bias_update_rate, None)
        return loss.item()


def _events(prof) -> list[dict]:
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            return json.load(f).get("traceEvents", [])
    finally:
        Path(path).unlink(missing_ok=True)


def _union_us(spans: list[tuple[float, float]]) -> float:
    busy, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    return busy


def step_kernels(events: list[dict], with_host: bool, on_gpu: bool = True) -> list[dict]:
    """One profiled step's GPU activities (the profile held that step alone): [{name, kind, category, stream, phase,
    start_us, end_us, launch_us}], kernel times from the step's first kernel start, launch_us (the launching runtime
    call's host time; blank where the trace has none) from the first launch. Phase: the record_function range (PHASES)
    the launch fell in (with_host). Off a GPU (a dry run) the top-level aten ops stand in for kernels."""
    phases = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)), e["name"]) for e in events
                    if e.get("ph") == "X" and e.get("cat") == "user_annotation" and e.get("name") in PHASES)
    launch = {e["args"]["correlation"]: float(e["ts"]) for e in events
              if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    if on_gpu:
        gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATS]
    else:
        ops = [e for e in events if e.get("ph") == "X" and e.get("cat") == "cpu_op"]
        gpu, end = [], float("-inf")
        for e in sorted(ops, key=lambda e: float(e["ts"])):
            if float(e["ts"]) >= end:
                gpu.append({**e, "cat": "kernel"})
                end = float(e["ts"]) + float(e.get("dur", 0.0))
    gpu.sort(key=lambda e: float(e["ts"]))
    if not gpu:
        return []
    k0 = float(gpu[0]["ts"])
    launches = [launch[c] for c in (e.get("args", {}).get("correlation") for e in gpu) if c in launch]
    l0 = min(launches) if launches else None
    out = []
    for e in gpu:
        t_launch = launch.get(e.get("args", {}).get("correlation")) if on_gpu else float(e["ts"])
        if t_launch is None and not on_gpu:
            t_launch = float(e["ts"])
        phase = next((n for a, b, n in phases if t_launch is not None and a <= t_launch <= b), "") if with_host else ""
        t0 = float(e["ts"])
        out.append({"name": e["name"], "kind": e["cat"],
                    "category": kernel_category(e["name"]) if e["cat"] == "kernel" else e["cat"].replace("gpu_", ""),
                    "stream": e.get("args", {}).get("stream", e.get("tid")), "phase": phase,
                    "start_us": t0 - k0, "end_us": t0 - k0 + float(e.get("dur", 0.0)),
                    "launch_us": "" if t_launch is None else t_launch - (l0 if l0 is not None else float(gpu[0]["ts"]))})
    return out


def _profiled(fn, dev, with_host: bool, n: int) -> tuple[list[list[dict]], list[float]]:
    """n steps, each in its own profile (so a step's activities are the profile's): CUDA only, or CPU + CUDA."""
    on_gpu = dev.type == "cuda"
    acts = ([ProfilerActivity.CPU, ProfilerActivity.CUDA] if with_host else [ProfilerActivity.CUDA]) if on_gpu \
        else [ProfilerActivity.CPU]
    per_step, times = [], []
    for _ in range(n):
        with profile(activities=acts) as prof:
            times.append(_timed_once(fn, dev))
        per_step.append(step_kernels(_events(prof), with_host or not on_gpu, on_gpu))
    return per_step, times


def _timed_once(fn, dev) -> float:
    if dev.type == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e-3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _us(v) -> str:
    """A time in us to 1 ns (records' floats keep 6 significant digits: 1 us at a 120 ms step)."""
    return "" if v == "" else f"{float(v):.3f}"


def step_summary(ks: list[dict]) -> dict:
    """A step's GPU timeline: span, kernel sum, busy union (all streams), gap = span - busy, counts (seconds)."""
    if not ks:
        return {"gpu_span_s": 0.0, "kernel_sum_s": 0.0, "busy_s": 0.0, "gap_s": 0.0, "kernels": 0}
    span = max(k["end_us"] for k in ks) - min(k["start_us"] for k in ks)
    busy = _union_us([(k["start_us"], k["end_us"]) for k in ks])
    return {"gpu_span_s": span * 1e-6, "kernel_sum_s": sum(k["end_us"] - k["start_us"] for k in ks) * 1e-6,
            "busy_s": busy * 1e-6, "gap_s": (span - busy) * 1e-6, "kernels": len(ks)}


def bench_train_trace(rec, timer, dev, deadline, quick, env):
    text = os.environ.get(CASES_ENV, "") or (QUICK_CASES if quick else DEFAULT_CASES)
    if dev.type == "cuda" and "nccl_version" not in env:   # every row carries it (records.HOST_ENV_COLS)
        try:
            v = torch.cuda.nccl.version()
            env["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as e:   # a build without NCCL: say so in the column
            env["nccl_version"] = f"unavailable: {type(e).__name__}"
    warmup, reps, profiled = (1, 2, 1) if quick else (WARMUP, REPS, PROFILED)
    for name, S, batches, which in parse_cases(text):
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=S)
        opt = MasterAdamW(model.parameters())
        for B in batches:
            for prec in _precisions(env, which):
                if deadline.over():
                    break
                key = {"model": name, "batch": B, "seq_len": S, "precision": prec.label}
                tokens = torch.randint(0, spec.vocab_size, (B, S), device=dev)
                targets = torch.roll(tokens, -1, 1)

                def fn(model=model, opt=opt, tokens=tokens, targets=targets, prec=prec):
                    phased_step(model, opt, tokens, targets, prec)

                try:
                    for _ in range(warmup):
                        fn()
                    times = sorted(_timed_once(fn, dev) for _ in range(reps))
                    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else times * 9
                    clocks = {"sm_clock_mhz": timer.tel.sm_clock_mhz(), "mem_clock_mhz": timer.tel.mem_clock_mhz()}
                    rec.row("train_trace_steps", **key, **clocks, mode="timed", step="", kernels="", gpu_span_s="",
                            kernel_sum_s="", busy_s="", gap_s="", time_s=statistics.median(times),
                            time_p10_s=q[0], time_p90_s=q[-1], reps=reps, timing="per_rep_events")
                    for mode in ("cuda_only", "with_host"):
                        per_step, step_times = _profiled(fn, dev, mode == "with_host", profiled)
                        for i, (ks, t) in enumerate(zip(per_step, step_times)):
                            rec.row("train_trace_steps", **key, **clocks, mode=mode, step=i, **step_summary(ks), time_s=t,
                                    time_p10_s=t, time_p90_s=t, reps=1, timing="profiled_events")
                            for j, k in enumerate(ks):
                                rec.row("train_kernels", **key, **clocks, mode=mode, step=i, index=j, kernel=k["name"],
                                        kind=k["kind"], category=k["category"], stream=k["stream"], phase=k["phase"],
                                        start_us=_us(k["start_us"]), end_us=_us(k["end_us"]),
                                        launch_us=_us(k["launch_us"]))
                        log(f"train_trace {name} B={B} S={S} {prec.label} {mode}: step {step_times[0] * 1e3:.2f} ms, "
                            f"{len(per_step[0]) if per_step else 0} GPU activities")
                    log(f"train_trace {name} B={B} S={S} {prec.label}: timed {statistics.median(times) * 1e3:.2f} ms")
                except torch.OutOfMemoryError:
                    log(f"train_trace {name} B={B} {prec.label}: out of memory")
                    opt.zero_grad()
                    free_memory()
        del model, opt
        free_memory()
