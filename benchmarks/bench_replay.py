"""Benchmark: `twin replay` on the default scenario, in this process (the whole `twin replay` process,
whose target is under 3 s on a 2-core machine, is timed by `benchmarks/plan_search.py --only replay`).

Prints wall time of the replay alone and with the report, and how many steps were simulated.
Usage: python benchmarks/bench_replay.py [--no-report]
"""

from __future__ import annotations

import sys
import tempfile
import time

from reports.replay_report import write_report
from twin.core.scenario import load_scenario
from twin.training.replay.run import replay


def main() -> None:
    sc = load_scenario()
    t0 = time.perf_counter()
    result = replay(sc, progress=False)
    t1 = time.perf_counter()
    print(f"replay (simulation + uncertainty + size sweep): {t1 - t0:.2f} s, "
          f"{result.runtime['steps_simulated']} steps simulated ({result.runtime['step_sim_s']:.2f} s in the step twin)")
    if "--no-report" not in sys.argv:
        with tempfile.TemporaryDirectory() as d:
            t2 = time.perf_counter()
            write_report(result, sc, d)
            t3 = time.perf_counter()
        print(f"report (plots, html, md, csv): {t3 - t2:.2f} s; total {t1 - t0 + t3 - t2:.2f} s")
    claims = {c.id: c for c in result.claims}
    for c in (claims["train.cost.pretrain_gpu_hours"], claims["train.cost.total_gpu_hours"]):
        err = "n/a" if c.rel_error is None else f"{c.rel_error * 100:+.1f}%"
        pred = "n/a" if c.predicted is None else f"{c.predicted / 1e3:,.0f}K"
        print(f"{c.id}: twin {pred} vs published {c.claimed / 1e3:,.0f}K ({err})")


if __name__ == "__main__":
    main()
