"""Section host_steps (session s21host2, issue 13): every timed step beside its own host probe.

Why: s21host took one 40 ms launch probe right before each ~0.1 s record and found that it carries the
host's level but not the moment: within one process the probe moved 7-17 us a launch, the fitting rows'
host time per kernel 12-50 us, and a decode record's steps spread p90/p10 1.3-3.4x. Here a short fixed
probe (real/serve/hostspeed.py launch_probe over STEP_PROBE_WINDOW_S, a few ms) runs right before each
timed step, so every step has the host level of its own moment.

In order, one process:
  1. the host calibration: the fitting split's layer cases of host_dispatch (real/bench/host_dispatch.py
     fit_layer_cases), phase `infer`, each precision; a probe right before EACH timed repetition
     (host_dispatch.csv rows, split fit; serve_steps.csv rows bench host_dispatch, one per repetition:
     its host seconds, event seconds and probe);
  2. the serve rows (REAL_BENCH_SERVE_CASES, as real/bench/whole_model.py bench_serve): each prefill and
     decode record's timed steps alternate control, probed, control, probed, ...: the device idle before
     each step (synchronised), a probe right before each probed step only; every step is one
     serve_steps.csv row (its event seconds, host seconds of the call, probe, block). The model.csv row
     is the PROBED steps' statistics (time_s their median); the control steps (same moments, no probe)
     tell whether the probe changes the step. After a decode record, one more step under the torch
     profiler and one under an aten-op count (serve_kernels.csv, and each kernel's calls in
     step_kernels.csv): the kernels a cached decode step launches (the twin's decode op list is checked
     against them).
"""

from __future__ import annotations

import functools
import math
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

from real.bench import host_dispatch as hd
from real.bench.device import free_memory, precisions_to_bench
from real.bench.records import log
from real.bench.whole_model import _weight_bytes, decode_flops, parse_serve_cases
from real.configs import get_spec
from real.infer import decode_step, prefill
from real.model import build_model
from real.serve.hostspeed import launch_probe
from real.sync import synchronize
from twin.costs.flops import forward_flops_per_token, kv_cache_bytes_per_token

STEP_PROBE_WINDOW_S = 0.003   # each step's probe: ~5 chains of 64 launches at 10 us (a few ms)
PREFILL_STEPS = 12            # timed prefills a record: 6 control, 6 probed
DECODE_WARMUP = 3             # untimed decode steps first (as bench_serve's Timer)
DECODE_TAIL = 2               # after the timed steps: one profiled step, one aten-op count
# REAL_BENCH_BACK_TO_BACK_STEPS (s21host2b, a diagnostic): after a decode record's tail, this many more steps
# issued back to back as bench_serve's Timer issues them (no synchronisation between steps, no probe; events
# around each), block `back_to_back`: does synchronising before every step change a host-bound step's time?
BACK_TO_BACK_ENV = "REAL_BENCH_BACK_TO_BACK_STEPS"
# REAL_BENCH_STEP_AFTER_PROBE=1 (s25host2, docs/notes/s25host2_rule.md): the same launch probe also right AFTER every
# timed step (control and probed) and every fitting repetition, the device synchronised first, so each is bracketed by
# the host's state before and after it (table step_after, keyed as serve_steps); the steps themselves are unchanged
AFTER_PROBE_ENV = "REAL_BENCH_STEP_AFTER_PROBE"


def after_probes_on() -> bool:
    return os.environ.get(AFTER_PROBE_ENV, "0") == "1"
STEP_ROW_BLANK = {"bench": "", "model": "", "batch": "", "prompt_len": "", "gen_len": "", "config": "",
                  "phase": "", "precision": "", "cache_len": ""}


def probed(i: int) -> bool:
    """Steps alternate control (even) and probed (odd), so both blocks sample the same moments."""
    return i % 2 == 1


def timed_call(fn, dev) -> tuple[float, float]:
    """(event seconds, host seconds) of fn() started on an idle device: CUDA events around the call on a
    GPU (the host clock on the CPU), the host's own time of the call beside it."""
    synchronize(dev)
    if dev.type == "cuda":
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
    t0 = time.perf_counter()
    fn()
    host_s = time.perf_counter() - t0
    if dev.type == "cuda":
        e1.record()
        synchronize(dev)
        return e0.elapsed_time(e1) * 1e-3, host_s
    synchronize(dev)
    return time.perf_counter() - t0, host_s


def run_steps(fn, dev, n: int, window_s: float, step_probe=lambda i: True, after: bool = False) -> list[dict]:
    """n timed calls of fn, each with (where step_probe(i)) the launch probe right before it and (`after`) one right
    after it: [{step, block, probe_s, step_s, host_s[, host_probe_after_s]}]."""
    out = []
    for i in range(n):
        synchronize(dev)
        with_probe = step_probe(i)
        probe_s = launch_probe(dev, window_s)[0] if with_probe else math.nan
        step_s, host_s = timed_call(fn, dev)
        out.append({"step": i, "block": "probed" if with_probe else "control", "host_probe_launch_s": probe_s,
                    "step_s": step_s, "host_s": host_s})
        if after:
            out[-1]["host_probe_after_s"] = launch_probe(dev, window_s)[0]   # timed_call left the device idle
    return out


def back_to_back_steps(fn, dev, n: int, first: int) -> list[dict]:
    """n calls of fn issued back to back (no synchronisation between them), each timed by events around it (the
    host clock on the CPU): [{step, block back_to_back, step_s, host_s}], steps numbered from `first`."""
    synchronize(dev)
    handles, hosts = [], []
    for _ in range(n):
        if dev.type == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
        t0 = time.perf_counter()
        fn()
        hosts.append(time.perf_counter() - t0)
        if dev.type == "cuda":
            e1.record()
            handles.append((e0, e1))
    synchronize(dev)
    times = [e0.elapsed_time(e1) * 1e-3 for e0, e1 in handles] if dev.type == "cuda" else hosts
    return [{"step": first + i, "block": "back_to_back", "host_probe_launch_s": math.nan, "step_s": t, "host_s": h}
            for i, (t, h) in enumerate(zip(times, hosts))]


def write_steps(rec, steps: list[dict], window_s: float, **key) -> None:
    """One serve_steps row per step: the record's key (`key`), the step's own cache length where it has one; a step
    probed after it too (REAL_BENCH_STEP_AFTER_PROBE) also gets its step_after row."""
    for s in steps:
        row = {**STEP_ROW_BLANK, **key}
        row["cache_len"] = s.get("cache_len", row["cache_len"])
        rec.row("serve_steps", **row, step=s["step"], block=s["block"], probe_window_s=window_s,
                host_probe_launch_s=s["host_probe_launch_s"], step_s=s["step_s"], host_s=s["host_s"])
        if "host_probe_after_s" in s:
            rec.row("step_after", **{k: row[k] for k in ("bench", "model", "batch", "prompt_len", "gen_len", "config",
                                                         "phase", "precision")},
                    step=s["step"], block=s["block"], probe_window_s=window_s, host_probe_after_s=s["host_probe_after_s"])


def probed_stats(timer, steps: list[dict], flops: float, bytes_: float) -> dict:
    """The model.csv statistics of the probed steps (time_s: their median)."""
    times = sorted(s["step_s"] for s in steps if s["block"] == "probed")
    return timer._stats(times, len(times), 0.0, math.nan, math.nan, flops, bytes_,
                        "per_step_events" if timer.device.type == "cuda" else "host_clock")


def decode_kernels(step, dev) -> tuple[float, dict, int]:
    """One decode step under the torch profiler (kernels launched, each kernel's calls; 0 on the CPU),
    then one under the aten-op count (non-view aten ops: what launches on a GPU)."""
    per_kernel = {}
    if dev.type == "cuda":
        synchronize(dev)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            synchronize(dev)
        for e in prof.events():
            if e.device_type.name == "CUDA" and not hd.ANNOTATION.fullmatch(e.name):
                n, t = per_kernel.get(e.name, (0, 0.0))
                per_kernel[e.name] = (n + 1, t + e.device_time * 1e-6)
    else:
        step()
    counter = hd._CountOps()
    with counter:
        step()
    synchronize(dev)
    return float(sum(n for n, _ in per_kernel.values())), per_kernel, counter.n - counter.views


def bench_serve_steps(rec, timer, dev, deadline, quick, cases) -> None:
    window = STEP_PROBE_WINDOW_S
    extra = int(os.environ.get(BACK_TO_BACK_ENV, "0") or 0)
    after = after_probes_on()
    for name, P, G, prefill_batches, decode_batches in cases:
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G + extra)
        model.eval()
        fwd_tok = forward_flops_per_token(spec, P)
        for B in prefill_batches:
            if deadline.over():
                break
            prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
            caches = model.new_caches(B, P + G)
            for _ in range(2):   # warm-up
                prefill(model, prompt, caches)
            key = dict(bench="prefill", model=name, batch=B, prompt_len=P, gen_len=0, precision="bf16")
            steps = run_steps(lambda: prefill(model, prompt, caches), dev, 4 if quick else PREFILL_STEPS, window, probed, after)
            write_steps(rec, steps, window, **key, cache_len=0)
            r = probed_stats(timer, steps, fwd_tok * B * P, math.nan)
            rec.row("model", **key, seq_len="", tokens_per_s=B * P / r["time_s"], mfu="", peak_memory_bytes="",
                    loss="", **r)
            del caches
        for B in decode_batches:
            if deadline.over():
                break
            prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
            caches = model.new_caches(B, P + G + extra)
            token = prefill(model, prompt, caches, max_batch=16)
            pos = [P]

            def step():
                nonlocal token
                token = decode_step(model, token, caches, pos[0])
                pos[0] += 1

            for _ in range(DECODE_WARMUP):
                step()
            n = G - 1 - DECODE_WARMUP - DECODE_TAIL   # decode positions P .. P+G-2 (the cache holds P+G)
            first_len = pos[0] + 1
            steps = run_steps(step, dev, n, window, probed, after)
            for s in steps:
                s["cache_len"] = first_len + s["step"]   # cache positions attended, the new token's included
            key = dict(bench="decode", model=name, batch=B, prompt_len=P, gen_len=G, precision="bf16")
            write_steps(rec, steps, window, **key)
            L = P + G / 2
            r = probed_stats(timer, steps, decode_flops(spec, B, L),
                             kv_cache_bytes_per_token(spec) * B * L + _weight_bytes(spec, B))
            rec.row("model", **key, seq_len="", tokens_per_s=B / r["time_s"], mfu="", peak_memory_bytes="",
                    loss="", **r)
            kernels, per_kernel, aten_ops = decode_kernels(step, dev)
            if extra:
                more = back_to_back_steps(step, dev, extra, n)
                for s in more:
                    s["cache_len"] = first_len + DECODE_TAIL + s["step"]
                write_steps(rec, more, window, **key)
            rec.row("serve_kernels", **key, kernels=kernels, aten_ops=aten_ops, cache_len=pos[0])
            for kname, (calls, t) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
                rec.row("step_kernels", bench="step_kernels", config=f"s21host2 {name} b{B} p{P} decode",
                        precision="bf16", profiled="step", kernel=kname if len(kname) <= 240 else kname[:120] + "..." + kname[-117:],
                        calls=calls, time_s=t, reps=1, timing="profiler", sm_clock_mhz=timer.tel.sm_clock_mhz())
            ctrl = sorted(s["step_s"] for s in steps if s["block"] == "control")
            log(f"decode {name} B={B} P={P}: probed median {r['time_s'] * 1e3:.2f} ms, control median "
                f"{ctrl[len(ctrl) // 2] * 1e3:.2f} ms, {kernels:.0f} kernels, {aten_ops} aten ops")
            del caches
            free_memory()
        del model
        free_memory()


def bench_host_steps(rec, timer, dev, deadline, quick, env):
    window = STEP_PROBE_WINDOW_S
    reps = {"reps": 2, "warmup": 0} if quick else {}

    def before_rep():
        return launch_probe(dev, window)[0]

    measure = functools.partial(hd.measure_phase, before_rep=before_rep, after_rep=before_rep if after_probes_on() else None,
                                **reps)
    moe_fit, mla_fit = hd.fit_layer_cases(quick)
    if not hd.bench_layers(rec, timer, dev, deadline, measure, precisions_to_bench(env), moe_fit, mla_fit,
                           phases=("infer",), rep_rows=functools.partial(write_steps, window_s=window)):
        return
    chosen = os.environ.get("REAL_BENCH_SERVE_CASES", "")
    cases = parse_serve_cases(chosen) if chosen else [("tiny", 16, 8, [2], [2])]
    bench_serve_steps(rec, timer, dev, deadline, quick, cases)
