"""The idealised schedule behind `twin schedule`: constant op times, no communication.

Op durations (one compute task each, p2p 0):
    F   -> f_s
    BW  -> b_s                      (b_s is the *full* backward: input grad + weight grad)
    B   -> b_s - w_s                (input-grad-only backward; its W runs later)
    W   -> w_s
    FB  -> fb_s                     (pair whose backward is full)
           fb_s - w_s               (pair whose backward is input-only; its W runs later)

fb_s follows the DualPipe paper's F&B: "the execution time of two mutually overlapped forward
and backward chunks", with the backward a full one (the reference never defers the weight pass
of an overlapped pair). Default F+B, i.e. no overlap benefit; perfect overlap gives max(F, B).
If a schedule ever pairs an input-only backward, the pair is the same overlapped work minus the
weight pass it no longer contains.

The DualPipe README's bubble table (F, B, W per chunk; PP = number of model stages):
    1F1B       (PP-1)(F+B)
    ZB1P       (PP-1)(F+B-2W)
    DualPipe   (PP/2-1)(F&B+B-3W)          PP = pp ranks
    DualPipeV  (PP/2-1)(F&B+B-3W)          PP = 2*pp stages on pp ranks, i.e. (pp-1)(F&B+B-3W)
Megatron's interleaved 1F1B with V chunks per rank (Narayanan et al. 2021 §2.2.2), F and B the
times of a whole stage (each chunk takes F/V, B/V):
    interleaved-1f1b  (PP-1)(F+B)/V
It is exact for the canonical case it was derived for (W = F, B = 2F, enough micro-batches);
for other op times the simulated bubble is reported beside it, never forced equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from twin.core.errors import ScenarioError
from twin.sim.pipeline import Task, simulate_pipeline
from twin.core.schedules import SCHEDULES, PipeOp, build_schedule

@dataclass(frozen=True)
class IdealCosts:
    """Constant op times, one compute task per op, free transfers."""

    f_s: float
    b_s: float
    w_s: float
    fb_s: float

    def duration_s(self, op: PipeOp) -> float:
        if op.kind == "F":
            return self.f_s
        if op.kind == "BW":
            return self.b_s
        if op.kind == "B":
            return self.b_s - self.w_s
        if op.kind == "W":
            return self.w_s
        if op.kind == "FB":
            return self.fb_s - self.w_s if op.b_split else self.fb_s
        raise ValueError(f"unknown op kind {op.kind!r}")

    def chains(self, rank: int, op: PipeOp) -> Sequence[Sequence[Task]]:
        return ((Task("compute", self.duration_s(op), op.kind),),)

    def p2p_s(self, src_rank: int, dst_rank: int, kind: str) -> float:
        return 0.0


def formula_bubble_s(name: str, pp: int, f_s: float, b_s: float, w_s: float, fb_s: float,
                     virtual_stages: int = 1) -> float:
    """The README table's bubble for `pp` ranks (the schedule registry's closed form)."""
    if name not in SCHEDULES:
        raise ScenarioError("plan.schedule", name, "one of " + ", ".join(SCHEDULES))
    return SCHEDULES[name].bubble_s(pp, f_s, b_s, w_s, fb_s, virtual_stages)


def _check_time(field: str, value: float, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ScenarioError(field, value, "a finite time in seconds, " + (">= 0" if allow_zero else "> 0"))
    return float(value)


def ideal_schedule(name: str, pp: int, num_microbatches: int, f_s: float, b_s: float,
                   w_s: float, fb_s: float | None = None, virtual_stages: int = 1) -> dict:
    """Simulate `name` with constant op times and compare with the README's bubble formula.
    With `virtual_stages` V > 1 (interleaved-1f1b) the times are a whole stage's, each of its V
    chunks taking 1/V of them.

    Returns a JSON-able dict with unit-suffixed keys.
    """
    f_s = _check_time("schedule.f_s", f_s, allow_zero=False)
    b_s = _check_time("schedule.b_s", b_s, allow_zero=False)
    w_s = _check_time("schedule.w_s", w_s, allow_zero=True)
    if w_s > b_s:
        raise ScenarioError("schedule.w_s", w_s, f"<= b_s = {b_s} (W is part of the full backward B)")
    fb_s = f_s + b_s if fb_s is None else _check_time("schedule.fb_s", fb_s, allow_zero=False)
    if fb_s < w_s:
        raise ScenarioError("schedule.fb_s", fb_s, f">= w_s = {w_s}")

    schedule = build_schedule(name, pp, num_microbatches, virtual_stages)
    v = virtual_stages
    result = simulate_pipeline(schedule, IdealCosts(f_s / v, b_s / v, w_s / v, fb_s / v), streams=("compute",))
    formula = formula_bubble_s(name, pp, f_s, b_s, w_s, fb_s, v)

    out = {
        "schedule": name,
        "pp": pp,
        "virtual_stages": v,
        "num_model_stages": schedule.num_model_stages,
        "num_microbatches": num_microbatches,
        "f_s": f_s, "b_s": b_s, "w_s": w_s, "fb_s": fb_s,
        "makespan_s": result.makespan_s,
        "bubble_s": result.bubble_s,
        "formula_bubble_s": formula,
        "formula": SCHEDULES[name].bubble_formula,
        "idle_s": list(result.idle_s),
        "busy_s": list(result.busy_s),
        "peak_inflight_activations": list(result.peak_inflight_activations),
    }
    if not math.isclose(result.bubble_s, formula, rel_tol=1e-9, abs_tol=1e-12 * max(1.0, f_s + b_s)):
        out["note"] = _why_different(name, pp, num_microbatches, f_s, b_s, w_s, fb_s)
    return out


def _why_different(name: str, pp: int, n: int, f_s: float, b_s: float, w_s: float,
                   fb_s: float) -> str:
    canonical = math.isclose(w_s, f_s) and math.isclose(b_s, 2 * f_s)
    reasons = []
    if not canonical:
        reasons.append("the table is derived for the canonical op times W = F, B = 2F; with other "
                       "times the critical path runs through different ops")
    if SCHEDULES[name].layout.num_chunks == 1 and not SCHEDULES[name].virtual and n < pp:
        reasons.append(f"fewer micro-batches ({n}) than ranks ({pp}): the pipeline never fills")
    if SCHEDULES[name].layout.num_chunks == 2 and not max(f_s, b_s) <= fb_s <= f_s + b_s:
        reasons.append("F&B outside [max(F, B), F+B] is not an overlapped pair")
    if not reasons:
        reasons.append("simulated max idle differs from the closed form; see idle_s per rank")
    return "simulated bubble != formula: " + "; ".join(reasons) + "."
