"""What a serving load campaign writes (torch-free, so calibration can read the schema):

serve_load.csv        one row per load run: engine settings, load, throughput, latency percentiles,
                      split (fit|holdout) and the environment (ENV_COLS + nccl_version).
serve_requests.csv    one row per request: arrival, admission, lengths, first token, finish,
                      mean and largest gap between its tokens, and the iterations of its first and
                      last token. A running request decodes in every iteration (decode rows go
                      first), so its k-th token came at the end of iteration first_token_iteration
                      + k - 1: with serve_iterations.csv that gives every token's time.
serve_iterations.csv  one row per iteration and rank (EP ranks step together, so num_iterations
                      in serve_load is the count of one rank): start, duration, the batch (prefill tokens
                      and sequences, decode sequences, cached tokens attended over), queue lengths,
                      the CUDA-graph bucket (0 = eager) and whether it was an EP rank's padding step;
                      with --timing also the host / GPU split, the main thread's CPU and the GPU's
                      SM clock after the iteration (real/serve/engine.py IterationRecord,
                      real/serve/hostpin.py).
serve_stalls.csv      (--stall-trace) one row per iteration: the main thread's host counters over the iteration
                      (thread CPU time, scheduler run delay, context switches, page faults, its CPU's steal / irq
                      time, Python GC collections, the CUDA caching allocator's segment allocations), keyed by
                      (run_id, rank, iteration) like serve_iterations (real/serve/stalltrace.py).
serve_hostrun.csv     (--stall-trace) per run: every CPU's busy / steal / irq time and interrupts, this process's
                      threads' and other processes' CPU time over the run, the objects GC tracks at its start.
serve_load's `run_t0_monotonic_s` (--stall-trace) is the run's time zero on CLOCK_MONOTONIC (time.perf_counter), to align
its iterations with another process's clock reads (the hiccup meter's gaps); `gc_frozen` is 1 when the run's process froze its heap after warm-up (--gc-freeze), 0 when not.
serve_load's probe_{before,after}_* columns are the host's speed measured right before and right after
the run in the engine's process (real/serve/hostspeed.py: launch_s host seconds per small kernel
launch, graph_s per CUDA-graph replay, py_s per pure-Python pass, each a window's mean, *_p50_s its
median; under EP the slowest rank's; empty without --host-probe), the pause_* columns the host's pauses while
launching eager chains right before the run (hostspeed.pause_probe, --pause-probe; under EP the rank that paused
most; empty without), `co_runner_nice` the nice level of
a busy process sharing the main thread's CPU during the run (empty: none), `cpu_model` / `cpu_mhz`
what /proc/cpuinfo said after the run.
serve_load's `pin` is the main thread's CPU pinning during the run (hostpin.PIN_MODES), `pin_cpus`
the CPUs it was allowed (per rank, ';' between ranks), `warm_shapes` the flat batch sizes 1..N the
engine had run before the run (Engine.warm_shapes; 0 = none warmed on purpose).
All times in seconds from the run's start (the first arrival may come later for Poisson loads).
Requests unfinished at a run's hard cap have empty finish columns and count in no latency figure;
their tokens count in the throughput, which is tokens produced over the run's duration (start to
the end of its last iteration).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

from real.bench.records import ENV_COLS

# the host probe's measures (real/serve/hostspeed.py), here so calibration reads the schema without torch
PROBE_KEYS = ("launch_s", "launch_p50_s", "graph_s", "graph_p50_s", "py_s", "py_p50_s")
# the pause probe's columns (real/serve/hostspeed.py pause_probe, --pause-probe): timed launch seconds, chains,
# their median, the pauses counted and their sizes (';'-joined seconds over the median chain)
PAUSE_KEYS = ("pause_window_s", "pause_chains", "pause_chain_p50_s", "pause_count", "pause_sizes_s")
# under --stall-trace, each pause's main-thread counters (';'-joined in the order of pause_sizes_s): thread CPU seconds,
# scheduler run delay seconds, involuntary and voluntary context switches over the paused chain
PAUSE_TRACE_KEYS = ("pause_thread_cpu_s", "pause_run_delay_s", "pause_nivcsw", "pause_nvcsw")

ENGINE_COLS = ["engine", "model", "precision", "dtype", "num_gpus", "ep_size", "attention_parallel",
               "page_size", "num_pages", "token_budget", "max_running", "max_context", "cuda_graphs",
               "graph_batch_buckets", "graph_page_buckets", "kv_bytes_per_token"]
LOAD_COLS = (["run_id", "split", "arrival", "rate_per_s", "concurrency", "input_len_spec",
              "output_len_spec", "load_s", "max_duration_s", "seed", "pin", "pin_cpus", "warm_shapes", "co_runner_nice"] + ENGINE_COLS
             + ["num_requests", "num_completed", "truncated", "num_iterations", "duration_s",
                "output_tokens_per_s", "input_tokens_per_s",
                "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "tpot_p90_s", "tpot_p99_s",
                "e2e_p50_s", "e2e_p99_s"] + ENV_COLS + ["nccl_version", "cpu_model", "cpu_mhz"]
             + [f"probe_{w}_{k}" for w in ("before", "after") for k in PROBE_KEYS] + ["probe_launch_ranks_s"]
             + list(PAUSE_KEYS) + ["gc_frozen"] + list(PAUSE_TRACE_KEYS) + ["run_t0_monotonic_s"])
REQUEST_COLS = ["run_id", "rank", "request_id", "arrival_s", "admitted_s", "input_len", "output_len",
                "first_token_s", "finish_s", "mean_tpot_s", "max_gap_s", "first_token_iteration",
                "finish_iteration", "num_chunks", "tokens_out"]
ITERATION_COLS = ["run_id", "rank", "iteration", "start_s", "duration_s", "prefill_tokens",
                  "prefill_seqs", "decode_seqs", "kv_tokens", "decode_kv_tokens", "max_kv_tokens", "waiting", "running",
                  "graph_batch", "idle", "host_s", "gpu_s", "cpu_id", "cpu_id_end", "cpu_mhz", "sm_clock_mhz", "clock_reasons"]
# --stall-trace (real/serve/stalltrace.py): per iteration the main thread's host counters, per run the whole host's
STALL_CUDA_COLS = ("cuda_segment_allocs", "cuda_segment_frees", "cuda_alloc_retries", "cuda_device_allocs",
                   "cuda_device_frees")
STALL_COLS = ["run_id", "rank", "iteration", "span_s", "thread_cpu_s", "run_delay_s", "timeslices", "nvcsw", "nivcsw",
              "minflt", "majflt", "cpu", "cpu_steal_s", "cpu_irq_s", "cpu_softirq_s", "gc_count", "gc_s", "gc_max_gen",
              "gc_gen2_s", *STALL_CUDA_COLS, "thread_user_s", "thread_sys_s"]
HOSTRUN_COLS = ["run_id", "rank", "scope", "key", "name", "cpu_s", "steal_s", "irq_s", "softirq_s", "interrupts",
                "processor", "value"]
FAMILIES = {"serve_load": LOAD_COLS, "serve_requests": REQUEST_COLS, "serve_iterations": ITERATION_COLS,
            "serve_stalls": STALL_COLS, "serve_hostrun": HOSTRUN_COLS}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between order statistics (numpy's default); NaN if empty."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(requests: list[dict], iterations: list[dict], duration_s: float) -> dict:
    """Throughput and latency figures of one run from its request and iteration rows."""
    done = [r for r in requests if r["finish_s"] != ""]
    ttft = [r["first_token_s"] - r["arrival_s"] for r in requests if r["first_token_s"] != ""]
    tpot = [r["mean_tpot_s"] for r in done if r["mean_tpot_s"] != ""]
    e2e = [r["finish_s"] - r["arrival_s"] for r in done]
    out_tokens = sum(r["tokens_out"] for r in requests)
    in_tokens = sum(it["prefill_tokens"] for it in iterations)
    d = duration_s if duration_s > 0 else math.nan
    return {"num_requests": len(requests), "num_completed": len(done),
            "truncated": int(len(done) < len(requests)),
            "num_iterations": max(Counter(it["rank"] for it in iterations).values(), default=0),
            "duration_s": duration_s,
            "output_tokens_per_s": out_tokens / d, "input_tokens_per_s": in_tokens / d,
            "ttft_p50_s": percentile(ttft, 50), "ttft_p90_s": percentile(ttft, 90),
            "ttft_p99_s": percentile(ttft, 99), "tpot_p50_s": percentile(tpot, 50),
            "tpot_p90_s": percentile(tpot, 90), "tpot_p99_s": percentile(tpot, 99),
            "e2e_p50_s": percentile(e2e, 50), "e2e_p99_s": percentile(e2e, 99)}


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.9g}"
    if isinstance(v, bool):
        return int(v)
    return v


class CsvFamilies:
    """Appends rows to DIR/<family>.csv (header first), flushing each row, so a run cut short
    leaves every row written so far."""

    def __init__(self, out_dir: Path):
        self.out_dir, self.files = Path(out_dir), {}

    def row(self, family: str, values: dict) -> None:
        if family not in self.files:
            f = open(self.out_dir / f"{family}.csv", "w", newline="")
            w = csv.DictWriter(f, fieldnames=FAMILIES[family], extrasaction="raise")
            w.writeheader()
            self.files[family] = (f, w)
        f, w = self.files[family]
        w.writerow({k: _fmt(values.get(k, "")) for k in FAMILIES[family]})

    def flush(self) -> None:
        for f, _ in self.files.values():
            f.flush()

    def close(self) -> None:
        for f, _ in self.files.values():
            f.close()


def merge(parts: list[Path], out_dir: Path) -> dict[str, int]:
    """Concatenate each family's CSV from the `parts` folders into out_dir (rows per family)."""
    counts = {}
    for family, cols in FAMILIES.items():
        rows = []
        for part in parts:
            path = Path(part) / f"{family}.csv"
            if path.exists():
                with open(path, newline="") as f:
                    rows.extend(csv.DictReader(f))
        if not rows:
            continue
        tmp = Path(out_dir) / f".{family}.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(Path(out_dir) / f"{family}.csv")
        counts[family] = len(rows)
    return counts
