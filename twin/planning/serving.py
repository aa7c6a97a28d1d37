"""Serving capacity: the fewest GPUs, and their split between prefill and decode instances, that
serve a request rate within TTFT and TPOT targets.

`slo_check` is the one seam with the serving twin: a deployment (instances of the scenario's GPU
type that prefill and decode, or a prefill pool and a decode pool, disaggregated like DeepSeek's) is run through the request-level
simulation (twin.serving.simulate: iteration by iteration, continuous batching, KV memory, the KV
transfer between the pools) on a bounded open-loop load at the rate (Poisson unless the scenario's
traffic is gamma; a trace scenario's lengths kept, its rows cycled; `num_requests` requests: by default enough that the arrivals span STEADY_LIFETIMES
lifetimes of a request (its prompt, then its tokens at a full decode instance's pace: `_Deployment.lifetime_s`),
`steady_requests`, at least 2,000). Its verdict: the given percentile
(P90 by default) of TTFT and of TPOT, over the requests that arrive in the steady window (between
the times 10% and 90% of requests have finished: the ramp-up and the drain are left out), within
the targets, and requests finishing at the rate (`stable_frac`, less what spread lifetimes take from the
window's reading: `lifetime_spread_frac`). Decode instances run at most the batch whose step at the mean context meets the TPOT
target (within memory, `concurrency_for_tpot`), as a provider caps them; load beyond it queues and
shows in TTFT.

`size_serving` searches two layouts and answers the one with fewer GPUs (co-located on a tie).
Co-located (serve.disaggregated = false: each instance prefills its own prompts between decode
steps, as vLLM and SGLang do by default): the fewest instances that meet both targets, by bisection.
Disaggregated (until s22walk the only layout searched, so R1 at 2/s within TTFT 2 s and TPOT 100 ms,
which one co-located HGX H200 serves, was answered with 16 GPUs): it bisects the two pools, each
assumed to need more GPUs the tighter its target (TPOT falls and TTFT falls as a pool grows): first the fewest decode instances that meet both
targets with every prompt prefilled at once on arrival (serve.prefill_instances = 0: the prefill
pool is not simulated), then the fewest prefill instances that meet both with those decode
instances; a deployment where the two pools interfere (rare) gets one more decode instance until
it meets (at most MAX_EXTRA_DECODE). Every deployment simulated is returned with its figures.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import ServeScenario
from twin.core.serve_specs import MAX_SIM_REQUESTS, ServeSpec
from twin.costs.memory import max_batch_by_memory
from twin.serving.run import check_one_request_fits
from twin.serving.simulate import concurrency_for_tpot, simulate, window_bounds
from twin.serving.timing import IterationCosts
from twin.serving.workload import read_trace, trace_lengths_at

COLOCATED, DISAGGREGATED = "co-located", "disaggregated"
LAYOUTS = (COLOCATED, DISAGGREGATED)   # where prompts are prefilled: on the decoding instances, or a pool of their own
MAX_INSTANCES = 4_096        # instances tried by size_serving (prefill + decode)
SLO_REQUESTS = 2_000         # requests simulated per deployment
SLO_PERCENTILE = 90.0        # the percentile of TTFT and TPOT held to the targets
OPEN_ARRIVALS = ("poisson", "gamma")
MAX_EXTRA_DECODE = 4         # decode instances added where the pools interfere, before giving up
# Arrivals span this many lifetimes of a request (_Deployment.lifetime_s: its prompt, then its tokens at
# a full decode instance's pace, at most the TPOT target).
# A decode pool holds rate x lifetime requests in the steady state (Little's law); a load that stops
# arriving sooner never fills it, so a pool too small for the rate met the targets: R1 at 100/s within
# TTFT 2 s and TPOT 50 ms sized at 80 GPUs on 2,000 requests (20 s of arrivals for 51 s lifetimes), 176
# on 20,000 (until s22walk). Three: the fill (one lifetime) and two more in which a queue shows in TTFT.
STEADY_LIFETIMES = 3.0
# A deployment must finish requests at the rate in the steady window, within this many standard
# deviations of the window's count (stable_frac), or its queue grows without bound. Targets alone miss
# it where they are loose: disaggregated, a request waits for a decode slot between its first and
# second tokens, and TPOT spreads that wait over its tokens, so R1 at 100/s within TPOT 10 s "met" on
# 8 decode GPUs serving 7 requests/s (until s22walk).
STABLE_SIGMAS = 3.0




BURST_RATE_FACTOR = 2.0   # served over asked, in the steady window: arrivals drawn as a burst, not at the rate


def burst_note(rate_per_s: float, served_rate_per_s: float | None, simulated_requests: int, arrival: str) -> str:
    """Bursty arrivals (gamma at a high CV) whose draw came far faster than the rate asked: the deployment is sized for
    that burst, whose size is the number of requests simulated ('' otherwise). Said nothing until s26walk: 32 GPUs for
    10/s at CV 100, 4 for Poisson arrivals."""
    if served_rate_per_s is None or served_rate_per_s <= BURST_RATE_FACTOR * rate_per_s:
        return ""
    served = (f"{served_rate_per_s / 1e3:.3g}K" if served_rate_per_s >= 1e3 else f"{served_rate_per_s:.3g}")
    return (f"the {simulated_requests:,} {arrival} arrivals came faster than the rate asked ({rate_per_s:g}/s; "
            f"{served}/s in the steady window): the deployment is sized for that burst, whose size follows the requests "
            "simulated (--requests); a lower traffic.arrival_cv sizes for the rate")
@dataclass(frozen=True)
class SloCheck:
    """One deployment at one request rate: met or not, and the simulated figures behind it."""

    meets: bool
    reason: str
    num_gpus: int
    prefill_gpus: int            # disaggregated, 0: the prefill pool was not simulated (every prompt prefilled on arrival)
    decode_gpus: int             # co-located: every GPU (num_gpus / instance size instances doing both), prefill_gpus 0
    rate_per_s: float
    ttft_s: float | None = None              # the percentile below, steady-window requests
    tpot_s: float | None = None
    percentile: float = SLO_PERCENTILE
    decode_batch: int | None = None          # the running cap per decode instance (TPOT target, memory)
    max_decode_batch_by_memory: int | None = None
    simulated_requests: int = 0
    served_rate_per_s: float | None = None   # requests finishing per second in the steady window
    steady_requests: int = 0                 # the requests a steady state needs (steady_requests); fewer: see the summary
    layout: str = "disaggregated"            # or "co-located": prefill and decode on the same instances (LAYOUTS)
    usd_per_hour: float | None = None        # num_gpus at the cluster's price (cluster.price_usd_per_gpu_hour or the catalog's)
    usd_per_million_output_tokens: float | None = None   # the simulation's split of that cost (twin.serving.simulate):
    usd_per_million_input_tokens: float | None = None    # by time share co-located, by pool disaggregated
    output_tokens_per_s: float | None = None             # in the steady window
    # every GPU's cost over the output tokens: comparable between layouts (the split above charges a
    # disaggregated prefill pool to input tokens, a co-located instance's prompt time likewise)
    usd_per_million_output_tokens_all_gpus: float | None = None


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
    best: SloCheck | None                     # the fewest GPUs of either layout (co-located on a tie: fewer instances to run)
    checks: tuple[SloCheck, ...]
    best_colocated: SloCheck | None = None    # the fewest of each layout searched (None: not searched or none meets)
    best_disaggregated: SloCheck | None = None
    layouts: tuple[str, ...] = LAYOUTS
    arrival: str = "poisson"                  # the arrivals simulated at the rate (OPEN_ARRIVALS)
    arrival_note: str = ""                    # the scenario's own arrivals, where they were not used
    # the answer in a planner's units (s24srvwalk: it was GPUs alone): nodes, and instances of each pool
    gpus_per_node: int = 8                    # the GPU type's (cluster catalog)
    percentile: float = SLO_PERCENTILE        # of TTFT and TPOT, held to the targets (the answer did not say, until s24srvwalk)
    prefill_instance_gpus: int = 0            # GPUs of a prefill instance (serve.prefill_ep, else instance_gpus)


def nodes_of(num_gpus: int, gpus_per_node: int) -> int:
    """Nodes a deployment of num_gpus GPUs takes (a part-filled node counts whole)."""
    return -(-num_gpus // gpus_per_node)


def pool_instances(prefill_gpus: int, decode_gpus: int, instance_gpus: int,
                   prefill_instance_gpus: int | None = 0) -> tuple[int, int]:
    """(prefill instances, decode instances) of a disaggregated deployment: a decode instance is instance_gpus GPUs,
    a prefill instance prefill_instance_gpus (0 or None: instance_gpus too, as in a result.json before s24srvwalk)."""
    return prefill_gpus // (prefill_instance_gpus or instance_gpus), decode_gpus // instance_gpus


def steady_requests(rate_per_s: float, lifetime_s: float) -> int:
    """Requests whose arrivals at `rate_per_s` span STEADY_LIFETIMES request lifetimes (at least
    SLO_REQUESTS). Example: R1 on HGX H200 within TPOT 50 ms lives 51.2 s (a 59 ms prompt, then 1,023
    tokens at a 281-request instance's 50.0 ms): at 100/s, 3 x 100 x 51.2 = 15,359 requests."""
    return max(SLO_REQUESTS, math.ceil(round(STEADY_LIFETIMES * rate_per_s * lifetime_s, 6)))   # round: x.000000000002


def check_steady_load(sc: ServeScenario, rate_per_s: float, tpot_target_s: float, field: str = "rate_per_s",
                      dep: _Deployment | None = None) -> int:
    """The requests a steady state needs; a ScenarioError naming `field` where that is more than the
    simulation takes (MAX_SIM_REQUESTS), with the highest rate it can judge."""
    lifetime_s = (dep or _Deployment(sc, tpot_target_s)).lifetime_s
    need = steady_requests(rate_per_s, lifetime_s)
    if need > MAX_SIM_REQUESTS:
        top = MAX_SIM_REQUESTS / (STEADY_LIFETIMES * lifetime_s)
        raise ScenarioError(field, rate_per_s, f"at most {top:,.4g} requests/s for these targets: the steady state at "
                            f"this rate needs {need:,} simulated requests ({STEADY_LIFETIMES:g} lifetimes of "
                            f"{lifetime_s:.3g} s), over the simulation's {MAX_SIM_REQUESTS:,}")
    return need


class _Deployment:
    """Per-instance figures of one serving scenario (independent of pool sizes), from the serving
    simulation's own iteration costs (twin.serving.timing)."""

    def __init__(self, sc: ServeScenario, tpot_target_s: float):
        self.sc = sc
        s = dataclasses.replace(sc.serve, disaggregated=True)
        # a trace scenario: its lengths are kept (its arrivals give way to the question's rate), and the per-instance
        # figures below (the decode cap at the mean context, the floors, a request's lifetime) take its mean lengths
        self.trace = (read_trace(sc.traffic.trace_csv, sc.traffic.prefix_hit_frac, None)
                      if sc.traffic.arrival == "trace" else None)
        if self.trace is not None:
            s = dataclasses.replace(s, input_len=max(1, round(float(np.mean(self.trace.input_len)))),
                                    output_len=max(1, round(float(np.mean(self.trace.output_len)))))
        self.m, self.gpu, self.s = sc.model, sc.gpu, s
        self.max_batch = max_batch_by_memory(self.m, self.gpu, s)
        decode = IterationCosts(self.m, self.gpu, s)
        prefill = IterationCosts(self.m, self.gpu, dataclasses.replace(s, ep=s.prefill_gpus))
        tokens_per_step = 1.0 + sum(s.mtp_acceptance_frac ** (i + 1) for i in range(s.mtp_draft_tokens))
        # floors no pool size can beat: one prompt prefilled alone, one request decoding alone
        self.prompt_alone_s = prefill.iteration_s(0, 0.0, s.input_len, s.input_len)[0]
        self.tpot_alone_s = decode.iteration_s(1, float(s.input_len), 0, 0.0)[0] / tokens_per_step
        # the running cap of a decode instance: the scenario's serve.batch, else the batch whose
        # step meets the TPOT target at the mean context
        self.batch_cap = s.batch or (concurrency_for_tpot(decode, s, tpot_target_s, self.max_batch)
                                     if self.max_batch >= 1 else 0)
        # a request's life in the steady state, for steady_requests: its prompt alone, then its other
        # tokens at the step of a full decode instance at the mean context (the TPOT target where that
        # is shorter). Not the targets alone: a loose TPOT target (10 s, "any") would ask 200 times
        # the requests the deployment's real pace needs.
        step_s = decode.iteration_s(max(self.batch_cap, 1), s.input_len + s.output_len / 2.0, 0, 0.0)[0] / tokens_per_step
        self.token_s = min(tpot_target_s, step_s)   # a request's pace after its first token, for its lifetime
        self.lifetime_s = self.prompt_alone_s + max(s.output_len - 1, 0) * self.token_s


def _window_rate(finish_s: np.ndarray) -> float:
    """Requests finishing per second in the steady window, as the simulation reads its served rate."""
    a, b = window_bounds(finish_s)
    return float(((finish_s >= a) & (finish_s <= b)).sum()) / (b - a) if b > a else math.inf


def lifetime_spread_frac(arrival_s: np.ndarray, lifetime_s: np.ndarray) -> float:
    """The share of the arrival rate the steady window reads from a deployment that serves every request at once at
    its own pace (finishing at arrival + lifetime), against one whose requests all live the mean lifetime; at most 1.
    Where lifetimes spread (output lengths with a CV), the window between 10% and 90% of requests finished reaches
    into the fill, when the short requests finish first, and the drain, when the long ones finish last, so the rate
    it reads falls below the arrivals' even where nothing queues: R1 at 20/s with uniform output lengths (CV 0.5)
    read 18.3/s on 64 co-located GPUs at TTFT 105 ms, judged "a queue that grows" (s24srvwalk). Fixed lengths: 1.0
    exactly, so their verdicts are as before."""
    lifetime_s = np.asarray(lifetime_s, dtype=float)
    if np.ptp(lifetime_s) == 0:
        return 1.0
    arrival_s = np.asarray(arrival_s, dtype=float)
    return min(1.0, _window_rate(arrival_s + lifetime_s) / _window_rate(arrival_s + float(np.mean(lifetime_s))))


def stable_frac(num_requests: int, traffic) -> float:
    """The share of the rate a stable deployment finishes in the steady window, less STABLE_SIGMAS
    standard deviations of the window's count: the 0.8 x n arrivals it holds vary by cv / sqrt(0.8 n)
    (Poisson: cv 1; gamma: traffic.arrival_cv). 2,000 Poisson requests: 1 - 3 / 40 = 0.925."""
    cv = traffic.arrival_cv if traffic.arrival == "gamma" else 1.0
    return max(0.0, 1.0 - STABLE_SIGMAS * cv / math.sqrt(0.8 * num_requests))


def one_deployment_cluster(raw: dict) -> dict:
    """Raw serving-scenario tables with cluster.num_gpus set to one deployment's GPUs: a decode instance of
    serve.ep, plus serve.prefill_instances prefill instances of serve.prefill_ep (or serve.ep). The serving
    question sizes its own deployments and reads no cluster size, so the scenario's count must not refuse the
    instance asked: `--set serve.ep=16 --set serve.tp=16` on R1's 8-GPU scenario (the instance that holds R1 on
    H100s) was refused as "serve.ep: got 16; allowed: a divisor of cluster.num_gpus = 8" until s24srvwalk. Values
    that are not counts are left as they are, for the loader to name."""
    serve, cluster = raw.get("serve", {}), raw.get("cluster", {})
    if not isinstance(serve, dict) or not isinstance(cluster, dict):
        return raw
    defaults = {f.name: f.default for f in dataclasses.fields(ServeSpec)}
    ep, prefill_ep, prefill_instances = (serve.get(k, defaults[k]) for k in ("ep", "prefill_ep", "prefill_instances"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (ep, prefill_ep, prefill_instances)) or ep < 1:
        return raw
    return {**raw, "cluster": {**cluster, "num_gpus": ep + prefill_instances * (prefill_ep or ep)}}


def _arrival(sc: ServeScenario) -> str:
    return sc.traffic.arrival if sc.traffic.arrival in OPEN_ARRIVALS else "poisson"


def _arrival_note(sc: ServeScenario, dep: _Deployment | None = None) -> str:
    """What became of the scenario's trace: the question's rate replaces its arrivals, its lengths are kept (a closed
    loop's arrivals, the default traffic, are replaced without a note: it has no lengths of its own to lose)."""
    if sc.traffic.arrival != "trace":
        return ""
    dep = dep or _Deployment(sc, 1.0)
    return (f"the scenario's trace ({sc.traffic.trace_csv}): its {len(dep.trace):,} requests' lengths kept (cycled; mean ISL "
            f"{dep.s.input_len:,}, OSL {dep.s.output_len:,}), their arrivals replaced by Poisson arrivals at the rate")


def _scenario(dep: _Deployment, rate_per_s: float, prefill_instances: int, decode_instances: int,
              num_requests: int, layout: str = DISAGGREGATED) -> ServeScenario:
    """The deployment as a serving scenario; co-located: `decode_instances` instances doing both."""
    sc, s = dep.sc, dep.s
    if layout == COLOCATED:
        s = dataclasses.replace(s, disaggregated=False, prefill_ep=0)
        prefill_instances = 0
    serve = dataclasses.replace(s, prefill_instances=prefill_instances, batch=dep.batch_cap)
    traffic = dataclasses.replace(sc.traffic, arrival=_arrival(sc), rate_per_s=rate_per_s, num_requests=num_requests,
                                  concurrency=0, trace_csv="")
    gpus = prefill_instances * s.prefill_gpus + decode_instances * s.ep
    return dataclasses.replace(sc, serve=serve, traffic=traffic, cluster=dataclasses.replace(sc.cluster, num_gpus=gpus))


def _steady_percentiles(res, percentile: float) -> tuple[float, float]:
    """TTFT and TPOT at `percentile` over the requests arriving in the steady window."""
    r = res.requests
    a, b = res.steady["window_start_s"], res.steady["window_end_s"]
    arrival = r["arrival_s"]
    inside = (arrival >= a) & (arrival <= b)
    if inside.sum() < 10:   # too short a window to judge: every request
        inside = np.ones_like(arrival, dtype=bool)
    ttft = (r["first_token_s"] - arrival)[inside]
    out = r["output_len"][inside].astype(float)
    tpot = ((r["finish_s"][inside] - r["first_token_s"][inside]) / np.maximum(out - 1, 1))[out > 1]
    pct = lambda x: float(np.percentile(x, percentile)) if len(x) else math.nan   # noqa: E731
    return pct(ttft), pct(tpot)


def _check(dep: _Deployment, rate_per_s: float, ttft_target_s: float, tpot_target_s: float, prefill_instances: int,
           decode_instances: int, num_requests: int, percentile: float, layout: str = DISAGGREGATED) -> SloCheck:
    """Co-located: `decode_instances` instances each doing prefill and decode (`prefill_instances` unused)."""
    s = dep.s
    if layout == COLOCATED:
        prefill_instances = 0
    base = dict(num_gpus=prefill_instances * s.prefill_gpus + decode_instances * s.ep, layout=layout,
                prefill_gpus=prefill_instances * s.prefill_gpus, decode_gpus=decode_instances * s.ep,
                rate_per_s=rate_per_s, percentile=percentile, decode_batch=dep.batch_cap,
                max_decode_batch_by_memory=dep.max_batch,
                steady_requests=steady_requests(rate_per_s, dep.lifetime_s))
    if decode_instances < 1:
        return SloCheck(False, "a decode instance is needed", **base)
    try:
        deployment = _scenario(dep, rate_per_s, prefill_instances, decode_instances, num_requests, layout)
        res = simulate(deployment, requests=None if dep.trace is None else
                       trace_lengths_at(deployment.traffic, dep.trace, num_requests))
    except InfeasiblePlan as exc:
        return SloCheck(False, exc.reason, **base)
    except ScenarioError as exc:   # a run too long to simulate (twin.serving.simulate.check_work)
        return SloCheck(False, f"not simulated: {exc}", **base)
    ttft, tpot = _steady_percentiles(res, percentile)
    figures = dict(ttft_s=ttft, tpot_s=tpot, simulated_requests=res.simulated_requests,
                   served_rate_per_s=res.requests_per_s, usd_per_million_output_tokens=res.usd_per_million_output_tokens,
                   usd_per_million_input_tokens=res.usd_per_million_input_tokens,
                   usd_per_hour=base["num_gpus"] * dep.sc.cluster.resolved().price_usd_per_gpu_hour,
                   output_tokens_per_s=res.output_tokens_per_s, **base)
    if res.output_tokens_per_s > 0:
        figures["usd_per_million_output_tokens_all_gpus"] = figures["usd_per_hour"] / 3600 / res.output_tokens_per_s * 1e6
    if not tpot <= tpot_target_s:
        return SloCheck(False, "TPOT over target", **figures)
    if not ttft <= ttft_target_s:
        return SloCheck(False, "TTFT over target", **figures)
    # the served rate against the arrivals', less its noise and what spread lifetimes take from the window's reading
    r = res.requests
    ideal_s = dep.prompt_alone_s + np.maximum(r["output_len"] - 1, 0) * dep.token_s
    spread = lifetime_spread_frac(r["arrival_s"], ideal_s)
    if not res.requests_per_s >= stable_frac(res.simulated_requests, dep.sc.traffic) * rate_per_s * spread:
        return SloCheck(False, "served under the rate: a queue that grows", **figures)
    return SloCheck(True, "", **figures)


def slo_check(sc: ServeScenario, rate_per_s: float, ttft_target_s: float, tpot_target_s: float,
              prefill_gpus: int, decode_gpus: int, num_requests: int | None = None,
              percentile: float = SLO_PERCENTILE, _dep: _Deployment | None = None) -> SloCheck:
    """Do `prefill_gpus` + `decode_gpus` of the scenario's GPU type (prefill instances of
    serve.prefill_ep or serve.ep GPUs, decode instances of serve.ep) serve `rate_per_s` requests
    within both targets at `percentile`? Simulated request by request (see the module docstring) on
    `num_requests` requests (None: `check_steady_load`'s)."""
    dep = _dep or _Deployment(sc, tpot_target_s)
    if num_requests is None:
        num_requests = check_steady_load(sc, rate_per_s, tpot_target_s, dep=dep)
    p_inst, d_inst = prefill_gpus // dep.s.prefill_gpus, decode_gpus // dep.s.ep
    if p_inst < 1 or d_inst < 1:
        return SloCheck(False, "an instance of each kind is needed", num_gpus=prefill_gpus + decode_gpus,
                        prefill_gpus=prefill_gpus, decode_gpus=decode_gpus, rate_per_s=rate_per_s, percentile=percentile)
    return _check(dep, rate_per_s, ttft_target_s, tpot_target_s, p_inst, d_inst, num_requests, percentile)


def _fewest(meets, limit: int) -> int | None:
    """The smallest n in [1, limit] with meets(n), meets assumed monotone: doubling, then bisection."""
    hi = 1
    while not meets(hi):
        if hi >= limit:
            return None
        hi = min(limit, 2 * hi)
    lo = hi // 2   # meets(lo) false (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi


def _no_request_fits(dep: _Deployment) -> str | None:
    """Why an instance holds not even one request (check_one_request_fits' reason), or None."""
    try:
        check_one_request_fits(dep.m, dep.gpu, dep.s)
    except InfeasiblePlan as exc:
        return exc.reason
    return None


def size_serving(sc: ServeScenario, rate_per_s: float, ttft_target_s: float, tpot_target_s: float,
                 max_instances: int = MAX_INSTANCES, num_requests: int | None = None,
                 percentile: float = SLO_PERCENTILE, progress: bool = False,
                 layouts: tuple[str, ...] = LAYOUTS) -> ServingPlanResult:
    """The fewest GPUs meeting the targets, co-located or split into prefill and decode pools (see
    the module docstring; `layouts`: which of LAYOUTS to search), each deployment simulated on `num_requests` requests (None: the steady state's,
    `check_steady_load`, which raises a ScenarioError naming rate_per_s where the rate needs more
    than the simulation takes). Where not even one request fits an instance, the answer has no deployment and
    that reason.
    `progress`: a bar on stderr counting the deployments simulated (a bisection: their number is not
    known ahead; each is a few seconds at 2,000 requests, minutes at a million)."""
    if not layouts or any(x not in LAYOUTS for x in layouts):
        raise ScenarioError("layouts", layouts, "one or both of " + ", ".join(LAYOUTS))
    dep = _Deployment(sc, tpot_target_s)
    if num_requests is None:
        num_requests = check_steady_load(sc, rate_per_s, tpot_target_s, dep=dep)
    checks: dict[tuple[str, int, int], SloCheck] = {}
    bar = tqdm(desc="deployments", unit="deployment", file=sys.stderr, disable=not progress)

    def check(p: int, d: int, layout: str = DISAGGREGATED) -> SloCheck:
        if (layout, p, d) not in checks:
            bar.set_postfix_str(f"{rate_per_s:g}/s: " + (f"{d} co-located instance{'s' if d != 1 else ''}" if layout == COLOCATED else
                                                          f"{p} prefill + {d} decode instances"))
            checks[layout, p, d] = _check(dep, rate_per_s, ttft_target_s, tpot_target_s, p, d, num_requests, percentile, layout)
            bar.update(1)
        return checks[layout, p, d]

    # what no pool size can meet: an instance that holds no request (the memory by part, and the instance that would:
    # an answer with its reason, written like any, where until s24srvwalk it raised and --json and --out wrote
    # nothing), one prompt's prefill alone, or one request's decode step
    floor = _no_request_fits(dep)
    if floor is None and dep.prompt_alone_s > ttft_target_s:
        floor = f"TTFT of one prompt alone ({dep.prompt_alone_s * 1e3:.3g} ms) over the target {ttft_target_s * 1e3:.3g} ms"
    elif floor is None and dep.tpot_alone_s > tpot_target_s:
        floor = f"TPOT of one request alone ({dep.tpot_alone_s * 1e3:.3g} ms) over the target {tpot_target_s * 1e3:.3g} ms"
    best_dis = best_col = None
    with bar:
        if floor is None and COLOCATED in layouts:
            instances = _fewest(lambda k: check(0, k, COLOCATED).meets, max_instances)
            best_col = check(0, instances, COLOCATED) if instances is not None else None
        if floor is None and DISAGGREGATED in layouts:
            decode = _fewest(lambda d: check(0, d).meets, max_instances - 1)
            for _ in range(MAX_EXTRA_DECODE + 1):
                if decode is None or decode >= max_instances:
                    break
                prefill = _fewest(lambda p: check(p, decode).meets, max_instances - decode)
                if prefill is not None:
                    best_dis = check(prefill, decode)
                    break
                decode += 1   # the pools interfere: one more decode instance
    found = [b for b in (best_col, best_dis) if b is not None]
    best = min(found, key=lambda b: b.num_gpus) if found else None   # min keeps the first: co-located on a tie
    done = list(checks.values())
    reasons: dict[str, int] = {floor: 1} if floor else {}
    for c in done:
        if not c.meets:
            reasons[c.reason] = reasons.get(c.reason, 0) + 1
    return ServingPlanResult(rate_per_s=rate_per_s, ttft_target_s=ttft_target_s, tpot_target_s=tpot_target_s,
                             instance_gpus=dep.s.ep, evaluated=len(done), feasible=sum(c.meets for c in done),
                             infeasible_by_reason=reasons, best=best, checks=tuple(done), best_colocated=best_col,
                             best_disaggregated=best_dis, layouts=tuple(layouts), arrival=_arrival(sc),
                             arrival_note=_arrival_note(sc, dep), gpus_per_node=sc.gpu.gpus_per_node, percentile=percentile,
                             prefill_instance_gpus=dep.s.prefill_gpus)


@dataclass(frozen=True)
class ServingCapacityResult:
    """The serving question at several request rates: each rate's answer (`size_serving`), in the
    order asked. A planner's capacity curve: GPUs, layout and cost against the rate."""

    ttft_target_s: float
    tpot_target_s: float
    percentile: float
    plans: tuple[ServingPlanResult, ...]


def serving_capacity(sc: ServeScenario, rates_per_s, ttft_target_s: float, tpot_target_s: float,
                     num_requests: int | None = None, percentile: float = SLO_PERCENTILE, progress: bool = False,
                     layouts: tuple[str, ...] = LAYOUTS) -> ServingCapacityResult:
    """`size_serving` at each rate of `rates_per_s` (each run long enough for its own steady state
    unless `num_requests` is given)."""
    plans = tuple(size_serving(sc, rate, ttft_target_s, tpot_target_s, num_requests=num_requests, percentile=percentile,
                               progress=progress, layouts=layouts) for rate in rates_per_s)
    return ServingCapacityResult(ttft_target_s=ttft_target_s, tpot_target_s=tpot_target_s, percentile=percentile, plans=plans)
