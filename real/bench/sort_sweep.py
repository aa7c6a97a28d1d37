"""Sort sweep (s24sort, issue 13): the two sort cliffs of real/'s MoE layer, measured per call.

- `argsort`: torch.argsort(ids_N, stable=True) of N int64 expert ids in [0, 64) (real/model.py MoE.routed,
  real/ep.py dispatch / combine). ATen's Sort.h should_use_small_sort (N <= 4,096) picks the in-place sort;
  above it cub's radix sort.
- `index_put`: zeros(N, 64, BF16).index_put_((idx_N,), g_ND, accumulate=True), idx a permutation of N rows
  (autograd's backward of a row gather x[idx], the MoE backward's sorts): cub radix_sort_pairs always, one
  single-tile kernel up to cub's tile (2,304 int64 pairs read from cub's policy), onesweep above.

Per (op, N), one row of sort_sweep.csv: kernels a call launches (torch profiler, CUDA events: kernels,
memsets and memcopies) and how many are cub radix kernels or memsets, the CUDA-event GPU seconds a call
(back-to-back), the host seconds a call (perf_counter, the GPU idle at its start), and the environment
(GPU name, clocks, torch, CUDA, NCCL versions, time). Sizes straddle both cliffs. No GPU: the CPU runs the
same calls (kernels 0) as a dry run.

    python -m real.bench.sort_sweep --out DIR [--quick] [--sizes 4096,4097,...] [--reps N]

`--reps N` times N calls back to back and N from an idle device in place of REPS and HOST_REPS (a CPU dry run's
few: index_put_ of 4,096 BF16 rows takes ~25 ms a call on a CPU); the rows' `reps` column says which.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from real.bench.device import environment, nccl_version
from real.sync import synchronize
from real.telemetry import Telemetry

SIZES = (1024, 2048, 2304, 2305, 2560, 3072, 3686, 4000, 4096, 4097, 4129, 4506, 5000, 6144, 8192)
QUICK_SIZES = (64, 4096, 4097)
WIDTH = 64            # index_put_'s row width (BF16): the sort does not depend on it
NUM_IDS = 64          # argsort's key range (expert ids)
REPS, HOST_REPS, PROFILE_REPS, WARMUP = 50, 20, 3, 3
COLS = ["op", "elems", "kernels", "radix_kernels", "memsets", "memcpys", "kernel_names", "time_s", "host_s",
        "host_p10_s", "reps", "gpu_name", "sm_clock_mhz", "mem_clock_mhz", "torch_version", "cuda_version",
        "nccl_version", "timestamp_utc"]


def make_call(op: str, n: int, dev: torch.device):
    """A zero-argument call of `op` at `n` elements, its inputs made once."""
    gen = torch.Generator(device="cpu").manual_seed(n)
    if op == "argsort":
        ids_N = torch.randint(0, NUM_IDS, (n,), generator=gen).to(dev)
        return lambda: torch.argsort(ids_N, stable=True)
    idx_N = torch.randperm(n, generator=gen).to(dev)
    g_ND = torch.randn(n, WIDTH, generator=gen).to(dev, torch.bfloat16)
    return lambda: torch.zeros(n, WIDTH, device=dev, dtype=torch.bfloat16).index_put_((idx_N,), g_ND, accumulate=True)


def kernels_of(call, dev: torch.device) -> dict:
    """Device events a call launches (mean over PROFILE_REPS), by class."""
    if dev.type != "cuda":
        return {"kernels": 0.0, "radix_kernels": 0.0, "memsets": 0.0, "memcpys": 0.0, "kernel_names": ""}
    synchronize(dev)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILE_REPS):
            call()
        synchronize(dev)
    ev = [e.name for e in prof.events() if e.device_type.name == "CUDA"]
    short = sorted({name.split("<")[0].split("(")[0].replace("void ", "")[:60] for name in ev})
    return {"kernels": len(ev) / PROFILE_REPS,
            "radix_kernels": sum("RadixSort" in name for name in ev) / PROFILE_REPS,
            "memsets": sum(name.startswith("Memset") for name in ev) / PROFILE_REPS,
            "memcpys": sum(name.startswith("Memcpy") for name in ev) / PROFILE_REPS,
            "kernel_names": ";".join(short)}


def gpu_seconds(call, dev: torch.device, reps: int = REPS) -> float:
    """Seconds a call, back to back (CUDA events around `reps` calls; perf_counter on the CPU)."""
    if dev.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        return (time.perf_counter() - t0) / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    synchronize(dev)
    start.record()
    for _ in range(reps):
        call()
    end.record()
    synchronize(dev)
    return start.elapsed_time(end) * 1e-3 / reps


def host_seconds(call, dev: torch.device, reps: int = HOST_REPS) -> list[float]:
    """Host seconds to issue one call, the device idle at its start (`reps` calls)."""
    out = []
    for _ in range(reps):
        synchronize(dev)
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    synchronize(dev)
    return out


def run(out_dir: Path, quick: bool, sizes: tuple[int, ...] | None = None, reps: int | None = None) -> int:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tel = Telemetry(0)
    env = {**environment(dev, tel), "nccl_version": nccl_version()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "env_sort_sweep.json").write_text(json.dumps(env, indent=1, default=str))
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    with open(out_dir / "sort_sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        for op in ("argsort", "index_put"):
            for n in sizes:
                call = make_call(op, n, dev)
                for _ in range(WARMUP):
                    call()
                kern = kernels_of(call, dev)
                t = gpu_seconds(call, dev, reps or REPS)
                hs = host_seconds(call, dev, reps or HOST_REPS)
                w.writerow({"op": op, "elems": n, **kern, "time_s": f"{t:.6g}",
                            "host_s": f"{statistics.median(hs):.6g}",
                            "host_p10_s": f"{sorted(hs)[len(hs) // 10]:.6g}", "reps": reps or REPS,
                            "gpu_name": env["gpu_name"], "sm_clock_mhz": tel.sm_clock_mhz(),
                            "mem_clock_mhz": tel.mem_clock_mhz(), "torch_version": env["torch_version"],
                            "cuda_version": env["cuda_version"], "nccl_version": env["nccl_version"],
                            "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
                f.flush()
                print(f"{op} {n}: kernels {kern['kernels']:.1f} (radix {kern['radix_kernels']:.1f}, memsets "
                      f"{kern['memsets']:.1f}, memcpys {kern['memcpys']:.1f}), {t * 1e6:.1f} us GPU, "
                      f"{statistics.median(hs) * 1e6:.1f} us host", flush=True)
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--quick", action="store_true", help="three sizes (a dry run)")
    p.add_argument("--sizes", default="", help="comma-separated element counts in place of the default sizes")
    p.add_argument("--reps", type=int, default=None, help=f"calls timed each way (default {REPS} back to back, "
                   f"{HOST_REPS} from idle); a dry run's few")
    a = p.parse_args(argv)
    if a.reps is not None and a.reps < 1:
        print(f"--reps: {a.reps} (allowed: 1 or more)", file=sys.stderr)
        return 2
    sizes = tuple(int(x) for x in a.sizes.split(",") if x.strip()) or None
    return run(a.out, a.quick, sizes, a.reps)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
