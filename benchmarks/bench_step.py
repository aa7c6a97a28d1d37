"""How long `twin step` takes for the full DeepSeek-V3 plan (target: under 1 second).

Prints wall-clock seconds of simulate_step on the default scenario (2,048 H800, PP16, 120
micro-batches, DualPipe), best and median of several runs, with and without the event log.
Run: .venv/bin/python benchmarks/bench_step.py
"""

import platform
import statistics
import time

from twin.core.scenario import load_scenario
from twin.training.step import simulate_step


def timed(fn, repeats: int = 5) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    sc = load_scenario()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    for schedule in ("dualpipe", "dualpipev", "1f1b", "zb1p"):
        variant = load_scenario(overrides=[f"plan.schedule='{schedule}'"]) if schedule != sc.plan.schedule else sc
        for events in (True, False):
            times = timed(lambda: simulate_step(variant, record_events=events, check_memory=False))
            print(f"{schedule:10s} events={'on ' if events else 'off'} best {min(times):.3f} s  median {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
