"""A held TP GEMM beside TP traffic, and the traffic beside it (session s30mlm, issue 14; rule:
docs/notes/s30mlm_rule.md, written before the records).

What the twin charges for TransformerEngine's userbuffers overlap (twin/costs/tp_overlap.py) on Megatron's
TP 8 rows: a GEMM beside TE's 16-SM 'pipeline' / 'bulk' kernels runs at the untold slowdown measured beside
an SM-holding *spin* kernel (Profile.sm_reserve, one GPU, no traffic), the kernels themselves at their link
time (no slowdown beside the GEMM); a GEMM beside TE's copy-engine ring exchange runs at full rate. Here every
board of the host is loaded at once, held at its power limit, and each (GEMM, condition) is timed in
windows taken in turn (alone, ce, rs, ag, alone, ...), so a window beside traffic sits next to one alone:

  alone   the GEMM back to back (after a pre-load of the same GEMM, as in every window);
  ce      the same beside copy-engine pulls of one TE ring chunk (tokens / 8 rows of the hidden width) from
          the next rank's symmetric-memory buffer, back to back on a high-priority stream (TE's ring_exchange,
          use_ce: the traffic without SMs);
  rs      beside NCCL reduce-scatters of TE's pipeline chunk (tokens / 4 rows) back to back, NCCL on 16
          channels (the campaign sets NCCL_MIN/MAX_NCHANNELS = 16: TE's num_sm) on a high-priority stream
          (TE's userbuffers stream: at::cuda::getStreamFromPool(true)), issued before the GEMM as TE's
          bulk_overlap issues its kernel before te_gemm;
  ag      the same with NCCL all-gathers of the whole TP buffer (tokens rows: TE's bulk all-gather).

Per window: the GEMM's time a call over its span (CUDA events), the traffic's time a call while the GEMM ran
(an event after every call: calls completed inside the GEMM's span / that span), whether the traffic covered
the span, and the SM clock, board power and temperature sampled while the GEMM ran. Before each case the
traffic alone (time a call, no GEMM). Shapes: Megatron GPT 119B / 177B / 462B (hidden 10,240 / 12,288 /
20,480) on a TP 8 rank at 4,096 tokens (the README's sequence, micro-batch 1): fc1 forward (m 4096,
n 4h / 8, k h) and fc2 forward (m 4096, n h, k 4h / 8), BF16, y_MN = a_MK @ w_NK^T.

One CSV a rank (tp_traffic_rank<r>.csv); every row carries the board, GPU name, clocks, power limit,
driver, torch, CUDA and NCCL versions and NCCL's channel setting. The CPU dry run (gloo, --quick): host
clock, the traffic and the GEMM in sequence, 'ce' rows status 'unavailable'. Imports torch only.

    torchrun --nproc-per-node 4 -m real.bench.tp_traffic --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from real.bench.gemm_align import Nvml, environment
from real.telemetry import Telemetry

TOKENS = 4096
TP = 8   # the rows' TP degree: the shapes are a TP 8 rank's, whatever the ranks here
MODELS = [("119b", 10240), ("177b", 12288), ("462b", 20480)]   # Megatron-LM README model table
QUICK_MODELS = [("tiny", 64)]
QUICK_TOKENS = 64
CONDITIONS = ("alone", "ce", "rs", "ag")
REPS, QUICK_REPS = 3, 1
WINDOW_S, PRELOAD_S, WARM_S, REWARM_S = 0.2, 0.08, 8.0, 1.0
TRAFFIC_WINDOWS = 3   # the traffic issued for 3 windows at its time alone: it covers the GEMMs if slowed < 3x
TAIL_WINDOWS = TRAFFIC_WINDOWS - 1   # untimed GEMMs after the timed ones while the traffic drains
QUICK_WINDOW_S, QUICK_PRELOAD_S, QUICK_WARM_S = 0.01, 0.0, 0.0
MAX_TRAFFIC_CALLS = 12000

COLUMNS = ["campaign", "timestamp_utc", "rank", "board", "world_size", "model", "hidden", "gemm", "m", "n", "k",
           "condition", "rep", "status", "timing", "preload_calls", "gemm_calls", "gemm_span_s", "gemm_time_s",
           "flops", "achieved_flops_per_s", "traffic_kind", "traffic_bytes", "traffic_calls", "traffic_calls_in_span",
           "traffic_time_beside_s", "traffic_time_alone_s", "traffic_start_s", "covered", "sm_clock_mhz",
           "sm_clock_samples",
           "power_w", "temperature_c", "mem_clock_mhz", "gpu_name", "sm_clock_max_mhz", "power_limit_w",
           "driver_version", "torch_version", "cuda_version", "nccl_version", "nccl_channels", "hostname"]


def gemms(hidden: int, tokens: int) -> list[tuple[str, int, int, int]]:
    """(name, m, n, k) of a TP 8 rank's fc1 and fc2 forward GEMMs (Megatron's GeLU FFN of 4h)."""
    ffn = 4 * hidden // TP
    return [("fc1_fprop", tokens, ffn, hidden), ("fc2_fprop", tokens, hidden, ffn)]


def _init(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        opts = dist.ProcessGroupNCCL.Options()
        opts.is_high_priority_stream = True   # TE's userbuffers stream is a high-priority one
        dist.init_process_group("nccl", pg_options=opts)
    else:
        dist.init_process_group("gloo")
        dist.barrier()   # every gloo rank connected before any goes on (real/bench/cli.py says why)


def transfer(kind: str, rows: int, hidden: int, world: int, dev, group_name):
    """(a function issuing one transfer of `rows` x `hidden`, its bytes) of one kind, or (None, reason): 'ce' one
    copy-engine pull from the next rank's symmetric-memory buffer (a GPU run only), 'rs' one NCCL reduce-scatter of
    the rows (whole rows a rank: `rows` rounded down to the world's multiple), 'ag' one NCCL all-gather into them.
    The bench modules (this one, real.bench.tp_te_order) choose the rows each kind moves."""
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elem = torch.empty((), dtype=dt).element_size()
    if kind == "ce":
        if group_name is None:
            return None, "symmetric memory unavailable (CPU run or torch without it)"
        from real.bench.async_tp import _peer_copy   # lazy: symmetric memory only on a GPU run
        try:
            return _peer_copy((rows, hidden), rows * hidden, dt, dev, group_name), rows * hidden * elem
        except Exception as exc:   # a torch whose private symmetric-memory API differs: rows say why
            return None, f"{type(exc).__name__}: {str(exc)[:160]}"
    rows -= rows % world
    full = torch.randn(rows, hidden, device=dev, dtype=dt)
    shard = torch.randn(rows // world, hidden, device=dev, dtype=dt)
    if kind == "rs":
        return (lambda: dist.reduce_scatter_tensor(shard, full)), rows * hidden * elem
    return (lambda: dist.all_gather_into_tensor(full, shard)), rows * hidden * elem


def _traffic(kind: str, hidden: int, tokens: int, world: int, dev, group_name):
    """(a function issuing one call, its bytes) of one traffic kind, or (None, reason): 'ce' one TE ring chunk (a
    TP 8 rank's share of the sequence), 'rs' TE's pipeline chunk (num_splits 4), 'ag' the bulk gather's buffer."""
    rows = {"ce": tokens // TP, "rs": tokens // 4}.get(kind, tokens)
    return transfer(kind, rows, hidden, world, dev, group_name)


def on_every_rank(traffic: dict, dev) -> dict:
    """`traffic` (kind -> (fn, bytes) or (None, reason)) with a kind that another rank lacks made unavailable here
    too: a kind runs on every rank or on none (its collectives)."""
    for kind, (fn, _) in traffic.items():
        if _agree_max(0.0 if fn is not None else 1.0, dev) > 0 and fn is not None:
            traffic[kind] = (None, "unavailable on another rank")
    return traffic


def rank_setup(out: Path, bench: str) -> dict:
    """One rank's start, shared by the bench modules: the device (this rank's GPU, or the CPU on gloo), the process
    group (_init), NVML and telemetry, the environment every row carries, the board, the symmetric-memory group
    ('ce' transfers; None on a CPU run or where torch lacks it: `bench` prints why), env_rank<r>.json written under
    `out`, and the high-priority side stream (TE's userbuffers stream; None on CPU)."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    _init(dev)
    rank, world = dist.get_rank(), dist.get_world_size()
    nvml, tel = Nvml(local), Telemetry(local)
    static = tel.static_info()
    env = {**environment(dev, nvml), "power_limit_w": static.get("power_limit_w", ""),
           "nccl_version": ".".join(map(str, torch.cuda.nccl.version())) if dev.type == "cuda" else "",
           "nccl_channels": os.environ.get("NCCL_MAX_NCHANNELS", "default"), "world_size": world}
    board = f"gpu{local}" if dev.type == "cuda" else f"cpu{local}"
    group_name = None
    if dev.type == "cuda":
        try:
            from real.bench.async_tp import _symm_group_name   # lazy: symmetric memory only on a GPU run
            group_name = _symm_group_name(dev)
        except Exception as exc:   # the 'ce' rows say why
            print(f"{bench} rank {rank}: no symmetric memory: {exc}", flush=True)
    (out / f"env_rank{rank}.json").write_text(json.dumps({**env, **static, "board": board}, indent=1, default=str))
    side = torch.cuda.Stream(device=dev, priority=-1) if dev.type == "cuda" else None
    return {"dev": dev, "rank": rank, "world": world, "tel": tel, "env": env, "board": board, "group_name": group_name,
            "side": side}


def finite_mean(xs) -> float:
    """The mean of `xs` without its NaNs (NaN where none is left): the telemetry's samples of a window."""
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.fmean(xs) if xs else math.nan


def _agree_max(x: float, dev) -> float:
    t = torch.tensor([float(x)], device=dev, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _gemm(m: int, n: int, k: int, dev):
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(m, k, device=dev, dtype=dt, generator=g)
    w = torch.randn(n, k, device=dev, dtype=dt, generator=g) / k ** 0.5
    y = torch.empty(m, n, device=dev, dtype=dt)
    return lambda: torch.mm(a, w.t(), out=y)


def _time_calls(fn, calls: int, dev, side=None) -> tuple[float, float]:
    """(seconds a call on the GPU, host seconds to issue a call) of `calls` back-to-back calls (events;
    the host clock for both on CPU)."""
    if dev.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t = (time.perf_counter() - t0) / calls
        return t, t
    stream = side or torch.cuda.current_stream(dev)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.cuda.stream(stream):
        fn()
        s.record(stream)
        h0 = time.perf_counter()
        for _ in range(calls):
            fn()
        issue = (time.perf_counter() - h0) / calls
        e.record(stream)
    e.synchronize()
    return s.elapsed_time(e) * 1e-3 / calls, issue


def _window(mm, gemm_calls: int, preload: int, traffic, traffic_calls: int, dev, side, tel: Telemetry) -> dict:
    """One window: `preload` GEMMs (long enough to cover the host's issue of the traffic, so the board never
    idles), then on the side stream `traffic_calls` traffic calls that start when the pre-load ends, and on
    the main stream `gemm_calls` timed GEMMs that start then too (TE's bulk_overlap: its kernel, then the
    GEMM), then TAIL_WINDOWS times as many untimed GEMMs while the traffic's tail drains. Returns the
    GEMM's and the traffic's figures."""
    if dev.type != "cuda":   # gloo: the traffic, then the GEMMs, in sequence on the host clock
        tt = _time_calls(traffic, traffic_calls, dev)[0] if traffic else math.nan
        g = _time_calls(mm, gemm_calls, dev)[0]
        return {"gemm_span_s": g * gemm_calls, "gemm_time_s": g, "traffic_calls_in_span": 0,
                "traffic_time_beside_s": tt, "covered": "", "timing": "host_clock_in_sequence",
                "sm_clock_mhz": "", "sm_clock_samples": 0, "power_w": "", "temperature_c": "", "mem_clock_mhz": ""}
    main = torch.cuda.current_stream(dev)
    for _ in range(preload):
        mm()
    marks, side0 = [], None
    if traffic is not None:
        side.wait_stream(main)   # the traffic starts when the pre-load ends, with the timed GEMMs
        side0 = torch.cuda.Event(enable_timing=True)
        side0.record(side)
        with torch.cuda.stream(side):
            for _ in range(traffic_calls):
                traffic()
                ev = torch.cuda.Event(enable_timing=True)
                ev.record(side)
                marks.append(ev)
    es, em = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    es.record(main)
    for _ in range(gemm_calls):
        mm()
    em.record(main)
    for _ in range(TAIL_WINDOWS * gemm_calls):   # untimed: the board stays loaded while the traffic's tail drains
        mm()
    clocks, powers, temps, mems = [], [], [], []
    while not em.query():
        if es.query():
            clocks.append(tel.sm_clock_mhz())
            powers.append(tel.power_w())
            temps.append(tel.temperature_c())
            mems.append(tel.mem_clock_mhz())
        time.sleep(0.01)
    torch.cuda.synchronize(dev)
    span = es.elapsed_time(em) * 1e-3
    out = {"gemm_span_s": span, "gemm_time_s": span / gemm_calls, "timing": "cuda_events_held"}
    if marks:
        ends = [es.elapsed_time(ev) * 1e-3 for ev in marks]   # each call's end from the GEMMs' start
        inside = sum(1 for t in ends if 0.0 < t <= span)
        start = es.elapsed_time(side0) * 1e-3   # ~0: both streams wait for the pre-load
        out.update(traffic_calls_in_span=inside, traffic_time_beside_s=span / inside if inside else math.nan,
                   traffic_start_s=start, covered=ends[-1] >= span and start <= 1e-3)
    else:
        out.update(traffic_calls_in_span=0, traffic_time_beside_s=math.nan, covered="")
    out.update(sm_clock_mhz=finite_mean(clocks), sm_clock_samples=len(clocks), power_w=finite_mean(powers),
               temperature_c=finite_mean(temps), mem_clock_mhz=finite_mean(mems))
    return out


def run(out: Path, quick: bool) -> int:
    s = rank_setup(out, "tp_traffic")
    dev, rank, world, tel, env, board, side = (s[k] for k in ("dev", "rank", "world", "tel", "env", "board", "side"))
    models, tokens = (QUICK_MODELS, QUICK_TOKENS) if quick else (MODELS, TOKENS)
    reps = QUICK_REPS if quick else REPS
    window_s, preload_s, warm_s = ((QUICK_WINDOW_S, QUICK_PRELOAD_S, QUICK_WARM_S) if quick
                                   else (WINDOW_S, PRELOAD_S, WARM_S))
    t0 = time.perf_counter()
    with (out / f"tp_traffic_rank{rank}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        warmed = False
        for model, hidden in models:
            traffic = on_every_rank({kind: _traffic(kind, hidden, tokens, world, dev, s["group_name"])
                                     for kind in ("ce", "rs", "ag")}, dev)
            for name, m, n, k in gemms(hidden, tokens):
                mm = _gemm(m, n, k, dev)
                t_mm = _time_calls(mm, 3, dev)[0]
                if warm_s > 0:   # the board to its power limit before this GEMM's first window (WARM_S
                    # before the first GEMM, REWARM_S before the others: buffers were allocated between)
                    _time_calls(mm, max(1, int((REWARM_S if warmed else warm_s) / t_mm)), dev)
                    warmed = True
                    t_mm = _time_calls(mm, 3, dev)[0]
                gemm_calls = max(1, math.ceil(window_s / t_mm))
                alone_t, issue_t = {}, {}
                for kind, (fn, _) in traffic.items():
                    if fn is not None:
                        alone_t[kind], issue_t[kind] = _time_calls(fn, 3 if quick else 20, dev, side)
                # the traffic outlasts the window even if it runs 3x slower beside the GEMM; the pre-load
                # outlasts the host's issue of the most traffic calls (and their events) by 2x
                calls = {kind: int(min(MAX_TRAFFIC_CALLS, max(2, math.ceil(_agree_max(
                    TRAFFIC_WINDOWS * window_s / max(alone_t[kind], 1e-7) + 2, dev)))))
                    for kind in alone_t}
                issue_s = max([calls[kd] * issue_t[kd] for kd in calls] or [0.0])
                preload = int(_agree_max(max(preload_s, 2.0 * issue_s) / t_mm, dev)) if preload_s > 0 else 0
                for rep in range(1, reps + 1):
                    for cond in CONDITIONS:
                        base = {"model": model, "hidden": hidden, "gemm": name, "m": m, "n": n, "k": k,
                                "condition": cond, "rep": rep, "flops": 2.0 * m * n * k}
                        if cond != "alone" and traffic[cond][0] is None:
                            row = {**base, "status": "unavailable", "traffic_kind": cond, "timing": traffic[cond][1]}
                        else:
                            fn = None if cond == "alone" else traffic[cond][0]
                            ncalls = calls.get(cond, 0)
                            if cond != "alone":
                                dist.barrier()   # every rank's traffic in the same window
                            w = _window(mm, gemm_calls, preload, fn, ncalls, dev, side, tel)
                            row = {**base, **w, "status": "ok", "gemm_calls": gemm_calls, "preload_calls": preload,
                                   "achieved_flops_per_s": base["flops"] / w["gemm_time_s"],
                                   "traffic_kind": "" if cond == "alone" else cond,
                                   "traffic_bytes": "" if cond == "alone" else traffic[cond][1],
                                   "traffic_calls": ncalls, "traffic_time_alone_s": alone_t.get(cond, "")}
                        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                        row.update(env, campaign="s30mlm", rank=rank, board=board, timestamp_utc=now)
                        writer.writerow(row)
                        f.flush()   # a run cut by timeout keeps its rows
                print(f"tp_traffic rank {rank} {model} {name}: done at {time.perf_counter() - t0:.1f} s", flush=True)
                del mm
            del traffic
    dist.barrier()
    dist.destroy_process_group()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny shapes and windows (a CPU dry run on gloo)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return run(out, args.quick)


if __name__ == "__main__":
    sys.exit(main())
