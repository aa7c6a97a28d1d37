"""Where an eager MLA layer call's time goes on the GPU's and the host's axes, from the torch profiler
Chrome traces of real/campaigns/s10mla.sh (real/bench/aten_count.py timelines): a diagnostic of
issue 13's host-bound layer records, never fitted.

Per trace: the call's host span (its first CPU op to its last kernel launch), the kernels' GPU
busy time and their span, and the longest kernel (the attention, at these shapes): its GPU time,
when the host launched it and when it ran, measured from the call's first CPU op. A call whose
GPU idles before its longest kernel waits on the host's dispatch before it; one whose longest
kernel runs longer than the twin's attention cost misses GPU time.

    python -m calibration.mla_timeline DIR      (DIR: the campaign's s10mla/timelines folder, or the
                                                 committed calibration/measurements/h100/s10mla_traces)

calibration.mla_traces takes the same traces apart further (per-component residual against the
twin, idle at the call's start / middle / end, a replay at the unprofiled host speed).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from calibration import entry
from calibration.mla_traces import load_events
from calibration.records_io import csv_exists, open_csv, resolve_trace

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def summarize(trace: dict) -> dict:
    """Seconds from a Chrome trace's events (profiler timestamps in microseconds); GPU figures
    are None in a trace without kernels (a CPU dry run)."""
    ev = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    ops = [e for e in ev if e.get("cat") == "cpu_op"]
    kernels = sorted((e for e in ev if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    launches = {e.get("args", {}).get("correlation"): e for e in ev
                if e.get("cat") in ("cuda_runtime", "cuda_driver")   # torch 2.11 launches through the driver API
                and any(str(e.get("name", "")).startswith(n) for n in LAUNCHES)}
    if not ops:
        return {}
    t0 = min(e["ts"] for e in ops)
    out = {"cpu_ops": len(ops), "kernels": len(kernels),
           "host_span_s": (max((e["ts"] + e["dur"] for e in launches.values()), default=max(e["ts"] + e["dur"] for e in ops))
                           - t0) * 1e-6}
    if not kernels:
        return {**out, "gpu_busy_s": None, "gpu_end_s": None, "longest_kernel": None}
    longest = max(kernels, key=lambda e: e["dur"])
    launch = launches.get(longest.get("args", {}).get("correlation"))
    out.update(gpu_busy_s=sum(e["dur"] for e in kernels) * 1e-6,
               gpu_start_s=(kernels[0]["ts"] - t0) * 1e-6,
               gpu_end_s=(max(e["ts"] + e["dur"] for e in kernels) - t0) * 1e-6,
               longest_kernel=str(longest.get("name", ""))[:80], longest_gpu_s=longest["dur"] * 1e-6,
               longest_start_s=(longest["ts"] - t0) * 1e-6,
               longest_launched_s=(launch["ts"] - t0) * 1e-6 if launch else None,
               busy_before_longest_s=sum(e["dur"] for e in kernels if e["ts"] < longest["ts"]) * 1e-6)
    return out


def summarize_folder(folder: Path | str) -> list[dict]:
    folder = Path(folder)
    index = folder / "mla_timeline.csv"
    if not csv_exists(index):
        return []
    rows = []
    with open_csv(index) as f:
        for r in csv.DictReader(f):
            path = resolve_trace(folder / r["trace"])   # committed traces are packed beside the index's names
            if path.is_file():
                rows.append({**r, **summarize({"traceEvents": load_events(path)})})
    return rows


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.mla_timeline", description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    rows = summarize_folder(args.folder)
    if not rows:
        print(f"error: FOLDER: got {args.folder}; allowed: a folder with mla_timeline.csv traces (real/bench/mla_loop.py)", file=sys.stderr)
        return 2
    ms = lambda v: "-" if v is None else f"{float(v) * 1e3:8.3f}"   # noqa: E731
    print(f"{'case':34} {'event ms':>8} {'host ms':>8} {'busy ms':>8} {'gpu end':>8} {'longest':>8} "
          f"{'launched':>8} {'started':>8} {'kernels':>7}")
    for r in rows:
        print(f"{r['model'] + ' b' + r['batch'] + ' s' + r['seq_len'] + ' ' + r['phase']:34} {ms(r['time_s'])} "
              f"{ms(r['host_span_s'])} {ms(r.get('gpu_busy_s'))} {ms(r.get('gpu_end_s'))} {ms(r.get('longest_gpu_s'))} "
              f"{ms(r.get('longest_launched_s'))} {ms(r.get('longest_start_s'))} {r['kernels']:>7}  {r.get('longest_kernel') or ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
