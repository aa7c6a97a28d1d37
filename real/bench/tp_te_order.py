"""A held TP 8 GEMM and one TP transfer started together as TransformerEngine's bulk overlap starts them, every
board of a host loaded at once (session s30mlm round 2, issue 14; rule: docs/notes/s30mlm_rule.md, its "Round 2"
section, written before these records).

Round 1 (real.bench.tp_traffic) streamed thousands of short transfers beside back-to-back GEMMs; the host could not
keep its copy-engine stream fed, and a stream of short NCCL kernels is not what TE runs. Here each iteration is
TE's bulk_overlap (TE v1.x comm_gemm_overlap.h): the transfer's kernel is launched on a high-priority stream, then
the GEMM on the main stream, both waiting for the iteration's start; the main stream waits for the transfer before
the next iteration (`cudaStreamWaitEvent(stream_main, _stop_comm)`). Per iteration, from its start: the GEMM's end
and the transfer's end (CUDA events). Kinds:

  ce  one copy-engine pull of 7/8 of the TP buffer (the ring exchange's 7 chunks of tokens / 8 rows at TP 8) from
      the next rank's symmetric-memory buffer;
  rs  one NCCL reduce-scatter of the TP buffer (tokens x hidden: TE's bulk reduce-scatter beside the wgrad GEMM);
  ag  one NCCL all-gather into it (TE's bulk all-gather beside the dgrad GEMM);
NCCL on 16 channels (the campaign sets NCCL_MIN/MAX_NCHANNELS: TE's num_sm 16), its stream high-priority (TE's
userbuffers stream is one). Windows of ~WINDOW_S of iterations in turn: alone (GEMM only), ce, rs, ag, three rounds
a GEMM, after a warm-up; before each GEMM's rounds, each kind alone (iterations with no GEMM). A row a window: the
median (p10, p90) over its iterations of the GEMM's end and the transfer's end, the SM clock, power and temperature
sampled while it ran. Shapes as round 1 (real.bench.tp_traffic.gemms: a TP 8 rank of Megatron GPT 119B / 177B /
462B, fc1 and fc2 forward at 4,096 tokens, BF16).

One CSV a rank (tp_te_order_rank<r>.csv); every row carries the board, GPU name, clocks, power limit, driver,
torch, CUDA and NCCL versions. CPU dry run (gloo, --quick): host clock, in sequence. Imports torch only.

    torchrun --nproc-per-node 4 -m real.bench.tp_te_order --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from real.bench.tp_traffic import (MODELS, QUICK_MODELS, QUICK_TOKENS, TOKENS, TP, _agree_max, _gemm, finite_mean,
                                   gemms, on_every_rank, rank_setup, transfer)
from real.telemetry import Telemetry

CONDITIONS = ("alone", "ce", "rs", "ag")
REPS, QUICK_REPS = 3, 1
WINDOW_S, WARM_S, REWARM_S, ALONE_ITERS = 0.25, 8.0, 1.0, 20
QUICK_WINDOW_S, QUICK_ITERS = 0.0, 2

COLUMNS = ["campaign", "timestamp_utc", "rank", "board", "world_size", "model", "hidden", "gemm", "m", "n", "k",
           "condition", "rep", "status", "timing", "iterations", "gemm_end_s", "gemm_end_p10_s", "gemm_end_p90_s",
           "traffic_end_s", "traffic_end_p10_s", "traffic_end_p90_s", "flops", "traffic_kind", "traffic_bytes",
           "sm_clock_mhz", "sm_clock_samples", "power_w", "temperature_c", "mem_clock_mhz", "gpu_name",
           "sm_clock_max_mhz", "power_limit_w", "driver_version", "torch_version", "cuda_version", "nccl_version",
           "nccl_channels", "hostname"]


def _traffic(kind: str, hidden: int, tokens: int, world: int, dev, group_name):
    """(a function issuing one transfer, its bytes) of one kind, or (None, reason): 'ce' the ring exchange's TP - 1
    chunks of tokens / TP rows, 'rs' and 'ag' the whole TP buffer (tokens x hidden)."""
    rows = tokens * (TP - 1) // TP if kind == "ce" else tokens
    return transfer(kind, rows, hidden, world, dev, group_name)


def _quantiles(xs: list[float]) -> tuple[float, float, float]:
    if not xs:
        return math.nan, math.nan, math.nan
    s = sorted(xs)
    return statistics.median(s), s[int(0.1 * (len(s) - 1))], s[int(0.9 * (len(s) - 1))]


def _iterations(mm, traffic, iters: int, dev, side, tel: Telemetry | None) -> dict:
    """`iters` iterations of TE's bulk overlap (mm and/or traffic may be None); per iteration the GEMM's and
    the transfer's end from its start. Clock, power and temperature sampled while the iterations run."""
    if dev.type != "cuda":   # gloo: in sequence on the host clock
        g_end, c_end = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            if traffic is not None:
                traffic()
                c_end.append(time.perf_counter() - t0)
            if mm is not None:
                mm()
                g_end.append(time.perf_counter() - t0)
        return {"g": g_end, "c": c_end, "timing": "host_clock_in_sequence", "tel": {}}
    main = torch.cuda.current_stream(dev)
    marks = []
    for _ in range(iters):
        e0 = torch.cuda.Event(enable_timing=True)
        e0.record(main)
        ec = eg = None
        if traffic is not None:
            side.wait_event(e0)
            with torch.cuda.stream(side):
                traffic()
                ec = torch.cuda.Event(enable_timing=True)
                ec.record(side)
        if mm is not None:
            mm()
            eg = torch.cuda.Event(enable_timing=True)
            eg.record(main)
        if traffic is not None:
            main.wait_stream(side)   # TE: the main stream waits for the transfer before going on
        marks.append((e0, eg, ec))
    samples = {"sm_clock_mhz": [], "power_w": [], "temperature_c": [], "mem_clock_mhz": []}
    last = marks[-1][1] or marks[-1][2]
    while tel is not None and not last.query():
        for key, fn in (("sm_clock_mhz", tel.sm_clock_mhz), ("power_w", tel.power_w),
                        ("temperature_c", tel.temperature_c), ("mem_clock_mhz", tel.mem_clock_mhz)):
            samples[key].append(fn())
        time.sleep(0.01)
    torch.cuda.synchronize(dev)
    g = [e0.elapsed_time(eg) * 1e-3 for e0, eg, _ in marks if eg is not None]
    c = [e0.elapsed_time(ec) * 1e-3 for e0, _, ec in marks if ec is not None]
    tel_fields = {k: finite_mean(v) for k, v in samples.items()} | {"sm_clock_samples": len(samples["sm_clock_mhz"])}
    return {"g": g, "c": c, "timing": "cuda_events_te_bulk_order", "tel": tel_fields}


def run(out: Path, quick: bool) -> int:
    s = rank_setup(out, "tp_te_order")
    dev, rank, world, tel, env, board, side = (s[k] for k in ("dev", "rank", "world", "tel", "env", "board", "side"))
    models, tokens = (QUICK_MODELS, QUICK_TOKENS) if quick else (MODELS, TOKENS)
    reps, window_s = (QUICK_REPS, QUICK_WINDOW_S) if quick else (REPS, WINDOW_S)
    t0 = time.perf_counter()
    with (out / f"tp_te_order_rank{rank}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()

        def write(row):
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            row.update(env, campaign="s30mlm2", rank=rank, board=board, timestamp_utc=now)
            writer.writerow(row)
            f.flush()   # a run cut by timeout keeps its rows

        warmed = False
        for model, hidden in models:
            traffic = on_every_rank({kind: _traffic(kind, hidden, tokens, world, dev, s["group_name"])
                                     for kind in ("ce", "rs", "ag")}, dev)
            for name, m, n, k in gemms(hidden, tokens):
                mm = _gemm(m, n, k, dev)
                first = _iterations(mm, None, 3, dev, side, None)["g"]
                t_mm = statistics.median(first) if first else 1e-3
                if not quick:   # the board to its power limit before this GEMM's rounds
                    _iterations(mm, None, max(1, int((REWARM_S if warmed else WARM_S) / t_mm)), dev, side, None)
                    warmed = True
                # one count on every rank: each beside iteration issues one collective
                iters = int(_agree_max(max(QUICK_ITERS, math.ceil(window_s / t_mm)), dev))
                base = {"model": model, "hidden": hidden, "gemm": name, "m": m, "n": n, "k": k, "flops": 2.0 * m * n * k}
                for kind, (fn, why) in traffic.items():   # each transfer alone (no GEMM), same protocol
                    if fn is None:
                        write({**base, "condition": f"{kind}_alone", "rep": 0, "status": "unavailable", "timing": why})
                        continue
                    dist.barrier()
                    r = _iterations(None, fn, QUICK_ITERS if quick else ALONE_ITERS, dev, side, None)
                    tq = _quantiles(r["c"])
                    write({**base, "condition": f"{kind}_alone", "rep": 0, "status": "ok", "timing": r["timing"],
                           "iterations": len(r["c"]), "traffic_end_s": tq[0], "traffic_end_p10_s": tq[1],
                           "traffic_end_p90_s": tq[2], "traffic_kind": kind, "traffic_bytes": traffic[kind][1]})
                for rep in range(1, reps + 1):
                    for cond in CONDITIONS:
                        row = {**base, "condition": cond, "rep": rep}
                        if cond != "alone" and traffic[cond][0] is None:
                            write({**row, "status": "unavailable", "traffic_kind": cond, "timing": traffic[cond][1]})
                            continue
                        fn = None if cond == "alone" else traffic[cond][0]
                        if fn is not None:
                            dist.barrier()   # every rank's transfers in the same window
                        r = _iterations(mm, fn, iters, dev, side, tel)
                        gq, cq = _quantiles(r["g"]), _quantiles(r["c"])
                        write({**row, **r["tel"], "status": "ok", "timing": r["timing"], "iterations": len(r["g"]),
                               "gemm_end_s": gq[0], "gemm_end_p10_s": gq[1], "gemm_end_p90_s": gq[2],
                               "traffic_end_s": cq[0], "traffic_end_p10_s": cq[1], "traffic_end_p90_s": cq[2],
                               "traffic_kind": "" if fn is None else cond,
                               "traffic_bytes": "" if fn is None else traffic[cond][1]})
                print(f"tp_te_order rank {rank} {model} {name}: done at {time.perf_counter() - t0:.1f} s", flush=True)
                del mm
            del traffic
    dist.barrier()
    dist.destroy_process_group()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, two iterations a window (a CPU dry run on gloo)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return run(out, args.quick)


if __name__ == "__main__":
    sys.exit(main())
