"""How far apart the held (power-capped) rates of a host's boards sit (session s29mlm, issue 14; rule:
docs/notes/s29mlm_rule.md, written before the records).

One process a GPU, all started together by real/campaigns/s29mlm.sh, so every board of the host is under
load at once, as in a training job. Each times, on its own GPU:

  ref  sustained.csv's reference BF16 GEMM (m 8192, n 4096, k 7168; y_MN = a_MK @ w_NK^T)
  mlm  Megatron 462B's TP 8 fc1 forward GEMM (m 4096 tokens, n 4 x 18432 / 8 = 9216, k 18432)

first in a burst after IDLE_S idle (real.bench.dense_clock.burst: gemm_align's timing), then held back to back
for HOLD_S in WINDOW_S windows (dense_clock.hold: one row a window with the time a call, the SM clock sampled
while it ran, board power and temperature). calibration.board_spread reads the boards' files together.

Every row carries the board (device index, NVML serial where readable), GPU name, max SM clock, power limit,
driver, torch, CUDA and NCCL versions. Imports torch only (runs on the GPU image).

    python -m real.bench.board_spread --out DIR [--board-index 3] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
import time
from pathlib import Path

import torch

from real.bench.dense_clock import burst, gemm_call, hold
from real.bench.gemm_align import Nvml, environment
from real.telemetry import Telemetry

# (case, m, n, k)
CASES = [("ref", 8192, 4096, 7168), ("mlm", 4096, 9216, 18432)]
QUICK_CASES = [("ref", 64, 32, 56), ("mlm", 32, 72, 144)]
HOLD_S, WINDOW_S, IDLE_S = 30.0, 1.0, 2.0
QUICK_HOLD_S, QUICK_WINDOW_S, QUICK_IDLE_S = 0.1, 0.05, 0.0

COLUMNS = ["campaign", "timestamp_utc", "board", "board_serial", "case", "phase", "window", "elapsed_s", "m", "n",
           "k", "time_s", "time_p10_s", "time_p90_s", "calls", "flops", "achieved_flops_per_s", "timing",
           "sm_clock_mhz", "sm_clock_samples", "power_w", "temperature_c", "mem_clock_mhz", "gpu_name",
           "sm_clock_max_mhz", "power_limit_w", "driver_version", "torch_version", "cuda_version",
           "nccl_version", "hostname"]


def board_serial(index: int) -> str:
    """The board's NVML serial number ('' where NVML or the field is unavailable)."""
    try:
        import pynvml   # lazy: NVML only on a GPU host
        pynvml.nvmlInit()
        value = pynvml.nvmlDeviceGetSerial(pynvml.nvmlDeviceGetHandleByIndex(index))
        return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:   # no NVML, or a board without a serial: the index names it
        return ""


def rows(case, dev, tel: Telemetry, quick: bool):
    """One case's burst row, then its held windows."""
    name, m, n, k = case
    hold_s, window_s, idle_s = (QUICK_HOLD_S, QUICK_WINDOW_S, QUICK_IDLE_S) if quick else (HOLD_S, WINDOW_S, IDLE_S)
    fn, flops = gemm_call(m, n, k, dev)
    base = {"case": name, "m": m, "n": n, "k": k, "flops": flops}
    time.sleep(idle_s)
    if dev.type == "cuda":
        b = burst(fn, dev, tel)
    else:   # CPU dry run: one timed call
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        b = {"time_s": t, "time_p10_s": t, "time_p90_s": t, "calls": 1, "timing": "cpu"}
    yield {**base, "phase": "burst", "window": 0, "elapsed_s": 0.0, **b}
    for w in hold(fn, dev, tel, b["time_s"], hold_s, window_s):
        yield {**base, "phase": "held", **w}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny shapes and holds (a CPU dry run)")
    ap.add_argument("--board-index", type=int, default=None,
                    help="the board's index on the host (NVML's numbering; default the visible CUDA index): the "
                    "campaign starts one process a GPU with CUDA_VISIBLE_DEVICES=i and passes i here, so the "
                    "telemetry reads that board and the rows and files are labelled gpu<i>")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = args.board_index if args.board_index is not None else (torch.cuda.current_device() if dev.type == "cuda" else 0)
    nvml, tel = Nvml(index), Telemetry(index)
    static = tel.static_info()
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if dev.type == "cuda" else ""
    env = {**environment(dev, nvml), "power_limit_w": static.get("power_limit_w", ""), "nccl_version": nccl}
    label = f"gpu{index}" if dev.type == "cuda" else f"cpu{index}"
    serial = board_serial(index) if dev.type == "cuda" else ""
    (out / f"env_{label}.json").write_text(json.dumps({**env, **static, "board_serial": serial}, indent=1))
    t0 = time.perf_counter()
    with (out / f"board_spread_{label}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for case in (QUICK_CASES if args.quick else CASES):
            for row in rows(case, dev, tel, args.quick):
                row.update(env, campaign="s29mlm", board=label, board_serial=serial,
                           achieved_flops_per_s=row["flops"] / row["time_s"] if row.get("time_s") else "",
                           timestamp_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
                writer.writerow(row)
                f.flush()   # a run cut by timeout keeps its rows
            print(f"board_spread {label} {case[0]}: done at {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
