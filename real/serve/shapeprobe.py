"""What does real/serve pay the first time it runs a batch size? (issue 15, s11srv campaign)

    python -m real.serve.shapeprobe --out DIR [--sizes 48] [--device cpu --model tiny]

real/serve's eager prompt iterations of a flat batch size (prompt tokens + decode rows) that the
process has not run take 1-5 ms longer than a size it has run (the serving engine fit's new_size_s
and new_bin_s; h100x2/s9srv: a size of a new 16-token bin 2.1x), and under EP the extra cost fades
in ways a flat size does not explain (h100x2 held-out ep2lo r30-short: a size new to the rank costs
+0.3 ms where the fit runs before it paid +2-3 ms). One hypothesis: the cost is per GEMM shape, the
host's first call with a new row count M (cuBLAS(Lt) heuristics looked up once per shape and kept in
its heuristics cache; the experts' grouped GEMM, whose M is the routed rows, under EP the received
ones). This probe times, on the host, every 2-D weight of the model as F.linear (M = the size)
and the routed experts' grouped GEMM (M = size x top-k rows, real.model.group_offsets' capacity)
for a shuffled list of distinct sizes: the first call with a size, then a second call with it.
Run it once as is and once with CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 (the cache off: every call
looks its heuristics up): if the first-call excess is the cache's misses, the cache-off repeats
cost what the first calls cost. (s11srv2) Run it with CUDA_MODULE_LOADING=EAGER beside LAZY: if the
first-call excess is CUDA's lazy module loading, EAGER first calls cost what repeats cost (and init_s,
the context and model set-up, grows by the modules loaded up front). (s16srv) `--order ascending` /
`descending` with every size 1..max-size and `--linear-only`: a dense sweep of M in one fresh process
each way; if a first call's excess is a kernel configuration first used (not a per-size look-up), it
falls only at the sizes where a weight's cuBLAS configuration changes, at the same boundaries both ways,
and the shuffled sweep's excess counts those regions (the caching allocator's pool grown first: no
first call pays a cudaMalloc; `segments_allocated` says so per row). (s17srv) `--together`: at each size
every 2-D weight is called back to back with no synchronisation between the calls, as an eager forward
launches them, the pass timed as one (kind 'together', weight '*'): a first pass, then a repeat pass. Does a
pass that launches several kernels new to the process pay ~2.6 ms for each (the standalone calls' cost) or
less for the further ones (the serving fit runs: ~1-2 ms)? The kernels are counted offline from the GPU's
kernel map (calibration/kernel_map.py).

Rows (shapeprobe.csv): one per (size, weight): m, n, k, kind (linear | grouped), order (the size's
position in the sequence), first_s, repeat_s (host seconds of the call, launch only: the GPU work
runs after), heuristics_cache (the environment variable's value or 'default'), module_loading
(CUDA_MODULE_LOADING as set before torch's CUDA init, or 'default'), init_s, env columns.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from real.bench.device import environment, nccl_version
from real.bench.records import ENV_COLS, log
from real.configs import get_spec
from real.model import GROUP_ALIGN, build_model
from real.telemetry import Telemetry
from real.sync import synchronize

COLS = ["bench", "model", "kind", "weight", "m", "n", "k", "order", "size_order", "first_s", "repeat_s",
        "segments_allocated", "heuristics_cache", "module_loading", "init_s", "split"]
CACHE_ENV = "CUBLASLT_HEURISTICS_CACHE_CAPACITY"
# CUDA's module loading: LAZY (torch sets it when unset) loads a kernel's module on the kernel's first
# launch, EAGER loads every module when the context is made (s11srv2: is the fading first-bin cost that?)
LOADING_ENV = "CUDA_MODULE_LOADING"
MAX_SIZE = 2048   # real/serve's token budget: the largest flat size of a prompt iteration
ORDERS = ("shuffled", "ascending", "descending")   # the sequence of the sizes probed (s16srv: dense sweeps)


def sizes(n: int, max_size: int, seed: int = 0, order: str = "shuffled") -> list[int]:
    """n distinct flat sizes in 1..max_size (no size twice: every first call is a first), shuffled, or
    the same sizes sorted ascending / descending (n = max_size: every size, a dense sweep)."""
    rng = np.random.default_rng(seed)
    picked = [int(s) for s in rng.choice(np.arange(1, max_size + 1), size=min(n, max_size), replace=False)]
    return {"shuffled": picked, "ascending": sorted(picked), "descending": sorted(picked, reverse=True)}[order]


def weights(model) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    """The model's distinct 2-D weights (F.linear: out x in) and its routed experts' 3-D ones (E x out x in),
    one of each shape."""
    lin, grp, seen = [], [], set()
    for name, p in model.named_parameters():
        if p.dim() not in (2, 3) or min(p.shape) < 2 or "embed" in name or (p.dim(), tuple(p.shape)) in seen:
            continue
        seen.add((p.dim(), tuple(p.shape)))
        (lin if p.dim() == 2 else grp).append((name, p.detach()))
    return lin, grp


def _host_s(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _segments(dev) -> int:
    """The caching allocator's cumulative cudaMalloc count (0 off CUDA): a first call that grew the pool
    paid a cudaMalloc, not only its GEMM's set-up."""
    if dev.type != "cuda":
        return 0
    st = torch.cuda.memory_stats(dev)
    return int(st.get("num_device_alloc", st.get("segment.all.allocated", 0)))   # as real/serve/hostprobe.py


def grow_pool(lin, max_size: int, dev, dtype) -> None:
    """Allocate and free every weight's largest input and output (max_size rows), so the caching allocator
    holds blocks a smaller call splits: an ascending sweep's first calls then pay no cudaMalloc."""
    blocks = [torch.empty(max_size, d, device=dev, dtype=dtype) for _, w in lin for d in w.shape]
    del blocks


def probe_together(model, dev, dtype, n_sizes: int, max_size: int, deadline: float, emit,
                   order_kind: str = "shuffled") -> int:
    """(s17srv) Times, at each size, one pass of every 2-D weight called back to back (launch only, no sync
    between the calls) and then a repeat pass; emit(row) per size. Stops at the deadline."""
    lin, _ = weights(model)
    grow_pool(lin, max_size, dev, dtype)
    done = 0
    for order, m in enumerate(sizes(n_sizes, max_size, order=order_kind)):
        if time.perf_counter() > deadline:
            break
        xs = [torch.randn(m, w.shape[1], device=dev, dtype=dtype) for _, w in lin]

        def one_pass():
            for x, (_, w) in zip(xs, lin):
                F.linear(x, w)
        synchronize(dev)
        first = _host_s(one_pass)
        synchronize(dev)
        again = _host_s(one_pass)
        synchronize(dev)
        emit({"kind": "together", "weight": "*", "m": m, "n": len(lin), "k": 0, "order": order,
              "size_order": order_kind, "first_s": first, "repeat_s": again, "segments_allocated": _segments(dev)})
        done += 1
    return done


def probe(model, spec, dev, dtype, n_sizes: int, max_size: int, deadline: float, emit, order_kind: str = "shuffled",
          linear_only: bool = False) -> int:
    """Times every weight at each size (first and repeat call); emit(row) per row. Stops at the deadline.
    `order_kind`: the sizes' sequence (ORDERS); `linear_only`: no grouped GEMM (it has no first-size cost)."""
    lin, grp = weights(model)
    grp = [] if linear_only else grp
    if linear_only:
        grow_pool(lin, max_size, dev, dtype)
    top_k = spec.top_k
    done = 0
    for order, m in enumerate(sizes(n_sizes, max_size, order=order_kind)):
        if time.perf_counter() > deadline:
            break
        for name, w in lin:
            x = torch.randn(m, w.shape[1], device=dev, dtype=dtype)
            synchronize(dev)
            first = _host_s(lambda: F.linear(x, w))
            synchronize(dev)
            again = _host_s(lambda: F.linear(x, w))
            synchronize(dev)
            emit({"kind": "linear", "weight": name, "m": m, "n": w.shape[0], "k": w.shape[1], "order": order,
                  "size_order": order_kind, "first_s": first, "repeat_s": again, "segments_allocated": _segments(dev)})
        rows = m * top_k
        for name, w in grp:
            e = w.shape[0]
            cap = (rows + e * (GROUP_ALIGN - 1) + GROUP_ALIGN - 1) // GROUP_ALIGN * GROUP_ALIGN
            x = torch.randn(cap, w.shape[2], device=dev, dtype=dtype)
            per = (rows // e + GROUP_ALIGN - 1) // GROUP_ALIGN * GROUP_ALIGN
            offs = torch.clamp(torch.arange(1, e + 1, device=dev) * per, max=cap).to(torch.int32)
            wt = w.transpose(-2, -1)
            try:
                synchronize(dev)
                first = _host_s(lambda: torch._grouped_mm(x, wt, offs=offs))
                synchronize(dev)
                again = _host_s(lambda: torch._grouped_mm(x, wt, offs=offs))
                synchronize(dev)
            except (RuntimeError, AttributeError, NotImplementedError):
                continue   # no grouped kernel on this device / dtype (CPU dry runs)
            emit({"kind": "grouped", "weight": name, "m": cap, "n": w.shape[1], "k": w.shape[2], "order": order,
                  "size_order": order_kind, "first_s": first, "repeat_s": again})
        done += 1
    return done


def env_columns(dev, use_cuda: bool) -> dict:
    """The columns every row of a one-GPU probe carries: the run's environment (GPU name, torch, CUDA),
    the clocks NVML reads now, the NCCL version and the GPU count."""
    tel = Telemetry(0)
    env = environment(dev, tel)
    env["timestamp_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cols = {k: env.get(k, "") for k in ENV_COLS}
    if tel.available:
        cols["sm_clock_mhz"], cols["mem_clock_mhz"] = tel.sm_clock_mhz(), tel.mem_clock_mhz()
    cols["nccl_version"] = nccl_version() if use_cuda else ""
    cols["num_gpus"] = 1 if use_cuda else 0
    return cols


def probe_model(model_name: str, device: str):
    """(device, dtype, whether CUDA, the model) of a one-GPU probe: the first GPU in BF16 unless
    `device` is "cpu" or none is visible (then FP32 on the CPU), the model built from seed 0."""
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    dtype = torch.bfloat16 if use_cuda else torch.float32
    torch.manual_seed(0)
    model = build_model(get_spec(model_name), dev, dtype, max_seq_len=64)
    synchronize(dev)
    return dev, dtype, use_cuda, model


@contextmanager
def row_writer(path: Path, cols: list[str], fixed: dict, env: dict):
    """A CSV at `path` with `cols` and then `env`'s columns; yields emit(row), which writes
    {fixed, row, env} (later ones win) and flushes, so a run cut by its timeout keeps the rows so
    far. emit.rows counts them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols + [c for c in env if c not in cols])
        w.writeheader()

        def emit(row):
            w.writerow({**fixed, **row, **env})
            f.flush()
            emit.rows += 1
        emit.rows = 0
        yield emit


def run(args) -> int:
    t_start = time.perf_counter()
    loading = os.environ.get(LOADING_ENV, "default")   # read before torch's CUDA init sets LAZY when unset
    spec = get_spec(args.model)
    dev, dtype, use_cuda, model = probe_model(args.model, args.device)
    init_s = time.perf_counter() - t_start   # context, modules (all of them under EAGER) and the weights
    envcols = env_columns(dev, use_cuda)
    cache = os.environ.get(CACHE_ENV, "default")
    path = Path(args.out) / "shapeprobe.csv"
    deadline = time.perf_counter() + args.seconds
    fixed = {"bench": "serve_shapeprobe", "model": args.model, "heuristics_cache": cache, "module_loading": loading,
             "init_s": init_s, "split": "fit"}
    with row_writer(path, COLS, fixed, envcols) as emit:
        if args.together:
            done = probe_together(model, dev, dtype, args.sizes, min(args.max_size, MAX_SIZE), deadline, emit, args.order)
        else:
            done = probe(model, spec, dev, dtype, args.sizes, min(args.max_size, MAX_SIZE), deadline, emit, args.order,
                         args.linear_only)
    log(f"shapeprobe ({CACHE_ENV}={cache}, {LOADING_ENV}={loading}, init {init_s:.1f} s, {args.order}): {done} sizes, "
        f"{emit.rows} rows -> {path}")
    return 0


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m real.serve.shapeprobe", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto")
    ap.add_argument("--model", default="v3-slice-2l")
    ap.add_argument("--sizes", type=int, default=48, help="distinct flat sizes probed, in random order")
    ap.add_argument("--max-size", type=int, default=MAX_SIZE)
    ap.add_argument("--seconds", type=float, default=20.0, help="stop probing after this long (rows kept)")
    ap.add_argument("--order", choices=ORDERS, default="shuffled", help="the sizes' sequence")
    ap.add_argument("--linear-only", action="store_true",
                    help="time the 2-D weights only (no grouped GEMM), the allocator's pool grown first")
    ap.add_argument("--together", action="store_true",
                    help="(s17srv) time one pass of every 2-D weight per size, no sync between the calls")
    a = ap.parse_args(argv)
    if a.sizes < 1 or not 1 <= a.max_size <= MAX_SIZE or a.seconds <= 0:
        ap.error(f"--sizes must be >= 1, --max-size in 1..{MAX_SIZE}, --seconds > 0")
    return a


def main(argv=None) -> int:
    return run(_args(argv))


if __name__ == "__main__":
    sys.exit(main())
