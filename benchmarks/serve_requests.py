"""Speed of the request-level serving simulation: 100,000 requests of R1 on one HGX H200.

    PYTHONPATH=. python benchmarks/serve_requests.py [--requests N]

Prints the wall time, requests per second simulated and iterations per second (target: 100,000
requests in under 30 s on a 2-core machine; Vidur 0.0.26 takes ~13 ms a request). Poisson arrivals at
a rate the node sustains (ISL 1024 / OSL 1024 with lognormal lengths), so the queue stays bounded
and every request goes through prefill, decode and finish. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

from twin.core.scenario import SERVING, load_scenario
from twin.serving.simulate import simulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=4.0, help="requests/s (default 4: ~75%% of the node's capacity)")
    args = ap.parse_args()
    sc = load_scenario(None, ['traffic.arrival="poisson"', f"traffic.rate_per_s={args.rate}",
                              'traffic.input_dist="lognormal"', 'traffic.output_dist="lognormal"'], SERVING)
    t0 = time.perf_counter()
    r = simulate(sc, num_requests=args.requests)
    wall = time.perf_counter() - t0
    print(f"simulated {r.simulated_requests:,} requests ({r.iterations:,} iterations, {r.grid_points} cost-grid points) "
          f"in {wall:.1f} s: {r.simulated_requests / wall:,.0f} requests/s, {r.iterations / wall:,.0f} iterations/s, "
          f"{wall / r.simulated_requests * 1e3:.3f} ms a request (target: 100,000 in < 30 s)")
    print(f"  simulated time {r.makespan_s:,.0f} s; output {r.output_tokens_per_s:,.0f} tok/s; TTFT p50 {r.ttft_s.p50:.3f} s "
          f"p99 {r.ttft_s.p99:.3f} s; TPOT p50 {r.tpot_s.p50 * 1e3:.1f} ms; preemptions {r.preemptions}")


if __name__ == "__main__":
    main()
