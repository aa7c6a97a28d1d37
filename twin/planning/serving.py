"""Serving capacity: the fewest GPUs, and their split between prefill and decode instances, that
serve a request rate within TTFT and TPOT targets.

`slo_check` is the one seam with the serving twin: given a serving scenario (its model, GPU type
and instance plan), a prefill pool and a decode pool, a request rate and the two targets, it says
whether they are met, with the figures behind the verdict. It is built on today's
`twin.serving` (one decode step and one prefill forward per operating point) with two textbook
queueing steps:
- decode: an instance holding b requests emits b tokens per TPOT(b); by Little's law the rate
  needs b = rate / instances x output_len x TPOT(b) requests in flight per instance. The smallest
  such b is found by bisection; it must fit in memory and have TPOT(b) within the target;
- prefill: instances process prompts at their prefill rate (prompt tokens/s); the pool is one
  queue with deterministic service (M/D/1 with c-fold capacity), so TTFT = prefill time of one
  prompt + rho / (2 mu (1 - rho)) of waiting, rho = rate / mu.
A request-level simulation can replace this function without changing `size_serving`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from twin.core.errors import InfeasiblePlan
from twin.core.scenario import ServeScenario
from twin.costs.memory import max_batch_by_memory
from twin.serving.iteration import decode_step, prefill_forward, serving_profile

MAX_INSTANCES = 4_096     # instances tried by size_serving (prefill + decode)


@dataclass(frozen=True)
class SloCheck:
    """One deployment at one request rate: met or not, and the figures behind it."""

    meets: bool
    reason: str
    num_gpus: int
    prefill_gpus: int
    decode_gpus: int
    rate_per_s: float
    ttft_s: float | None = None              # mean, queueing included
    tpot_s: float | None = None
    decode_batch: int | None = None          # requests in flight per decode instance
    prefill_utilization_frac: float | None = None
    max_decode_batch_by_memory: int | None = None


@dataclass(frozen=True)
class ServingPlanResult:
    """The fewest GPUs that serve `rate_per_s` within the targets, and every deployment checked."""

    rate_per_s: float
    ttft_target_s: float
    tpot_target_s: float
    instance_gpus: int
    evaluated: int
    feasible: int
    infeasible_by_reason: dict[str, int]
    best: SloCheck | None
    checks: tuple[SloCheck, ...]


class _Deployment:
    """Memoised per-instance figures of one serving scenario (independent of pool sizes)."""

    def __init__(self, sc: ServeScenario):
        self.sc = sc
        s = dataclasses.replace(sc.serve, disaggregated=True)
        self.m, self.gpu, self.s = sc.model, sc.gpu, s
        self.profile = serving_profile(self.gpu, s)
        self.prefill = prefill_forward(self.m, self.gpu, s, self.profile)
        self.max_batch = max_batch_by_memory(self.m, self.gpu, s)

    @functools.cache
    def tpot_s(self, batch: int) -> float:
        return float(decode_step(self.m, self.gpu, self.s, batch, self.profile)["tpot_s"])


def _decode_batch(dep: _Deployment, per_instance_rate: float) -> int | None:
    """Smallest b with b >= rate x output_len x TPOT(b) (Little's law), or None beyond memory."""
    need = lambda b: b >= per_instance_rate * dep.s.output_len * dep.tpot_s(b)   # noqa: E731
    if dep.max_batch < 1 or not need(dep.max_batch):
        return None
    lo, hi = 0, dep.max_batch   # need(lo) false (0 requests serve nothing), need(hi) true
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if need(mid) else (mid, hi)
    return hi


def slo_check(sc: ServeScenario, rate_per_s: float, ttft_target_s: float, tpot_target_s: float,
              prefill_gpus: int, decode_gpus: int, _dep: _Deployment | None = None) -> SloCheck:
    """Do `prefill_gpus` + `decode_gpus` of the scenario's GPU type, in instances of serve.ep GPUs,
    serve `rate_per_s` requests within both targets? (See the module docstring for the model.)"""
    dep = _dep or _Deployment(sc)
    ep = dep.s.ep
    base = dict(num_gpus=prefill_gpus + decode_gpus, prefill_gpus=prefill_gpus, decode_gpus=decode_gpus,
                rate_per_s=rate_per_s, max_decode_batch_by_memory=dep.max_batch)
    p_inst, d_inst = prefill_gpus // ep, decode_gpus // ep
    if p_inst < 1 or d_inst < 1:
        return SloCheck(False, "an instance of each kind is needed", **base)
    service_s = dep.prefill["ttft_s"]
    mu = p_inst * dep.prefill["input_tokens_per_s_per_gpu"] * ep / dep.s.input_len   # prompts/s of the pool
    rho = rate_per_s / mu
    if rho >= 1:
        return SloCheck(False, "prefill saturated", prefill_utilization_frac=rho, **base)
    ttft = service_s + rho / (2 * mu * (1 - rho))
    b = _decode_batch(dep, rate_per_s / d_inst)
    if b is None:
        return SloCheck(False, "decode out of memory", ttft_s=ttft, prefill_utilization_frac=rho, **base)
    tpot = dep.tpot_s(b)
    figures = dict(ttft_s=ttft, tpot_s=tpot, decode_batch=b, prefill_utilization_frac=rho, **base)
    if tpot > tpot_target_s:
        return SloCheck(False, "TPOT over target", **figures)
    if ttft > ttft_target_s:
        return SloCheck(False, "TTFT over target", **figures)
    return SloCheck(True, "", **figures)


def size_serving(sc: ServeScenario, rate_per_s: float, ttft_target_s: float, tpot_target_s: float,
                 max_instances: int = MAX_INSTANCES) -> ServingPlanResult:
    """The fewest GPUs (then the fewest prefill GPUs) meeting the targets: for each total of
    instances, every split between prefill and decode, smallest total first. Raises InfeasiblePlan
    when not even one request fits an instance."""
    dep = _Deployment(sc)
    if dep.max_batch < 1:
        raise InfeasiblePlan(f"{sc.model.name} does not fit an instance of {dep.s.ep} {sc.cluster.gpu} GPUs", {})
    ep = dep.s.ep
    checks, best = [], None
    # targets no pool size can meet: one prompt's prefill alone, or one request's decode step
    floor = None
    if dep.prefill["ttft_s"] > ttft_target_s:
        floor = f"TTFT of one prompt alone ({dep.prefill['ttft_s']:.3g} s) over target"
    elif dep.tpot_s(1) > tpot_target_s:
        floor = f"TPOT of one request alone ({dep.tpot_s(1):.3g} s) over target"
    for total in range(2, max_instances + 1 if floor is None else 2):
        for p in range(1, total):
            c = slo_check(sc, rate_per_s, ttft_target_s, tpot_target_s, p * ep, (total - p) * ep, dep)
            checks.append(c)
            if c.meets:
                best = c
                break
        if best is not None:
            break
    reasons: dict[str, int] = {floor: 1} if floor else {}
    for c in checks:
        if not c.meets:
            reasons[c.reason] = reasons.get(c.reason, 0) + 1
    return ServingPlanResult(rate_per_s=rate_per_s, ttft_target_s=ttft_target_s, tpot_target_s=tpot_target_s,
                             instance_gpus=ep, evaluated=len(checks), feasible=sum(c.meets for c in checks),
                             infeasible_by_reason=reasons, best=best, checks=tuple(checks))
