"""Benchmark: `twin balance` on the default scenario (2-core machine: about 22 s; it was 80-100 s
before the bias-update simulation drew its routing keys as float32 exponentials).

Prints the wall time of the whole load study and of its two Monte Carlo parts.
Usage: python benchmarks/bench_balance.py
"""

from __future__ import annotations

import time

from twin.training.balance import imbalance_decay, run_balance
from twin.moe.load import simulate_bias_update
from twin.core.scenario import load_scenario


def main() -> None:
    t0 = time.perf_counter()
    simulate_bias_update(256, 8, 1.79, 1e-3, 200)
    t1 = time.perf_counter()
    print(f"bias update, 256 experts x 200 steps x 4,096 tokens: {t1 - t0:.2f} s")
    imbalance_decay(256, 8, 64, 1.79)
    t2 = time.perf_counter()
    print(f"imbalance decay (4 gammas): {t2 - t1:.2f} s")
    t3 = time.perf_counter()
    run_balance(load_scenario())
    print(f"twin balance, whole study (fits, 7 load cases, step twin): {time.perf_counter() - t3:.2f} s")


if __name__ == "__main__":
    main()
