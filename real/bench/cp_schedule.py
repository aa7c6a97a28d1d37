"""Each rank's compiled schedule of torchtitan's Llama-3.1-8B block under PyTorch's context parallelism,
at CP degrees a host of two GPUs cannot run, on a fake process group (issue 14, session s27cp).

Why: PyTorch's load-balanced ring attention branches on the rank (`_templated_ring_attention`: a
later step i runs half the keys where i <= rank, half the queries where i > rank), so under
torch.compile(fullgraph=True) every rank traces its own graph, and Inductor schedules each graph on its
own: the K/V all-gather, waited at issue, can land before the diagonal attention call on one rank and
after it on another (seen in s17cp's CP4 traces, calibration/measurements/h200x4/cp_block/traces: rank 3
gathers first and waits a whole diagonal call for the other three). Every collective meets all ranks, so
a step pays, interval by interval, the slowest rank's work since the last meeting, not one rank's sum.

What runs: `python -m real.bench.cp_schedule --out DIR --cp 4 8 [--model M]` starts, for each CP degree W, W
processes, rank r on GPU r mod (the GPUs it sees), each in a `fake` process group of W ranks
(torch.testing's FakeStore: collectives return at once and move nothing) so that one host holds any
CP degree. Each builds the block of cp_block (real/bench/cp_block.py: 32K positions a rank, BF16, the
8B block or (--model, session s29cp) the 405B TP 8 slice; BF16 linears, or (--float8, s29cp round 2)
real.fp8's tensorwise Float8 ones, as the torchtitan rows ran them; torchtitan's full AC inside torch.compile, flash/efficient SDPA, rotate method allgather) inside
PyTorch's context_parallel over its W-rank mesh, compiles and warms it, then, two ranks at a time (one
per GPU, the others idle), times fwd+bwd (CUDA events; no communication) and profiles two repetitions
(torch.profiler, host ranges "fwd" / "bwd"). Kept per rank: the Chrome trace (traces/cp_schedule_cp{W}_
rank{r}.json.gz: every kernel with its launch, every `_c10d_functional` issue and wait in host order,
which calibration/cp_schedule.py reads) and one row of cp_schedule.csv (GPU name, clocks, power limit,
driver, torch/CUDA/NCCL versions, the timing, and `status`: 'ok', or why the rank did not run CP).
Off a GPU PyTorch's CP cannot run (CUDA SDPA only): each rank profiles the block eager without CP and
says so (status 'no_cp: ...'), the CPU dry run's path.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from real.bench import cp_block, torch_cp
from real.bench.device import environment, nccl_version
from real.sync import synchronize
from real.telemetry import Telemetry

LOCAL_LEN, QUICK_LOCAL_LEN = cp_block.LOCAL_LEN, cp_block.QUICK_LOCAL_LEN
WARMUP, TIMED_REPS, PROFILED_REPS = 2, 3, 2
COLUMNS = ["bench", "model", "cp", "rank", "device_index", "seq_len", "local_len", "rotate_method", "precision",
           "status", "time_s", "time_p10_s", "time_p90_s", "reps", "timing", "gpu_name", "sm_clock_mhz",
           "mem_clock_mhz", "power_limit_w", "driver_version", "torch_version", "cuda_version", "nccl_version",
           "num_gpus", "timestamp_utc"]


def _touch(path: Path) -> None:
    path.write_text(datetime.datetime.now(datetime.timezone.utc).isoformat())


def wait_turn(sync: Path, rank: int, world: int, lanes: int, deadline_s: float) -> bool:
    """Block until this rank may time on its GPU: every rank warmed (ready_<r> files), and the rank
    `lanes` before it (the last one on the same GPU) done. False at the deadline (time.monotonic)."""
    need = [sync / f"ready_{r}" for r in range(world)]
    if rank >= lanes:
        need.append(sync / f"done_{rank - lanes}")
    while not all(p.exists() for p in need):
        if time.monotonic() > deadline_s:
            return False
        time.sleep(0.05)
    return True


def _row(cols: dict, env: dict, tel: Telemetry) -> dict:
    return {**cols, "gpu_name": env["gpu_name"], "sm_clock_mhz": tel.sm_clock_mhz(),
            "mem_clock_mhz": tel.mem_clock_mhz(), "power_limit_w": env.get("power_limit_w", ""),
            "driver_version": env.get("driver_version", ""), "torch_version": env["torch_version"],
            "cuda_version": env["cuda_version"], "nccl_version": nccl_version(),
            "num_gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_rank(rank: int, world: int, out: Path, sync: Path, quick: bool, lanes: int, deadline_s: float,
             model: str = "llama3.1-8b-block", float8: bool = False) -> int:
    """One rank of one CP degree (the module docstring says what it records)."""
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    os.environ["LOCAL_RANK"] = str(dev.index or 0)   # the device DeviceMesh picks for this rank
    from torch.testing._internal.distributed.fake_pg import FakeStore  # lazy: the test helper, only here
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world)
    tel = Telemetry(dev.index or 0) if cuda else Telemetry(0)
    env = environment(dev, tel)
    s = QUICK_LOCAL_LEN if quick else LOCAL_LEN
    why = torch_cp.CP_API["unavailable"](dev)
    status = f"no_cp: {why}" if why else "ok"
    cols = dict(bench="cp_schedule_compiled", model="tiny-block" if quick else model, cp=world,
                rank=rank, device_index=dev.index if cuda else -1, seq_len=s * world, local_len=s,
                rotate_method="allgather", precision="fp8-tensorwise" if float8 else "bf16", reps=TIMED_REPS,
                timing="per_rep_events" if cuda else "host_clock")
    # compiled where CP runs (the table's configuration); off a GPU the plain block, eager (the dry run)
    fwd, bwd, _ = cp_block.block_fns(s, dev, quick, seed=rank, compiled=not why, model=model, float8=float8)
    ctx = contextlib.nullcontext()
    if not why:
        init_device_mesh, context_parallel, set_rotate_method = torch_cp.CP_API["api"]()
        mesh = init_device_mesh(dev.type, (world,))
        set_rotate_method("allgather")
        pos = torch.arange(s * world, device=dev)[None]   # a sequence buffer for the context to shard
        ctx = context_parallel(mesh, buffers=[pos], buffer_seq_dims=[1], no_restore_buffers={pos})
    trace_path = out / "traces" / f"cp_schedule_cp{world}_rank{rank}.json.gz"
    times: list[float] = []
    try:
        with ctx:
            for _ in range(WARMUP):
                bwd(fwd())
            synchronize(dev)
            _touch(sync / f"ready_{rank}")
            if not wait_turn(sync, rank, world, lanes, deadline_s):
                status = "deadline before this rank's turn"
            else:
                for _ in range(TIMED_REPS):
                    t0 = time.perf_counter()
                    if cuda:
                        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        a.record()
                        bwd(fwd())
                        b.record()
                        b.synchronize()
                        times.append(a.elapsed_time(b) * 1e-3)
                    else:
                        bwd(fwd())
                        times.append(time.perf_counter() - t0)
                torch_cp.profile_phases(fwd, bwd, dev, PROFILED_REPS, str(trace_path))
    except Exception as e:   # noqa: BLE001  dynamo, Inductor, the fake group or the CP dispatch refused: recorded
        # in the row's status (the campaign's other ranks and degrees go on), never swallowed
        status = f"error: {type(e).__name__}: {str(e)[:300]}"
        traceback.print_exc()
    finally:
        _touch(sync / f"ready_{rank}")   # never leave the other ranks waiting on this one
        _touch(sync / f"done_{rank}")
    q = sorted(times)
    timing = {"time_s": statistics.median(q), "time_p10_s": q[0], "time_p90_s": q[-1]} if q else \
        {"time_s": float("nan"), "time_p10_s": float("nan"), "time_p90_s": float("nan")}
    row = _row({**cols, "status": status, **timing}, env, tel)
    with (out / f"cp_schedule_cp{world}_rank{rank}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerow(row)
    print(f"cp_schedule cp{world} rank {rank}: {status}, fwd+bwd {timing['time_s'] * 1e3:.2f} ms", flush=True)
    return 0


def launch(out: Path, cps: list[int], quick: bool, budget_s: float, model: str = "llama3.1-8b-block",
           float8: bool = False) -> int:
    """Each CP degree in turn: its ranks as processes of this interpreter, the rows gathered into
    cp_schedule.csv. A degree whose ranks overrun the budget's share is stopped (its ranks by pid)."""
    (out / "traces").mkdir(parents=True, exist_ok=True)
    lanes = max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    t_end = time.monotonic() + budget_s
    for w in cps:
        sync = out / f"sync_cp{w}"
        sync.mkdir(parents=True, exist_ok=True)
        share = (t_end - time.monotonic()) / max(1, len(cps) - cps.index(w))
        deadline = time.monotonic() + share
        env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": os.environ.get("TORCHINDUCTOR_COMPILE_THREADS", "4")}
        procs = [subprocess.Popen([sys.executable, "-m", "real.bench.cp_schedule", "--out", str(out), "--rank", str(r),
                                   "--world", str(w), "--lanes", str(lanes), "--deadline-in-s", f"{share:.1f}",
                                   "--model", model]
                                  + (["--quick"] if quick else []) + (["--float8"] if float8 else []), env=env)
                 for r in range(w)]
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline + 10 - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                print(f"cp_schedule cp{w}: rank pid {p.pid} stopped at the deadline", flush=True)
        print(f"cp_schedule cp{w}: ranks exit {[p.returncode for p in procs]}", flush=True)
    rows = []
    for path in sorted(out.glob("cp_schedule_cp*_rank*.csv")):
        with path.open(newline="") as f:
            rows += list(csv.DictReader(f))
        path.unlink()
    with (out / "cp_schedule.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(sorted(rows, key=lambda r: (int(r["cp"]), int(r["rank"]))))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real.bench.cp_schedule", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cp", type=int, nargs="+", default=[4, 8], help="CP degrees (launcher)")
    ap.add_argument("--budget-s", type=float, default=200.0, help="launcher: seconds for all degrees")
    ap.add_argument("--quick", action="store_true", help="tiny block (the CPU dry run)")
    ap.add_argument("--float8", action="store_true",
                    help="the block's linears as torchao's tensorwise Float8 (real.fp8; session s29cp round 2)")
    ap.add_argument("--model", default="llama3.1-8b-block",
                    help=f"the block (real.bench.cp_block.MODELS: {', '.join(cp_block.MODELS)})")
    ap.add_argument("--rank", type=int, help="(a rank process) its rank")
    ap.add_argument("--world", type=int, help="(a rank process) the CP degree")
    ap.add_argument("--lanes", type=int, default=1, help="(a rank process) ranks timed at once (the GPUs)")
    ap.add_argument("--deadline-in-s", type=float, default=200.0, help="(a rank process) seconds to its deadline")
    a = ap.parse_args(argv)
    for name, v in (("--cp", a.cp if a.rank is None else [a.world]),):
        if any(x < 2 for x in v):
            print(f"error: {name} {v}: CP degrees must be >= 2", file=sys.stderr)
            return 2
    if a.model not in cp_block.MODELS:
        print(f"error: --model {a.model!r}: not a block here (allowed: {', '.join(cp_block.MODELS)})", file=sys.stderr)
        return 2
    if a.rank is None:
        return launch(a.out, a.cp, a.quick, a.budget_s, a.model, a.float8)
    return run_rank(a.rank, a.world, a.out, a.out / f"sync_cp{a.world}", a.quick, a.lanes,
                    time.monotonic() + a.deadline_in_s, a.model, a.float8)


if __name__ == "__main__":
    raise SystemExit(main())
