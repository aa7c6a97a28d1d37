"""One decode-graph replay after an idle gap (session s27serve round 3, issue 15; docs/notes/s27serve3_rule.md): is the
low-load slowdown of a small model's replays (bench-small at Poisson 11/s: 1.18 ms a 1-row replay against 1.06 ms in a
closed loop, set K) the GPU's (clocks, power state after idle), the host's (a sleeping thread's wake-up, a slower
core) or neither? Fitting evidence only: no figure here is judged.

The model's decode graphs are captured as the engine captures them (real.serve.engine.Engine.capture_graphs); then one
graph (ROWS rows, the page bucket of CONTEXT tokens) is replayed REPS times in each condition (the idle gap before it,
GAPS_S, and how the host waits: `sleep` (time.sleep, the engine's wait between arrivals) or `spin` (a busy loop)), the
conditions interleaved in shuffled rounds so a drift of the machine falls on all alike; each condition's replay is
followed by CHAIN - 1 back-to-back replays of the same graph (chain 1.., the closed loop's case; NVML is read before
the gap and after the chain, outside them, so "gap 0" still has the reads' ~0.1 ms before it). Per replay: the wait asked and
got, the host seconds to return from replay() (launch_s), the seconds from the replay call to the result's .tolist()
(total_s: what serve_iterations.duration_s times), the CUDA-event seconds around the replay (gpu_s), NVML's SM and
memory clocks and the performance state read before the wait and after the result, the CPU and its cpufreq MHz.

    python -m real.serve.idleprobe --model bench-small --out DIR [--reps 80] [--device auto|cpu]
writes DIR/idle_probe.csv (+ env columns on every row). On a CPU (or without graphs) it writes the header and a note
and exits 0 (the campaign's dry run).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import torch

from real.bench.device import cuda_pci_bus_id, environment, nccl_version
from real.configs import get_spec
from real.model import build_model
from real.serve.engine import Engine, EngineConfig
from real.serve.paged_cache import SCRATCH_PAGE
from real.serve.hostpin import apply_pin, cpu_mhz, current_cpu
from real.serve.plans import PLANS
from real.telemetry import Telemetry

GAPS_S = (0.0, 0.0001, 0.0005, 0.001, 0.002, 0.005)
WAITS = ("sleep", "spin")
ROWS = (1, 4)
CONTEXT = 512
CHAIN = 4   # replays a condition: the first after the gap, three back-to-back (the loop's own gap) after it
PLAN = "gpu1-s27l-bench"   # the engine configuration of set L's plans (the model is the --model)
COLS = ["model", "rows", "context_tokens", "page_bucket", "wait", "gap_s", "round", "chain", "wait_s", "launch_s", "total_s",
        "gpu_s", "sm_mhz_before", "sm_mhz_after", "mem_mhz_before", "pstate_before", "pstate_after", "cpu", "cpu_mhz"]
ENV_KEYS = ("gpu_name", "max_sm_clock_mhz", "max_mem_clock_mhz", "power_limit_w", "driver_version", "torch_version",
            "cuda_version", "nccl_version", "hostname")


def _wait(kind: str, gap_s: float) -> float:
    t = time.perf_counter()
    if gap_s > 0:
        if kind == "sleep":
            time.sleep(gap_s)
        else:
            while time.perf_counter() - t < gap_s:
                pass
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real.serve.idleprobe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=80)
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto")
    ap.add_argument("--seed", type=int, default=27)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.reps < 1:
        print(f"--reps: {args.reps} not allowed: at least 1", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "idle_probe.csv"
    use_cuda = torch.cuda.is_available() and args.device != "cpu"
    dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    tel = Telemetry(0, cuda_pci_bus_id(dev) if use_cuda else None)   # this GPU's NVML handle (CUDA_VISIBLE_DEVICES)
    env = environment(dev, tel)
    env["nccl_version"] = nccl_version() if use_cuda else ""
    envcols = {k: env.get(k, "") for k in ENV_KEYS}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS + list(envcols))
        w.writeheader()
        if not use_cuda:
            print("idleprobe: no CUDA device: header only (dry run)")
            return 0
        cpus = apply_pin("core", 0, 1, 0)   # as the load runs (pin="core")
        print(f"idleprobe: pinned to CPUs {cpus}")
        plan = PLANS[PLAN]
        spec = get_spec(args.model)
        cfg = EngineConfig(page_size=plan.page_size, num_pages=plan.num_pages, token_budget=plan.token_budget,
                           max_running=plan.max_running, max_context=plan.max_context, cuda_graphs=True)
        torch.manual_seed(0)
        model = build_model(spec, dev, getattr(torch, plan.dtype_gpu), max_seq_len=plan.max_context)
        model.eval()
        engine = Engine(model, cfg)
        t = time.perf_counter()
        n = engine.capture_graphs()
        print(f"idleprobe {args.model} on {env.get('gpu_name')}: {n} graphs captured in {time.perf_counter() - t:.1f} s")
        g = engine.graphs
        ps = cfg.page_size
        pages = engine.cache.pages_for(CONTEXT)
        ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        conds = [(r, k, gap) for r in ROWS for k in WAITS for gap in GAPS_S]
        rng = random.Random(args.seed)

        def replay(rows: int, bucket) -> tuple[float, float, float]:
            t0 = time.perf_counter()
            ev0.record()
            out = g.replay(bucket, [0] * rows, [CONTEXT - 1] * rows, [SCRATCH_PAGE * ps] * rows,
                           [[SCRATCH_PAGE] * pages] * rows, [CONTEXT] * rows)
            ev1.record()
            t1 = time.perf_counter()
            out.tolist()
            t2 = time.perf_counter()
            return t1 - t0, t2 - t0, ev0.elapsed_time(ev1) / 1e3

        for r in ROWS:   # every graph used once before the timed rounds
            for _ in range(5):
                replay(r, g.bucket(r, pages))
        torch.cuda.synchronize()
        t = time.perf_counter()
        for rnd in range(args.reps):
            rng.shuffle(conds)
            rows_out = []
            for rows, kind, gap in conds:
                bucket = g.bucket(rows, pages)
                sm0, mem0, p0 = tel.sm_clock_mhz(), tel.mem_clock_mhz(), tel.performance_state()
                got = _wait(kind, gap)
                timed = [replay(rows, bucket) for _ in range(CHAIN)]   # the first after the gap, then back-to-back
                cpu = current_cpu()
                after = {"sm_mhz_after": tel.sm_clock_mhz(), "pstate_after": tel.performance_state(), "cpu": cpu,
                         "cpu_mhz": cpu_mhz(cpu)}
                for k, (launch_s, total_s, gpu_s) in enumerate(timed):
                    rows_out.append({"model": args.model, "rows": rows, "context_tokens": CONTEXT,
                                     "page_bucket": bucket[1], "wait": kind, "gap_s": gap, "round": rnd, "chain": k,
                                     "wait_s": got if k == 0 else 0.0, "launch_s": launch_s, "total_s": total_s,
                                     "gpu_s": gpu_s, "sm_mhz_before": sm0, "mem_mhz_before": mem0,
                                     "pstate_before": p0, **after, **envcols})
            w.writerows(rows_out)
        print(f"idleprobe {args.model}: {args.reps} rounds of {len(conds)} conditions in "
              f"{time.perf_counter() - t:.1f} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
