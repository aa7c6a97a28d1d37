"""Speed and accuracy of the plan search and the parts it calls, measured side by side in one run.

Prints, with the machine's load beside each (the figures are wall-clock and CPU seconds; on a
shared machine compare the CPU figures and the ratios measured in this run):
  1. `twin plan --tokens T --days D` on the default scenario: the default space (>= 10,000 DeepSeek-V3
     candidates) screened, the best 100 and the screen's front simulated (target: under 60 s on 2 cores);
  2. the screen against the simulator on a ~500-candidate grid: every candidate that fits simulated
     (exhaustive) beside the two-level search; same best plan? the screen's step-time error (median, P90);
  3. `twin step` on the default scenario: seconds of simulation (target: under 0.1 s);
  4. `twin replay` as a whole process (target: under 3 s).
Run: .venv/bin/python benchmarks/plan_search.py [--quick]   (--quick skips the 500-candidate grid;
     --only PART runs one part; --baseline DIR --repeats N times DIR's `twin replay` alternately with this tree's)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twin.core.fields import build
from twin.core.scenario import load_scenario
from twin.core.search_specs import SearchSpec
from twin.planning.search import catalog_prices, search
from twin.training import step as step_module
from twin.training.step import simulate_step

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (pool workers are joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    w0, c0 = time.perf_counter(), cpu_s()
    out = fn()
    return out, time.perf_counter() - w0, cpu_s() - c0


def bench_default_search() -> None:
    sc = load_scenario()
    spec = build(SearchSpec, {"tokens": 14.8e12, "days": 60}, "search")
    out, wall, cpu = timed(lambda: search(sc, spec, catalog_prices(sc)))
    e = out.screen_error
    print(f"[1] default space: {out.evaluated:,} candidates screened, {out.feasible:,} fit, {out.simulated} simulated "
          f"in {wall:.1f} s wall, {cpu:.1f} s CPU ({load()}); target < 60 s")
    print(f"    best: {out.best.label if out.best else None}; screen error on the simulated: median {e.median_abs_frac:.2%}, "
          f"P90 {e.p90_abs_frac:.2%}, max {e.max_abs_frac:.2%}")


def bench_screen_vs_exhaustive() -> None:
    sc = load_scenario()
    grid = {"tokens": 14.8e12, "days": 60, "gpu": ["h800", "h200"], "num_gpus": [1024, 2048], "pp": [8, 16],
            "schedule": ["dualpipe", "dualpipev", "1f1b", "zb1p"], "micro_batch_seqs": [1, 2], "zero_stage": [1, 2],
            "recompute": ["selective", "full"], "gemm_precision": ["fp8", "bf16"]}
    spec = build(SearchSpec, grid, "search")
    prices = catalog_prices(sc)
    two, wall2, cpu2 = timed(lambda: search(sc, spec, prices))
    every, wall1, cpu1 = timed(lambda: search(sc, spec, prices, exhaustive=True))
    e = every.screen_error
    same = two.best is not None and every.best is not None and two.best.candidate_id == every.best.candidate_id
    print(f"[2] {every.evaluated} candidates, {every.feasible} fit: simulate all {wall1:.1f} s wall / {cpu1:.1f} s CPU; "
          f"screen + best {two.simulated}: {wall2:.1f} s wall / {cpu2:.1f} s CPU (CPU ratio {cpu1 / cpu2:.1f}x; {load()})")
    print(f"    same best plan: {same} ({every.best.label if every.best else None}); screen step-time error over "
          f"{e.num_compared} plans: median {e.median_abs_frac:.2%}, P90 {e.p90_abs_frac:.2%}, max {e.max_abs_frac:.2%}, "
          f"signed median {e.median_signed_frac:+.2%}")


def bench_step() -> None:
    sc = load_scenario()
    runs = []
    for events in (False, True):
        for _ in range(3):
            step_module._PREPARED.clear()   # as in a fresh `twin step` process: no step prepared before
            c0 = time.process_time()
            simulate_step(sc, record_events=events)
            runs.append((events, time.process_time() - c0))
    off = min(t for e, t in runs if not e)
    on = min(t for e, t in runs if e)
    print(f"[3] twin step (default V3): {off:.3f} s of simulation CPU without the event log (as `twin step` runs), "
          f"{on:.3f} s with it (traces); target < 0.1 s ({load()})")


def _replay_run(pythonpath: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one `twin replay --out DIR --quiet` process with this PYTHONPATH."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "twin.cli.main", "replay", "--out", str(Path(tmp) / "r"), "--quiet"]
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=pythonpath, env={**os.environ, "PYTHONPATH": pythonpath})
        wall = time.perf_counter() - w0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def bench_replay(baseline: str | None = None, repeats: int = 1) -> None:
    """`twin replay` as a whole process; with `baseline` (another checkout) the two alternate,
    `repeats` times each, and the fastest of each is shown (the machine is shared)."""
    trees = [("this tree", str(ROOT))] + ([("baseline", baseline)] if baseline else [])
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in trees}
    for _ in range(repeats):
        for name, path in trees:
            runs[name].append(_replay_run(path))
    for name, _ in trees:
        wall = min(w for w, _ in runs[name])
        cpu = min(c for _, c in runs[name])
        print(f"[4] twin replay ({name}), whole process with its report: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"(best of {repeats}); target < 3 s ({load()})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the exhaustive 500-candidate grid")
    ap.add_argument("--baseline", metavar="DIR", help="another checkout (e.g. `git worktree add /tmp/base main`): its "
                                                      "`twin replay` is timed alternately with this tree's")
    ap.add_argument("--repeats", type=int, default=1, help="replay runs per tree (the fastest is shown)")
    ap.add_argument("--only", choices=("step", "replay", "search", "grid"), help="run one part")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, {load()}")
    if args.only in (None, "step"):
        bench_step()
    if args.only in (None, "replay"):
        bench_replay(args.baseline, args.repeats)
    if args.only == "search":
        bench_default_search()
    if args.only == "grid":
        bench_screen_vs_exhaustive()
    if args.only is not None:
        return
    bench_default_search()
    if not args.quick:
        bench_screen_vs_exhaustive()


if __name__ == "__main__":
    main()
