"""Which GPU kernels each 2-D weight of the model runs at each flat size M (issue 15, s16srv campaign).

    python -m real.serve.kernelmap --out DIR [--max-size 2048] [--device cpu --model tiny]

The s16srv shape sweeps (real/serve/shapeprobe.py, M = 1..2048 ascending, descending and shuffled, each
in a fresh process) found a first call's ~2.2-2.9 ms excess at exactly 334 (weight, M) calls in every
order, while the per-weight counts differ by order: a one-off cost per kernel the process launches
for the first time, whichever weight launches it (on top of ~150-250 us of cuBLASLt heuristics per new
M). This probe names the kernels: every weight as F.linear at every M, under torch.profiler in chunks
of --chunk sizes, each call in its own host range (real/pipeline/probe.py's annotation, whose
kernels_by_op assigns each kernel to the range that launched it), so a replay can count the kernels an
iteration's flat size launches that the process had not launched before.

Rows (kernelmap.csv): weight, m, n, k, kernels (the kernel names the call launched, ';'-joined, sorted),
num_kernels, env columns. Inputs are torch.empty (no kernel of their own); the caching allocator's pool
is grown first (shapeprobe.grow_pool), so no call allocates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from real.bench.records import log
from real.pipeline.probe import ANNOTATION, kernels_by_op
from real.serve.shapeprobe import MAX_SIZE, env_columns, grow_pool, probe_model, row_writer, weights
from real.sync import synchronize

COLS = ["bench", "model", "weight", "m", "n", "k", "kernels", "num_kernels", "split"]


def chunk_calls(lin, sizes, dev, dtype) -> tuple[list[tuple[str, int, int, int]], dict]:
    """Every weight at every size of `sizes` under one profiler session: (weight, m, n, k) per call and
    kernels_by_op's {call index: {kernel name: [launches, GPU s]}}."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    calls = []
    with profile(activities=acts) as prof:
        for m in sizes:
            for name, w in lin:
                x = torch.empty(m, w.shape[1], device=dev, dtype=dtype)
                with record_function(f"{ANNOTATION}{len(calls)}"):
                    F.linear(x, w)
                    synchronize(dev)
                calls.append((name, m, int(w.shape[0]), int(w.shape[1])))
    return calls, kernels_by_op(prof.events())


def sweep(model, dev, dtype, max_size: int, chunk: int, deadline: float, emit) -> int:
    """Every 2-D weight at M = 1..max_size, ascending, in profiler chunks; emit(row) per call. Stops at
    the deadline (between chunks). Returns the sizes done."""
    lin, _ = weights(model)
    grow_pool(lin, max_size, dev, dtype)
    done = 0
    for lo in range(1, max_size + 1, chunk):
        if time.perf_counter() > deadline:
            break
        sizes = list(range(lo, min(lo + chunk, max_size + 1)))
        calls, by_call = chunk_calls(lin, sizes, dev, dtype)
        for i, (name, m, n, k) in enumerate(calls):
            kern = by_call.get(i, {})
            emit({"weight": name, "m": m, "n": n, "k": k, "kernels": ";".join(sorted(kern)),
                  "num_kernels": sum(v[0] for v in kern.values())})
        done += len(sizes)
    return done


def run(args) -> int:
    dev, dtype, use_cuda, model = probe_model(args.model, args.device)
    path = Path(args.out) / "kernelmap.csv"
    deadline = time.perf_counter() + args.seconds
    fixed = {"bench": "serve_kernelmap", "model": args.model, "split": "fit"}
    with row_writer(path, COLS, fixed, env_columns(dev, use_cuda)) as emit:
        done = sweep(model, dev, dtype, min(args.max_size, MAX_SIZE), args.chunk, deadline, emit)
    log(f"kernelmap: {done} sizes, {emit.rows} rows -> {path}")
    return 0


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m real.serve.kernelmap", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto")
    ap.add_argument("--model", default="v3-slice-2l")
    ap.add_argument("--max-size", type=int, default=MAX_SIZE)
    ap.add_argument("--chunk", type=int, default=64, help="sizes per profiler session")
    ap.add_argument("--seconds", type=float, default=90.0, help="start no chunk after this long (rows kept)")
    a = ap.parse_args(argv)
    if not 1 <= a.max_size <= MAX_SIZE or a.chunk < 1 or a.seconds <= 0:
        ap.error(f"--max-size in 1..{MAX_SIZE}, --chunk >= 1, --seconds > 0")
    return a


def main(argv=None) -> int:
    return run(_args(argv))


if __name__ == "__main__":
    sys.exit(main())
