"""What does the serving engine spend on a prompt step out of an empty queue? (session s30serve, issue 15;
docs/notes/s30serve_rule.md). Fitting records only: no figure here is judged.

Set O (s29serve) found the twin pricing the H200 prompt steps of warmed engine processes 14-35% short, closed loops
included: the steps whose flat size (prompt tokens + decode rows) the process had not run before, above its warm pass,
ran 1.5-5 ms over the steps of sizes it had run, after an idle or not. The twin in force counts every size between the
warm pass and the token budget as met (the plan warm-up's closed loop fills the budget). This probe measures the engine
process itself, in the state the load runs start from (the plan's decode graphs captured, its warm-up loads run, the
first run's warm pass), one prompt step at a time through Engine.step() (the serving path: schedule, inputs, eager
forward, the wait for the tokens; every step starts with nothing queued on the GPU, as every serving step does):

  for each of SIZES distinct flat sizes above the warm pass that neither the pass nor the warm-up ran (seeded draw from
  warm+1 .. --max-size), in shuffled order, half under each gap class:
    gap class "idle": time.sleep(--idle-s) before the step (the engine's sleep until the next arrival);
    gap class "busy": a prompt step of LEAD_TOKENS (a met size) right before it (a hot host, the GPU queue drained);
    kind "first"  the size's first step in the process;
    kind "repeat" the same size again, under the same gap class;
    kind "met"    a size the warm pass ran (drawn from warm/2 .. warm), under the same gap class;
  then PROFILED more fresh sizes (busy class), each first and repeat step under torch.profiler (CPU and CUDA
  activities): per step the operators' self CPU time, written to profile.txt (their durations carry the profiler's
  overhead and are marked kind first-prof / repeat-prof).

Per step (firstmet_steps.csv): size, kind, gap class, the idle asked and the gap got (the previous step's end to this
one's start), duration_s (Engine's: serve_iterations.duration_s's quantity), host_s (the start until every kernel was
launched), gpu_s (CUDA events around the launches), the CPU's MHz, the SM clock and NVML clock-event reasons after it,
and the caching allocator's cudaMalloc calls and segments during the step (torch.cuda.memory_stats, read outside the
timed step), plus the environment columns on every row.

    python -m real.serve.firstmet --plan gpu1-s30p-bench --out DIR [--sizes 32] [--max-size 1100] [--device auto|cpu]
On a CPU (the campaign's dry run, the tiny plan) the same steps run eagerly (gpu_s and the clocks empty).
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
from real.serve.engine import Engine, EngineConfig, Request
from real.serve.hostpin import apply_pin
from real.serve.loadgen import make_arrivals, run_load
from real.serve.plans import PLANS
from real.telemetry import Telemetry, pynvml

LEAD_TOKENS = 64   # the busy class's lead step (at most the warm pass): a size the pass ran
PROFILED = 3
COLS = ["model", "plan", "order", "size", "kind", "gap_class", "idle_asked_s", "gap_s", "duration_s", "host_s", "gpu_s",
        "cpu_mhz", "sm_clock_mhz", "clock_reasons", "device_allocs", "segments", "warm_tokens", "warmup_sizes_met"]
ENV_KEYS = ("gpu_name", "max_sm_clock_mhz", "max_mem_clock_mhz", "power_limit_w", "driver_version", "torch_version",
            "cuda_version", "nccl_version", "hostname")


def _alloc_counts(dev: torch.device) -> tuple[int, int]:
    if dev.type != "cuda":
        return 0, 0
    st = torch.cuda.memory_stats(dev)
    return int(st.get("num_device_alloc", 0)), int(st.get("segment.all.allocated", 0))


def _clock_reasons(tel: Telemetry):
    fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None) if pynvml is not None else None

    def read() -> int:
        try:
            return int(fn(tel.handle))
        except Exception:  # NVMLError subclasses, no NVML or no such call
            return -1
    return read


class Prober:
    """One engine process's probe steps: each a single prompt of `size` tokens (output 1: it finishes in the step)."""

    def __init__(self, engine: Engine, vocab: int, rng: random.Random, dev: torch.device):
        self.engine, self.vocab, self.rng, self.dev = engine, vocab, rng, dev
        self.rid = 0
        self.last_end = None

    def step(self, size: int):
        eng = self.engine
        eng.add(Request(self.rid, 0.0, [self.rng.randrange(self.vocab) for _ in range(size)], 1))
        self.rid += 1
        a0, s0 = _alloc_counts(self.dev)
        rec = eng.step()
        a1, s1 = _alloc_counts(self.dev)
        gap = rec.start_s - self.last_end if self.last_end is not None else float("inf")
        self.last_end = rec.start_s + rec.duration_s
        return rec, gap, a1 - a0, s1 - s0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real.serve.firstmet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", required=True, choices=sorted(PLANS))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sizes", type=int, default=32)
    ap.add_argument("--max-size", type=int, default=1100)
    ap.add_argument("--warm", type=int, default=-1, help="the warm pass (default: the plan's first run's warm_shapes)")
    ap.add_argument("--idle-s", type=float, default=0.2)
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto")
    ap.add_argument("--seed", type=int, default=30)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    plan = PLANS[args.plan]
    warm = plan.runs[0].warm_shapes if args.warm < 0 else args.warm
    if args.sizes < 2:
        print(f"--sizes: {args.sizes} not allowed: at least 2", file=sys.stderr)
        return 2
    if not 2 <= warm < args.max_size < plan.token_budget:
        print(f"--warm {warm} / --max-size {args.max_size}: need 2 <= warm < max-size < the plan's token budget "
              f"{plan.token_budget}", file=sys.stderr)
        return 2
    lead_tokens = min(LEAD_TOKENS, warm)
    args.out.mkdir(parents=True, exist_ok=True)
    use_cuda = torch.cuda.is_available() and args.device != "cpu"
    dev = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    tel = Telemetry(0, cuda_pci_bus_id(dev) if use_cuda else None)
    env = environment(dev, tel)
    env["nccl_version"] = nccl_version() if use_cuda else ""
    envcols = {k: env.get(k, "") for k in ENV_KEYS}
    cpus = apply_pin("core", 0, 1, 0 if use_cuda else None)   # as the load runs (pin="core")
    spec = get_spec(plan.model)
    cfg = EngineConfig(page_size=plan.page_size, num_pages=plan.num_pages, token_budget=plan.token_budget,
                       max_running=plan.max_running, max_context=plan.max_context, cuda_graphs=True)
    torch.manual_seed(0)
    model = build_model(spec, dev, getattr(torch, plan.dtype_gpu if use_cuda else plan.dtype_cpu),
                        max_seq_len=plan.max_context)
    model.eval()
    engine = Engine(model, cfg)
    t = time.perf_counter()
    n_graphs = engine.capture_graphs()
    met = set()
    for run in plan.warmup:   # the serving process's warm-up loads (cli.main), their eager sizes kept
        run_load(engine, make_arrivals(run, spec.vocab_size), run.max_duration_s)
        met |= {it.prefill_tokens + it.decode_seqs for it in engine.iterations if it.graph_batch == 0}
    warmup_met = len(met)
    engine.warm_shapes(warm)
    met |= set(range(1, warm + 1))
    print(f"firstmet {plan.model} on {env.get('gpu_name')} (CPUs {cpus}): {n_graphs} graphs, warm-up "
          f"{warmup_met} eager sizes, warm pass {warm}, set up in {time.perf_counter() - t:.1f} s", flush=True)
    engine.timing = True
    if tel.available:
        engine.sm_clock = tel.sm_clock_mhz
        engine.clock_reasons = _clock_reasons(tel)
    rng = random.Random(args.seed)
    fresh = [n for n in range(warm + 1, args.max_size + 1) if n not in met]
    rng.shuffle(fresh)
    main_sizes, prof_sizes = fresh[:args.sizes], fresh[args.sizes:args.sizes + PROFILED]
    engine.reset(time.perf_counter())
    prober = Prober(engine, spec.vocab_size, random.Random(args.seed + 1), dev)
    rows, order = [], 0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def one(size: int, kind: str, gap_class: str) -> None:
        nonlocal order
        if gap_class == "idle":
            time.sleep(args.idle_s)
        else:
            lead = prober.step(lead_tokens)
            rows.append(_row(lead, lead_tokens, "lead", gap_class, order))
            order += 1
        rows.append(_row(prober.step(size), size, kind, gap_class, order))
        order += 1

    def _row(got, size, kind, gap_class, k) -> dict:
        rec, gap, allocs, segs = got
        return {"model": plan.model, "plan": args.plan, "order": k, "size": size, "kind": kind, "gap_class": gap_class,
                "idle_asked_s": args.idle_s if gap_class == "idle" and kind != "lead" else 0.0, "gap_s": gap,
                "duration_s": rec.duration_s, "host_s": rec.host_s, "gpu_s": rec.gpu_s, "cpu_mhz": rec.cpu_mhz,
                "sm_clock_mhz": rec.sm_clock_mhz, "clock_reasons": rec.clock_reasons, "device_allocs": allocs,
                "segments": segs, "warm_tokens": warm, "warmup_sizes_met": warmup_met, "timestamp_utc": stamp,
                **envcols}

    t = time.perf_counter()
    for i, size in enumerate(main_sizes):
        gap_class = "idle" if i % 2 == 0 else "busy"
        for kind in ("first", "repeat", "met"):
            one(size if kind != "met" else rng.randint(max(1, warm // 2), warm), kind, gap_class)
    print(f"firstmet {plan.model}: {len(main_sizes)} fresh sizes x 3 steps in {time.perf_counter() - t:.1f} s",
          flush=True)
    prof_lines = []
    for size in prof_sizes:
        for kind in ("first-prof", "repeat-prof"):
            rows.append(_row(prober.step(lead_tokens), lead_tokens, "lead", "busy", order))
            order += 1
            acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if use_cuda else [])
            with torch.profiler.profile(activities=acts) as prof:
                got = prober.step(size)
            rows.append(_row(got, size, kind, "busy", order))
            order += 1
            prof_lines += [f"== {plan.model} size {size} {kind}: step {got[0].duration_s * 1e3:.3f} ms under the profiler",
                           prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), ""]
    with open(args.out / "firstmet_steps.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS + ["timestamp_utc"] + list(envcols))
        w.writeheader()
        w.writerows(rows)
    (args.out / "profile.txt").write_text("\n".join(prof_lines) + "\n")
    print(f"firstmet {plan.model}: {len(rows)} steps -> {args.out / 'firstmet_steps.csv'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
