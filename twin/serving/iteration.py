"""The time of one serving iteration: a decode step and a prefill forward of one instance.

From first principles plus the calibrated efficiency profiles (the same cost functions as a
training step, on DeepSeek's FP8 stack: `load_profile(gpu.calibrated_as)`), for one GPU of
one serving instance (`ep` GPUs, twin.core.serve_specs.ServeSpec):

Decode step (every request advances 1 + mtp_draft_tokens query tokens), per layer:
  attention  projections as GEMMs at m = tokens of the attention group (small m -> weight streaming,
             through compute.gemm_time_s, so roofline and calibrated curves apply), the absorbed
             W_UK / W_UV products as grouped GEMMs over heads, and the MLA core as FlashMLA's roofline:
             max(cache bytes / (HBM x 3000/3350), FLOPs / (BF16 peak x 660/989.5)) - the published
             memory-bound and compute-bound figures as fractions of the GPU's peaks (580 in place of 660
             for FlashMLA's first release, serve.flashmla_kernel = "2502"). Reading the
             compressed cache is (d_c + d_rope) x 2 B per token per layer (70,272 B over V3's 61).
  MoE        router, shared expert, routed experts as one grouped GEMM over the straggler rank's
             physical experts (rows from the load model, EPLB replication from twin.moe.eplb; the kernel
             serve.routed_gemm_kernel: torch's grouped curves or DeepGEMM's masked kernel,
             twin/costs/masked_gemm.py; ADOPT_STRAGGLER_SCATTER, off: the slowest GPU of sampled routings), and
             dispatch + combine: NVLink inside a node, else DeepEP's low-latency table (H800,
             bandwidth per EP size, interpolated in log2 EP) for the straggler's received rows. DeepEP's
             path also holds the SMs: its send and receive kernels (return_recv_hook, measured on 2xH200:
             deepep_ll_kernels_s, ADOPT_DEEPEP_LL_SM_TIME, docs/notes/s22dep_rule.md) join the micro-batch's
             compute and the table's time less them stays on no SMs (the flight).
  overlap    `num_microbatches` n: compute of one micro-batch hides the other's all-to-all, so a
             step takes layers x n x max(C, A) + min(C, A) with C, A the per-micro-batch compute
             and communication (n = 1: C + A). Weight-streaming GEMMs read their weights once per
             micro-batch, so splitting is not free. ADOPT_DECODE_STAGE_OVERLAP (off; docs/notes/s15srv_rule.md)
             list-schedules two micro-batches in DeepSeek's decode pipeline instead (decode_stage_layers_s).
  head       output head and sampling per step, plus `host_overhead_s`.
  TPOT = step time / tokens produced per request per step (1 + draft x acceptance).

Prefill (per GPU, `prefill_chunk_tokens` prompt tokens per forward): twin.costs.flops attention_ops
and moe_ops at large m (causal attention quadratic in the prompt), all-to-all through
twin.costs.comm (DeepEP normal kernels, `prefill_comm_sms` SMs taken from compute), the same
micro-batch overlap list-scheduled on a compute and a communication stream (overlapped_layers_s:
it carries over layer boundaries, so a layer takes n x max(C, A) and the fill is paid once per
forward). Input tokens/s per GPU = chunk / forward time; TTFT = forwards a prompt needs x forward
time (no queueing). Checked against DeepSeek's own prefill profile (twin.serving.published).

Throughput: disaggregated instances report decode output tokens/s = batch / TPOT per instance x
instances; a co-located instance also spends batch x ISL / prefill rate per OSL tokens generated.

Memory per GPU is twin.costs.memory's serving section; the operating points, the sweep and the
claims are twin.serving.run.

Expert loads: `load_model` shares (twin.moe.load) per layer; with EPLB the physical experts and
their per-GPU loads come from twin.moe.eplb.rebalance_experts fed the same shares (a perfect load
estimate: optimistic); without, contiguous placement. Expected rows per expert below one are
handled with a Poisson hit probability (an expert nobody routed to reads no weights).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from twin.core.moe_specs import MoeLoadSpec
from twin.core.serve_specs import ServeSpec
from twin.core.specs import GPUSpec, ModelSpec, serving_tables
from twin.costs import comm, compute
from twin.costs.board_pace import slowest_board_factor
from twin.costs.masked_gemm import masked_gemm_time_s, masked_params
from twin.costs.flops import (ALL_TO_ALL_KINDS, BF16_BYTES, FP8_BYTES, FP8_TILE, FP32_BYTES, ExpertLoad, OpKind,
                              attention_ops, dense_ffn_ops, moe_ops, router_op)
from twin.costs.memory import kv_bytes_per_token, requests_per_attention_group, weight_breakdown
from twin.costs.profile import Profile, load_profile
from twin.moe.eplb import contiguous_gpu_loads, rebalance_experts
from twin.moe.load import LoadModel

NUM_LOAD_LAYERS = 4   # MoE layers whose loads are sampled (EPLB per layer); the straggler ratio is their mean
# Two micro-batches of a decode step list-scheduled in DeepSeek's decode pipeline (`decode_stage_layers_s`)
# instead of n x max(compute, all-to-all) + min; docs/notes/s15srv_rule.md decides it.
ADOPT_DECODE_STAGE_OVERLAP = False
# docs/notes/s22dg_rule.md part B: a decode micro-batch's routed-expert GEMMs with EP > 1 cost at the slowest
# GPU of sampled routings (the mean over SCATTER_DRAWS draws of the max over GPUs), not at the straggler's
# mean rows per slot
ADOPT_STRAGGLER_SCATTER = False
SCATTER_DRAWS = 64
SCATTER_SEED = 0

# DeepEP's low-latency send and receive kernels hold the SMs on the compute stream (return_recv_hook, DeepSeek's
# decode): measured on one host (real/bench/deepep_ll.py, campaign s22dep, calibration/deepep_ll_fit.py) and
# booked in each micro-batch's compute, the flight alone left on no SMs. docs/notes/s22dep_rule.md decides it.
ADOPT_DEEPEP_LL_SM_TIME = True
DEEPEP_LL_KERNELS = ("dispatch_send", "dispatch_recv", "combine_send", "combine_recv")
# docs/notes/s23deep_rule.md part 1: the H100 pair's rows refute the H200 -> H800 HBM scaling of the per-row part
# (+12% to +20% at 64-128 tokens a rank); on, a scenario takes the [deepep_ll_sm*] table measured on the GPU whose
# HBM bandwidth is nearest its own (H800/H100: the H100 pair's, unscaled), as s22dep's rule said once both exist
ADOPT_DEEPEP_LL_SAME_HBM_ROWS = True
DEEPEP_LL_TABLES = ("deepep_ll_sm", "deepep_ll_sm_h100")


# s30pace (docs/notes/s30pace_rule.md, committed before the code and any figure): an instance's `ep` GPUs wait for
# each other every layer (dispatch and combine, TP all-reduces, the DP-attention ranks' lockstep), so, as a training
# step under ADOPT_SLOWEST_BOARD_PACE, its compute runs at its slowest board: under the switch the GPU's default
# profile's GEMM and attention curves run at 1 / slowest_board_factor(ep) (the same function and measured cv,
# twin.costs.board_pace) on an instance of more than one GPU. One GPU and a profile passed in (a record's own board):
# untouched; work the profile does not price (DeepGEMM's masked kernel, the FlashMLA core) is not paced. Adopted
# (calibration/s30pace_judgement.json: G0-G4 hold; held-out load runs 68 -> 69 of 80, none lost; DeepSeek's prefill
# profile row -4.1% -> -4.9%, every other published row within 0.02 points but the day prefill +56.3% -> +54.7%).
ADOPT_SERVE_BOARD_PACE = True


def serve_pace_factor(s: ServeSpec) -> float:
    """The time factor serving_profile puts on the default profile's compute curves: slowest_board_factor of the
    instance's GPUs (s.ep; a prefill instance's spec carries its own) under ADOPT_SERVE_BOARD_PACE, else 1."""
    return slowest_board_factor(s.ep) if ADOPT_SERVE_BOARD_PACE else 1.0


def serving_profile(gpu: GPUSpec, s: ServeSpec, profile: Profile | None = None) -> Profile:
    """The GPU's fused-stack profile (load_profile) with the FP8 GEMM curve chosen by
    s.fp8_gemm_curve standing for DeepGEMM (see ServeSpec.fp8_gemm_curve and deepgemm_check); the default
    profile at the instance's slowest board (serve_pace_factor), a profile passed in as given."""
    prof = profile or load_profile(gpu.calibrated_as)
    factor = serve_pace_factor(s) if profile is None else 1.0
    if factor != 1.0:
        prof = prof.scaled(1.0 / factor, 1.0)
    curve = prof.gemm.get(s.fp8_gemm_curve)
    if curve is None or s.fp8_gemm_curve == "fp8":
        return prof
    return dataclasses.replace(prof, gemm={**prof.gemm, "fp8": curve})


# ---------------------------------------------------------------------------------------------
# Expert loads


def _load_figures(m: ModelSpec, s: ServeSpec, gpus_per_node: int) -> dict:
    """Straggler figures of one MoE layer, averaged over NUM_LOAD_LAYERS sampled layers:
    rows_frac (max GPU rows / mean, with and without EPLB) and the straggler GPU's per-slot
    share of the instance's routed rows (for its grouped GEMM)."""
    # cached on the fields that matter only: the request simulation asks for many ServeSpec variants
    key = ServeSpec(ep=s.ep, tp=1, redundant_experts=s.redundant_experts, eplb=s.eplb,
                    load_model=s.load_model, load_param=s.load_param)
    return _load_figures_cached(m, key, gpus_per_node)


@functools.cache
def _load_figures_cached(m: ModelSpec, s: ServeSpec, gpus_per_node: int) -> dict:
    e, ep = m.num_routed_experts, s.ep
    defaults = MoeLoadSpec()
    param = s.load_param or {"zipf": defaults.zipf_s, "dirichlet": defaults.dirichlet_alpha}.get(s.load_model, 0.0)
    lm = LoadModel(s.load_model, param) if s.load_model != "balanced" else LoadModel("balanced")
    layers = min(NUM_LOAD_LAYERS, max(1, m.num_moe_layers))
    shares = lm.shares_LE(layers, e, m.top_k)
    contiguous_frac = None                 # contiguous placement needs E divisible by ep
    if e % ep == 0:
        contiguous = contiguous_gpu_loads(shares, ep)                           # (L, ep), shares
        contiguous_frac = float((contiguous.max(1) * ep).mean())
    if not s.eplb:
        strag = contiguous.argmax(1)
        slot_shares = [shares[i].reshape(ep, -1)[strag[i]] for i in range(layers)]
        return {"rows_frac": contiguous_frac, "rows_frac_contiguous": contiguous_frac,
                "slot_shares": np.mean(slot_shares, axis=0), "policy": "contiguous", "shares_LE": shares,
                "phy2log_LP": np.tile(np.arange(e), (layers, 1)), "count_LE": np.ones_like(shares)}
    nodes = max(1, -(-ep // gpus_per_node))
    num_phys = e + s.redundant_experts
    groups = m.num_expert_groups if (m.num_expert_groups % nodes == 0 and ep % nodes == 0) else 1
    plan = rebalance_experts(shares, num_phys, groups, nodes if groups > 1 else 1, ep)
    loads = plan.gpu_loads(shares)                                             # (L, ep)
    strag = loads.argmax(1)
    per_slot = np.take_along_axis(shares / plan.count_LE, plan.phy2log_LP, axis=1).reshape(layers, ep, -1)
    slot_shares = np.mean([np.sort(per_slot[i, strag[i]])[::-1] for i in range(layers)], axis=0)
    return {"rows_frac": float((loads.max(1) * ep).mean()), "rows_frac_contiguous": contiguous_frac,
            "slot_shares": slot_shares, "policy": plan.policy, "shares_LE": shares, "phy2log_LP": plan.phy2log_LP,
            "count_LE": plan.count_LE}


def moe_view(m: ModelSpec, s: ServeSpec) -> tuple[ModelSpec, ServeSpec]:
    """MoE by TP inside EP (serve.moe_tp): each routed expert is split over moe_tp GPUs, so the
    experts are spread over ep / moe_tp groups and each GPU computes 1 / moe_tp of every expert it
    holds for all of its group's tokens. Seen as EP over the groups with experts (and the shared
    expert) moe_tp times narrower; the partial outputs are all-reduced over the moe_tp GPUs
    (moe_allreduce_s). moe_tp = 1 is plain EP; moe_tp = ep is plain TP (no all-to-all)."""
    if s.moe_tp == 1:
        return m, s
    narrow = dataclasses.replace(m, moe_intermediate_size=m.moe_intermediate_size // s.moe_tp)
    return narrow, dataclasses.replace(s, ep=s.ep // s.moe_tp, moe_tp=1)


def moe_allreduce_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, tokens: float) -> float:
    """All-reduce of the MoE output of `tokens` over the moe_tp GPUs that share each expert."""
    if s.moe_tp == 1 or tokens <= 0:
        return 0.0
    return 2 * comm.ring_collective_time_s(tokens * m.hidden_size * BF16_BYTES, s.moe_tp, gpu,
                                           same_node=s.moe_tp <= gpu.gpus_per_node)


def straggler_slot_rows(slot_shares: np.ndarray, total_rows: float) -> list[float]:
    """Rows per *touched* physical expert of the straggler GPU, given the instance's routed rows.
    A slot expecting lambda < ~1 rows is hit with probability 1 - exp(-lambda) (Poisson); the
    expected number of touched slots keeps the largest ones, carrying all the rows."""
    lam = np.sort(np.asarray(slot_shares, dtype=float) * total_rows)[::-1]
    if lam.sum() <= 0:
        return []
    touched = max(1, min(len(lam), round(float(np.sum(1.0 - np.exp(-lam))))))
    kept = lam[:touched]
    return list(kept * lam.sum() / kept.sum())


def sampled_gpu_rows(loads: dict, ep: int, top_k: int, tokens: int) -> np.ndarray:
    """(SCATTER_DRAWS, ep, slots per GPU) rows of each GPU's physical experts in sampled routings of one
    micro-batch of `tokens` tokens over the instance: draw d uses sampled layer d mod layers, each
    logical expert's rows Binomial(tokens, top_k x its share) (top-k of E without replacement: an expert
    is chosen at most once per token), split evenly over its replicas. Seeded (SCATTER_SEED) and kept in
    `loads` (the placement's cached figures) per (ep, top_k, tokens)."""
    cache = loads.setdefault("sampled_rows", {})
    key = (ep, top_k, tokens)
    if key not in cache:
        rng = np.random.default_rng(SCATTER_SEED)
        shares, phy2log, count = loads["shares_LE"], loads["phy2log_LP"], loads["count_LE"]
        draws = []
        for d in range(SCATTER_DRAWS):
            layer = d % shares.shape[0]
            rows = rng.binomial(tokens, np.minimum(1.0, top_k * shares[layer])) / count[layer]
            draws.append(rows[phy2log[layer]].reshape(ep, -1))
        cache[key] = np.asarray(draws)
    return cache[key]


def padded_rows(rows: np.ndarray, s: ServeSpec, prof: Profile, hint_rows: float) -> np.ndarray:
    """Rows the routed grouped GEMM computes per slot (the kernel's row tiles, vectorized): torch's
    compute.padded_group_rows at the profile's row tile, DeepGEMM's masked kernel whole block_m tiles."""
    if s.routed_gemm_kernel == "deepgemm_masked":
        block_m = 64 if hint_rows <= 64 else 128
        return np.ceil(rows / block_m) * block_m
    tile = prof.group_row_tile
    if tile <= 0:
        return rows
    half = tile // 2
    return np.where(rows <= 0, 0.0, np.where(rows < 1, rows * half, np.where(rows <= half, half, np.ceil(rows / tile) * tile)))


SCATTER_CANDIDATES = 4   # GPUs per draw costed exactly: the most padded rows, then the most rows


def routed_gemms_s(rows, m: ModelSpec, gpu: GPUSpec, s: ServeSpec, prof: Profile, sm: float,
                   hint_rows: float | None = None) -> float:
    """The routed experts' two grouped GEMMs (up with gate, down) of one GPU over its experts' rows, on
    the serve's kernel (serve.routed_gemm_kernel; DeepGEMM's takes the expected rows per expert as its
    host hint, `hint_rows`, default the GPU's mean)."""
    d, f = m.hidden_size, m.moe_intermediate_size
    if s.routed_gemm_kernel == "deepgemm_masked":
        params = masked_params(gpu.calibrated_as)
        return (masked_gemm_time_s(rows, 2 * f, d, gpu, params, expected_rows=hint_rows, sm_frac=sm)
                + masked_gemm_time_s(rows, d, f, gpu, params, expected_rows=hint_rows, sm_frac=sm))
    p = s.weight_precision
    return (compute.grouped_gemm_time_s(rows, 2 * f, d, p, gpu, prof, sm_frac=sm)
            + compute.grouped_gemm_time_s(rows, d, f, p, gpu, prof, sm_frac=sm))


def scattered_routed_s(loads: dict, m: ModelSpec, gpu: GPUSpec, s: ServeSpec, prof: Profile, sm: float,
                       tokens: float) -> float:
    """ADOPT_STRAGGLER_SCATTER: the mean over sampled routings of the slowest GPU's routed GEMMs. Per draw
    the SCATTER_CANDIDATES GPUs with the most padded rows (then rows) are costed exactly (each distinct
    set of rows once); the slowest of them is the draw's straggler."""
    draws = sampled_gpu_rows(loads, s.ep, m.top_k, max(1, round(tokens)))
    hint = float(draws.mean()) if draws.size else 0.0
    padded = padded_rows(draws, s, prof, hint).sum(-1)                 # (draws, ep)
    order = np.lexsort((draws.sum(-1), padded), axis=-1)[:, ::-1][:, :SCATTER_CANDIDATES]
    cost: dict = {}
    worst = []
    for d, gpus in enumerate(order):
        t_max = 0.0
        for g in gpus:
            key = tuple(sorted(float(r) for r in draws[d, g] if r > 0))
            if key not in cost:
                cost[key] = routed_gemms_s(list(key), m, gpu, s, prof, sm, hint) if key else 0.0
            t_max = max(t_max, cost[key])
        worst.append(t_max)
    return float(np.mean(worst))


# ---------------------------------------------------------------------------------------------
# Decode step


def _interp_log2(ep: int, xs: list, ys: list) -> float:
    x = math.log2(min(max(ep, xs[0]), xs[-1]))
    return float(np.interp(x, np.log2(xs), ys))


def _a2a_kind(gpu: GPUSpec, s: ServeSpec) -> str:
    return s.a2a if s.a2a != "auto" else ("nvlink" if s.ep <= gpu.gpus_per_node else "deepep_ll")


def decode_a2a_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, tokens: float, rows_frac: float) -> tuple[float, float]:
    """(dispatch, combine) seconds for `tokens` per GPU. NVLink: remote rows over the achieved
    NVLink bandwidth. DeepEP low-latency: all top-k rows over the table's bandwidth for this EP
    size (the straggler receives rows_frac x the mean)."""
    if tokens <= 0 or not m.is_moe or s.ep == 1:
        return 0.0, 0.0
    rows = tokens * m.top_k * rows_frac
    disp_row = m.hidden_size * (FP8_BYTES + FP32_BYTES / FP8_TILE)
    comb_row = m.hidden_size * BF16_BYTES
    if _a2a_kind(gpu, s) == "nvlink":
        remote = rows * (s.ep - 1) / s.ep
        return (remote * disp_row / gpu.nvlink_achieved_bytes_per_s + gpu.nvlink_latency_s,
                remote * comb_row / gpu.nvlink_achieved_bytes_per_s + gpu.nvlink_latency_s)
    t = serving_tables()["deepep_ll"]
    bw_d = _interp_log2(s.ep, t["ep"], t["dispatch_bytes_per_s"])
    bw_c = _interp_log2(s.ep, t["ep"], t["combine_bytes_per_s"])
    return (rows * disp_row / bw_d + gpu.scale_out_latency_s, rows * comb_row / bw_c + gpu.scale_out_latency_s)


def deepep_ll_table(gpu: GPUSpec) -> dict:
    """The [deepep_ll_sm] fit the kernels are priced from: the H200 pair's (s22dep); under
    ADOPT_DEEPEP_LL_SAME_HBM_ROWS the one measured on the GPU whose HBM bandwidth is nearest `gpu`'s (ratio in
    log terms: an H800 at 3.35 TB/s takes the H100 pair's, an H200 at 4.8 TB/s the H200 pair's)."""
    tables = serving_tables()
    if not ADOPT_DEEPEP_LL_SAME_HBM_ROWS:
        return tables["deepep_ll_sm"]
    return min((tables[name] for name in DEEPEP_LL_TABLES),
               key=lambda t: abs(math.log(t["measured_hbm_bytes_per_s"] / gpu.hbm_bytes_per_s)))


def deepep_ll_kernels_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, tokens: float, rows_frac: float) -> dict[str, float]:
    """Seconds each of DeepEP's low-latency kernels holds the SMs for one micro-batch of `tokens` a GPU
    (twin/data/serving_claims.toml [deepep_ll_sm], fitted from 2-GPU rows: fixed + per row x rows, the per-row
    part scaled by the measured GPU's HBM bandwidth over this GPU's). Rows: the dispatch's send and the
    combine's receive handle the GPU's own tokens x top_k; the dispatch's receive and the combine's send the
    rows it received (x rows_frac, the straggler's). The expert count nearest the scenario's physical experts
    picks the fit (the kernels' grid follows it). Zero where the all-to-all is not DeepEP's low-latency path."""
    if tokens <= 0 or not m.is_moe or s.ep == 1 or _a2a_kind(gpu, s) != "deepep_ll":
        return dict.fromkeys(DEEPEP_LL_KERNELS, 0.0)
    t = deepep_ll_table(gpu)
    physical = m.num_routed_experts + s.redundant_experts
    i = min(range(len(t["experts"])), key=lambda j: abs(t["experts"][j] - physical))
    own, received = tokens * m.top_k, tokens * m.top_k * rows_frac
    rows = {"dispatch_send": own, "dispatch_recv": received, "combine_send": received, "combine_recv": own}
    hbm = t["measured_hbm_bytes_per_s"] / gpu.hbm_bytes_per_s
    return {k: t[f"{k}_fixed_s"][i] + t[f"{k}_per_row_s"][i] * rows[k] * hbm for k in DEEPEP_LL_KERNELS}


def flashmla_rates(gpu: GPUSpec, s: ServeSpec) -> tuple[float, float]:
    """(bytes/s, FLOP/s) of FlashMLA's decode kernel on `gpu`: the published H800 memory-bound and
    compute-bound figures as fractions of the H800's peaks. The compute figure is that of the
    release s.flashmla_kernel names ('2504': 660 TFLOPS; '2502', the first release: 580 TFLOPS);
    the memory figure (3000 GB/s) is the same in both."""
    fm = serving_tables()["flashmla"]
    compute = fm["compute_flops_per_s_2502"] if s.flashmla_kernel == "2502" else fm["compute_flops_per_s"]
    return (gpu.hbm_bytes_per_s * fm["mem_bytes_per_s"] / fm["ref_hbm_bytes_per_s"],
            gpu.peak_bf16_flops_per_s * compute / fm["ref_peak_flops_per_s"])


def mla_decode_core_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, requests: float, q_tokens: int, ctx: float,
                      profile: Profile) -> tuple[float, float, float]:
    """(seconds, flops, bytes) of the decode attention core of one layer on one GPU, FlashMLA's
    roofline: the cache read once per request, q_tokens x heads queries against it."""
    h = m.num_heads // s.tp
    kv_layer = kv_bytes_per_token(m, s.kv_precision, include_mtp=False) / m.num_layers
    if m.attention == "mla":
        flops = 2.0 * requests * q_tokens * h * ctx * (2 * m.kv_lora_rank + m.qk_rope_head_dim)
        nbytes = requests * ctx * kv_layer
    else:
        kvh = max(1, m.num_kv_heads // s.tp)
        flops = 2.0 * requests * q_tokens * h * ctx * 2 * m.head_dim
        nbytes = requests * ctx * kv_layer * kvh / m.num_kv_heads
    mem_bw, peak = flashmla_rates(gpu, s)
    return max(flops / peak, nbytes / mem_bw) + profile.launch_s, flops, nbytes


def _gemm_s(m: int, n: int, k: int, precision: str, gpu: GPUSpec, prof: Profile, sm: float, groups: int = 1) -> float:
    """A forward GEMM, with the cast kernel of its activation when it runs in FP8 on DeepSeek's
    stack (compute.cast_time_s)."""
    cast_s = compute.cast_time_s("cast", m * k * groups, gpu, prof) if precision == "fp8" else 0.0
    return compute.gemm_time_s(m, n, k, precision, gpu, prof, groups=groups, sm_frac=sm) + cast_s


def _attn_proj_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, t: int, prof: Profile, sm: float) -> float:
    """Decode attention projections of one layer at m = t tokens on one GPU (heads / tp)."""
    return sum(_attn_proj_parts(m, gpu, s, t, prof, sm).values())


def _attn_proj_parts(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, t: int, prof: Profile, sm: float) -> dict[str, float]:
    """_attn_proj_s by kernel group: the projection GEMMs (each with its FP8 activation cast),
    the elementwise kernels (norms, RoPE, residual) and the TP all-reduce."""
    parts = {"attention_gemm": 0.0, "elementwise": 0.0, "tp_all_reduce": 0.0}
    if t <= 0:
        return parts
    p, d, h = s.weight_precision, m.hidden_size, m.num_heads // s.tp
    g = functools.partial(_gemm_s, gpu=gpu, prof=prof, sm=sm)
    mem = lambda b: compute.memory_time_s(b, gpu, prof)  # noqa: E731
    if m.attention == "mla":
        P, R, C, O = m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, m.v_head_dim
        gemm = 0.0
        if m.q_lora_rank:
            gemm += g(t, m.q_lora_rank, d, p) + g(t, h * (P + R), m.q_lora_rank, p)
            parts["elementwise"] += mem(2 * t * m.q_lora_rank * BF16_BYTES)     # q_norm
        else:
            gemm += g(t, h * (P + R), d, p)
        gemm += g(t, C + R, d, p)                                                # kv_down
        parts["elementwise"] += mem(2 * t * C * BF16_BYTES)                      # kv_norm
        gemm += g(t, C, P, "bf16", groups=h) + g(t, O, C, "bf16", groups=h)     # absorbed W_UK, W_UV per head
        gemm += g(t, d, h * O, p)                                                # o_proj
    else:
        kvh = max(1, m.num_kv_heads // s.tp)
        gemm = g(t, (h + 2 * kvh) * m.head_dim, d, p) + g(t, d, h * m.head_dim, p)
    parts["attention_gemm"] = gemm
    parts["elementwise"] += 3 * mem(3 * t * d * BF16_BYTES)                      # norm, rope, residual
    if s.tp > 1:                                                                 # all-reduce of the output
        parts["tp_all_reduce"] = 2 * comm.ring_collective_time_s(t * d * BF16_BYTES, s.tp, gpu, same_node=s.tp <= gpu.gpus_per_node)
    return parts


def _moe_compute_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, t_gpu: float, t_attn: int, loads: dict,
                   prof: Profile, sm: float) -> float:
    """Router, shared expert and the straggler's routed experts for one MoE layer."""
    return sum(_moe_compute_parts(m, gpu, s, t_gpu, t_attn, loads, prof, sm).values())


def _moe_compute_parts(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, t_gpu: float, t_attn: int, loads: dict,
                       prof: Profile, sm: float) -> dict[str, float]:
    """_moe_compute_s by kernel group: the router GEMM (gate), the shared expert's GEMMs, the routed
    experts' grouped GEMMs (with the down-projection's cast) and the elementwise kernels (SwiGLU,
    norm, residual, an NVLink dispatch's cast)."""
    parts = {"gate": 0.0, "shared_experts": 0.0, "routed_experts": 0.0, "elementwise": 0.0}
    if t_gpu <= 0:
        return parts
    p, d, f = s.weight_precision, m.hidden_size, m.moe_intermediate_size
    tr = max(1, round(t_gpu))
    parts["gate"] = compute.op_time_s(router_op(m, tr), "fwd", p, gpu, prof, sm)
    if m.num_shared_experts:   # shared experts run on the attention group's tokens (DP, replicated weights)
        sf = m.num_shared_experts * f
        ts = max(1, t_attn // s.tp) if s.dp_attention else tr
        parts["shared_experts"] = _gemm_s(ts, 2 * sf, d, p, gpu, prof, sm) + _gemm_s(ts, d, sf, p, gpu, prof, sm)
    if p == "fp8" and s.ep > 1 and _a2a_kind(gpu, s) == "nvlink":
        # an FP8 dispatch over NVLink casts its tokens first; DeepEP's low-latency kernels cast
        # inside the dispatch kernel, so their published latencies already hold that cast
        parts["elementwise"] += compute.cast_time_s("cast", tr * d, gpu, prof)
    rows = straggler_slot_rows(loads["slot_shares"], t_gpu * s.ep * m.top_k)
    if rows:
        scattered = ADOPT_STRAGGLER_SCATTER and s.ep > 1 and "phy2log_LP" in loads
        gemms = (scattered_routed_s(loads, m, gpu, s, prof, sm, t_gpu * s.ep) if scattered
                 else routed_gemms_s(rows, m, gpu, s, prof, sm))
        # the up-projection's rows arrive in FP8 (cast before the dispatch); the down-projection's are cast here
        parts["routed_experts"] = gemms + (compute.cast_time_s("cast", sum(rows) * f, gpu, prof) if p == "fp8" else 0.0)
        parts["elementwise"] += compute.memory_time_s(3 * sum(rows) * f * BF16_BYTES, gpu, prof)     # swiglu
    parts["elementwise"] += 2 * compute.memory_time_s(3 * tr * d * BF16_BYTES, gpu, prof)            # norm, residual
    return parts


def _dense_ffn_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, t: int, prof: Profile, sm: float) -> float:
    if t <= 0:
        return 0.0
    return sum(compute.op_time_s(op, "fwd", s.weight_precision, gpu, prof, sm) for op in dense_ffn_ops(m, t, s.tp)
               if op.kind != OpKind.MEMORY) + 3 * compute.memory_time_s(3 * t * m.hidden_size * BF16_BYTES, gpu, prof)


def decode_step(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, batch: int, profile: Profile | None = None) -> dict:
    """One decode step of one instance at concurrency `batch`: seconds per step and its parts."""
    prof = serving_profile(gpu, s, profile)
    q = 1 + s.mtp_draft_tokens
    reqs = requests_per_attention_group(s, batch)
    n = max(1, min(s.num_microbatches, reqs))      # no micro-batch without a request of its own
    ctx = s.input_len + s.output_len / 2.0
    sm = compute.sm_fraction(gpu, _comm_sms_decode(gpu, s))
    mm, ms = moe_view(m, s)
    loads = _load_figures(m, ms, gpu.gpus_per_node) if m.is_moe else {"rows_frac": 1.0, "rows_frac_contiguous": 1.0}

    def per_mb(frac: float) -> dict:
        r = reqs * frac
        t_attn = max(1, math.ceil(r * q)) if r > 0 else 0
        t_gpu = batch * q * frac / s.ep                   # tokens each GPU dispatches
        core, flops, nbytes = mla_decode_core_s(m, gpu, s, r, q, ctx, prof)
        proj = _attn_proj_parts(m, gpu, s, t_attn, prof, sm)
        a = sum(proj.values()) + core
        t_group = t_gpu * s.moe_tp                        # tokens of a GPU's expert group (MoE TP)
        parts = _moe_compute_parts(mm, gpu, ms, t_group, t_attn, loads, prof, sm) if m.is_moe else {}
        allreduce = moe_allreduce_s(m, gpu, s, t_group) if m.is_moe else 0.0
        moe = sum(parts.values()) + allreduce
        dense = _dense_ffn_s(m, gpu, s, t_attn, prof, sm)
        disp, comb = decode_a2a_s(mm, gpu, ms, t_group, loads["rows_frac"]) if m.is_moe else (0.0, 0.0)
        ll = (deepep_ll_kernels_s(mm, gpu, ms, t_group, loads["rows_frac"]) if m.is_moe and ADOPT_DEEPEP_LL_SM_TIME
              else dict.fromkeys(DEEPEP_LL_KERNELS, 0.0))
        # the table's kernel (no hook) holds send, flight and receive: on no SMs only the flight is left
        disp = max(disp - ll["dispatch_send"] - ll["dispatch_recv"], 0.0)
        comb = max(comb - ll["combine_send"] - ll["combine_recv"], 0.0)
        moe += sum(ll.values())
        groups = {"attention_core": core, "attention_gemm": proj["attention_gemm"] + parts.get("gate", 0.0),
                  "shared_experts": parts.get("shared_experts", 0.0), "routed_experts": parts.get("routed_experts", 0.0),
                  "elementwise": proj["elementwise"] + parts.get("elementwise", 0.0), "dispatch": disp, "combine": comb,
                  "tensor_parallel": proj["tp_all_reduce"] + allreduce, "deepep_ll_kernels": sum(ll.values())}
        # the compute pieces of DeepSeek's decode pipeline: ATTN-0 (before the core), ATTN-1 (core,
        # output side, gate), SHARED, MLP (routed experts, their elementwise kernels, MoE TP reduce)
        after_core = _attn_after_core_s(m, gpu, s, t_attn, prof, sm) + proj["tp_all_reduce"]
        # (DeepEP's kernels: dispatch send after ATTN-1, its receive and the combine's send around MLP, the
        # combine's receive before the next ATTN-0)
        stages = {"attn0": a - core - after_core + ll["combine_recv"],
                  "attn1": core + after_core + parts.get("gate", 0.0) + ll["dispatch_send"],
                  "shared": parts.get("shared_experts", 0.0),
                  "mlp": moe - parts.get("gate", 0.0) - parts.get("shared_experts", 0.0) - ll["combine_recv"]
                  - ll["dispatch_send"], "dispatch": disp, "combine": comb}
        return {"attn": a, "mla_core": core, "mla_core_flops": flops, "mla_core_bytes": nbytes,
                "moe": moe, "dense_ffn": dense, "a2a": disp + comb, "t_attn": t_attn, "groups": groups, "stages": stages}

    mb = per_mb(1.0 / n)
    moe_layers, dense_layers = m.num_moe_layers, m.num_layers - m.num_moe_layers
    extra = s.mtp_draft_tokens  # the MTP module runs once per drafted token: one more block each
    c_moe, c_dense, a = mb["attn"] + mb["moe"], mb["attn"] + mb["dense_ffn"], mb["a2a"]
    staged = ADOPT_DECODE_STAGE_OVERLAP and n == 2 and m.is_moe
    if n == 1:
        moe_s = (moe_layers + extra) * (c_moe + a)
    elif staged:
        moe_s = decode_stage_layers_s(moe_layers + extra, **mb["stages"])
    else:
        moe_s = (moe_layers + extra) * n * max(c_moe, a) + min(c_moe, a)
    dense_s = dense_layers * n * c_dense
    t_head = max(1, reqs * q)
    head_s = (compute.gemm_time_s(t_head, m.vocab_size // s.tp, m.hidden_size, "bf16", gpu, prof)
              + compute.memory_time_s(3 * t_head * m.vocab_size / s.tp * FP32_BYTES, gpu, prof)) * (1 + extra)
    step = moe_s + dense_s + head_s + s.host_overhead_s
    tokens_per_req = 1.0 + sum(s.mtp_acceptance_frac ** (i + 1) for i in range(s.mtp_draft_tokens))
    return {
        "step_s": step,
        "tpot_s": step / tokens_per_req,
        "tokens_per_request_per_step": tokens_per_req,
        "num_microbatches": n,
        "layers_moe_s": moe_s, "layers_dense_s": dense_s, "head_s": head_s, "host_s": s.host_overhead_s,
        "per_layer_attn_s": n * mb["attn"], "per_layer_mla_core_s": n * mb["mla_core"],
        "per_layer_moe_compute_s": n * mb["moe"], "per_layer_a2a_s": n * mb["a2a"],
        # one micro-batch of one MoE layer by kernel group (the gate in attention_gemm, as DeepSeek's
        # profiles book it under ATTN): what calibration/serving_trace.py compares with the trace
        "per_microbatch_groups_s": mb["groups"],
        # a MoE layer in steady state: n x max(compute, all-to-all) of one micro-batch
        "per_moe_layer_s": (decode_stage_layers_s(9, **mb["stages"]) - decode_stage_layers_s(8, **mb["stages"])) if staged
        else n * max(c_moe, a) if n > 1 else c_moe + a,
        "mla_core_bound": "compute" if mb["mla_core_flops"] / max(mb["mla_core_bytes"], 1) >
        flashmla_rates(gpu, s)[1] / flashmla_rates(gpu, s)[0] else "memory",
        "rows_frac": loads["rows_frac"], "rows_frac_contiguous": loads["rows_frac_contiguous"],
    }


def decode_stage_layers_s(layers: int, attn0: float, attn1: float, shared: float, mlp: float, dispatch: float,
                          combine: float) -> float:
    """Seconds of `layers` MoE layers of a decode step run as two micro-batches A and B in DeepSeek's
    decode pipeline (open-infra-index day 6: "we subdivide the attention layer into two steps and
    use a 5-stage pipeline"; its figure, as profile-data assets/decode.jpg, orders each half layer
    SHARED, ATTN-0, MLP, ATTN-1 with the other micro-batch's dispatch and combine under them).

    Each micro-batch's layer is ATTN-0 -> ATTN-1 (core, output projection, gate) -> dispatch -> MLP
    (routed experts) -> combine -> the next layer's ATTN-0; its SHARED expert runs after its ATTN-1.
    The compute stream runs, per half layer, x's SHARED, y's ATTN-0, x's MLP, y's ATTN-1 (x, y = A, B
    then B, A); the all-to-all, on no SMs, starts as soon as its input is computed and the previous
    one is done. So x's combine and y's dispatch hide only under y's ATTN-1, x's SHARED and
    ATTN-0 until x's MLP needs the dispatch: not under the whole compute of a layer, as
    n x max(compute, all-to-all) assumes. With no all-to-all it is 2 x layers x the compute."""
    comp = attn0 + attn1                        # fill: A's first attention
    comm = comp + dispatch                      # A's first dispatch
    dispatch_done = {"A": comm, "B": 0.0}
    combine_done = {"A": 0.0, "B": 0.0}
    for layer in range(layers):
        for x, y, y_attends in (("A", "B", True), ("B", "A", layer + 1 < layers)):
            comp += shared                                              # x's shared expert
            if y_attends:
                comp = max(comp, combine_done[y]) + attn0               # y's attention needs its combine
            comp = max(comp, dispatch_done[x]) + mlp                    # x's experts need its dispatch
            comm = max(comm, comp) + combine
            combine_done[x] = comm
            if y_attends:
                comp += attn1
                comm = max(comm, comp) + dispatch
                dispatch_done[y] = comm
    return max(comp, combine_done["A"], combine_done["B"])


def _attn_after_core_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, t: int, prof: Profile, sm: float) -> float:
    """The part of _attn_proj_parts that runs after the attention core: the absorbed W_UV, the output
    projection and the residual add (DeepSeek's ATTN-1 side of the decode pipeline)."""
    if t <= 0:
        return 0.0
    p, d, h = s.weight_precision, m.hidden_size, m.num_heads // s.tp
    residual = compute.memory_time_s(3 * t * d * BF16_BYTES, gpu, prof)
    if m.attention == "mla":
        return (_gemm_s(t, m.v_head_dim, m.kv_lora_rank, "bf16", gpu, prof, sm, groups=h)
                + _gemm_s(t, d, h * m.v_head_dim, p, gpu, prof, sm) + residual)
    return _gemm_s(t, d, h * m.head_dim, p, gpu, prof, sm) + residual


def _comm_sms_decode(gpu: GPUSpec, s: ServeSpec) -> int:
    return s.prefill_comm_sms if s.decode_a2a_uses_sms else 0


def weight_stream_floor_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec) -> float:
    """Lower bound on a decode step: every weight byte a GPU holds read once at full HBM
    bandwidth (all experts touched at large batch). TPOT >= this / tokens per step only when
    every expert is hit; the tests use it with a large batch."""
    return weight_breakdown(m, s)["weights_per_gpu_bytes"] / gpu.hbm_bytes_per_s


# ---------------------------------------------------------------------------------------------
# Prefill


def overlapped_layers_s(layers: int, n: int, pre_s: float, dispatch_s: float, post_s: float, combine_s: float) -> float:
    """Seconds of `layers` MoE layers run as `n` micro-batches on two streams, each micro-batch's
    layer being: compute before the dispatch (attention, router), dispatch, compute after it
    (experts), combine, and the next layer's compute after the combine.

    The compute stream runs every micro-batch's pre-dispatch compute, then every one's experts,
    layer after layer; the communication stream runs each all-to-all as soon as its input is
    computed and the stream is free (DeepSeek's prefill overlap, profile-data README and day-6 post:
    the computation of one micro-batch overlaps the communication of the other; SGLang's two-batch
    overlap runs the same order: attention, yield, dispatch, experts, yield, combine). The overlap
    carries over layer boundaries, so the fill and drain are paid once per forward: in steady
    state a layer takes n x max(compute, communication) where each compute piece covers the
    all-to-all that follows it, more where one does not (a bubble on the compute stream).
    n = 1 is compute and communication in sequence."""
    comp = comm_free = 0.0
    combine_done = [0.0] * n
    for _ in range(layers):
        dispatch_done = []
        for k in range(n):
            comp = max(comp, combine_done[k]) + pre_s
            comm_free = max(comm_free, comp) + dispatch_s
            dispatch_done.append(comm_free)
        for k in range(n):
            comp = max(comp, dispatch_done[k]) + post_s
            comm_free = max(comm_free, comp) + combine_s
            combine_done[k] = comm_free
    return max(comp, comm_free)


def prefix_expand_s(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, prefix_tokens: int, profile: Profile | None = None) -> float:
    """Seconds, over all layers of one GPU, to expand the cached latents of `prefix_tokens` prefix
    tokens into per-head keys and values for a prefill chunk that attends over them (MLA only).

    A chunk behind a cached prefix (a prefix-cache hit or the prompt's earlier chunks) attends over
    the prefix's keys and values, but MLA caches only the latent (d_c + d_rope per token): the
    compute-friendly prefill path multiplies the prefix latents by W_UK and W_UV again, a GEMM of
    m = prefix tokens, n = heads x (d_nope + d_v), k = d_c per layer, after reading them from the
    cache (vLLM v1/attention/backends/mla/common.py, "Chunked Prefill": cache_k_nope_chunk =
    cache_kv_c_chunk @ W_UK, cache_v_chunk = cache_kv_c_chunk @ W_UV; our real/serve/forward.py
    prefill_attention expands prefix + chunk alike). The chunk's own tokens are expanded in
    attention_ops (kv_up); their attention over the prefix is in the causal span."""
    if m.attention != "mla" or prefix_tokens <= 0:
        return 0.0
    prof = serving_profile(gpu, s, profile)
    sm = compute.sm_fraction(gpu, s.prefill_comm_sms if m.is_moe and s.ep > 1 else 0)
    h = m.num_heads // s.tp
    per_layer = (_gemm_s(prefix_tokens, h * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank, s.weight_precision, gpu, prof, sm)
                 + compute.memory_time_s(prefix_tokens * (m.kv_lora_rank + m.qk_rope_head_dim) * BF16_BYTES, gpu, prof))
    return m.num_layers * per_layer


def prefill_forward(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, profile: Profile | None = None,
                    skip_ops: tuple[str, ...] = ()) -> dict:
    """One prefill forward of `prefill_chunk_tokens` per GPU (prompts of input_len), less the ops named in
    `skip_ops` (those an engine's own terms price instead: twin.serving.timing.ADOPT_ENGINE_PREFILL_KERNELS)."""
    prof = serving_profile(gpu, s, profile)
    T = s.prefill_chunk_tokens
    n = max(1, min(s.num_microbatches, T))
    sm = compute.sm_fraction(gpu, s.prefill_comm_sms if m.is_moe and s.ep > 1 else 0)
    mm, ms = moe_view(m, s)
    loads = _load_figures(m, ms, gpu.gpus_per_node) if m.is_moe else {"rows_frac": 1.0}
    t = T // n
    t_attn = t * s.tp                 # a TP group's tokens: each GPU computes its heads for all of them
    seqs = t_attn / s.input_len       # sequences (fractional) whose attention this GPU's head slice computes

    groups = dict.fromkeys(PREFILL_GROUPS, 0.0)   # one micro-batch of one MoE layer by kernel group

    def attn_s() -> float:
        total = 0.0
        for op in attention_ops(m, 1, t_attn, s.tp):
            if op.name in skip_ops:
                continue
            if op.kind == OpKind.ATTENTION:
                one = dataclasses.replace(op, batch=1, seq_len=s.input_len, causal=True)
                x = (compute.attention_time_s(one, "fwd", gpu, prof, sm) - prof.launch_s) * seqs + prof.launch_s
            else:
                x = compute.op_time_s(op, "fwd", s.weight_precision, gpu, prof, sm)
            groups[_prefill_group(op)] += x
            total += x
        if s.tp > 1:
            x = 2 * comm.ring_collective_time_s(t_attn * m.hidden_size * BF16_BYTES, s.tp, gpu, same_node=s.tp <= gpu.gpus_per_node)
            groups["tensor_parallel"] += x
            total += x
        return total

    a = attn_s()
    pre_c = post_c = disp = comb = 0.0     # per micro-batch: compute before the dispatch and after it, the two all-to-alls
    if m.is_moe:
        load = ExpertLoad(loads["rows_frac"], loads["rows_frac"], loads["rows_frac"])
        dispatched = False
        for op in moe_ops(mm, t * s.moe_tp, ms.ep, gpu.gpus_per_node, s.max_nodes_per_token, load):
            if op.kind in ALL_TO_ALL_KINDS:
                x = comm.all_to_all_time_s(op, gpu) if ms.ep > 1 else 0.0
                disp, comb = (disp, comb + x) if dispatched else (disp + x, comb)
                dispatched = True
                continue
            if op.name in skip_ops:
                continue
            x = compute.op_time_s(op, "fwd", s.weight_precision, gpu, prof, sm)
            groups[_prefill_group(op)] += x
            if dispatched:
                post_c += x
            else:
                pre_c += x
        x = moe_allreduce_s(m, gpu, s, t * s.moe_tp)
        groups["tensor_parallel"] += x
        post_c += x
        groups.update(dispatch=disp, combine=comb)
    moe_c, moe_a = pre_c + post_c, disp + comb
    dense_c = _dense_ffn_s(m, gpu, s, t, prof, sm)
    moe_s = overlapped_layers_s(m.num_moe_layers, n, a + pre_c, disp, post_c, comb) if m.is_moe else 0.0
    dense_s = (m.num_layers - m.num_moe_layers) * n * (a + dense_c)
    last = max(1, round(T / s.input_len))
    head_s = compute.gemm_time_s(last, m.vocab_size // s.tp, m.hidden_size, "bf16", gpu, prof)
    fwd = moe_s + dense_s + head_s
    return {"forward_s": fwd, "tokens_per_gpu": T, "input_tokens_per_s_per_gpu": T / fwd,
            "ttft_s": math.ceil(s.input_len / T) * fwd,
            "per_layer_attn_s": n * a, "per_layer_moe_compute_s": n * moe_c, "per_layer_a2a_s": n * moe_a,
            "per_microbatch_groups_s": groups,
            # the forward's three parts: MoE layers (overlapped), dense layers, LM head
            "moe_layers_s": moe_s, "dense_layers_s": dense_s, "head_s": head_s,
            # a MoE layer in steady state: what one more layer adds to the overlapped schedule
            "per_moe_layer_s": (overlapped_layers_s(9, n, a + pre_c, disp, post_c, comb)
                                - overlapped_layers_s(8, n, a + pre_c, disp, post_c, comb)) if m.is_moe else 0.0}


PREFILL_GROUPS = ("attention_core", "attention_gemm", "shared_experts", "routed_experts", "elementwise", "dispatch",
                  "combine", "tensor_parallel")


def _prefill_group(op) -> str:
    """The kernel group of one prefill op (the router in attention_gemm: DeepSeek's prefill profile
    books the routing gate under ATTN)."""
    if op.kind == OpKind.ATTENTION:
        return "attention_core"
    if op.kind == OpKind.GROUPED_GEMM:
        return "routed_experts"
    if op.kind == OpKind.GEMM:
        return "shared_experts" if op.name.startswith("shared_") else "attention_gemm"
    return "elementwise"
