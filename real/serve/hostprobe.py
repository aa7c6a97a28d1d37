"""Where real/serve's EP2 decode time goes, iteration by iteration (issue 15, s9srv campaign).

    torchrun --standalone --nproc-per-node 2 -m real.serve.hostprobe --out DIR --mode ep --seconds 25
    torchrun --standalone --nproc-per-node 2 -m real.serve.hostprobe --out DIR --mode solo --seconds 20
    python -m real.serve.hostprobe --out DIR --mode solo --seconds 2 --device cpu --model tiny

The EP2 engine's decode iterations take either ~4.5 ms or ~7.5 ms, in phases of 0.3-2 s (h100x2,
h200x2 serve_iterations.csv; the loop's gloo flag exchange between iterations slows with them).
This probe runs the engine (real/serve/engine.py, eager, closed loop of `rows` requests a rank with
fixed prompt and long outputs, so nearly every iteration is decode-only at one shape) and records per
iteration and rank:
- `cpu_probe_s`: a fixed pure-Python workload timed just before the iteration (the host CPU's own speed);
- `host_s`, `duration_s`: launch end and end of the iteration (Engine.timing);
- `pre_dispatch_s`: from the iteration's start to the MoE layer's dispatch (host launches before it),
  `dispatch_s`: inside real/ep.dispatch (the all-to-all of counts and the host's wait for them: the
  one synchronisation between ranks), `post_dispatch_s`: from there to the last launch;
- `exchange_s`: the control group's flag exchange after the iteration (gloo, host only);
- `steal_jiffies`, `busy_jiffies`: cumulative /proc/stat counters of the whole VM, read every
  STAT_EVERY iterations (steal = time the hypervisor ran something else on our vCPUs).
`phase` = mixed for the last --mixed-s seconds, when one short prompt (--mixed-prompt tokens, as
a Poisson short-prompt load's) joins every other iteration: the EP2 load runs' prompt-carrying
iterations start 2-3x slower in a fresh process and fall over ~150 of them (not per exact batch
size: nearly every one is a size the rank never ran), `segments_allocated` (the caching allocator's
cumulative cudaMalloc count) says whether that is the allocator growing its pool.
Modes: `ep`, the two ranks expert-parallel as real/serve's ep2 plan; `solo`, every rank its own
one-GPU engine (all experts local, eager, no communication), run at the same time on each GPU: are
the phases in a process that shares nothing with another? The last PROFILE_ITERATIONS iterations are
profiled (torch.profiler) for the kernels and runtime calls of one iteration (`hostprobe_kernels.csv`).

What it decides (the serving twin's EP2 terms): if `cpu_probe_s` and `exchange_s` follow the
iteration's phases (and solo processes show them too), the phases are the host's speed, a state of
the machine the twin can only carry as a measured spread of the host-bound share; if only
`dispatch_s` grows, they are the ranks' synchronisation (one rank's stall costs both); the kernel
count times the host cost per launch is the eager launch term.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

import real.model as model_mod

from real.bench.device import environment, nccl_version
from real.bench.records import ENV_COLS, log
from real.configs import get_spec
from real.model import build_model
from real.serve.engine import Engine, EngineConfig, Request
from real.serve.hostpin import current_cpu
from real.telemetry import Telemetry

STAT_EVERY = 10  # iterations between /proc/stat readings (reading 32 CPUs' lines costs ~0.1 ms)
PROFILE_ITERATIONS = 4
MIXED_OUTPUT = 2  # tokens of each short request of the mixed phase
MIXED_ROOM = 4    # running slots beyond --rows for them
FLUSH_EVERY = 200  # iterations between rewrites of the probe CSV
CPU_PROBE_LOOPS = 2000  # the pure-Python workload: ~50-100 us on a server core
PROBE_COLS = ["bench", "mode", "model", "rows", "context", "split", "rank", "iteration", "start_s", "duration_s",
              "host_s", "pre_dispatch_s", "dispatch_s", "post_dispatch_s", "exchange_s", "cpu_probe_s",
              "decode_seqs", "prefill_tokens", "cpu_id", "phase", "segments_allocated", "steal_jiffies", "busy_jiffies"]
KERNEL_COLS = ["bench", "mode", "model", "rows", "context", "split", "rank", "iterations", "kernels_per_iteration",
               "runtime_calls_per_iteration", "syncs_per_iteration", "aten_ops_per_iteration", "kernel_s_per_iteration"]


def cpu_probe() -> float:
    """Seconds of a fixed pure-Python workload (no allocation beyond small ints)."""
    t = time.perf_counter()
    acc = 0
    for i in range(CPU_PROBE_LOOPS):
        acc += i * i % 7
    return time.perf_counter() - t


def proc_stat() -> tuple[int, int]:
    """(steal, busy) jiffies of the whole machine from /proc/stat's first line; (-1, -1) if unreadable."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
        v = [int(x) for x in parts[1:]]
        # user nice system idle iowait irq softirq steal ...
        return (v[7] if len(v) > 7 else -1), v[0] + v[1] + v[2] + v[5] + v[6]
    except (OSError, ValueError, IndexError):
        return -1, -1


class DispatchClock:
    """Wraps real.model's dispatch so each iteration records when the MoE layer reached it and
    left it (the host's wait for the all-to-all sizes happens inside)."""

    def __init__(self):
        self.mod = model_mod
        self.inner = model_mod.dispatch
        self.marks: list[tuple[float, float]] = []

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = self.inner(*a, **k)
            self.marks.append((t0, time.perf_counter()))
            return out
        model_mod.dispatch = timed

    def take(self) -> list[tuple[float, float]]:
        out, self.marks = self.marks, []
        return out

    def restore(self):
        self.mod.dispatch = self.inner


def _segments(dev) -> int:
    """Cumulative device allocations (cudaMalloc segments) of the caching allocator; -1 on the CPU."""
    if dev.type != "cuda":
        return -1
    st = torch.cuda.memory_stats(dev)
    return int(st.get("num_device_alloc", st.get("segment.all.allocated", -1)))


def _exchange(flag: int, group) -> float:
    t = time.perf_counter()
    box = torch.tensor([flag], dtype=torch.int64)
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=group)
    box.tolist()
    return time.perf_counter() - t


def _requests(start_id: int, n: int, context: int, output_len: int, vocab: int, t: float) -> list[Request]:
    g = torch.Generator().manual_seed(start_id)
    return [Request(start_id + i, t, torch.randint(0, vocab, (context,), generator=g).tolist(), output_len)
            for i in range(n)]


def run(args) -> int:
    module_loading = os.environ.get("CUDA_MODULE_LOADING", "default")   # before torch's CUDA init sets LAZY
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and args.device != "cpu"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    ep = args.mode == "ep" and world > 1
    control = ep_group = None
    if world > 1:
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if use_cuda and ep else "gloo")
        control = dist.new_group(backend="gloo")
        ep_group = dist.group.WORLD if ep else None
    spec = get_spec(args.model)
    dtype = torch.bfloat16 if use_cuda else torch.float32
    context, out_len = args.context, args.max_context - args.context - 1
    cfg = EngineConfig(page_size=args.page_size, num_pages=args.num_pages, token_budget=max(args.rows, 2048 if use_cuda else 64),
                       max_running=args.rows + MIXED_ROOM, max_context=args.max_context, cuda_graphs=False)
    torch.manual_seed(0)
    model = build_model(spec, dev, dtype, ep_group=ep_group, max_seq_len=args.max_context)
    model.eval()
    engine = Engine(model, cfg)
    engine.timing = True
    tel = Telemetry(local_rank)
    env = environment(dev, tel)
    env["nccl_version"] = nccl_version() if use_cuda else ""
    env["num_gpus"] = world if use_cuda else 0
    env["timestamp_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    envcols = {k: env.get(k, "") for k in ENV_COLS} | {"nccl_version": env["nccl_version"], "num_gpus": env["num_gpus"]}
    if use_cuda:
        envcols["sm_clock_mhz"], envcols["mem_clock_mhz"] = tel.sm_clock_mhz(), tel.mem_clock_mhz()
    envcols["module_loading"] = module_loading   # s11srv2: LAZY (torch's default) or EAGER
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.mode}_r{rank}"
    sink = _Appender(out / f"hostprobe_{tag}.csv", PROBE_COLS, envcols)
    lo, hi = (int(v) for v in args.mixed_prompt.split("-"))
    prng = np.random.default_rng(1000 + rank)
    clock = DispatchClock()
    next_id = rank * 1_000_000
    rows_out, kern_out = [], []
    base = {"bench": "serve_hostprobe", "mode": args.mode, "model": args.model, "rows": args.rows,
            "context": context, "split": "fit"}
    t0 = time.perf_counter()
    engine.reset(t0)
    prof_from = None
    it = 0
    prof = None
    stat = (-1, -1)
    while True:
        elapsed = time.perf_counter() - t0
        stop = elapsed >= args.seconds
        if control is not None and ep:
            box = torch.tensor([int(stop)], dtype=torch.int64)
            dist.all_reduce(box, op=dist.ReduceOp.MAX, group=control)
            stop = bool(box.item())
        if stop and prof is None and prof_from is None:
            prof_from = it
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if use_cuda else [])
            prof = profile(activities=acts)
            prof.__enter__()
        if prof is not None and it >= prof_from + PROFILE_ITERATIONS:
            break
        # keep `rows` long requests running: top up as they finish (each refill is one prompt iteration)
        missing = args.rows - sum(1 for r in (*engine.running, *engine.waiting) if r.output_len == out_len)
        if missing > 0:
            for r in _requests(next_id, missing, context, out_len, spec.vocab_size, time.perf_counter() - t0):
                engine.add(r)
            next_id += missing
        # the mixed phase: every other iteration one short prompt of a random length (as a Poisson
        # short-prompt load's) joins one rank's decode rows (the ranks in turn) and leaves after 2 tokens
        phase = "mixed" if elapsed >= args.seconds - args.mixed_s else "decode"
        if phase == "mixed" and it % 2 == 0 and (it // 2) % max(world, 1) == rank and not stop:
            engine.add(_requests(next_id, 1, int(prng.integers(lo, hi + 1)), MIXED_OUTPUT, spec.vocab_size,
                                 time.perf_counter() - t0)[0])
            next_id += 1
        probe_s = cpu_probe()
        if it % STAT_EVERY == 0:
            stat = proc_stat()
        cpu = current_cpu()
        clock.take()
        rec = engine.step()
        marks = clock.take()
        start_abs = t0 + rec.start_s
        exch = _exchange(1, control) if (control is not None and ep) else float("nan")
        pre = (marks[0][0] - start_abs) if marks else float("nan")
        inside = sum(b - a for a, b in marks) if marks else float("nan")
        post = (rec.host_s - (marks[-1][1] - start_abs)) if marks else float("nan")
        rows_out.append({**base, "rank": rank, "iteration": it, "start_s": rec.start_s, "duration_s": rec.duration_s,
                         "host_s": rec.host_s, "pre_dispatch_s": pre, "dispatch_s": inside, "post_dispatch_s": post,
                         "exchange_s": exch, "cpu_probe_s": probe_s, "decode_seqs": rec.decode_seqs,
                         "prefill_tokens": rec.prefill_tokens, "cpu_id": cpu, "phase": phase,
                         "segments_allocated": _segments(dev),
                         "steal_jiffies": stat[0] if it % STAT_EVERY == 0 else "",
                         "busy_jiffies": stat[1] if it % STAT_EVERY == 0 else ""})
        it += 1
        if it % FLUSH_EVERY == 0:   # a part cut by its timeout keeps the iterations so far
            sink.add(rows_out[-FLUSH_EVERY:])
    prof.__exit__(None, None, None)
    clock.restore()
    n = PROFILE_ITERATIONS
    evs = prof.events()
    kernels = [e for e in evs if getattr(e, "device_type", None) is not None and str(e.device_type).endswith("CUDA")]
    runtime = [e for e in evs if e.name.startswith("cuda") and not str(getattr(e, "device_type", "")).endswith("CUDA")]
    syncs = [e for e in runtime if "Synchronize" in e.name or "MemcpyAsync" in e.name]
    aten = [e for e in evs if e.name.startswith("aten::")]
    kern_out.append({**base, "rank": rank, "iterations": n, "kernels_per_iteration": len(kernels) / n,
                     "runtime_calls_per_iteration": len(runtime) / n, "syncs_per_iteration": len(syncs) / n,
                     "aten_ops_per_iteration": len(aten) / n,
                     "kernel_s_per_iteration": sum(getattr(e, "device_time_total", 0.0) or 0.0 for e in kernels) / n / 1e6})
    sink.add(rows_out[it - it % FLUSH_EVERY:])
    sink.close()
    kern = _Appender(out / f"hostprobe_kernels_{tag}.csv", KERNEL_COLS, envcols)
    kern.add(kern_out)
    kern.close()
    dec = sorted(r["duration_s"] for r in rows_out if r["prefill_tokens"] == 0)
    log(f"hostprobe {args.mode} rank {rank}: {len(rows_out)} iterations, decode median "
        f"{dec[len(dec) // 2] * 1e3 if dec else float('nan'):.2f} ms, {kern_out[0]['kernels_per_iteration']:.0f} kernels "
        f"and {kern_out[0]['aten_ops_per_iteration']:.0f} aten ops an iteration")
    if world > 1:
        dist.barrier(group=control)
        dist.destroy_process_group()
    return 0


class _Appender:
    """A CSV written as rows come (flushed each add), so a run cut short keeps what it measured."""

    def __init__(self, path: Path, cols: list[str], envcols: dict):
        self.envcols = envcols
        self.f = open(path, "w", newline="")
        self.w = csv.DictWriter(self.f, cols + [c for c in envcols if c not in cols])
        self.w.writeheader()

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.w.writerow({**r, **self.envcols})
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m real.serve.hostprobe", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=["ep", "solo"], default="ep")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto")
    ap.add_argument("--model", default="v3-slice-2l")
    ap.add_argument("--rows", type=int, default=8, help="decoding requests per rank")
    ap.add_argument("--context", type=int, default=512, help="prompt tokens of each request")
    ap.add_argument("--max-context", type=int, default=2112)
    ap.add_argument("--mixed-s", type=float, default=0.0,
                    help="the last seconds: one short prompt joins every other iteration (mixed iterations)")
    ap.add_argument("--mixed-prompt", default="128-512", help="LO-HI tokens of the mixed phase's prompts")
    ap.add_argument("--page-size", type=int, default=64)
    ap.add_argument("--num-pages", type=int, default=1024)
    a = ap.parse_args(argv)
    if not 0 < a.context < a.max_context - 1:
        ap.error(f"--context {a.context}: must be in 1..{a.max_context - 2}")
    if a.rows < 1 or a.seconds <= 0 or not 0 <= a.mixed_s <= a.seconds:
        ap.error("--rows and --seconds must be positive, --mixed-s in 0..--seconds")
    try:
        lo, hi = (int(v) for v in a.mixed_prompt.split("-"))
        assert 1 <= lo <= hi and hi + MIXED_OUTPUT < a.max_context
    except (ValueError, AssertionError):
        ap.error(f"--mixed-prompt {a.mixed_prompt!r}: expected LO-HI with 1 <= LO <= HI < max_context - {MIXED_OUTPUT}")
    return a


def main(argv=None) -> int:
    return run(_args(argv))


if __name__ == "__main__":
    sys.exit(main())
