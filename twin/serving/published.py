"""Published serving figures against the request simulation, under their published conditions.

DeepSeek's production figures (open-infra-index day 6) are predicted by the two scenarios that state
those conditions (scenarios/r1_serve_h800_prefill.toml, r1_serve_h800_decode.toml): the error is
reported whatever it is, never fitted.

What the per-node figures measure (docs/notes/s14srv_rule.md): the role's daily tokens over the
time-averaged count of that role's deployed nodes. The post's node-count figure steps by 30 nodes
(one 18-node decode unit and three 4-node prefill units: the one split in whole units) from a night
floor of 68 (2 decode + 8 prefill units) to 278 (9 + 29): 131.25 decode and 95.5 prefill nodes on
average, and 168B / 86,400 s / 131.25 = 14.81k, 608B / 86,400 s / 95.5 = 73.69k, the published
figures. Every deployed node counts, busy or not; the load over the day is the post's hourly
theoretical income (its tokens at fixed prices). So the twin's counterpart of each figure is a 24 h
average over that day (`deepseek_day_rows`): each interval's load per deployed node, set by the
published conditions, over the same node-hours. Decode: the load at which the output-weighted mean
per-user speed is 21 tokens/s (the middle of 20-22), capped where the busiest interval reaches the
unit's memory limit; and the per-user speed at the published load, interval by interval. Prefill:
no latency is published, so the busiest interval runs the unit fully loaded and the others the
day's load shape, an upper bound on its 24 h average. The fully loaded units are reported as each
unit's capacity.

What a fully loaded prefill unit does is published too, by DeepSeek's own profile of it
(deepseek-ai/profile-data prefill.json: EP32, TP1, 4K prompts, 16,384 tokens per GPU, two
micro-batches, balanced routing), which the SGLang team read as 62,713 input tokens/s per node
(lmsys.org blog 2025-05-05, "Profile Results"): `deepseek_prefill_profile` runs the prefill scenario
at those conditions. Likewise DeepSeek's decode profile (EP128, 128 requests per GPU, 4K context),
which the same table reads as 18,598 output tokens/s per node: `deepseek_decode_profile` runs one
decode step of the decode scenario at those conditions (docs/notes/s15srv_rule.md). Every comparison
with DeepSeek's decode figures prices the MLA core with the FlashMLA release of the figures' date (the
first, 580 TFLOPS; the April 2025 kernel came after both: `deepseek_decode_conditions`,
docs/notes/s20srv2_rule.md).

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

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from twin.core.scenario import SERVING, load_scenario, packaged_scenario
from twin.core.specs import serving_tables
from twin.serving.iteration import PREFILL_GROUPS, decode_step, prefill_forward, prefix_expand_s
from twin.serving.simulate import simulate

H200_CLAIM_TOKENS_PER_S = 3872.0     # twin/data/serving_claims.toml h200.nim_3872
# DeepSeek's online service (open-infra-index 202502OpenSourceWeek/day_6, 24 h from 2025-02-27 12:00 UTC+8)
DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE = 14_800.0   # '~14.8k tokens/s output during decoding' per H800 node
DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE = 73_700.0  # '~73.7k tokens/s input (including cache hits)'
DEEPSEEK_USER_TOKENS_PER_S = (20.0, 22.0)          # 'The average output speed was 20-22 tokens per second'
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
# ... read as output tokens/s per node by the SGLang team (lmsys.org/blog/2025-05-05-large-scale-ep, "Profile
# Results", decode table, column "DeepSeek Profile": batch size 128, KV cache length 4,096, 16 nodes, 18,598). Their
# derivation and whether the profile ran MTP are not stated (they set it beside their own run with simulated MTP).
DEEPSEEK_PROFILE_DECODE_TOKENS_PER_S_PER_NODE = 18_598.0
# DeepSeek's decode figures (the production day 2025-02-27/28, the decode profile's trace of 2025-03-21, whose
# attention core is FlashMLA's first kernel, flash_fwd_splitkv_mla_kernel) predate FlashMLA's April 2025 kernel:
# under the switch their comparisons price the core with the first release's published 580 TFLOPS
# (serve.flashmla_kernel = "2502"). docs/notes/s20srv2_rule.md decides it.
ADOPT_FLASHMLA_OF_THE_DATE = True
# docs/notes/s21dec_rule.md: the decode unit's capacity is its most output per node within memory. On,
# decode_speed_curve drops every simulated load whose output is not above every lighter load's (a closed
# loop fed at a rate settles at the lightest concurrency delivering it); off, such a curve is refused.
ADOPT_SPEED_CURVE_PEAK = True
DEEPSEEK_DECODE_KERNEL_CONDITIONS = ('serve.flashmla_kernel="2502"',)
# DeepSeek's decode runs its routed experts on DeepGEMM's masked grouped FP8 GEMM (DeepGEMM README: the
# masked layout "for the inference decoding phase", with DeepEP's low-latency kernels and CUDA graphs): under
# the switch their comparisons cost them with the masked kernel's model (twin/costs/masked_gemm.py, the
# Feb 2025 release measured on our H100 by s22dg). docs/notes/s22dg_rule.md part A decides it.
ADOPT_DEEPGEMM_MASKED_DECODE = True
DEEPSEEK_DECODE_GEMM_CONDITIONS = ('serve.routed_gemm_kernel="deepgemm_masked"',)
CURVE_CONCURRENCY = (1, 4, 16, 32, 64, 128, 256)
CURVE_LENGTHS = ((1024, 1024), (1024, 256), (4096, 1024), (256, 2048))   # (ISL, OSL)


def deepseek_decode_conditions() -> tuple[str, ...]:
    """Overrides every comparison with DeepSeek's decode figures adds to the decode scenario: the
    FlashMLA release of the figures' date under ADOPT_FLASHMLA_OF_THE_DATE, DeepGEMM's masked grouped
    GEMM for the routed experts under ADOPT_DEEPGEMM_MASKED_DECODE (read at call time, so every setting
    can be tested)."""
    return ((DEEPSEEK_DECODE_KERNEL_CONDITIONS if ADOPT_FLASHMLA_OF_THE_DATE else ())
            + (DEEPSEEK_DECODE_GEMM_CONDITIONS if ADOPT_DEEPGEMM_MASKED_DECODE else ()))


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


# ---------------------------------------------------------------------------------------------
# DeepSeek's published day (twin/data/serving_claims.toml [deepseek_day]; docs/notes/s14srv_rule.md)

DECODE_CURVE_REQUESTS_PER_GPU = (30, 40, 60, 80, 90, 100, 108)   # + the unit's memory limit; 30: the day's lightest
# interval must lie on the curve under slower steps (s22dep: 9,536 tok/s per node against 9,544 at 40)
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class DayInterval:
    """A stretch of DeepSeek's published day with one node count and one hourly load: `income_usd_per_h`
    is the hour's theoretical income (its tokens at R1's list prices, rule assumption A1: proportional to
    each role's tokens)."""

    start_h: float
    duration_h: float
    income_usd_per_h: float
    decode_nodes: float      # time-averaged over the interval
    prefill_nodes: float


def whole_unit_splits(nodes: int, decode_unit_nodes: int, prefill_unit_nodes: int) -> list[tuple[int, int]]:
    """Every (decode units, prefill units) that make up `nodes` in whole units: 30 nodes with 18- and
    4-node units -> [(1, 3)]; 68 -> [(0, 17), (2, 8)]."""
    return [(a, (nodes - a * decode_unit_nodes) // prefill_unit_nodes) for a in range(nodes // decode_unit_nodes + 1)
            if (nodes - a * decode_unit_nodes) % prefill_unit_nodes == 0]


def unit_schedule(node_counts, decode_unit_nodes: int, prefill_unit_nodes: int) -> dict[int, tuple[int, int]]:
    """(decode units, prefill units) at each node count of the schedule: the floor as the one split in
    whole units with a decode unit in it, every step above it as the one split of the step size.
    Raises ValueError where the figure leaves the split open (no step size, or not one split)."""
    counts = sorted(set(node_counts))
    floor = counts[0]
    steps = {b - a for a, b in zip(counts, counts[1:])}
    step = min(steps) if steps else 0
    if not step or any(s % step for s in steps):
        raise ValueError(f"node counts {counts}: no common step in whole units")
    floor_splits = [s for s in whole_unit_splits(floor, decode_unit_nodes, prefill_unit_nodes) if s[0] >= 1]
    step_splits = whole_unit_splits(step, decode_unit_nodes, prefill_unit_nodes)
    if len(floor_splits) != 1 or len(step_splits) != 1:
        raise ValueError(f"floor {floor} splits {floor_splits}, step {step} splits {step_splits}: not one each")
    (fd, fp), (sd, sp) = floor_splits[0], step_splits[0]
    return {n: (fd + (n - floor) // step * sd, fp + (n - floor) // step * sp) for n in counts}


def deepseek_day(day: dict | None = None, per_hour: bool = True) -> tuple[DayInterval, ...]:
    """The published day as intervals, each with its hour's income and its decode and prefill nodes
    (whole units, `unit_schedule`). per_hour: the 24 hours, each with the time-averaged nodes of
    its node steps (the income bars' resolution); otherwise cut also at every node step, each piece
    with its hour's whole income rate (the rule's first reading: it puts an hour's load evenly on
    both sides of a step, so the half hour after a step down carries the hour's mean load on the
    fewer nodes; docs/notes/s14srv_rule.md, result)."""
    day = day or serving_tables()["deepseek_day"]
    steps = [(float(h), int(n)) for h, n in day["node_steps"]]
    income = day["hourly_income_usd"]
    units = unit_schedule([n for _, n in steps], day["decode_unit_nodes"], day["prefill_unit_nodes"])
    cuts = sorted({float(h) for h in range(len(income) + 1)} | {h for h, _ in steps})
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        d_units, p_units = units[[n for h, n in steps if h <= a][-1]]
        pieces.append(DayInterval(a, b - a, float(income[int(a)]), d_units * day["decode_unit_nodes"],
                                  p_units * day["prefill_unit_nodes"]))
    if not per_hour:
        return tuple(pieces)
    hours = []
    for h in range(len(income)):
        inside = [q for q in pieces if int(q.start_h) == h]
        hours.append(DayInterval(float(h), 1.0, float(income[h]), sum(q.duration_h * q.decode_nodes for q in inside),
                                 sum(q.duration_h * q.prefill_nodes for q in inside)))
    return tuple(hours)


ROLES = ("decode", "prefill")


def _nodes(day, role: str) -> np.ndarray:
    if role not in ROLES:
        raise ValueError(f"role {role!r}: allowed {', '.join(ROLES)}")
    return np.array([i.decode_nodes if role == "decode" else i.prefill_nodes for i in day], dtype=float)


def mean_nodes(day, role: str) -> float:
    """Time-averaged deployed nodes of `role` ('decode' or 'prefill') over the day."""
    d = np.array([i.duration_h for i in day])
    return float((d * _nodes(day, role)).sum() / d.sum())


def load_shape_per_node(day, role: str) -> np.ndarray:
    """Each interval's load per deployed node of `role`, in income per node (the day's load shape)."""
    return np.array([i.income_usd_per_h for i in day]) / _nodes(day, role)


def day_average_per_node(day, role: str, per_node: np.ndarray) -> float:
    """The 24 h average per deployed node of a per-interval rate per node: its node-hours' weighted
    mean, every deployed node counted for its hours, busy or not (the published figures' reading)."""
    w = np.array([i.duration_h for i in day]) * _nodes(day, role)
    return float((w * per_node).sum() / w.sum())


def published_per_node(day, role: str, tokens_per_day: float) -> np.ndarray:
    """The published day's tokens of `role`, spread over the intervals by the load shape: tokens/s
    per deployed node in each interval (their 24 h average is tokens / 86,400 s / mean nodes)."""
    income = np.array([i.income_usd_per_h for i in day])
    share_per_h = income / (np.array([i.duration_h for i in day]) * income).sum()
    return tokens_per_day * share_per_h / SECONDS_PER_HOUR / _nodes(day, role)


@dataclass(frozen=True)
class SpeedCurve:
    """The decode unit simulated at loads of `requests_per_gpu`: output tokens/s per node and the
    per-user speed (1 / TPOT P50) at each; the last point is the unit's capacity (its memory limit, or
    under ADOPT_SPEED_CURVE_PEAK its most output within memory: rising_points)."""

    requests_per_gpu: tuple[float, ...]
    output_tokens_per_s_per_node: tuple[float, ...]
    user_tokens_per_s: tuple[float, ...]
    memory_limit_requests_per_gpu: float | None = None   # None: the last point (the curve rises to it)

    @property
    def memory_limit(self) -> float:
        """Requests per GPU the unit's KV cache holds: the last simulated load, kept or not."""
        return self.requests_per_gpu[-1] if self.memory_limit_requests_per_gpu is None else self.memory_limit_requests_per_gpu

    def speed_at(self, per_node) -> np.ndarray:
        """Per-user speed at an output rate per node, piecewise linear between simulated loads."""
        x = np.asarray(per_node, dtype=float)
        y = np.array(self.output_tokens_per_s_per_node)
        if np.any(np.diff(y) <= 0):
            raise ValueError(f"output per node not rising with the load: {self.output_tokens_per_s_per_node}")
        if np.any(x < y[0]) or np.any(x > y[-1] * (1 + 1e-9)):
            raise ValueError(f"loads {x.min():,.0f}-{x.max():,.0f} tok/s per node outside the simulated "
                             f"{y[0]:,.0f}-{y[-1]:,.0f}")
        return np.interp(x, y, self.user_tokens_per_s)

    def requests_per_gpu_at(self, per_node) -> np.ndarray:
        return np.interp(np.asarray(per_node, dtype=float), self.output_tokens_per_s_per_node, self.requests_per_gpu)


def decode_speed_curve(overrides=(), requests_per_gpu=DECODE_CURVE_REQUESTS_PER_GPU) -> SpeedCurve:
    """The decode scenario with no TPOT target at each load of `requests_per_gpu`, then at its memory
    limit: the most requests the unit's KV cache holds at once, each reserving its prompt, its whole
    output and its drafted tokens (a disaggregated decoder admits a request only when all of it fits,
    twin.serving.engine), i.e. KV capacity // (ISL + OSL + drafts). (The scenario's own bound,
    max_batch_by_memory, counts the mean context: past the limit requests queue for KV.)"""
    path = packaged_scenario(DEEPSEEK_DECODE_SCENARIO)
    overrides = (*deepseek_decode_conditions(), *overrides)
    base = load_scenario(path, ["traffic.target_tpot_s=0", *overrides], SERVING)
    s, gpus = base.serve, base.cluster.num_gpus

    def run(concurrency: int):
        return simulate(load_scenario(path, ["traffic.target_tpot_s=0", f"traffic.concurrency={concurrency}", *overrides], SERVING))

    runs = [(float(b), run(round(b * gpus))) for b in requests_per_gpu]
    instances = gpus // s.ep
    per_instance = int(runs[-1][1].kv_capacity_tokens_per_instance // (s.input_len + s.output_len + s.mtp_draft_tokens))
    if per_instance * instances <= requests_per_gpu[-1] * gpus:
        raise ValueError(f"the KV cache holds {per_instance * instances / gpus:.1f} requests per GPU, not more than "
                         f"the curve's last load ({requests_per_gpu[-1]})")
    limit = per_instance * instances / gpus
    runs.append((limit, run(per_instance * instances)))
    curve = SpeedCurve(tuple(float(b) for b, _ in runs), tuple(r.output_tokens_per_s_per_node for _, r in runs),
                       tuple(1.0 / r.tpot_s.p50 for _, r in runs))
    return rising_points(curve) if ADOPT_SPEED_CURVE_PEAK else curve


def _capacity_words(curve: SpeedCurve) -> str:
    if curve.requests_per_gpu[-1] == curve.memory_limit:
        return "the memory limit"
    return (f"the unit's most output ({curve.requests_per_gpu[-1]:g} requests per GPU; memory limit "
            f"{curve.memory_limit:.1f})")


def rising_points(curve: SpeedCurve) -> SpeedCurve:
    """The curve's points whose output per node is above every lighter load's, the memory limit kept
    as a figure: a load past the peak or in a dip delivers no more than a lighter one, so a closed loop
    fed at its rate runs at the lighter load instead (docs/notes/s21dec_rule.md)."""
    keep, best = [], float("-inf")
    for i, y in enumerate(curve.output_tokens_per_s_per_node):
        if y > best:
            keep.append(i)
            best = y
    pick = lambda xs: tuple(xs[i] for i in keep)  # noqa: E731
    return SpeedCurve(pick(curve.requests_per_gpu), pick(curve.output_tokens_per_s_per_node),
                      pick(curve.user_tokens_per_s), memory_limit_requests_per_gpu=curve.memory_limit)


def mean_user_speed(day, per_node: np.ndarray, curve: SpeedCurve) -> float:
    """Per-user speed averaged over the day's output tokens (each token once; rule reading 4)."""
    w = np.array([i.duration_h for i in day]) * _nodes(day, "decode") * per_node
    return float((w * curve.speed_at(per_node)).sum() / w.sum())


def decode_load_for_speed(day, curve: SpeedCurve, user_tokens_per_s: float) -> tuple[np.ndarray, bool]:
    """Output tokens/s per decode node in each interval, the day's load shape scaled so that the
    output-weighted mean speed is `user_tokens_per_s`, or, where the unit cannot slow to it within
    memory, so that the busiest interval runs at the memory limit (rule A3). Returns the loads and
    whether the cap bound. Bisection: the mean speed falls as the load rises."""
    shape = load_shape_per_node(day, "decode")
    k_cap = curve.output_tokens_per_s_per_node[-1] / shape.max()
    if mean_user_speed(day, k_cap * shape, curve) >= user_tokens_per_s:
        return k_cap * shape, True
    lo, hi = curve.output_tokens_per_s_per_node[0] / shape.min(), k_cap
    if mean_user_speed(day, lo * shape, curve) < user_tokens_per_s:
        raise ValueError(f"{user_tokens_per_s} tok/s per user is faster than the lightest simulated load gives")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_user_speed(day, mid * shape, curve) >= user_tokens_per_s else (lo, mid)
    return lo * shape, False


def prefill_load_at_capacity(day, capacity_per_node: float) -> np.ndarray:
    """Input tokens/s per prefill node in each interval: the busiest at the fully loaded unit's rate,
    the others at the day's load shape (rule A3; no prefill latency is published)."""
    shape = load_shape_per_node(day, "prefill")
    return capacity_per_node * shape / shape.max()


def _fully_loaded(name: str):
    return simulate(load_scenario(packaged_scenario(name), kind=SERVING))


def deepseek_day_rows(day=None, curve: SpeedCurve | None = None) -> list[dict]:
    """DeepSeek's two per-node figures and its per-user speed against the twin's 24 h averages over
    the published day (docs/notes/s14srv_rule.md)."""
    day = day or deepseek_day()
    table = serving_tables()["deepseek_day"]
    curve = curve or decode_speed_curve()
    user = sum(DEEPSEEK_USER_TOKENS_PER_S) / 2
    pre_full = _fully_loaded(DEEPSEEK_PREFILL_SCENARIO).input_tokens_per_s_per_node
    pre = prefill_load_at_capacity(day, pre_full)
    pre_avg = day_average_per_node(day, "prefill", pre)
    dec, capped = decode_load_for_speed(day, curve, user)
    dec_avg = day_average_per_node(day, "decode", dec)
    published = published_per_node(day, "decode", table["output_tokens"])
    speed_pub = mean_user_speed(day, published, curve)
    common = {"ttft_p50_s": float("nan"), "day_mean_decode_nodes": mean_nodes(day, "decode"),
              "day_mean_prefill_nodes": mean_nodes(day, "prefill")}
    return [
        {"scenario": DEEPSEEK_PREFILL_SCENARIO, "metric": "input_tokens_per_s_per_node", "claimed": DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE,
         "predicted": pre_avg, "rel_error": pre_avg / DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE - 1.0,
         "conditions": "24 h average over the published day: busiest interval fully loaded, the others at the day's load shape",
         "fully_loaded_per_node": pre_full, "busiest_to_mean_load": float(pre.max() / pre_avg),
         "concurrency": float("nan"), "tpot_p50_s": float("nan"), "output_tokens_per_s_per_request": float("nan"), **common},
        {"scenario": DEEPSEEK_DECODE_SCENARIO, "metric": "output_tokens_per_s_per_node", "claimed": DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE,
         "predicted": dec_avg, "rel_error": dec_avg / DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE - 1.0,
         "conditions": ("24 h average over the published day at the load giving 21 tok/s per user"
                        + (f", capped: the busiest interval at {_capacity_words(curve)}" if capped else "")),
         "memory_capped": capped, "fully_loaded_per_node": curve.output_tokens_per_s_per_node[-1],
         "memory_limit_requests_per_gpu": curve.memory_limit,
         "capacity_requests_per_gpu": curve.requests_per_gpu[-1],
         "day_mean_user_tokens_per_s": mean_user_speed(day, dec, curve),
         "concurrency": day_average_per_node(day, "decode", curve.requests_per_gpu_at(dec)),
         "busiest_requests_per_gpu": float(curve.requests_per_gpu_at(dec).max()),
         "tpot_p50_s": 1.0 / mean_user_speed(day, dec, curve), "output_tokens_per_s_per_request": mean_user_speed(day, dec, curve), **common},
        {"scenario": f"{DEEPSEEK_DECODE_SCENARIO} at the published load", "metric": "output_tokens_per_s_per_user",
         "claimed": user, "claimed_range": DEEPSEEK_USER_TOKENS_PER_S, "predicted": speed_pub, "rel_error": speed_pub / user - 1.0,
         "rel_error_range": tuple(speed_pub / v - 1.0 for v in DEEPSEEK_USER_TOKENS_PER_S),
         "conditions": "the published output (168B) over the day's load shape and decode nodes, interval by interval",
         "output_tokens_per_s_per_node": day_average_per_node(day, "decode", published),
         "concurrency": day_average_per_node(day, "decode", curve.requests_per_gpu_at(published)),
         "tpot_p50_s": 1.0 / speed_pub, "output_tokens_per_s_per_request": speed_pub, **common},
    ]


MTP_CURVE_REQUESTS_PER_GPU = (20, 30, 40, 60, 80, 100)   # MTP's faster steps carry the day's output at fewer requests


def deepseek_sensitivity() -> list[dict]:
    """The day rows under the readings the rule names but does not adopt (docs/notes/s14srv_rule.md):
    the node steps cut inside the hour with each hour's load spread evenly on both sides
    ('sub-hour'), and MTP on (one drafted token at serve.mtp_acceptance_frac, V3 report §5.4.3's
    85%; the post does not say). Reported beside the adopted rows, never the figure."""
    curve = decode_speed_curve()
    mtp = decode_speed_curve(("serve.mtp_draft_tokens=1",), MTP_CURVE_REQUESTS_PER_GPU)
    rows = _reading_rows("sub-hour intervals", lambda: deepseek_day_rows(deepseek_day(per_hour=False), curve))
    rows += _reading_rows("MTP on (1 drafted token, 85% accepted)", lambda: deepseek_day_rows(curve=mtp)[1:])
    return rows


def _reading_rows(reading: str, rows) -> list[dict]:
    """A reading's day rows, or one row saying why it has none: where the reading puts a published interval
    beyond the unit's simulated loads (e.g. a sub-hour interval busier than the unit's capacity), the speed
    there is not defined (SpeedCurve.speed_at refuses it) and the reading gives no figure."""
    try:
        return [{**r, "reading": reading} for r in rows()]
    except ValueError as err:
        nan = float("nan")
        return [{"reading": reading, "scenario": DEEPSEEK_DECODE_SCENARIO, "metric": f"none: {err}", "claimed": nan,
                 "predicted": nan, "rel_error": nan}]


def deepseek_production() -> list[dict]:
    """DeepSeek's published serving figures beside the twin's under their conditions: the two
    per-node figures and the per-user speed over the published day (`deepseek_day_rows`), and
    DeepSeek's prefill and decode profiles (`deepseek_prefill_profile`, `deepseek_decode_profile`)."""
    return [*deepseek_day_rows(), deepseek_prefill_profile(), deepseek_decode_profile()]


def deepseek_decode_profile() -> dict:
    """One decode step of the decode scenario at the conditions of DeepSeek's decode profile (EP128,
    128 requests per GPU, 4K context, two micro-batches, balanced routing, the all-to-all on no SMs;
    MTP off, as the README does not say) against the 18,598 output tokens/s per node the SGLang team
    read from it. One iteration, like the profile (no request simulation): output tokens/s per node =
    requests per GPU / TPOT x GPUs per node. The row also carries the step with MTP on (one drafted
    token at serve.mtp_acceptance_frac), the reading SGLang's comparison suggests."""
    path = packaged_scenario(DEEPSEEK_DECODE_SCENARIO)

    def per_node(extra=()):
        sc = load_scenario(path, [*DEEPSEEK_PROFILE_DECODE_CONDITIONS, *deepseek_decode_conditions(), *extra], SERVING)
        it = decode_step(sc.model, sc.gpu, sc.serve, sc.serve.batch)
        return sc.serve.batch / sc.serve.ep / it["tpot_s"] * sc.gpu.gpus_per_node, it

    pred, it = per_node()
    mtp, mtp_it = per_node(("serve.mtp_draft_tokens=1",))
    pred, mtp = float(pred), float(mtp)
    claimed = DEEPSEEK_PROFILE_DECODE_TOKENS_PER_S_PER_NODE
    return {"scenario": f"{DEEPSEEK_DECODE_SCENARIO} at DeepSeek's profile conditions", "metric": "output_tokens_per_s_per_node",
            "claimed": claimed, "predicted": pred, "rel_error": pred / claimed - 1.0,
            "concurrency": float(DEEPSEEK_PROFILE_DECODE_REQUESTS_PER_GPU),
            "conditions": "EP128, 128 requests per GPU, 4K context, two micro-batches, balanced routing, one decode step, MTP off",
            "step_s": float(it["step_s"]), "per_moe_layer_s": float(it["per_moe_layer_s"]),
            "mtp_on_predicted": mtp, "mtp_on_rel_error": mtp / claimed - 1.0, "mtp_on_step_s": float(mtp_it["step_s"]),
            "tpot_p50_s": float(it["tpot_s"]), "ttft_p50_s": float("nan"), "output_tokens_per_s_per_request": 1.0 / it["tpot_s"]}


def deepseek_prefill_profile() -> dict:
    """The prefill scenario at the conditions of DeepSeek's prefill profile (4K prompts, no cache
    hits, 16,384 tokens per GPU per forward, balanced routing; the unit, its parallelism and two
    micro-batches as in production) against the 62,713 input tokens/s per node read from it."""
    sc = load_scenario(packaged_scenario(DEEPSEEK_PREFILL_SCENARIO), list(DEEPSEEK_PROFILE_PREFILL_CONDITIONS), SERVING)
    r = simulate(sc)
    pred = r.input_tokens_per_s_per_node
    claimed = DEEPSEEK_PROFILE_PREFILL_TOKENS_PER_S_PER_NODE
    return {"scenario": f"{DEEPSEEK_PREFILL_SCENARIO} at DeepSeek's profile conditions", "metric": "input_tokens_per_s_per_node",
            "claimed": claimed, "predicted": pred, "rel_error": pred / claimed - 1.0, "concurrency": r.concurrency,
            "conditions": "4K prompts, no cache hits, 16K tokens per GPU, balanced routing, fully loaded",
            "tpot_p50_s": r.tpot_s.p50, "ttft_p50_s": r.ttft_s.p50,
            "output_tokens_per_s_per_request": r.output_tokens_per_s_per_request}


def deepseek_profile_groups(phase: str) -> dict:
    """The twin's iteration model at the conditions of DeepSeek's own `phase` profile ('decode' or
    'prefill', deepseek-ai/profile-data): the iteration time, and one micro-batch of one MoE layer
    by kernel group in microseconds (the gate booked under attention_gemm, as the profiles' ATTN
    phases hold it) with the MoE layer's steady-state time (span_per_layer), for
    calibration/serving_trace.py to set beside the trace. No simulation: one decode step or
    prefill forward (twin.serving.iteration)."""
    if phase == "decode":
        name, overrides = DEEPSEEK_DECODE_SCENARIO, (*DEEPSEEK_PROFILE_DECODE_CONDITIONS, *deepseek_decode_conditions())
    elif phase == "prefill":
        name, overrides = DEEPSEEK_PREFILL_SCENARIO, DEEPSEEK_PROFILE_PREFILL_CONDITIONS
    else:
        raise ValueError(f"phase {phase!r}: allowed 'decode', 'prefill'")
    sc = load_scenario(packaged_scenario(name), list(overrides), SERVING)
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


# ---------------------------------------------------------------------------------------------
# The day prefill taken apart (docs/notes/s23deep_rule.md part 2): reporting only, no figure moves

PREFILL_COMPUTE_GROUPS = tuple(g for g in PREFILL_GROUPS if g not in ("dispatch", "combine"))


def deepseek_prefill_components(overrides=()) -> dict:
    """The prefill unit's forward at the day's conditions (the prefill scenario; `overrides` e.g.
    DEEPSEEK_PROFILE_PREFILL_CONDITIONS for the profile's) taken apart, as the request simulation prices one
    iteration of whole prompts (twin.serving.timing): every prompt alike, floor(ISL x hit) tokens cached and
    the rest computed; one forward of prefill_chunk_tokens computed tokens per GPU whose attention spans
    n + 2c tokens per prompt (n computed behind c cached: n (c + n/2) query-key pairs), plus the expansion
    of the cached latents the forward attends over (prefix_expand_s). Components in seconds per forward on
    one GPU: the MoE layers' kernel groups (every micro-batch and layer), the all-to-all's exposed part (the
    overlapped MoE layers less their compute) and its hidden part, the dense layers, the LM head and the
    prefix expansion; they add up to `total_s`. Per token: node-microseconds per input token (hits
    counted, the published figure's unit) and per computed token."""
    sc = load_scenario(packaged_scenario(DEEPSEEK_PREFILL_SCENARIO), list(overrides), SERVING)
    m, gpu, s = sc.model, sc.gpu, sc.serve
    cached = min(math.floor(s.input_len * sc.traffic.prefix_hit_frac), s.input_len - 1)
    computed = s.input_len - cached
    span = computed + 2 * cached
    fwd = prefill_forward(m, gpu, dataclasses.replace(s, input_len=span))
    prompts_per_gpu = s.prefill_chunk_tokens / computed
    prefix_s = prefix_expand_s(m, gpu, s, round(prompts_per_gpu * cached))
    mb = fwd["per_microbatch_groups_s"]
    n_mb = max(1, min(s.num_microbatches, s.prefill_chunk_tokens))
    per_forward = n_mb * m.num_moe_layers
    comps = {f"moe_{g}": mb[g] * per_forward for g in PREFILL_COMPUTE_GROUPS}
    moe_compute = sum(comps.values())
    a2a = (mb["dispatch"] + mb["combine"]) * per_forward
    exposed = fwd["moe_layers_s"] - moe_compute
    comps.update(all_to_all_exposed=exposed, dense_layers=fwd["dense_layers_s"], lm_head=fwd["head_s"],
                 prefix_expand=prefix_s)
    total = sum(comps.values())
    input_per_node = prompts_per_gpu * s.input_len * gpu.gpus_per_node
    computed_per_node = s.prefill_chunk_tokens * gpu.gpus_per_node
    return {"conditions": {"input_len": s.input_len, "cached_tokens": cached, "computed_tokens": computed,
                           "attention_span_tokens": span, "computed_tokens_per_gpu": s.prefill_chunk_tokens,
                           "prompts_per_gpu": prompts_per_gpu, "num_microbatches": n_mb, "ep": s.ep,
                           "comm_sms": s.prefill_comm_sms},
            "components_s": comps, "total_s": total, "forward_s": fwd["forward_s"],
            "all_to_all_s": a2a, "all_to_all_hidden_s": a2a - exposed,
            "node_us_per_input_token": {k: v / input_per_node * 1e6 for k, v in comps.items()},
            "node_us_per_computed_token": {k: v / computed_per_node * 1e6 for k, v in comps.items()},
            "input_tokens_per_s_per_node": input_per_node / total,
            "computed_tokens_per_s_per_node": computed_per_node / total}


PREFILL_DAY_LOADS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PREFILL_BURSTY_ARRIVAL_CV = 2.0   # the gamma arrivals' inter-arrival CV (TrafficSpec.arrival_cv's default)


def prefill_open_loop(load_frac: float, capacity_per_node: float, arrival: str, num_requests: int = 8192):
    """The prefill scenario fed at `load_frac` of `capacity_per_node` (input tok/s per node, hits counted)
    by open-loop arrivals ('poisson' or 'gamma' at PREFILL_BURSTY_ARRIVAL_CV): its simulation result."""
    sc = load_scenario(packaged_scenario(DEEPSEEK_PREFILL_SCENARIO), kind=SERVING)
    nodes = sc.serve.prefill_instances * sc.serve.prefill_ep / sc.gpu.gpus_per_node
    rate = load_frac * capacity_per_node * nodes / sc.serve.input_len
    extra = [f'traffic.arrival="{arrival}"', f"traffic.rate_per_s={rate}", f"traffic.num_requests={num_requests}"]
    if arrival == "gamma":
        extra.append(f"traffic.arrival_cv={PREFILL_BURSTY_ARRIVAL_CV}")
    return simulate(load_scenario(packaged_scenario(DEEPSEEK_PREFILL_SCENARIO), extra, SERVING))


def deepseek_prefill_over_load(loads=PREFILL_DAY_LOADS, day_row: dict | None = None, ttft: bool = True) -> dict:
    """The day prefill row as a curve over the busiest hour's load, a fraction of the unit's fully loaded rate
    (the row itself is the curve at 1.0: the upper bound). The day's 24 h average scales with that fraction
    (the other hours follow the day's load shape). Where `ttft`, each point carries the twin's TTFT at that
    load in the busiest hour: the unit fed open-loop at that fraction of its closed-loop rate, by Poisson and
    by bursty (gamma) arrivals. `published_at_load_frac`: the load at which the curve meets the published
    73.7k, and the span of loads within 15% of it: readings of the curve, never inputs."""
    row = day_row or deepseek_day_rows()[0]
    full, avg = row["fully_loaded_per_node"], row["predicted"]
    points = []
    for u in loads:
        p = {"busiest_hour_load_frac": float(u), "predicted": u * avg, "rel_error": u * avg / DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE - 1.0}
        if ttft:
            for arrival in ("poisson", "gamma"):
                r = prefill_open_loop(u, full, arrival)
                p[f"{arrival}_ttft_p50_s"], p[f"{arrival}_ttft_p99_s"] = r.ttft_s.p50, r.ttft_s.p99
        points.append(p)
    claim = DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE
    return {"points": points, "fully_loaded_per_node": full, "day_average_at_full_load": avg,
            "published_at_load_frac": claim / avg,
            "within_15_percent_load_frac": (claim * 0.85 / avg, claim * 1.15 / avg)}

