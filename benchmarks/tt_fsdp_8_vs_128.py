"""Figures (not a test): torchtitan's Llama 3.1 8B FSDP rows at 8 GPUs (Table 1) beside the same rows at 128
(Table 3), what the twin's step changes between them and what the published one does (session s28tt, issue 14:
the 128-GPU compile rows read +10.6 / +11.2%, the 8-GPU ones +6.4 / +7.1%).

Per pair (eager, compile, compile + Float8): the published step (16,384 tokens a rank / TPS), the twin's step
and its pipeline / tail, each one's change 8 -> 128, and the twin's per-op seconds that move (the optimizer over
1/8 or 1/128 of the model, FSDP2's exposed gathers and reduce-scatters), then one block's FSDP2 collectives
as the twin prices them (their full length, hidden or not) at 8 ranks on NVLink and 128 ranks over the
network.

Usage: PYTHONPATH=. python benchmarks/tt_fsdp_8_vs_128.py   (a few seconds)
"""

from __future__ import annotations

from calibration.published_runs import load_runs, scenario_of
from twin.training.results import Perturb
from twin.training.step import _prepare, simulate_step

PAIRS = (("tt-8b-fsdp8", "tt-8b-fsdp128"), ("tt-8b-fsdp8-compile", "tt-8b-fsdp128-compile"),
         ("tt-8b-fsdp8-compile-fp8", "tt-8b-fsdp128-compile-fp8"))


def main() -> None:
    runs = {r.id: r for r in load_runs()[0]}
    print(f"{'row':28s} {'pub s':>7s} {'twin s':>7s} {'error':>7s} {'pipe s':>7s} {'tail s':>7s}")
    for small, large in PAIRS:
        res = {}
        for rid in (small, large):
            r = runs[rid]
            st = simulate_step(scenario_of(r), record_events=False)
            tokens = st.tokens_per_step / st.num_gpus
            res[rid] = (tokens / r.published, st)
            print(f"{rid:28s} {tokens / r.published:7.4f} {st.step_time_s:7.4f} "
                  f"{st.tokens_per_s_per_gpu / r.published - 1:+7.1%} {st.pipeline_time_s:7.4f} "
                  f"{st.step_time_s - st.pipeline_time_s:7.4f}")
        (p8, s8), (p128, s128) = res[small], res[large]
        print(f"  8 -> 128: published {1e3 * (p128 - p8):+.1f} ms ({p128 / p8 - 1:+.2%}), twin "
              f"{1e3 * (s128.step_time_s - s8.step_time_s):+.1f} ms; published less twin "
              f"{1e3 * ((p128 - p8) - (s128.step_time_s - s8.step_time_s)):+.1f} ms "
              f"({((p128 - p8) - (s128.step_time_s - s8.step_time_s)) / p128:+.2%} of the published 128-GPU step)")
        for k in sorted(set(s8.op_time_s) | set(s128.op_time_s)):
            a, b = s8.op_time_s.get(k, 0.0), s128.op_time_s.get(k, 0.0)
            if abs(b - a) > 1e-5:
                print(f"    {k:28s} {1e3 * a:8.2f} -> {1e3 * b:8.2f} ms")
    for rid in ("tt-8b-fsdp8-compile", "tt-8b-fsdp128-compile"):
        sched, costs, *_ = _prepare(scenario_of(runs[rid]), None, Perturb(), False)
        u = costs._fsdp_s(0)[1]
        print(f"{rid}: one block's all-gather {1e3 * u.ag_s:.2f} ms, reduce-scatter (FP32) {1e3 * u.rs_s:.2f} ms "
              f"over {costs.fsdp_ranks[0]} ranks ({'one node' if costs.fsdp_same_node else 'across nodes'})")


if __name__ == "__main__":
    main()
