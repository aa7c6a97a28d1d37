"""Run the request-level simulation of a serving scenario and measure it (-> RequestSimResult).

`simulate(scenario, num_requests=None, requests=None, run_batch_sizes=(), prompts_before=0, on_done=None)` builds the pools
(twin.serving.engine; run_batch_sizes: the flat batch sizes the engine has run before, for engine
tables that charge a size's first eager forward; prompts_before: the host-bound prompt iterations its
process ran before, for tables whose prompt path warms up), times
iterations with twin.serving.timing, and reduces the per-request records to the figures a load
generator reports:

  TTFT = first token - arrival; TPOT = (finish - first token) / (output - 1); E2E = finish - arrival
  throughput   tokens produced inside the steady window [the time 10% of requests had finished, the
               time 90% had], each request's output tokens spread evenly between its first token and
               its finish (its first token at the first-token time), prompt tokens at the first token
  goodput      requests per second finishing in the window within both SLOs (traffic.slo_*)
  cost         the pools' GPU time at the cluster's price, split between prompt and output work by the
               time the iterations spent on each (co-located) or by pool (disaggregated)

KV capacity per instance: what memory leaves after weights, activations of one prefill chunk and
the runtime reserve (twin.costs.memory), times serve.kv_memory_frac, over the bytes of one token of
KV per GPU (MLA's latent is replicated over the TP ranks of an attention group).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import ServeScenario
from twin.core.specs import GPUSpec, ModelSpec
from twin.core.units import GIB
from twin.costs.memory import kv_bytes_per_token, max_batch_by_memory, memory_per_gpu
from twin.serving.engine import Engine, Records
from twin.serving.result import Latency, RequestSimResult
from twin.serving.timing import IterationCosts
from twin.core.serve_specs import MAX_SIM_REQUESTS
from twin.serving.workload import DEFAULT_REQUESTS, Requests, make_requests

WINDOW = (0.10, 0.90)
MAX_SIM_WORK = 20e6      # iterations + requests of one simulation (~3 minutes at ~10 us each; 100,000 requests ~ 0.6M)   # the steady window: between these shares of requests finished


def kv_token_bytes_per_gpu(m: ModelSpec, s) -> float:
    share = 1.0 if m.attention == "mla" else 1.0 / min(s.tp, m.num_kv_heads)
    return kv_bytes_per_token(m, s.kv_precision, include_mtp=s.mtp_draft_tokens > 0) * share


def kv_capacity_tokens(m: ModelSpec, gpu: GPUSpec, s) -> tuple[float, dict]:
    """KV tokens one instance holds, and the per-GPU memory outside the KV cache."""
    base = memory_per_gpu(m, gpu, s, 0, phase="prefill")
    if s.kv_capacity_tokens:
        return float(s.kv_capacity_tokens), base
    free = (gpu.hbm_bytes - base["total"]) * s.kv_memory_frac
    if free <= 0:
        raise InfeasiblePlan(f"{m.name} leaves no KV memory on {gpu.name}: weights {base['weights'] / GIB:.1f} GiB + "
                             f"activations {base['activations'] / GIB:.1f} GiB + reserve {base['runtime_reserved'] / GIB:.1f} GiB "
                             f"> {gpu.hbm_bytes / GIB:.1f} GiB", {k: float(v) for k, v in base.items()})
    return free / kv_token_bytes_per_gpu(m, s) * s.attention_dp, base


def _pct(x: np.ndarray) -> Latency:
    x = x[np.isfinite(x)]
    if not len(x):
        return Latency(math.nan, math.nan, math.nan, math.nan, math.nan)
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return Latency(float(np.mean(x)), float(p50), float(p90), float(p99), float(np.max(x)))


def _tokens_in_window(first: np.ndarray, finish: np.ndarray, out: np.ndarray, a: float, b: float) -> float:
    """Output tokens produced in [a, b]: the first at `first`, the rest evenly over (first, finish]."""
    at_first = ((first >= a) & (first <= b)).sum()
    span = np.maximum(finish - first, 1e-12)
    overlap = np.clip(np.minimum(finish, b) - np.maximum(first, a), 0.0, None) / span
    return float(at_first + ((out - 1) * overlap).sum())


def _cdf(x: np.ndarray, points: int = 101) -> list[float]:
    x = x[np.isfinite(x)]
    return [float(v) for v in np.percentile(x, np.linspace(0, 100, points))] if len(x) else []


def check_work(reqs: Requests, s, kv_capacity_tokens: float, instances: int) -> None:
    """Refuse a run whose iterations would take minutes (no input makes `twin serve` hang): a lower
    bound on the iterations of the busiest instance, decode steps (the longest output, or every
    output token over the most requests the KV cache holds at once) plus prompt chunks."""
    out = reqs.output_len.astype(float)
    per_request = float(np.mean(reqs.input_len + out))
    most_running = max(1.0, min(kv_capacity_tokens / per_request, s.batch or math.inf))
    decode_iters = max(float(out.max()), float(out.sum()) / instances / most_running)
    prompt_iters = float((reqs.input_len - reqs.cached_len).sum()) / instances / max(1, s.token_budget * s.attention_dp)
    work = decode_iters + prompt_iters + len(out)
    if work > MAX_SIM_WORK:
        raise ScenarioError("traffic.num_requests", len(out),
                            f"a run of at most {MAX_SIM_WORK:,.0f} iterations and requests (this one needs at least "
                            f"{work:,.0f}: {len(out):,} requests, the longest output {out.max():,.0f} tokens, "
                            f"{out.sum():,.0f} output tokens over {instances} instance(s)); fewer or shorter requests")


def window_bounds(finish_s: np.ndarray) -> tuple[float, float]:
    """The steady window's ends: the times WINDOW[0] and WINDOW[1] of the requests had finished."""
    order = np.sort(finish_s)
    n = len(order)
    return float(order[min(n - 1, int(WINDOW[0] * n))]), float(order[min(n - 1, max(0, int(math.ceil(WINDOW[1] * n)) - 1))])


def holds_steady_window(sim: RequestSimResult) -> bool:
    """Whether the measuring window (10%-90% of requests finished) can hold a steady state: not a closed loop with fewer
    than two requests per client, whose clients mostly start at once and finish within a fraction of a second of each
    other (400 requests of 400 clients: a window of ~0.1 s, "goodput 264.62 requests/s")."""
    return not (sim.arrival == "closed" and sim.simulated_requests < 2 * sim.concurrency)


def concurrency_for_tpot(costs: IterationCosts, s, target_tpot_s: float, max_batch: int) -> int:
    """The largest decode batch per instance (<= max_batch) whose step at the mean context gives
    `target_tpot_s` per output token (at least 1): bisection, the step time rising with the batch."""
    ctx = s.input_len + s.output_len / 2.0
    tps = 1.0 + sum(s.mtp_acceptance_frac ** (i + 1) for i in range(s.mtp_draft_tokens))

    def tpot(b: int) -> float:
        return costs.iteration_s(b, ctx, 0, 0.0)[0] / tps

    if tpot(max_batch) <= target_tpot_s:
        return max_batch
    lo, hi = 1, max_batch
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tpot(mid) <= target_tpot_s else (lo, mid)
    return lo


def simulate(sc: ServeScenario, num_requests: int | None = None, requests: Requests | None = None,
             run_batch_sizes=(), prompts_before: int = 0,
             on_done: Callable[[int, int], None] | None = None) -> RequestSimResult:
    """Simulate the scenario's traffic request by request (`prompts_before`: the host-bound prompt
    iterations the engine process ran before, for an engine table whose prompt path warms up with
    them; `on_done(finished, total)`: progress reports). Raises InfeasiblePlan when a request can never fit the KV cache or the weights leave no
    room for one."""
    s, t, m, gpu = sc.serve, sc.traffic, sc.model, sc.gpu
    s.check_against(m, gpu, sc.cluster.num_gpus)
    disagg = s.disaggregated
    prefill_gpus_total = s.prefill_instances * s.prefill_gpus if disagg else 0
    decode_gpus_total = sc.cluster.num_gpus - prefill_gpus_total
    instances = decode_gpus_total // s.ep
    cap, base = kv_capacity_tokens(m, gpu, s)
    decode_costs = IterationCosts(m, gpu, s)
    max_b = max(1, max_batch_by_memory(m, gpu, s))
    per_instance = s.batch or (concurrency_for_tpot(decode_costs, s, t.target_tpot_s, max_b) if t.target_tpot_s else max_b)
    concurrency = t.concurrency or per_instance * instances
    if requests is None:
        n = num_requests or t.num_requests
        if not n and t.arrival != "trace":   # a trace: every row (make_requests)
            n = min(MAX_SIM_REQUESTS, max(DEFAULT_REQUESTS, 2 * concurrency if t.arrival == "closed" else 0))
        requests = make_requests(t, s, n)
    reqs = requests
    check_work(reqs, s, cap, instances)
    longest = int((reqs.input_len + reqs.output_len).max())
    if longest > cap:
        raise InfeasiblePlan(f"a request of {longest:,} tokens (prompt + output) does not fit the KV cache of one "
                             f"instance ({cap:,.0f} tokens); shorten traffic lengths or add memory", {})
    prefill_spec = dataclasses.replace(s, ep=s.prefill_gpus) if disagg else s
    prefill_costs = IterationCosts(m, gpu, prefill_spec) if disagg else None
    kv_tok = kv_token_bytes_per_gpu(m, s) / (1.0 if m.attention == "mla" else 1.0)
    transfer_s = kv_bytes_per_token(m, s.kv_precision, include_mtp=s.mtp_draft_tokens > 0) / gpu.scale_out_achieved_bytes_per_s
    eng = Engine(reqs, s, t, decode_costs, prefill_costs, instances, cap, transfer_s, gpu.scale_out_latency_s,
                 kv_bytes_per_token(m, s.kv_precision, include_mtp=s.mtp_draft_tokens > 0), concurrency, t.trace_iterations,
                 run_batch_sizes, prompts_before, on_done)
    rec = eng.run()
    return _measure(sc, reqs, rec, eng, instances, decode_gpus_total, prefill_gpus_total, cap, base, kv_tok, concurrency,
                    decode_costs)


def _measure(sc, reqs: Requests, rec: Records, eng: Engine, instances: int, decode_gpus: int, prefill_gpus: int,
             cap: float, base: dict, kv_tok_bytes: float, concurrency: int, costs: IterationCosts) -> RequestSimResult:
    s, t, gpu = sc.serve, sc.traffic, sc.gpu
    arrival, first, finish = rec.arrival_s, rec.first_token_s, rec.finish_s
    out = reqs.output_len.astype(float)
    inp = reqs.input_len.astype(float)
    ttft = first - arrival
    e2e = finish - arrival
    tpot = np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan)
    n = len(finish)
    a, b = window_bounds(finish)
    if b - a <= 0:        # too few requests (or all finish together): the whole run
        a, b = float(np.nanmin(arrival)), float(np.max(finish))   # the last to finish
    dur = max(b - a, 1e-12)
    out_tok_s = _tokens_in_window(first, finish, out, a, b) / dur
    in_mask = (first >= a) & (first <= b)
    in_tok_s = float(inp[in_mask].sum()) / dur
    computed_tok_s = float((inp - reqs.cached_len)[in_mask].sum()) / dur
    done_in = (finish >= a) & (finish <= b)
    ok = (ttft <= t.slo_ttft_s) & ((tpot <= t.slo_tpot_s) | np.isnan(tpot))
    num_gpus = sc.cluster.num_gpus
    price_per_gpu_s = sc.cluster.resolved().price_usd_per_gpu_hour / 3600.0
    if s.disaggregated:
        out_gpus = decode_gpus
        in_gpus = prefill_gpus if prefill_gpus else s.prefill_gpus   # unlimited pool: per prefill instance's GPU
        out_cost_s = decode_gpus * price_per_gpu_s
        in_cost_s = (prefill_gpus * price_per_gpu_s if prefill_gpus else
                     rec.prefill_busy_s * s.prefill_gpus * price_per_gpu_s / max(finish.max() - np.nanmin(arrival), 1e-12))
    else:
        out_gpus = in_gpus = num_gpus
        share = rec.prefill_busy_s / rec.busy_s if rec.busy_s else 0.0
        out_cost_s = num_gpus * price_per_gpu_s * (1 - share)
        in_cost_s = num_gpus * price_per_gpu_s * share
    per_node = gpu.gpus_per_node
    kv_peak_per_gpu = max(rec.peak_kv_tokens) / s.attention_dp * kv_tok_bytes if rec.peak_kv_tokens else 0.0
    breakdown = {"weights": base["weights"], "kv_cache": kv_peak_per_gpu, "activations": base["activations"],
                 "runtime_reserved": base["runtime_reserved"]}
    mem_total = float(sum(breakdown.values()))
    breakdown["total"] = mem_total
    breakdown["capacity"] = gpu.hbm_bytes
    span_s = float(finish.max() - np.nanmin(arrival))
    in_system_mean = rec.in_system_integral / span_s if span_s > 0 else 0.0
    steady = {"window_start_s": a, "window_end_s": b}
    return RequestSimResult(
        simulated_requests=n, arrival="closed" if eng.closed else (t.arrival if t.arrival != "closed" else "trace"),
        concurrency=eng.concurrency,
        decode_instances=instances, decode_gpus=decode_gpus, prefill_gpus=prefill_gpus,
        output_tokens_per_s=out_tok_s, output_tokens_per_s_per_gpu=out_tok_s / out_gpus,
        output_tokens_per_s_per_node=out_tok_s / out_gpus * per_node,
        input_tokens_per_s=in_tok_s, input_tokens_per_s_per_gpu=in_tok_s / in_gpus,
        input_tokens_per_s_per_node=in_tok_s / in_gpus * per_node, input_computed_tokens_per_s=computed_tok_s,
        requests_per_s=float(done_in.sum()) / dur,
        goodput_requests_per_s=float((done_in & ok).sum()) / dur, slo_attained_frac=float(ok.mean()),
        ttft_s=_pct(ttft), tpot_s=_pct(tpot), e2e_s=_pct(e2e),
        output_tokens_per_s_per_request=float(np.nanmean(1.0 / tpot)) if np.isfinite(tpot).any() else math.nan,
        usd_per_million_output_tokens=out_cost_s / out_tok_s * 1e6 if out_tok_s else math.inf,
        usd_per_million_input_tokens=in_cost_s / in_tok_s * 1e6 if in_tok_s else math.inf,
        memory_per_gpu_bytes=mem_total, memory_breakdown_bytes=breakdown,
        kv_capacity_tokens_per_instance=cap, kv_peak_tokens_per_instance=max(rec.peak_kv_tokens, default=0.0),
        preemptions=int(rec.preemptions.sum()), iterations=rec.iterations, grid_points=costs.grid_points,
        prefill_time_frac=rec.prefill_busy_s / rec.busy_s if rec.busy_s else 0.0,
        kv_transfer_bytes=rec.transfer_bytes, makespan_s=span_s, mean_in_system=in_system_mean,
        output_tokens_total=float(out.sum()), decode_token_steps=rec.decode_token_steps,
        first_tokens=rec.prefill_tokens_emitted, steady=steady,
        ttft_cdf_s=_cdf(ttft), tpot_cdf_s=_cdf(tpot), e2e_cdf_s=_cdf(e2e),
        requests=_per_request(arrival, first, finish, reqs, rec),
        trace=tuple(rec.trace))


def _per_request(arrival, first, finish, reqs: Requests, rec: Records) -> dict:
    """Per-request columns (numpy arrays; not in the JSON): what a load generator records."""
    return {"arrival_s": arrival, "first_token_s": first, "finish_s": finish, "input_len": reqs.input_len,
            "output_len": reqs.output_len, "cached_len": reqs.cached_len, "preemptions": rec.preemptions}
