"""Published serving figures against the request simulation, under their published conditions.

DeepSeek's production figures (open-infra-index day 6) are predicted by the two scenarios that state
those conditions (scenarios/r1_serve_h800_prefill.toml, r1_serve_h800_decode.toml): the error is
reported whatever it is, never fitted.

Those scenarios run each unit fully loaded (prefill: a closed loop of 2,048 prompts; decode: the
largest batch whose step gives 21 tokens/s per user). The published figures are 24-hour averages
over the nodes in service, and their conditions pin the decode load: by Little's law the average
number of requests decoding on a node is its output rate over the per-user speed, 14.8k / 21 = 705
(88 per GPU; 84-92 for 20-22 tokens/s), against ~116 per GPU in the fully loaded scenario.
`deepseek_decode_at_published_load` runs the decode scenario at that load and compares the
per-user speed, the one published figure it does not take as input. The prefill post gives no
latency, so its average load is not pinned; the prefill row stays the fully loaded unit.

What a fully loaded prefill unit does is published too, by DeepSeek's own profile of it
(deepseek-ai/profile-data prefill.json: EP32, TP1, 4K prompts, 16,384 tokens per GPU, two
micro-batches, balanced routing), which the SGLang team read as 62,713 input tokens/s per node
(lmsys.org blog 2025-05-05, "Profile Results"): `deepseek_prefill_profile` runs the prefill scenario
at those conditions. The production figure with its cache hits taken out, 73.7k x (1 - 0.563) =
32.2k computed tokens/s per node, is about half of it ("DeepSeek's profile reports a throughput
roughly twice that of its production environment", same blog): the gap between the fully loaded
unit and the daily average is the unit's load and the routing of real traffic (the blog measures its
own engine 15% slower with a real expert distribution than with perfectly balanced routing, 50,302
against 59,337 at the profile's conditions), neither published for DeepSeek's service.
Consistency of the published set: 608B input tokens / 24 h / 73.7k per prefill node = 95.5 nodes
and 168B output tokens / 24 h / 14.8k per decode node = 131.4 nodes add up to 226.9, the published
average occupancy of 226.75 nodes: the per-node figures are daily tokens over the average node
counts, idle time in service included.

Kernel group by group: `deepseek_profile_groups` runs the iteration model (one decode step, one
prefill forward) at the conditions of each of DeepSeek's two serving profiles (decode: EP128, 128
requests per GPU, 4K context, two micro-batches, an all-to-all on no SMs; prefill as above, the
all-to-all on 24 of 132 SMs as DeepSeek's figure of it shows) and returns one micro-batch of a MoE
layer by kernel group, for calibration/serving_trace.py to set beside the traces (the traces
themselves, prefill.json and decode.json, are not in the stored snapshot of the repository).

NVIDIA's 3,872 tokens/s on one HGX H200 was published without its conditions, so it is not one
number to hit: `h200_curve` simulates output tokens/s per node over concurrency and lengths (closed
loop, R1 on one HGX H200, the default serving scenario) and `crossings` reads off the conditions
under which the curve reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.scenario import SERVING, load_scenario
from twin.serving.iteration import decode_step, prefill_forward
from twin.serving.simulate import simulate

H200_CLAIM_TOKENS_PER_S = 3872.0     # twin/data/serving_claims.toml h200.nim_3872
# DeepSeek's online service (open-infra-index 202502OpenSourceWeek/day_6, 24 h from 2025-02-27 12:00 UTC+8)
DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE = 14_800.0   # '~14.8k tokens/s output during decoding' per H800 node
DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE = 73_700.0  # '~73.7k tokens/s input (including cache hits)'
DEEPSEEK_USER_TOKENS_PER_S = (20.0, 22.0)          # 'The average output speed was 20-22 tokens per second'
DEEPSEEK_DECODE_NODES = 18                         # 'Decoding Phase [Routed Expert EP144 ...]: 18 nodes'
DEEPSEEK_DECODE_SCENARIO = "r1_serve_h800_decode"
DEEPSEEK_PREFILL_SCENARIO = "r1_serve_h800_prefill"
# DeepSeek's prefill profile (deepseek-ai/profile-data README: EP32, TP1, prompt 4K, 16K tokens per GPU,
# two micro-batches, 'absolutely balanced' routing) read as input tokens/s per node by the SGLang team
# (lmsys.org/blog/2025-05-05-large-scale-ep, "Profile Results" table, column "DeepSeek Profile")
DEEPSEEK_PROFILE_PREFILL_TOKENS_PER_S_PER_NODE = 62_713.0
DEEPSEEK_PROFILE_PREFILL_CONDITIONS = ("serve.input_len=4096", "serve.prefill_chunk_tokens=16384", "serve.load_model=\"balanced\"",
                                       "traffic.prefix_hit_frac=0")
# DeepSeek's decode profile (deepseek-ai/profile-data README: EP128, TP1, prompt 4K, 128 requests per GPU,
# two micro-batches, 'absolutely balanced' routing; assets/decode.jpg: the all-to-all holds 0 of 132 SMs).
# Assumptions where the README is silent: no redundant experts (256 routed experts over 128 GPUs: 2 each),
# MTP off, every request at 4,096 tokens of context.
DEEPSEEK_PROFILE_DECODE_GPUS = 128
DEEPSEEK_PROFILE_DECODE_REQUESTS_PER_GPU = 128
DEEPSEEK_PROFILE_DECODE_CONDITIONS = (f"cluster.num_gpus={DEEPSEEK_PROFILE_DECODE_GPUS}", f"serve.ep={DEEPSEEK_PROFILE_DECODE_GPUS}",
                                      "serve.redundant_experts=0", "serve.input_len=4096", "serve.output_len=1",
                                      'serve.load_model="balanced"', "traffic.prefix_hit_frac=0",
                                      f"serve.batch={DEEPSEEK_PROFILE_DECODE_GPUS * DEEPSEEK_PROFILE_DECODE_REQUESTS_PER_GPU}")
CURVE_CONCURRENCY = (1, 4, 16, 32, 64, 128, 256)
CURVE_LENGTHS = ((1024, 1024), (1024, 256), (4096, 1024), (256, 2048))   # (ISL, OSL)


@dataclass(frozen=True)
class CurvePoint:
    """One closed-loop simulation of the H200 node: `concurrency` clients at (input_len, output_len)."""

    input_len: int
    output_len: int
    concurrency: int
    output_tokens_per_s_per_node: float
    tpot_p50_s: float
    ttft_p50_s: float
    preemptions: int


def h200_curve(concurrency=CURVE_CONCURRENCY, lengths=CURVE_LENGTHS, waves: int = 3, overrides=()) -> tuple[CurvePoint, ...]:
    """Output tokens/s per node of R1 on one HGX H200 over concurrency and lengths (each point
    simulates `waves` x concurrency requests, at least 8)."""
    rows = []
    for isl, osl in lengths:
        for c in concurrency:
            sc = load_scenario(None, [f"serve.input_len={isl}", f"serve.output_len={osl}", 'traffic.arrival="closed"',
                                      f"traffic.concurrency={c}", *overrides], SERVING)
            r = simulate(sc, num_requests=max(8, waves * c))
            rows.append(CurvePoint(isl, osl, c, r.output_tokens_per_s_per_node, r.tpot_s.p50, r.ttft_s.p50, r.preemptions))
    return tuple(rows)


def crossings(points: tuple[CurvePoint, ...], target: float = H200_CLAIM_TOKENS_PER_S) -> list[dict]:
    """Per length pair, the concurrency at which the curve first reaches `target` (interpolated
    linearly between simulated points), or None where it never does."""
    out = []
    for isl, osl in sorted({(p.input_len, p.output_len) for p in points}, key=lambda x: (x[0], x[1])):
        row = sorted((p for p in points if (p.input_len, p.output_len) == (isl, osl)), key=lambda p: p.concurrency)
        hit = None
        for a, b in zip(row, row[1:]):
            if a.output_tokens_per_s_per_node < target <= b.output_tokens_per_s_per_node:
                f = (target - a.output_tokens_per_s_per_node) / (b.output_tokens_per_s_per_node - a.output_tokens_per_s_per_node)
                hit = {"concurrency": a.concurrency + f * (b.concurrency - a.concurrency),
                       "tpot_s": a.tpot_p50_s + f * (b.tpot_p50_s - a.tpot_p50_s)}
                break
        if row and row[0].output_tokens_per_s_per_node >= target:
            hit = {"concurrency": float(row[0].concurrency), "tpot_s": row[0].tpot_p50_s}
        out.append({"input_len": isl, "output_len": osl, "reaches": hit is not None,
                    "max_tokens_per_s_per_node": max(p.output_tokens_per_s_per_node for p in row),
                    **({"concurrency": hit["concurrency"], "tpot_s": hit["tpot_s"]} if hit else {})})
    return out


def deepseek_production(root) -> list[dict]:
    """DeepSeek's prefill and decode figures beside the twin's, from the two scenarios under `root`."""
    rows = []
    for name in ("r1_serve_h800_prefill", "r1_serve_h800_decode"):
        sc = load_scenario(root / "scenarios" / f"{name}.toml", kind=SERVING)
        r = simulate(sc)
        metric = "input_tokens_per_s_per_node" if "prefill" in name else "output_tokens_per_s_per_node"
        claimed = DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE if "prefill" in name else DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE
        pred = getattr(r, metric)
        rows.append({"scenario": name, "metric": metric, "claimed": claimed, "predicted": pred,
                     "rel_error": pred / claimed - 1.0, "concurrency": r.concurrency, "tpot_p50_s": r.tpot_s.p50,
                     "ttft_p50_s": r.ttft_s.p50, "output_tokens_per_s_per_request": r.output_tokens_per_s_per_request})
    rows.append(deepseek_decode_at_published_load(root))
    rows.append(deepseek_prefill_profile(root))
    return rows


def deepseek_prefill_profile(root) -> dict:
    """The prefill scenario at the conditions of DeepSeek's prefill profile (4K prompts, no cache
    hits, 16,384 tokens per GPU per forward, balanced routing; the unit, its parallelism and two
    micro-batches as in production) against the 62,713 input tokens/s per node read from it."""
    sc = load_scenario(root / "scenarios" / f"{DEEPSEEK_PREFILL_SCENARIO}.toml", list(DEEPSEEK_PROFILE_PREFILL_CONDITIONS), SERVING)
    r = simulate(sc)
    pred = r.input_tokens_per_s_per_node
    claimed = DEEPSEEK_PROFILE_PREFILL_TOKENS_PER_S_PER_NODE
    return {"scenario": f"{DEEPSEEK_PREFILL_SCENARIO} at DeepSeek's profile conditions", "metric": "input_tokens_per_s_per_node",
            "claimed": claimed, "predicted": pred, "rel_error": pred / claimed - 1.0, "concurrency": r.concurrency,
            "tpot_p50_s": r.tpot_s.p50, "ttft_p50_s": r.ttft_s.p50,
            "output_tokens_per_s_per_request": r.output_tokens_per_s_per_request}


def published_decode_concurrency(user_tokens_per_s: float) -> int:
    """Requests decoding at once in DeepSeek's decode unit on the 24 h average, by Little's law:
    the unit's output rate (14.8k per node x 18 nodes) over the per-user speed."""
    return round(DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE * DEEPSEEK_DECODE_NODES / user_tokens_per_s)


def deepseek_decode_at_published_load(root, user_tokens_per_s: float = sum(DEEPSEEK_USER_TOKENS_PER_S) / 2) -> dict:
    """The decode scenario at the load DeepSeek's figures imply (published_decode_concurrency, at
    the middle of 20-22 tokens/s by default) instead of the per-user speed target: the twin's
    per-user speed there against the published one (its output per node is the same comparison,
    concurrency x speed)."""
    c = published_decode_concurrency(user_tokens_per_s)
    sc = load_scenario(root / "scenarios" / f"{DEEPSEEK_DECODE_SCENARIO}.toml",
                       ["traffic.target_tpot_s=0", f"traffic.concurrency={c}"], SERVING)
    r = simulate(sc)
    speed = 1.0 / r.tpot_s.p50
    return {"scenario": f"{DEEPSEEK_DECODE_SCENARIO} at the published load", "metric": "output_tokens_per_s_per_user",
            "claimed": user_tokens_per_s, "claimed_range": DEEPSEEK_USER_TOKENS_PER_S, "predicted": speed,
            "rel_error": speed / user_tokens_per_s - 1.0,
            "rel_error_range": tuple(speed / v - 1.0 for v in DEEPSEEK_USER_TOKENS_PER_S),
            "concurrency": r.concurrency, "tpot_p50_s": r.tpot_s.p50, "ttft_p50_s": r.ttft_s.p50,
            "output_tokens_per_s_per_request": r.output_tokens_per_s_per_request,
            "output_tokens_per_s_per_node": r.output_tokens_per_s_per_node}


def deepseek_profile_groups(root, phase: str) -> dict:
    """The twin's iteration model at the conditions of DeepSeek's own `phase` profile ('decode' or
    'prefill', deepseek-ai/profile-data): the iteration time, and one micro-batch of one MoE layer
    by kernel group in microseconds (the gate booked under attention_gemm, as the profiles' ATTN
    phases hold it) with the MoE layer's steady-state time (span_per_layer), for
    calibration/serving_trace.py to set beside the trace. No simulation: one decode step or
    prefill forward (twin.serving.iteration)."""
    if phase == "decode":
        name, overrides = DEEPSEEK_DECODE_SCENARIO, DEEPSEEK_PROFILE_DECODE_CONDITIONS
    elif phase == "prefill":
        name, overrides = DEEPSEEK_PREFILL_SCENARIO, DEEPSEEK_PROFILE_PREFILL_CONDITIONS
    else:
        raise ValueError(f"phase {phase!r}: allowed 'decode', 'prefill'")
    sc = load_scenario(root / "scenarios" / f"{name}.toml", list(overrides), SERVING)
    s = sc.serve
    if phase == "decode":
        it = decode_step(sc.model, sc.gpu, s, s.batch)
        iteration_s, tokens_per_s_per_gpu = it["step_s"], s.batch / s.ep / it["tpot_s"]
        conditions = (f"EP{s.ep}, {s.batch // s.ep} requests per GPU, context {s.input_len:,}, "
                      f"{it['num_microbatches']} micro-batches, a2a SMs {'held' if s.decode_a2a_uses_sms else 'none'}")
    else:
        it = prefill_forward(sc.model, sc.gpu, s)
        iteration_s, tokens_per_s_per_gpu = it["forward_s"], it["input_tokens_per_s_per_gpu"]
        conditions = (f"EP{s.ep}, {s.prefill_chunk_tokens:,} tokens per GPU, prompts {s.input_len:,}, "
                      f"{s.num_microbatches} micro-batches, a2a SMs {s.prefill_comm_sms}")
    groups_us = {g: v * 1e6 for g, v in it["per_microbatch_groups_s"].items()}
    groups_us["span_per_layer"] = it["per_moe_layer_s"] * 1e6
    return {"phase": phase, "scenario": name, "overrides": overrides, "conditions": conditions,
            "iteration_s": iteration_s, "groups_us": groups_us,
            "tokens_per_s_per_node": tokens_per_s_per_gpu * sc.gpu.gpus_per_node}
