"""Figures (not a test): a lower bound on the step of Megatron-LM's one-stage (PP 1) GPT rows from
the data-parallel traffic that core_r0.8.0 cannot hide, built from the twin's own op costs, and the
compute speed the published step would then need (docs/notes/s17mlm_rule.md).

What the code allows (core_r0.8.0, commit baf94af):
- --overlap-param-gather: the BF16 parameter all-gather runs bucket after bucket (one in flight:
  distrib_optimizer.py _finish_param_sync_helper, lines 1454-1475), first bucket dispatched at the
  step's start (zero_grad); the first micro-batch's forward cannot end before the last bucket
  arrives: its end >= AG, the whole gather's seconds on one link.
- --overlap-grad-reduce: the FP32 reduce-scatter (arguments.py 299-305 forces
  accumulate_allreduce_grads_in_fp32 for --bf16) is launched from the gradient hooks of the last
  micro-batch only (schedules.forward_backward_no_pipelining: every other micro-batch runs under
  no_sync): it cannot start before the last backward starts and takes RS seconds on one link.

With m micro-batches of forward F and backward B seconds (C = m (F + B) the rank's compute):
  step >= max(AG, F) + (C - F - B) + max(B, RS)
(the first forward ends no earlier than the gather or its own compute; the compute but the first
forward and the last backward follows it; the last backward and the reduce-scatter overlap at best).
Scaling every compute second by s (s < 1: a faster GPU than the twin's), the largest s at which the
bound still reaches the published step is printed: s* < 1 says the published step needs compute
faster than the twin's by 1 / s*; s* > 1 leaves Megatron's compute room to be slower.

Usage: PYTHONPATH=. python benchmarks/mlm_dp_bound.py  (about 10 s)
"""

from __future__ import annotations

import dataclasses

from calibration.published_runs import flops_per_token, load_runs, scenario_of
from twin.training.results import Perturb
from twin.training.step import _prepare, dp_tail_s, rank_params, simulate_step

ROWS = ("mlm-gpt-1.7b", "mlm-gpt-7.1b", "mlm-gpt-16b", "mlm-gpt-32b")
MICRO_BATCH_SEQS = (1, 2, 4)


def dp_bound_s(fwd_s: float, bwd_s: float, m: int, ag_s: float, rs_s: float, speed: float = 1.0,
               before_s: float = 0.0) -> float:
    """The lower bound above, every compute second scaled by `speed`, after `before_s` (the
    gradient buffer's memset, zero_grad_buffer, which precedes the first gather). Worked example
    (32B at one sequence a micro-batch, the twin's costs): F 0.058, B 0.141, m 4, AG 0.168, RS 0.335
    -> max(0.168, 0.058) + 3 x (0.058 + 0.141) + max(0.141, 0.335) = 1.100 s."""
    f, b = speed * fwd_s, speed * bwd_s
    return before_s + max(ag_s, f) + (m - 1) * (f + b) + max(b, rs_s)


def speed_to_reach(fwd_s: float, bwd_s: float, m: int, ag_s: float, rs_s: float, step_s: float,
                   before_s: float = 0.0) -> float:
    """The largest compute scale s with dp_bound_s(..., s) <= step_s (bisection: the bound grows
    with s); 0 where even free compute cannot reach step_s."""
    def bound(speed: float) -> float:
        return dp_bound_s(fwd_s, bwd_s, m, ag_s, rs_s, speed, before_s)
    lo, hi = 0.0, 10.0
    if bound(lo) > step_s:
        return 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if bound(mid) <= step_s else (lo, mid)
    return lo


def row_bound(run) -> dict:
    """The bound's terms for one row from the twin's simulated step (its busiest rank), the twin's
    step and the published step (the row's FLOPs per step over its published rate)."""
    sc = scenario_of(run)
    step = simulate_step(sc, record_events=False, check_memory=False)
    m = sc.num_microbatches
    busiest = max(range(len(step.pipeline.busy_s)), key=lambda r: step.pipeline.busy_s[r])
    zero_s = step.op_time_s.get("grad_buffer_zero", 0.0)
    compute_s = step.pipeline.busy_s[busiest] - zero_s
    fwd_s = sum(s for k, s in step.op_time_s.items() if k.endswith("_fwd") and not k.startswith("recompute")) / m
    bwd_s = compute_s / m - fwd_s
    _, costs, profile, mems, _, _ = _prepare(sc, None, Perturb(), False)
    rs_s, _, ag_s = dp_tail_s(sc, mems[busiest], rank_params(sc, costs)[busiest], sc.gpu, profile, 1.0)
    published_step_s = flops_per_token(run.flop_basis, sc.model, run.seq_len) * step.tokens_per_step / (
        run.published * 1e12 * step.num_gpus)
    return {"m": m, "fwd_s": fwd_s, "bwd_s": bwd_s, "compute_s": compute_s, "zero_s": zero_s, "ag_s": ag_s,
            "rs_s": rs_s, "step_s": step.step_time_s, "bound_s": dp_bound_s(fwd_s, bwd_s, m, ag_s, rs_s, 1.0, zero_s),
            "published_step_s": published_step_s,
            "speed_needed": speed_to_reach(fwd_s, bwd_s, m, ag_s, rs_s, published_step_s, zero_s)}


def main() -> None:
    runs = {r.id: r for r in load_runs()[0]}
    print("Megatron-LM PP 1 rows: lower bound on the step from the DP traffic core_r0.8.0 cannot hide (twin's op costs)")
    print(f"{'row':14} {'mbs':>3} {'m':>2} {'F s':>7} {'B s':>7} {'AG s':>6} {'RS s':>6} {'bound s':>8} "
          f"{'twin s':>7} {'publ. s':>7} {'s*':>5}")
    for rid in ROWS:
        base = runs[rid]
        for mbs in MICRO_BATCH_SEQS:
            run = dataclasses.replace(base, plan={**base.plan, "micro_batch_seqs": mbs})
            r = row_bound(run)
            print(f"{rid:14} {mbs:>3} {r['m']:>2} {r['fwd_s']:7.3f} {r['bwd_s']:7.3f} {r['ag_s']:6.3f} {r['rs_s']:6.3f} "
                  f"{r['bound_s']:8.3f} {r['step_s']:7.3f} {r['published_step_s']:7.3f} {r['speed_needed']:5.2f}")


if __name__ == "__main__":
    main()
