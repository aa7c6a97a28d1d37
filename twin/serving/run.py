"""The serving twin: throughput and latency of serving a model on a cluster under a deployment plan.

`serve(scenario)` simulates the scenario's traffic request by request (twin.serving.simulate: the
headline: throughput, TTFT/TPOT/E2E percentiles, goodput, memory, cost), and beside it sweeps the
concurrency of one instance analytically (or takes `serve.batch`), timing each operating point from
one decode step and one prefill forward (twin.serving.iteration) with its memory checked
(twin.costs.memory): the throughput-against-latency curve and the best point that fits and meets
`serve.max_tpot_s`. Published figures the scenario names are compared with the simulation's.
Nothing here writes files: reports/serve_report.py does.

Throughput: disaggregated instances report decode output tokens/s = batch / TPOT per instance x
instances; a co-located instance also spends batch x ISL / prefill rate per OSL tokens generated.
"""

from __future__ import annotations

import dataclasses
import sys

from tqdm import tqdm

from twin.core.errors import InfeasiblePlan
from twin.core.scenario import ServeScenario
from twin.core.serve_specs import ServeSpec
from twin.core.specs import GPUSpec, ModelSpec, serving_claims
from twin.costs.memory import check_memory, kv_bytes_per_token, max_batch_by_memory, weight_breakdown
from twin.costs.profile import Profile
from twin.serving.iteration import decode_step, prefill_forward, serving_profile
from twin.serving.result import ServeClaim, ServeResult, SweepPoint
from twin.serving.simulate import holds_steady_window, simulate


def serve_point(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, batch: int, num_gpus: int,
                profile: Profile | None = None, prefill: dict | None = None) -> dict:
    """Throughput and latency of the cluster with every instance at concurrency `batch`.
    Raises InfeasiblePlan when the batch does not fit in memory."""
    mem = check_memory(m, gpu, s, batch)
    pre = prefill or prefill_forward(m, gpu, s, profile)
    dec = decode_step(m, gpu, s, batch, profile)
    instances = num_gpus // s.ep
    decode_rate = batch / dec["tpot_s"]                                  # output tok/s per instance
    if s.disaggregated:
        out_rate = decode_rate
    else:   # co-located: per request, its prompt's prefill work shares the instance's time
        prefill_rate = pre["input_tokens_per_s_per_gpu"] * s.ep         # input tok/s per instance
        gen_time = s.output_len * dec["tpot_s"] + batch * s.input_len / prefill_rate
        out_rate = batch * s.output_len / gen_time
    total = out_rate * instances
    return {
        "batch": batch,
        "feasible": True,
        "output_tokens_per_s": total,
        "output_tokens_per_s_per_gpu": total / num_gpus,
        "output_tokens_per_s_per_node": total / num_gpus * gpu.gpus_per_node,
        "output_tokens_per_s_per_request": 1.0 / dec["tpot_s"],
        "tpot_s": dec["tpot_s"],
        "decode_step_s": dec["step_s"],
        "memory_per_gpu_bytes": mem["total"],
        "kv_cache_per_gpu_bytes": mem["kv_cache"],
        "rows_frac": dec["rows_frac"],
        "mla_core_bound": dec["mla_core_bound"],
        "decode": dec,
        "memory_breakdown": mem,
    }



# the model DeepSeek's and NVIDIA's serving figures describe (R1 shares V3's architecture)
PUBLISHED_MODEL = "deepseek-v3"


def claim_gpu(claim_id: str) -> str:
    """The GPU type a published serving figure was measured on ('' when it doesn't depend on one)."""
    return serving_claims().get(claim_id, {}).get("gpu", "")


def claim_compared(claim_id: str, model: str, gpu: str, scenario: ServeScenario | None = None) -> bool:
    """A published figure is compared (with an error) only for the model and GPU type it describes, and, where the
    claim names the run it describes ([claims.*.run]: traffic or serve fields), on a scenario holding those values.
    The one rule of the report's table and the terminal's (which scored NVIDIA's H200 figure against H100 runs, and its
    maximum throughput against any traffic, until s24srvwalk)."""
    published_gpu = claim_gpu(claim_id)
    if model != PUBLISHED_MODEL or (published_gpu and published_gpu != gpu):
        return False
    run = serving_claims().get(claim_id, {}).get("run", {})
    return scenario is None or all(_run_value(scenario, key) == value for key, value in run.items())


def _run_value(sc: ServeScenario, key: str):
    """A claim's run condition read from the scenario: a [traffic] field, else a [serve] field."""
    return getattr(sc.traffic, key) if hasattr(sc.traffic, key) else getattr(sc.serve, key)


MAX_HINT_INSTANCE_GPUS = 256   # the largest instance larger_instance_hint proposes (EP256: one routed expert a GPU for V3)


def larger_instance_hint(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, num_gpus: int | None = None) -> str:
    """Where not even one request fits an instance: the smallest larger one that holds the weights and one
    request, as the `--set` options that make it ('' where none up to MAX_HINT_INSTANCE_GPUS does). serve.ep
    doubles; serve.tp follows it where attention is tensor-parallel over the instance (it must equal serve.ep
    without DP attention, divide the heads and span at most two nodes). A request whose KV alone overflows
    gets none: MLA's latent is replicated over the TP ranks, so more GPUs do not shrink it. `num_gpus`: the
    cluster's, named too where it holds no whole instance (`twin serve`; the serving question sizes its own).
    R1 on 8 H100 (79.7 GiB of weights a GPU > 79.2 GiB): instances of 16 (--set serve.ep=16 --set serve.tp=16)."""
    ep = s.ep
    while 2 * ep <= MAX_HINT_INSTANCE_GPUS:
        ep *= 2
        if m.is_moe and (m.num_routed_experts + s.redundant_experts) % ep:
            return ""
        tp = s.tp if s.dp_attention else ep
        if tp > 2 * gpu.gpus_per_node or m.num_heads % tp:
            return ""
        if max_batch_by_memory(m, gpu, dataclasses.replace(s, ep=ep, tp=tp)) >= 1:
            sets = f"--set serve.ep={ep}" + ("" if s.dp_attention else f" --set serve.tp={tp}")
            if num_gpus is not None and num_gpus % ep:
                sets += f" --set cluster.num_gpus={ep * -(-num_gpus // ep)}"
            return f"; instances of {ep} GPUs hold it ({sets})"
    return ""


def check_one_request_fits(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, num_gpus: int | None = None) -> None:
    """InfeasiblePlan where not even one request fits an instance: memory per GPU by part against the capacity
    (check_memory's figures) and the smallest instance that holds it (larger_instance_hint). Until s24srvwalk the
    serving question said only "deepseek-v3 does not fit an instance of 8 h100 GPUs", also where the weights fit and
    one request's KV did not."""
    if max_batch_by_memory(m, gpu, s) >= 1:
        return
    try:
        check_memory(m, gpu, s, 1)
    except InfeasiblePlan as exc:
        raise InfeasiblePlan(exc.reason + larger_instance_hint(m, gpu, s, num_gpus), exc.breakdown) from None


def _claims(figures: dict, s: ServeSpec, m: ModelSpec, scenario_gpu: str,
            scenario: ServeScenario | None = None, steady_window: bool = True) -> tuple[ServeClaim, ...]:
    """The scenario's published figures beside the twin's. `steady_window`: whether the simulation's measuring window
    holds a steady state (holds_steady_window); where not, no figure read from it is compared (a 400-client loop of
    400 requests scored -1.6% against NIM's 3,872 from a 0.1 s window until s24srvwalk)."""
    rows = []
    for cid in s.claims:
        c = serving_claims()[cid]
        metric = c["metric"]
        if metric == "min_hbm_bytes":
            need = (weight_breakdown(m, s)["weight_bytes_total"] + s.ep * s.runtime_reserved_bytes
                    + (s.input_len + s.output_len) * kv_bytes_per_token(m, s.kv_precision, s.mtp_draft_tokens > 0))
            pred = need
        elif metric == "weight_bytes_total":
            pred = weight_breakdown(m, s)["weight_bytes_total"]
        else:
            pred = figures.get(metric)
        note = c["conditions_note"]
        if c.get("gpu") and c["gpu"] != scenario_gpu:
            note = f"[scenario GPU {scenario_gpu} differs from the claim's {c['gpu']}] " + note
        rows.append(ServeClaim(id=cid, metric=metric, claimed=float(c["claimed"]),
                               predicted=None if pred is None else float(pred),
                               rel_error=None if pred is None else float(pred) / float(c["claimed"]) - 1.0,
                               source=c["source"], conditions_note=note,
                               compared=claim_compared(cid, m.name, scenario_gpu, scenario)
                               and (steady_window or metric not in figures)))
    return tuple(rows)


def analytic(scenario: ServeScenario) -> dict:
    """The analytic sweep: every instance at each concurrency of serve.batch_sweep (or serve.batch),
    no queueing; the best feasible point. Raises InfeasiblePlan when no concurrency fits memory and
    the TPOT target."""
    s = scenario.serve
    m, gpu, num_gpus = scenario.model, scenario.gpu, scenario.cluster.num_gpus
    prof = serving_profile(gpu, s)
    pre = prefill_forward(m, gpu, s, prof)
    max_b = max_batch_by_memory(m, gpu, s)
    batches = [s.batch] if s.batch else sorted(set(s.batch_sweep) | ({max_b} if max_b else set()))
    points = {}
    for b in batches:
        try:
            points[b] = serve_point(m, gpu, s, b, num_gpus, prof, pre)
        except InfeasiblePlan as exc:
            points[b] = None
            points[(b, "reason")] = exc.reason
    sweep = tuple(SweepPoint(b, False, reason=points[(b, "reason")]) if points[b] is None else
                  SweepPoint(**{k: v for k, v in points[b].items() if k not in ("decode", "memory_breakdown")})
                  for b in batches)
    feasible = [points[p.batch] for p in sweep if p.feasible and (not s.max_tpot_s or p.tpot_s <= s.max_tpot_s)]
    if not feasible:
        if s.batch or not max_b:
            # not even one request (or the requested batch) fits: report why
            check_memory(m, gpu, s, s.batch or 1)
        raise InfeasiblePlan(f"no swept batch meets serve.max_tpot_s = {s.max_tpot_s} s", {})
    best = max(feasible, key=lambda r: r["output_tokens_per_s"])
    return {"best": best, "prefill": pre, "max_batch": max_b, "sweep": sweep, "profile": prof}


def serve(scenario: ServeScenario, num_requests: int | None = None, progress: bool = False) -> ServeResult:
    """Serving prediction for a serving scenario ([model], [cluster], [serve], [traffic]) and its
    claims: the request-level simulation of `num_requests` (default traffic.num_requests) requests,
    and the analytic sweep beside it (`progress`: a bar over the finished requests on stderr; up to a few
    minutes at 2M requests with none until s21walk). Raises InfeasiblePlan when nothing fits."""
    s = scenario.serve
    m, gpu, num_gpus = scenario.model, scenario.gpu, scenario.cluster.num_gpus
    s.check_against(m, gpu, num_gpus)
    check_one_request_fits(m, gpu, s, num_gpus)
    an = analytic(scenario)
    best, pre, prof = an["best"], an["prefill"], an["profile"]
    bars = []   # opened at the first report, once the simulation runs: an input refused before it prints one line only

    def on_done(finished: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="serve", unit="request", file=sys.stderr, leave=False))
        bars[0].update(finished - bars[0].n)
    try:
        sim = simulate(scenario, num_requests, on_done=on_done if progress else None)
    finally:
        for bar in bars:
            bar.close()
    figures = {
        "output_tokens_per_s": sim.output_tokens_per_s,
        "output_tokens_per_s_per_gpu": sim.output_tokens_per_s_per_gpu,
        "output_tokens_per_s_per_node": sim.output_tokens_per_s_per_node,
        "input_tokens_per_s": sim.input_tokens_per_s,
        "input_tokens_per_s_per_gpu": sim.input_tokens_per_s_per_gpu,
        "input_tokens_per_s_per_node": sim.input_tokens_per_s_per_node,
        "memory_per_gpu_bytes": sim.memory_per_gpu_bytes,
    }
    return ServeResult(
        scenario=scenario.name, model=m.name, gpu=scenario.cluster.gpu, gpu_name=gpu.name, num_gpus=num_gpus,
        instance_gpus=s.ep, instances=sim.decode_instances,
        profile={"gpu": prof.gpu, "calibrated": prof.calibrated, "fp8_quant_fused": prof.fp8_quant_fused},
        simulated_requests=sim.simulated_requests, **figures,
        ttft_p50_s=sim.ttft_s.p50, ttft_p90_s=sim.ttft_s.p90, ttft_p99_s=sim.ttft_s.p99,
        tpot_p50_s=sim.tpot_s.p50, tpot_p90_s=sim.tpot_s.p90, tpot_p99_s=sim.tpot_s.p99,
        e2e_p50_s=sim.e2e_s.p50, e2e_p90_s=sim.e2e_s.p90, e2e_p99_s=sim.e2e_s.p99,
        goodput_requests_per_s=sim.goodput_requests_per_s,
        usd_per_million_output_tokens=sim.usd_per_million_output_tokens,
        usd_per_million_input_tokens=sim.usd_per_million_input_tokens,
        memory_breakdown_bytes=sim.memory_breakdown_bytes, simulation=sim,
        batch=best["batch"], max_batch_by_memory=an["max_batch"], tpot_s=best["tpot_s"], ttft_s=pre["ttft_s"],
        analytic_output_tokens_per_s_per_node=best["output_tokens_per_s_per_node"],
        prefill=pre, decode=best["decode"],
        weight_bytes=weight_breakdown(m, s),
        kv_bytes_per_token=kv_bytes_per_token(m, s.kv_precision, s.mtp_draft_tokens > 0),
        sweep=an["sweep"], claims=_claims(figures, s, m, scenario.cluster.gpu, scenario, holds_steady_window(sim)))
