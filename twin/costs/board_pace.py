"""A synchronous job's compute runs at its slowest board's pace (docs/notes/s29mlm_rule.md, s29mlm.md).

Boards held at their power cap settle at their own clocks, so their held compute rates spread across boards; a job
whose N boards wait for each other every step (training: TP collectives, pipeline hops, DP reductions; serving: an
instance's dispatch and combine, TP all-reduces and DP-attention lockstep every layer) runs at the slowest of them.
With the rates spread with relative standard deviation cv, the slowest board's expected time over the typical
board's is 1 + cv z(N), z(N) = E[max of N standard normals] (first order in cv). The training step
(twin.training.step, ADOPT_SLOWEST_BOARD_PACE) and a serving instance (twin.serving.iteration, ADOPT_SERVE_BOARD_PACE)
both take the factor from here; each decides where it applies.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# the relative standard deviation of the boards' held BF16 GEMM rates (real.bench.board_spread on every board of
# a host at once; calibration.board_spread computes it): one figure for every GPU kind (s29mlm's premise: a
# property of the GH100 die under its 700 W cap). Campaign s29mlm (calibration/measurements/h200x4/s29mlm/: four
# H200 boards of one host held together, 2026-11-28 17:41-17:43 UTC): the reference GEMM's held rates 676.9, 678.1,
# 673.3, 668.4 TF/s (sample sd / mean; the 462B fc1 GEMM's 1.005% agrees within the rule's factor 3). A host's
# boards only: host-to-host spread, which adds to it, is not measured (a floor).
BOARD_HELD_RATE_CV = 0.006446019310766897


@functools.cache
def expected_max_std_normal(n: int) -> float:
    """E[max of n independent standard normal draws] = integral of x n phi(x) Phi(x)^(n-1) dx, on a grid fine
    enough for 4 decimals. Worked: n = 1 -> 0; n = 2 -> 1/sqrt(pi) = 0.5642; n = 10 -> 1.5388; n = 100 ->
    2.5076 (the order-statistics tables, e.g. Harter 1961)."""
    if n < 1:
        raise ValueError(f"n = {n}: at least one draw")
    x = np.linspace(-9.0, 9.0, 36_001)
    log_cdf = np.log(np.maximum(0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2.0)), 1e-300))
    density = np.exp(math.log(n) - 0.5 * x * x - 0.5 * math.log(2.0 * math.pi) + (n - 1) * log_cdf)
    return float(np.sum(x * density) * (x[1] - x[0]))


def slowest_board_factor(num_gpus: int, cv: float | None = None) -> float:
    """The time factor of a synchronous step's compute on `num_gpus` boards whose held rates spread with relative
    standard deviation `cv` (default BOARD_HELD_RATE_CV): the slowest board's expected time over the typical
    board's, 1 + cv z(N) (z = expected_max_std_normal, first order in cv). Worked: cv 0.01 -> 1.0223 at 48 GPUs
    (z 2.2331), 1.0304 at 512 (3.0439), 1.0373 at 6,144 (3.7301)."""
    cv = BOARD_HELD_RATE_CV if cv is None else cv
    return 1.0 + cv * expected_max_std_normal(num_gpus) if num_gpus > 1 else 1.0
