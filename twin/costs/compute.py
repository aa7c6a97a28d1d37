"""Compute-time cost functions: (op shape, GPU, profile) -> seconds. Pure, no state.

Roofline with measured efficiency: time = max(FLOPs / (peak * eff(shape) * sm_frac),
bytes / (HBM bandwidth * memory_eff)) + launch overhead. `sm_frac` is the share of SMs left to
computation when some are reserved for communication kernels (V3 §3.2.2 reserves 20 of 132):
compute-bound kernels slow in proportion, bandwidth-bound ones keep saturating HBM.
"""

from __future__ import annotations

import numpy as np

from twin.costs.flops import (BF16_BYTES, CAST_BYTES_PER_ELEM, FP8_BYTES, GEMM_KINDS, Op, OpKind, attention_bwd_flops,
                              attention_flops, gemm_bytes)
from twin.costs.gemm_alignment import (align_class, alignment_factor, curve_rate_flops_per_s, operand_alignments,
                                      pattern_factor)
from twin.costs.profile import GemmCurve, Profile
from twin.core.specs import GPUSpec

# (s23align) a dense BF16 GEMM whose widths are not multiples of 8 elements costs its aligned time
# times the measured factor of its alignment class (twin.costs.gemm_alignment); off: every GEMM
# costs as aligned (docs/notes/s23align_rule.md)
ADOPT_GEMM_ALIGNMENT = False
# (s23align2) the second form: a misaligned dense BF16 GEMM's compute term (not its launch or memory
# term) times the measured factor of its operand pattern, the kernel family and which operands are
# misaligned (twin.costs.gemm_alignment.pattern_factor); takes precedence over ADOPT_GEMM_ALIGNMENT;
# off: as above (docs/notes/s23align2_rule.md)
ADOPT_GEMM_ALIGNMENT_PATTERN = False
# (s24align3) the third form: a misaligned dense BF16 GEMM's compute term is its FLOPs over the
# achieved rate of its cutlass kernel family's own curve (twin.costs.gemm_alignment
# .curve_rate_flops_per_s: family, pass, misaligned operands, last-wave fill, contraction, output
# size), not the aligned curve's time; launch and memory terms unchanged; takes precedence over
# both forms above; off: as above (docs/notes/s24align3_rule.md)
ADOPT_GEMM_ALIGNMENT_CURVE = False
# (s24long) FlashAttention-2 at call shapes its curves (fitted on 32-head calls) do not hold: a call of
# fewer heads per GPU (Llama 3.1 405B / 70B under TP 8: 16 / 8 heads), or of few queries over many keys
# (Llama 3's all-gather CP chunks), costs its curve time x the class's measured ratio
# (fa2_shape_factor); off: every FA2 call on the curve (docs/notes/s24long_rule.md)
ADOPT_FA2_FEW_HEADS_FACTOR = False     # not adopted: fitting ratio 0.991 (8K 1.041, 32K 0.941), no shift
ADOPT_FA2_FEW_QUERIES_FACTOR = True    # adopted: C3 (a)-(d) hold (docs/notes/s24long.md)
FA2_CURVE_HEADS = 32          # heads of the FA2 records the curves' FA2 ratio and checks come from (h100/cp_chunks.csv)
FEW_QUERIES_KV_RATIO = 8      # key length >= 8 x query length: Llama 3's CP16 chunks (4K over 64K-68K keys)
# measured time / the curve's, forward + backward, the class's fitting calls (campaign s24long run 1 on an
# H100 80GB HBM3 at 700 W, torch 2.11.0+cu130, calibration/measurements/h100/long_attn.csv;
# calibration.long_attention.class_verdict): few_queries the median of 4K x 64K lower-right 0.948 and
# unmasked 0.940 (held out: 4K x 68K, +5.4% -> -0.5%); few_heads not adopted, so 1
FA2_SHAPE_TIME_FACTOR = {"few_heads": 1.0, "few_queries": 0.944}


def sm_fraction(gpu: GPUSpec, comm_sms: int) -> float:
    return (gpu.num_sms - comm_sms) / gpu.num_sms


def untold_sm_slowdown(profile: Profile, precision: str, comm_sms: int, gpu: GPUSpec) -> float:
    """Time factor of a compute kernel that is not told that communication holds `comm_sms` SMs:
    it launches for every SM and runs beside the kernels holding them (Profile.sm_reserve, measured).
    Linear in the SM count between measured points; past the last, that point's factor scaled by
    the SM shares (sm_fraction). Raises ValueError where the profile has no such measurement."""
    points = profile.sm_reserve.get(f"untold_{precision}")
    if not points:
        raise ValueError(f"profile {profile.gpu} has no measured slowdown of {precision} kernels beside held SMs "
                         "(sm_reserve.csv); use plan.comm_sms_told = true or a calibrated H100/H200 profile")
    sms, factor = zip(*sorted(points))
    if comm_sms <= sms[-1]:
        return float(np.interp(comm_sms, sms, factor))
    return factor[-1] * sm_fraction(gpu, sms[-1]) / sm_fraction(gpu, comm_sms)


def gemm_time_s(m: int, n: int, k: int, precision: str, gpu: GPUSpec, profile: Profile,
                groups: int = 1, sm_frac: float = 1.0, out_bytes: float = BF16_BYTES,
                eff_scale: float = 1.0, align: int = 8, pass_: str = "fwd",
                widths: tuple[int, int] | None = None) -> float:
    """One (grouped) GEMM kernel on quantized operands (the quantization is costed apart:
    `fp8_cast_time_s` on DeepSeek's stack, `quantize_time_s` on real/'s eager one). `eff_scale`
    scales the curve's efficiency for a kernel variant the curve was not measured with (the
    1x128 x 1x128 weight-gradient recipe, Profile.fp8_stack). `align`: the alignment class of
    its row lengths (twin.costs.gemm_alignment.align_class; 8 where aligned) and `pass_` its
    layer pass ("fwd", "dgrad", "wgrad"): under ADOPT_GEMM_ALIGNMENT a dense BF16 GEMM of class
    below 8 costs the aligned time times its measured factor. `widths`: the linear layer's (outputs,
    inputs) where the GEMM runs them (None: aligned, e.g. a stand-in width): under
    ADOPT_GEMM_ALIGNMENT_PATTERN a dense BF16 GEMM's compute term is scaled by its operand pattern's
    factor; under ADOPT_GEMM_ALIGNMENT_CURVE a misaligned one's compute term is its FLOPs over its
    cutlass family's rate curve (the sm_frac share and the in-layer term as any GEMM's)."""
    curve = (profile.grouped_gemm if groups > 1 else profile.gemm)[precision]
    eff = curve.eff(m, n, k) * eff_scale
    flops = 2.0 * m * n * k * groups
    in_bytes = FP8_BYTES if precision == "fp8" else BF16_BYTES
    bytes_moved = groups * gemm_bytes(m, n, k, in_bytes, out_bytes)
    compute_s = flops / (gpu.peak_flops_per_s(precision) * eff * sm_frac)
    tile = curve.wave_tile or profile.wave_tile
    compute_s *= wave_factor(groups * _tiles(m, n, tile), gpu, tile, sm_frac)
    memory_s = bytes_moved / (gpu.hbm_bytes_per_s * profile.gemm_streaming_eff)
    setup_s = profile.grouped_setup_s if groups > 1 else 0.0
    in_layer = profile.in_layer_factor(gemm_class("grouped_gemm" if groups > 1 else "gemm", precision))
    compute_s, kernel_factor = in_layer_gemm_split(profile, compute_s, in_layer)
    dense_bf16 = groups == 1 and precision == "bf16"
    curve_rate = None
    if ADOPT_GEMM_ALIGNMENT_CURVE and dense_bf16 and widths is not None:
        curve_rate = curve_rate_flops_per_s(profile.gpu, m, n, k, operand_alignments(*widths, pass_), pass_, gpu.num_sms)
    if curve_rate is not None:   # the cutlass kernel's own rate replaces the aligned curve's compute term
        compute_s, kernel_factor = in_layer_gemm_split(profile, flops / (curve_rate * sm_frac), in_layer)
    elif ADOPT_GEMM_ALIGNMENT_PATTERN and dense_bf16 and widths is not None:
        compute_s *= pattern_factor(profile.gpu, operand_alignments(*widths, pass_))
    aligned_s = (roofline_s(compute_s, memory_s, profile.gemm_overlap_p) + profile.launch_s + setup_s) * kernel_factor
    if ADOPT_GEMM_ALIGNMENT and not (ADOPT_GEMM_ALIGNMENT_PATTERN or ADOPT_GEMM_ALIGNMENT_CURVE) and align < 8 \
            and dense_bf16:
        return aligned_s * alignment_factor(profile.gpu, align, pass_)
    return aligned_s


def in_layer_gemm_split(profile: Profile, compute_s: float, in_layer: float) -> tuple[float, float]:
    """(compute seconds, factor on the whole kernel time) of a GEMM under its in-layer factor: the
    whole time (s15gl's G) or, with Profile.in_layer_gemm_compute_only (s15gl2's G2), the compute
    time alone (the factor was measured on compute-bound GEMMs: a clock and L2 effect on the math,
    not on operand streaming, launch or setup)."""
    if profile.in_layer_gemm_compute_only:
        return compute_s * in_layer, 1.0
    return compute_s, in_layer


def gemm_class(table: str, precision: str) -> str:
    """Profile.in_layer key of a GEMM kernel: its table and precision family."""
    return f"{table}/{'fp8' if str(precision).startswith('fp8') else 'bf16'}"


def batched_gemm_curve(profile: Profile, precision: str, align: int, kind: str):
    """The batched GEMM curve of a GEMM family and alignment (Profile.batched_gemm
    "<precision>/<kind>/align<a>": cuBLAS runs other kernels for each operand layout and alignment,
    and picks its tiles per family), else the nearest measured coarser alignment's of that family
    (align 2 without its own curve runs as align 1's), else the dense GEMM curve (unmeasured)."""
    for a in (8, 4, 2, 1):
        key = f"{precision}/{kind}/align{a}"
        if a <= align and key in profile.batched_gemm:
            return profile.batched_gemm[key]
    return profile.gemm[precision]


def batched_gemm_time_s(batch: int, m: int, n: int, k: int, align: int, kind: str, gpu: GPUSpec, profile: Profile,
                        precision: str = "bf16", sm_frac: float = 1.0) -> float:
    """One batched GEMM kernel (cuBLAS bmm: `batch` independent m x n x k products, e.g. the
    absorbed MLA's scores of every sequence against its cached latents): the roofline of all the
    products' FLOPs and operand bytes under the curve of its family (`kind`, e.g. the absorbed MLA's
    "scores_latent") and alignment (batched_gemm_curve), the tile-wave model over the batch's tiles where the curve has one, plus
    the curve's fixed time per call (BatchedCurve.fixed_s; none for the dense curve)."""
    curve = batched_gemm_curve(profile, precision, align, kind)
    eff = curve.eff(m, n, k)
    flops = 2.0 * batch * m * n * k
    in_bytes = FP8_BYTES if precision == "fp8" else BF16_BYTES
    compute_s = flops / (gpu.peak_flops_per_s(precision) * eff * sm_frac)
    tile = curve.wave_tile
    compute_s *= wave_factor(batch * _tiles(m, n, tile), gpu, tile, sm_frac)
    memory_s = batch * gemm_bytes(m, n, k, in_bytes, BF16_BYTES) / (gpu.hbm_bytes_per_s * profile.gemm_streaming_eff)
    return roofline_s(compute_s, memory_s, profile.gemm_overlap_p) + profile.launch_s + getattr(curve, "fixed_s", 0.0)


def _tiles(rows: float, cols: float, tile: int) -> int:
    if tile <= 0:
        return 0
    return -(-int(rows) // tile) * -(-int(cols) // tile)


def wave_factor(tiles: int, gpu: GPUSpec, wave_tile: int, sm_frac: float = 1.0) -> float:
    """Tile-wave quantization: a GEMM kernel runs its output tiles (wave_tile square, e.g.
    128 x 128) in waves of one tile per SM; the last wave is partly empty, so a kernel of `tiles`
    tiles takes ceil(tiles / SMs) full waves of time. Returns (waves * SMs) / tiles >= 1 (1 where
    the kernel has no tile model, wave_tile 0). The efficiency curves then describe the per-tile
    rate of a full wave."""
    if wave_tile <= 0 or tiles <= 0:
        return 1.0
    sms = max(1, int(gpu.num_sms * sm_frac))
    return -(-tiles // sms) * sms / tiles


def grouped_gemm_time_s(rows_per_group, n: int, k: int, precision: str, gpu: GPUSpec, profile: Profile,
                        sm_frac: float = 1.0, transposed: bool = False, compute_factor: float = 1.0) -> float:
    """One grouped GEMM kernel whose groups have different row counts (experts with uneven load):
    every group's tiles run at that group's efficiency, all groups share one launch. Groups
    without rows launch no tiles (in the weight-gradient form they still write their n x k
    output); the call pays launch_s and the grouped setup once. `transposed`: the weight-gradient form (n x k per group,
    contracted over the group's rows), costed with the rows as the contraction dimension.
    `compute_factor` scales the compute time before the roofline (a caller's clock correction:
    calibration.predict under s16gg2's ADOPT_GROUPED_LAYER_CLOCK); memory, launch and setup unscaled."""
    curve = profile.grouped_gemm[precision]
    if transposed:  # the weight-gradient kernel's own curve where the profile has one
        curve = profile.grouped_gemm.get(wgrad_curve(precision), curve)
    in_bytes = FP8_BYTES if precision == "fp8" else BF16_BYTES
    compute_s, bytes_moved = 0.0, 0.0
    peak = gpu.peak_flops_per_s(precision) * sm_frac
    tiles, tile = 0, curve.wave_tile or profile.wave_tile
    # each distinct row count is costed once: groups of equal load (a benchmark's uniform split, a
    # fit's hundreds of evaluations) cost alike; the sums still run group by group, in order
    per_rows: dict = {}
    for rows in rows_per_group:
        terms = per_rows.get(rows)
        if terms is None:
            terms = per_rows[rows] = _group_terms(rows, n, k, curve, peak, in_bytes, tile, profile.group_row_tile,
                                                  transposed)
        compute_s += terms[0]
        bytes_moved += terms[1]
        tiles += terms[2]
    compute_s *= wave_factor(tiles, gpu, tile, sm_frac) * compute_factor
    memory_s = bytes_moved / (gpu.hbm_bytes_per_s * profile.gemm_streaming_eff)
    compute_s, kernel_factor = in_layer_gemm_split(profile, compute_s,
                                                   profile.in_layer_factor(gemm_class("grouped_gemm", precision)))
    return ((roofline_s(compute_s, memory_s, profile.gemm_overlap_p) + profile.launch_s + profile.grouped_setup_s)
            * kernel_factor)


def _group_terms(rows, n: int, k: int, curve: GemmCurve, peak: float, in_bytes: float, tile: int, row_tile: int,
                 transposed: bool) -> tuple[float, float, int]:
    """One group of a grouped GEMM (grouped_gemm_time_s): (compute seconds at full wave, HBM bytes,
    output tiles)."""
    if rows <= 0:
        # an expert that got no rows launches no tiles; in the weight-gradient form it still writes its (zero) gradient
        return 0.0, (n * k * BF16_BYTES if transposed else 0.0), 0
    rows_run = rows if transposed else padded_group_rows(rows, row_tile)
    eff = curve.eff(n, k, rows) if transposed else curve.eff(rows_run, n, k)
    return (2.0 * rows_run * n * k / (peak * eff), gemm_bytes(rows, n, k, in_bytes),
            _tiles(n, k, tile) if transposed else _tiles(rows, n, tile))


def wgrad_curve(label: str) -> str:
    """Profile key of a grouped GEMM's weight-gradient form (x^T g per group, contracted over the
    group's rows): torch._grouped_mm runs it as its own CUTLASS configuration (transposed A
    operand; another kernel template in calibration/measurements/<gpu>/kernels.csv)."""
    return f"{label}/wgrad"


def roofline_s(compute_s: float, memory_s: float, p: float) -> float:
    """A GEMM kernel's time from its compute and memory times: max() where they overlap fully
    (p = 0), else the p-norm (c^p + m^p)^(1/p), which is max() for large p and their sum for p = 1:
    near the ridge point a tiled kernel's prologue loads and epilogue stores do not hide behind
    its math (profile.gemm_overlap_p, fitted)."""
    if p <= 0:
        return max(compute_s, memory_s)
    hi = max(compute_s, memory_s)
    if hi <= 0:
        return 0.0
    return hi * ((compute_s / hi) ** p + (memory_s / hi) ** p) ** (1.0 / p)


def padded_group_rows(rows: float, tile: int) -> float:
    """Rows a grouped GEMM kernel computes for a group of `rows`: the kernel runs whole row tiles,
    `tile` rows (a 2-CTA cluster of 128-row tiles on Hopper) with a lone half-tile CTA for a group
    that fits one, so a group of 1..tile/2 rows costs tile/2 rows of work and a larger one is cut
    into `tile`-row tiles, the last partly empty (0 = no tiling model). An expected load below one
    row (serving: the chance the expert gets a token at all) costs that fraction of a half-tile.
    E.g. tile 256: 0.25 -> 32, 16 -> 128, 100 -> 128, 192 -> 256, 384 -> 512, 768 -> 768.
    Measured (calibration/measurements/h100/kernels.csv): a V3-slice MoE layer's two forward
    grouped GEMMs over 128 experts take 4.2 ms at 64 rows per expert and 5.5 ms with Zipf-1.5
    skew at the same mean, the skewed experts' part-empty tiles."""
    if tile <= 0 or rows <= 0:
        return max(rows, 0.0)
    half = tile // 2
    if rows < 1.0:
        return rows * half
    if rows <= half:
        return float(half)
    return float(-(-rows // tile) * tile)


def quantize_time_s(elems: float, num_kernels: int, gpu: GPUSpec, profile: Profile) -> float:
    """Unfused FP8 quantization of `elems` BF16 values by eager ops (real/fp8.py): all passes'
    bytes at the HBM roofline, plus one launch per kernel. Zero on DeepSeek's stack (its casts: cast_time_s)."""
    if profile.fp8_quant_fused:
        return 0.0
    return ((elems * profile.quant_bytes_per_elem / (gpu.hbm_bytes_per_s * profile.memory_eff)
             + num_kernels * profile.launch_s) * profile.in_layer_factor("memory"))


def fp8_cast_passes(op: Op, phase: str) -> list[tuple[str, float]]:
    """(cast kind, elements) of the cast kernels that feed an FP8 GEMM op's phase on DeepSeek's
    stack (V3 report §3.3.2-3.3.3, §3.5.2), op in forward form x (rows x k) . W^T -> y (rows x n):
    fwd: x cast in 1x128 tiles (none when x arrived already in FP8, `fp8_input`: the routed
    experts' rows, quantized before the dispatch); bwd_input: the output gradient dy (rows x n)
    cast in 1x128 tiles; bwd_weight: dy cast into the transposed 128x1 layout, and the cached FP8
    x dequantized, transposed and re-quantized to 128x1 (both operands of dW = dy^T x are grouped
    along the token contraction). The dgrad's transposed FP8 weight (DeepGEMM takes only the NT
    layout) is assumed made once per step and is not costed; DeepSeek's one-pair trace shows these
    transposes (~1.4% of the pair) but cannot tell per-step from per-micro-batch."""
    rows = op.m * op.groups
    if phase == "fwd":
        return [] if op.fp8_input or op.shared_input else [("cast", rows * op.k)]
    if phase == "bwd_input":
        return [("cast", rows * op.n)]
    # a linear sharing its input with the one before it (Op.shared_input) shares its transposed copy
    return [("cast_transpose", rows * op.n)] + ([] if op.shared_input else [("requant_transpose", rows * op.k)])


def fp8_cast_time_s(op: Op, phase: str, gpu: GPUSpec, profile: Profile) -> float:
    """Seconds of the cast kernels of `fp8_cast_passes` at the HBM roofline with the measured
    bandwidth fraction of each cast kind (Profile.fp8_stack; memory_eff where unmeasured), one
    launch each. Zero off DeepSeek's stack (real/'s eager casts: quantize_time_s)."""
    return sum(cast_time_s(kind, elems, gpu, profile) for kind, elems in fp8_cast_passes(op, phase))


def cast_time_s(kind: str, elems: float, gpu: GPUSpec, profile: Profile) -> float:
    """One cast kernel of DeepSeek's stack ("cast", "cast_transpose", "requant_transpose") over
    `elems` elements; zero off that stack."""
    if not profile.fp8_quant_fused or elems <= 0:
        return 0.0
    eff = profile.fp8_stack.get(f"{kind}_eff", profile.memory_eff)
    return (elems * CAST_BYTES_PER_ELEM[kind] / (gpu.hbm_bytes_per_s * eff) + profile.launch_s) * profile.in_layer_factor("memory")


def fa2_call_class(op: Op) -> str:
    """'few_queries' (key length >= FEW_QUERIES_KV_RATIO x query length), 'few_heads' (fewer heads
    per GPU than FA2_CURVE_HEADS, and not few_queries) or '': the classes of docs/notes/s24long_rule.md.
    Worked: Llama 3's CP16 chunk of 4,096 queries over 65,536 keys is few_queries (65,536 >= 8 x 4,096);
    the 405B's 32K x 32K call at 16 heads (TP 8) few_heads; the 8B's at 32 heads ''."""
    if op.kv_len >= FEW_QUERIES_KV_RATIO * op.seq_len:
        return "few_queries"
    return "few_heads" if op.heads < FA2_CURVE_HEADS else ""


def fa2_shape_factor(op: Op, profile: Profile) -> float:
    """Time factor of an attention call for its shape class under the s24long switches: 1 unless the
    profile's curves describe FlashAttention-2 and the class's switch is on."""
    if profile.attention_curves_kernel != "fa2":
        return 1.0
    cls = fa2_call_class(op)
    on = {"few_heads": ADOPT_FA2_FEW_HEADS_FACTOR, "few_queries": ADOPT_FA2_FEW_QUERIES_FACTOR}.get(cls, False)
    return FA2_SHAPE_TIME_FACTOR[cls] if on else 1.0


def attention_time_s(op: Op, direction: str, gpu: GPUSpec, profile: Profile, sm_frac: float = 1.0) -> float:
    """Flash-style attention core in BF16 (V3 keeps attention in BF16, §3.3), at the curve's
    efficiency at the call's key length (op.kv_len, else its sequence length). The curve is
    measured on causal square calls; a flash kernel runs each query tile over the keys, so a call
    of few queries over many keys (Llama 3's all-gather context parallelism) is costed at its key
    length. On the one-GPU non-causal calls of PyTorch's CP (h100x2/cp_chunks.csv, flash, q x kv at
    4K-64K) indexing by the longer of the two lengths predicts the clean rows within 7%, by the
    query length alone 4096 x 8192 at +18% and 8192 x 16384 at +12%. With dropout (op.dropout > 0)
    the time is scaled by the kernel's measured slowdown (Profile.attention_dropout_slowdown; under
    ADOPT_DROPOUT_KERNEL_FACTOR the ratio of the profiled kernel seconds, s28mlm3); under
    ADOPT_ATTENTION_DROPOUT_PER_PROBABILITY, where the profile holds a per-probability cost for the kernel,
    that cost times the call's probabilities is added instead (s28mlm2). A call
    of few head-rows (batch x heads x queries) also pays the curve's tail term (SeqCurve.rows_half)."""
    flops = op.flops if direction == "fwd" else attention_bwd_flops(op.batch, op.seq_len, op.heads, op.qk_dim, op.v_dim,
                                                                    op.causal, op.kv_len)
    length = max(op.seq_len, op.kv_len)
    # head-rows per SM decide the causal tail: on a fraction of the SMs a call hides it as a larger one would
    eff = profile.attention[direction].eff(length, op.batch * op.heads * op.seq_len / max(sm_frac, 1e-3))
    dropout = profile.attention_dropout_slowdown(direction, ADOPT_DROPOUT_KERNEL_FACTOR) if op.dropout > 0 else 1.0
    per_prob = profile.attention_dropout_prob_cost_s(direction) if op.dropout > 0 else None
    drawn_s = 0.0
    if ADOPT_ATTENTION_DROPOUT_PER_PROBABILITY and per_prob is not None:   # s28mlm2: the draws added, no factor
        dropout, drawn_s = 1.0, attention_probabilities(op) * per_prob / sm_frac
    shape = fa2_shape_factor(op, profile)
    compute_s = shape * dropout * flops / (gpu.attention_flops_per_s(direction, length) * eff * sm_frac)
    return compute_s + drawn_s + profile.launch_s


# s28mlm2's candidate (docs/notes/s28mlm2_rule.md): dropout inside an attention kernel costed as the Philox draws,
# one a probability, at Profile.attention_dropout_prob_s seconds each, added to the call without dropout, instead of
# one time factor measured at one call (Profile.attention_dropout). Off until the rule says adopt.
ADOPT_ATTENTION_DROPOUT_PER_PROBABILITY = False

# s28mlm3's candidate (docs/notes/s28mlm3_rule.md): the dropout factor (Profile.attention_dropout_kernel) from the
# fitting rows' profiled kernel seconds, not their event-timed seconds (h100 cuDNN forward 2.098 against 1.904 timed);
# the h200 takes its factor from s28mlm2's fitting call. Off until the rule says adopt.
ADOPT_DROPOUT_KERNEL_FACTOR = True


def attention_probabilities(op: Op) -> float:
    """The attention probabilities a call computes (batch x heads x query-key pairs, causal halved): its
    forward FLOPs over 2 (qk_dim + v_dim)."""
    return attention_flops(op.batch, op.seq_len, op.heads, op.qk_dim, op.v_dim, op.causal, op.kv_len) / (
        2.0 * (op.qk_dim + op.v_dim))


def topk_time_s(rows: float, width: int, k: int, gpu: GPUSpec, profile: Profile) -> float:
    """torch.topk of k over the last dimension of a (rows, width) float32 tensor: the profile's
    fitted radix-select cost (Profile.topk), else one streaming kernel's bandwidth roofline."""
    t = profile.topk
    if t:
        return t["fixed_s"] + rows * (t["row_s"] + t["elem_s"] * width)
    return memory_time_s(rows * width * 4.0 + rows * k * 12.0, gpu, profile)


def memory_time_s(bytes_moved: float, gpu: GPUSpec, profile: Profile, eager: bool = False,
                  compiled: bool = False) -> float:
    """A bandwidth-bound kernel: its bytes at the profile's streaming efficiency (`eager`: torch
    eager's elementwise chains, at Profile.eager_elementwise_eff where measured; `compiled`: inside a
    torch.compile'd block, at COMPILED_ELEMENTWISE_RATIO of it under ADOPT_COMPILED_ELEMENTWISE_EFF), one
    launch; inside layers at the profile's in-layer memory factor (Profile.in_layer, s15gl's candidate G)."""
    eff = (profile.eager_elementwise_eff or profile.memory_eff) if eager else profile.memory_eff
    if compiled and ADOPT_COMPILED_ELEMENTWISE_EFF:
        eff *= COMPILED_ELEMENTWISE_RATIO
    return (bytes_moved / (gpu.hbm_bytes_per_s * eff) + profile.launch_s) * profile.in_layer_factor("memory")


def partials_reduce_time_s(out_bytes: float, ranks: int, gpu: GPUSpec, profile: Profile) -> float:
    """The reduction a fused reduce-scatter of torch's micro-pipelined TP ends with
    (torch/distributed/_symmetric_memory _fused_matmul_reduce_scatter_impl: torch.sum over the
    `ranks` stacked partial sums of this rank's rows): it reads the whole stacked buffer (the
    GEMM's output, `out_bytes`) and writes the rank's 1/ranks, at the bandwidth fraction measured
    for it at that many ranks (Profile.partials_reduce_eff_at; memory_eff where unmeasured), one launch."""
    eff = profile.partials_reduce_eff_at(ranks)
    return out_bytes * (1.0 + 1.0 / ranks) / (gpu.hbm_bytes_per_s * eff) + profile.launch_s


def chunked_gemm_time_s(op: Op, phase: str, precision: str, chunks: int, gpu: GPUSpec, profile: Profile,
                        sm_frac: float = 1.0) -> float:
    """The GEMM of a GEMM op in phase 'fwd' or 'bwd_input' issued as `chunks` GEMMs of m/chunks
    token rows each, the way torch's micro-pipelined TP issues a GEMM fused with a collective (one
    chunk per rank's shard: _pipelined_all_gather_and_consume, _pipelined_produce_and_all2all),
    each chunk on the GEMM curves at its own shape; the operands' cast kernels are not included
    (op_time_s adds them once for the whole op)."""
    if op.kind not in GEMM_KINDS or phase not in ("fwd", "bwd_input"):
        raise ValueError(f"chunked_gemm_time_s: a GEMM op in 'fwd' or 'bwd_input' (got {op.kind}, {phase!r})")
    n, k = (op.n, op.k) if phase == "fwd" else (op.k, op.n)
    rows = max(1, op.m // chunks)
    return chunks * gemm_time_s(rows, n, k, op.precision or precision, gpu, profile, groups=op.groups, sm_frac=sm_frac,
                                align=op.align or align_class(op.n, op.k), pass_="fwd" if phase == "fwd" else "dgrad",
                                widths=layer_widths(op))


# A weight-gradient GEMM adds into the FP32 gradient buffer (V3 §3.3.3 keeps weight gradients in
# FP32; each micro-batch accumulates into them): it reads and writes 4 bytes per weight element
WGRAD_ACCUM_BYTES = 8.0

# Inside a torch.compile'd block (Op.compiled: plan.kernels 'fused_blocks') the time a block's GEMM and attention
# kernels leave, Inductor's elementwise kernels and the gaps between kernels, runs at this fraction of memory_eff
# (calibration.dense_block.compiled_elementwise_ratio: eager_elementwise_eff's estimator on h100/dense_block.csv's
# two compiled 8B Llama fitting records, 2 x 8,192: 0.687 forward, 0.570 fwd+bwd; median). Carried to every GPU
# (the H200 has no compiled block record). Candidate of docs/notes/s31pub_rule.md, judged on the 8B rows' own step
# (campaign s31pub): adopted (F1-F2, P1-P3, G1-G2 hold); off, compiled elementwise kernels stream at memory_eff and
# an FP8 GEMM's casts at fp8_stack's.
ADOPT_COMPILED_ELEMENTWISE_EFF = True    # adopted: docs/notes/s31pub_rule.md (calibration/s31pub_judgement.json)
COMPILED_ELEMENTWISE_RATIO = 0.6289713050004453


def layer_widths(op: Op) -> tuple[int, int] | None:
    """A GEMM op's (outputs, inputs) as its kernels run them (its forward is m x n over k), or None
    where its widths are a stand-in the modelled run does not execute (Op.align 8)."""
    return None if op.align >= 8 else (op.n, op.k)


def op_time_s(op: Op, phase: str, precision: str, gpu: GPUSpec, profile: Profile, sm_frac: float = 1.0) -> float:
    """Seconds of one compute op in a phase: 'fwd', 'bwd_input' (activation gradient) or
    'bwd_weight' (weight gradient). Communication ops are costed in twin.costs.comm. An FP8 GEMM
    includes its operands' cast kernels on DeepSeek's stack, and its weight gradient runs V3's
    1x128 x 1x128 recipe at the measured `wgrad_1d1d_speed`. A GEMM runs in `precision` unless the
    op is pinned to one (Op.precision: the router)."""
    if op.kind in GEMM_KINDS:
        prec = op.precision or precision
        casts_s = fp8_cast_time_s(op, phase, gpu, profile) if prec == "fp8" else 0.0
        if op.compiled and ADOPT_COMPILED_ELEMENTWISE_EFF:   # the casts as Inductor's kernels in the block
            casts_s /= COMPILED_ELEMENTWISE_RATIO
        # the layer's widths n and k are every pass's row lengths (twin.costs.gemm_alignment)
        align = op.align or align_class(op.n, op.k)
        if phase == "fwd":
            m, n, k = op.m, op.n, op.k
        elif phase == "bwd_input":   # dX = dY W^T: (m x n) (n x k)
            m, n, k = op.m, op.k, op.n
        else:                        # dW = X^T dY: (k x m) (m x n), accumulated into FP32 gradients
            m, n, k = op.k, op.n, op.m
            speed = profile.fp8_stack.get("wgrad_1d1d_speed", 1.0) if prec == "fp8" and profile.fp8_quant_fused else 1.0
            return casts_s + gemm_time_s(m, n, k, prec, gpu, profile, groups=op.groups, sm_frac=sm_frac,
                                         out_bytes=WGRAD_ACCUM_BYTES, eff_scale=speed, align=align, pass_="wgrad",
                                         widths=layer_widths(op))
        return casts_s + gemm_time_s(m, n, k, prec, gpu, profile, groups=op.groups, sm_frac=sm_frac, align=align,
                                     pass_="fwd" if phase == "fwd" else "dgrad", widths=layer_widths(op))
    if op.kind == OpKind.ATTENTION:
        if phase == "bwd_weight":
            return 0.0
        return attention_time_s(op, "fwd" if phase == "fwd" else "bwd", gpu, profile, sm_frac)
    if op.kind == OpKind.MEMORY:
        if phase == "bwd_weight":
            return 0.0
        # a backward elementwise/norm kernel reads the saved input and the output gradient (1.5 x
        # the forward bytes unless the op says: flops.eager_ops); each further kernel one launch
        if phase == "fwd":
            return memory_time_s(op.bytes, gpu, profile, op.eager, op.compiled) + (op.launches - 1) * profile.launch_s
        bwd_bytes = 1.5 * op.bytes if op.bwd_bytes is None else op.bwd_bytes
        return memory_time_s(bwd_bytes, gpu, profile, op.eager, op.compiled) + (op.bwd_launches - 1) * profile.launch_s
    raise ValueError(f"not a compute op: {op.kind}")
