"""Efficiency profiles: how close each kernel class gets to the GPU's peaks, as data.

A profile is JSON (package data twin/data/profiles/<gpu>.json, written by `twin fit`) holding curve parameters:

  gemm / grouped_gemm, per precision:
      eff(m, n, k) = e_max / (1 + m_half/m + n_half/n + k_half/k)
    (saturation in each GEMM dimension: small dimensions under-fill the 128-wide tiles and the
    132 SMs; m is rows per group for grouped GEMMs)
  attention, per direction (fwd, bwd):
      eff(s, rows) = e_max / (1 + s_half/s + rows_half/rows)
    s the call's (key) length, rows = batch x heads x query length (its head-rows). A causal flash
    kernel runs one thread block per 128-row tile of every (batch, head), each over up to s/128 key
    blocks; the call ends with a tail of about one longest tile (time ~ s) that a call of few
    head-rows cannot hide behind the other SMs' work: relative to the call's work (~ batch x heads
    x s^2) that is rows_half/rows. rows_half 0: not fitted (the records' head-rows do not vary
    enough to tell it from s_half; calibration/fit.py ROWS_SPAN_MIN)
  memory: fraction of HBM bandwidth reached by bandwidth-bound kernels (e_mem)
  gemm_memory_eff: the same for GEMM kernels' operand streaming, their memory roofline (0 = use
    memory_eff): a bandwidth-bound GEMM (few rows per expert) streams its weights through TMA tile
    loads at less than a copy kernel's bandwidth (H100, BF16 grouped GEMMs of 128-256 rows per
    group: 1.0-2.7 TB/s of weights against 3.0 TB/s for a copy, calibration/measurements/h100/
    gemm.csv), fitted from the GEMM rows
  gemm_overlap_p: how a GEMM's compute and memory times combine (compute.roofline_s): 0 = max(),
    else the p-norm, which adds part of the smaller one near the ridge point, fitted
  topk: torch.topk on the last dimension (a radix select of several kernels, bound by the SMs,
    not by HBM: the H100 and H200 take the same time): fixed_s + rows * (row_s + elem_s * width),
    fitted from the topk rows (real/bench/memory.py bench_topk); empty = the bandwidth roofline
  launch_s: fixed per-kernel overhead on the GPU (device side)
  wave_tile: output tile edge (128) of the tile-wave model of GEMM kernels: compute time is
    multiplied by ceil(tiles / SMs) * SMs / tiles (twin.costs.compute.wave_factor), the idle part
    of a kernel's last wave; 0 = no wave model (the curves alone). A curve may carry its own
    `wave_tile` (GemmCurve.wave_tile): kernels without split-K/stream-K (CUTLASS row-wise FP8 in
    torch) run a few long tiles at small m, libraries with split-K (cuBLAS) do not; the fit picks
    per curve (calibration/fit.py)
  grouped_setup_s: device time a grouped GEMM call spends before its tiles run, beyond launch_s
    (torch._grouped_mm / _scaled_grouped_mm build the per-group problem and pointer arrays from the
    offsets on the GPU first), fitted from the grouped rows
  group_row_tile: row tile of grouped GEMM kernels: each expert's rows are computed in tiles of
    this many rows, the last partly empty (compute.padded_group_rows); 0 = no row tiling;
    chosen by the fit among 0/128/256 on the fitting split
  sustained: measured ratio, per kernel class ("gemm", "attention", "memory"), of a kernel's time
    in the calibration's short CUDA-graph timing to its time when replayed back to back for 30 s
    (real/bench/power.py bench_sustained, sustained.csv): at the 700 W power limit the SM clock settles
    lower than in a short burst. A training or serving run is sustained load, so the twin's
    simulations use the curves scaled by these ratios (`under_sustained_load`, via load_profile);
    predicting the calibration records uses the curves as fitted.
  sustained_curves: the same ratio for a GEMM curve whose own kernel sustained.csv measured,
    "<gemm|grouped_gemm>/<label>" -> ratio (calibration.fit.sustained_curve_ratios): kernels of one
    class throttle differently (H100: a BF16 dense GEMM runs 0.90 of its burst rate, the FP8 ones
    0.96-0.97, against the class median 0.96); a curve without one takes its class's ratio.
  sustained_vs_curve: for a GEMM curve, the curve's own time at sustained.csv's held shape over the
    held time ("<table>/<label>" -> ratio; calibration.fit.sustained_vs_curve): the ratio that maps
    the curve, not the burst row, onto the held kernel (the burst runs at boost clocks that vary by
    card: the H100's BF16 burst row ran 5.7% faster than the curve, the held times of two cards agree
    within 0.3%). Used in place of sustained_curves only for the GPUs ADOPT_SUSTAINED_VS_CURVE names
    (docs/notes/s25dense_rule.md).
  sustained_held: for a GEMM curve, the median over several held shapes (and cards) of the curve's own
    time at the shape over the steady held time ("<table>/<label>" -> ratio; calibration.sustained_held:
    the H100's sustained.csv BF16 shape and s25dense's 8 held GEMMs). Used in place of sustained_curves'
    ratio only where ADOPT_SUSTAINED_FROM_HELD is on (docs/notes/s28tt2_rule.md).

A profile also describes the *software stack* that ran the kernels, as data:
  fp8_quant_fused: whether FP8 quantization runs as DeepSeek's V3 stack runs it, one fused
    single-pass cast kernel per operand (V3 report §3.5.2: the BF16 activation is read from HBM,
    quantized, written back as FP8 and read again by the GEMM; compute.fp8_cast_time_s), or as
    separate eager PyTorch ops on every call (real/fp8.py, `quant_bytes_per_elem`).
  fp8_stack: measured terms of that stack (real/bench/fp8_stack.py bench_fp8_stack, fp8_stack.csv;
    calibration.fit.fp8_stack_terms): `wgrad_1d1d_speed`, the median ratio of the rate of a 1x128 x
    1x128 scaled FP8 GEMM with an FP32 output (V3's weight-gradient recipe: both operands scaled
    along the token contraction) to the rate of the 1x128 x 128x128 forward recipe at the same
    weight-gradient shape; `cast_eff`, `cast_transpose_eff`, `requant_transpose_eff`: HBM bandwidth fractions
    of the fused cast kernels (1x128 cast of a BF16 tensor; cast into the transposed 128x1 layout;
    a cached 1x128 FP8 tensor dequantized, transposed and re-quantized). Empty: the casts run at
    memory_eff and weight-gradient GEMMs at the forward rate.
  sm_reserve: measured slowdown of GEMMs that are NOT told that communication holds some SMs and
    run beside the kernels holding them (real/bench/sm_reserve.py bench_sm_reserve, mode spin;
    calibration.fit.sm_reserve_terms): "untold_bf16" / "untold_fp8" -> [(held SMs, time beside /
    alone)], starting at (0, 1.0). Used only for plans with comm_sms_told false.
  quant_bytes_per_elem: HBM bytes per element of one unfused quantization (all its eager passes:
    abs, amax, float, divide, clamp, cast; ~33-39 by count in real/fp8.py), fitted.
  transpose_eff: the same for copies of a transposed view (`.t().contiguous()`: reads or writes
    are uncoalesced across the inner dimension), fitted with gather_eff; 0 = gather_eff.
  cat_eff: the same for torch.cat of strided split views (real/model.py builds MLA's q and k so),
    measured from the memory op `mla_qk_cat` (calibration.fit.fit_cat_eff); 0 = gather_eff.
  gather_eff: bandwidth of row gather/scatter kernels (index, index_copy, index_put) relative to
    streaming kernels (memory_eff), fitted; 1.0 where unmeasured.
  eager: what real/'s eager MoE and MLA layers run beyond the kernels the op lists of
    calibration/predict.py name, measured from the torch profiler's kernel records
    (calibration/measurements/<gpu>/kernels.csv) by calibration.layer_gaps: `extra_kernels`
    ("<layer>_<fwd|bwd>/<bf16|fp8>" -> kernels a call launches that the op list omits: radix-sort
    passes and memsets of argsort, index bookkeeping, copies) and `host_s` ("fwd"/"bwd"/"infer" -> host
    seconds to dispatch each kernel of a layer's forward as autograd records it / of its backward as
    the autograd engine runs it / of a no-grad forward; kernels dispatched inside an
    autograd.Function, grad mode off, take "infer": calibration.predict.NoGradHost). Used only to predict real/'s eager records.
  batched_gemm: batched GEMM kernels (cuBLAS bmm, as torch.einsum runs real/'s absorbed MLA
    decode over the latent cache), "<precision>/align<a>" -> BatchedCurve: a GemmCurve over one
    batch element's (m, n, k) plus a fixed time per call (compute.batched_gemm_time_s): `a` is the largest of 8, 4, 2, 1 elements dividing
    the leading dimensions; with a 16-byte-unaligned one (a cache length L % 8 != 0, 7 of 8 decode
    steps) cuBLAS falls back to Ampere-era CUTLASS `*_align1/2/4` kernels several times slower
    than its Hopper ones. Fitted from decode_gemm.csv's fitting rows (calibration/decode_gemm.py);
    empty: the dense `gemm` curve.
  eager_decode: what real/'s eager decode step runs beyond the op classes above, measured in
    decode_gemm.csv (calibration/decode_gemm.py): `cublas_kernels`, the kernels each cuBLAS call
    launches beyond its GEMM kernel at decode sizes (a split-K reduction,
    `cublasLt::splitKreduce_kernel`, and its memsets; {"linear": {"<n>x<k>": {"<m>": extra}}, "bmm":
    {"<op>/h<heads>/align<a>": {"<batch>": extra}}}), and
    `elementwise_eff`, the absorbed attention's elementwise kernels over the FP32 scores (op ->
    fraction of the streaming rate, memory_eff). Used only to predict real/'s eager decode records.
  host_s: host (CPU) time to dispatch one eager PyTorch op, per op class ("op" = any other), as
    the records' per-repetition CUDA-event timing sees it (the GPU idles while the host
    dispatches); records timed in CUDA graphs exclude it. Used only to predict eager measurements (calibration/predict.py); a simulated
    step (twin.sim) runs DeepSeek's stack and never adds host time.
  attention_kernels: another attention kernel's measured speed relative to the one the attention
    curves were fitted on (cuDNN's), per direction: {"fa2": {"fwd", "bwd"}}, from the SDPA flash and
    cuDNN backends timed on the same head-dim-128 causal shapes (real/bench/dense_block.py,
    calibration.dense_block.attention_kernel_terms); `with_attention_kernel` applies it.
  eager_elementwise_eff: HBM bandwidth fraction of torch eager's elementwise chains (the ops
    twin.costs.flops.eager_ops marks `eager`: plan.kernels 'eager', and the head under
    'fused_blocks'), measured on real/dense.py's eager Llama blocks and LM heads
    (calibration.dense_block.eager_elementwise_eff); 0 = memory_eff.
  attention_dropout: attention with dropout (p > 0, training) over the same call without, per
    kernel and direction ({"cudnn"|"fa2": {"fwd", "bwd"}}), from SDPA timed at dropout 0.1 and 0 on
    the same shapes (real/bench/dense_dropout.py, calibration.dense_dropout); the Philox draws do
    not depend on p, so any p > 0 takes the measured ratio. Empty: dropout not costed.
  partials_reduce_eff: HBM bandwidth fraction of the reduction a fused reduce-scatter of torch's
    micro-pipelined TP ends with (torch.sum over the W stacked partial sums of the rank's rows:
    compute.partials_reduce_time_s), per W ({"<W>": fraction}: 0.44 at W = 2, 0.85 at 8 on H100,
    torch's outer-dimension reduction reading few values per output runs far below streaming;
    between measured W interpolated in log2 W, beyond them the nearest), measured
    (calibration.async_tp: the 70B rows of <gpu>/atp_parts.csv and <gpu>x2/async_tp.csv); empty =
    memory_eff.
  in_layer: a kernel's time inside a composed layer or step over the same call's time alone, per
    class ("gemm/<bf16|fp8>", "grouped_gemm/<bf16|fp8>", "memory"), measured by s14gl's campaign
    (calibration.gemm_in_layer.in_layer_factors; docs/notes/s15gl_rule.md, candidate G, not adopted:
    only its candidate profiles in twin/data/profiles_in_layer carry it); it multiplies
    compute.gemm_time_s, grouped_gemm_time_s, memory_time_s, quantize_time_s and cast_time_s;
    kernel records timed alone are predicted without it (Profile.alone). Empty: 1.
  in_layer_gemm_compute_only: the GEMM classes' in_layer factor scales the compute time only
    (before the roofline; memory time, launch and grouped setup unscaled), as s15gl2's candidate G2
    defines it (docs/notes/s15gl2_rule.md; only its profiles in twin/data/profiles_in_layer_alone set it).

Until a calibrated profile exists for a GPU, `default_profile()` is used: its numbers come from
published kernel tables (sources inline) and are flagged as uncalibrated in every output.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
from dataclasses import dataclass, field
from importlib import resources

# fitted profiles are package data (twin fit writes them; the twin reads them through importlib.resources)
PROFILES = resources.files("twin.data").joinpath("profiles")
# s14gemm's candidate (docs/notes/s14gemm_rule.md): profiles fitted with the GEMM curves at the clock
# GEMMs run at inside layers (calibration.fit.ADOPT_GEMM_LAYER_CLOCK), read instead of PROFILES when on
ADOPT_GEMM_LAYER_CLOCK = False
PROFILES_GEMM_LAYER_CLOCK = resources.files("twin.data").joinpath("profiles_gemm_layer_clock")
# its candidate L2: the BF16 GEMM curves at one class-level in-layer speed (calibration.fit.ADOPT_GEMM_LAYER_SPEED)
ADOPT_GEMM_LAYER_SPEED = False
PROFILES_GEMM_LAYER_SPEED = resources.files("twin.data").joinpath("profiles_gemm_layer_speed")


# s15gl's candidate G (docs/notes/s15gl_rule.md): profiles carrying measured in-layer kernel-class
# factors (Profile.in_layer, stage 2 refitted under them: calibration.fit.ADOPT_IN_LAYER_FACTORS)
ADOPT_IN_LAYER_FACTORS = False
PROFILES_IN_LAYER = resources.files("twin.data").joinpath("profiles_in_layer")
# s15gl2's candidate G2 (docs/notes/s15gl2_rule.md): G's factors with the GEMM ones on the compute
# time only (Profile.in_layer_gemm_compute_only), gather_eff and quant_bytes_per_elem fitted on alone
# memory rows of the fitting split (calibration.fit.ADOPT_IN_LAYER_ALONE_TERMS)
ADOPT_IN_LAYER_ALONE_TERMS = False
PROFILES_IN_LAYER_ALONE = resources.files("twin.data").joinpath("profiles_in_layer_alone")


# s25dense (docs/notes/s25dense_rule.md): the profile names (GPUs) whose simulation profile scales the
# curves sustained_vs_curve holds by that ratio (the curve's time at the held shape over the held time)
# instead of sustained_curves' burst / held ratio; (): none, every curve as before
ADOPT_SUSTAINED_VS_CURVE: tuple[str, ...] = ()
# s28tt2 (docs/notes/s28tt2_rule.md): the simulation profile scales the curves sustained_held holds (a
# profile's, where held multi-shape records exist: the H100's dense BF16 curve) by that ratio, the median
# held / curve rate over several held shapes, instead of sustained_curves' one burst / held ratio
ADOPT_SUSTAINED_FROM_HELD = False


def profiles_dir():
    """The directory of the profiles the twin reads (PROFILES, or a candidate's when on)."""
    if ADOPT_IN_LAYER_ALONE_TERMS:
        return PROFILES_IN_LAYER_ALONE
    if ADOPT_IN_LAYER_FACTORS:
        return PROFILES_IN_LAYER
    if ADOPT_GEMM_LAYER_SPEED:
        return PROFILES_GEMM_LAYER_SPEED
    return PROFILES_GEMM_LAYER_CLOCK if ADOPT_GEMM_LAYER_CLOCK else PROFILES


@dataclass(frozen=True)
class GemmCurve:
    e_max: float
    m_half: float = 0.0
    n_half: float = 0.0
    k_half: float = 0.0
    wave_tile: int = 0   # this kernel's tile-wave model (0: the profile's wave_tile)

    def eff(self, m: float, n: float, k: float) -> float:
        return self.e_max / (1.0 + self.m_half / max(m, 1) + self.n_half / max(n, 1) + self.k_half / max(k, 1))


@dataclass(frozen=True)
class BatchedCurve(GemmCurve):
    """A batched GEMM kernel's curve (Profile.batched_gemm): a GemmCurve over one batch element's
    (m, n, k), plus `fixed_s`, the time a call takes beyond its roofline whatever its size (a
    small batched GEMM's pipeline fill and, at batch 1, cuBLAS's split-K reduction: 4-10 us on the
    H100 against 1-2 us of work, decode_gemm.csv)."""
    fixed_s: float = 0.0


# FlashAttention-2's speed relative to cuDNN's fused attention on the H100 SXM5, head dim 128, BF16:
# FlashAttention-3 paper (Shah et al., arXiv 2407.08608, Figures "Attention forward/backward speed,
# head dim 128 (H100 80GB SXM5)"), TFLOP/s of FA2 / cuDNN at sequence lengths 2k, 4k, 8k, 16k:
# forward causal 298/484, 319/518, 333/529, 335/539; forward 362/617, 368/609, 370/600, 370/595;
# backward 291/465, 310/499, 318/518, 322/516. The median ratio (0.62; every one lies in 0.59-0.64).
_FA2_CUDNN_TFLOPS = ((298, 484), (319, 518), (333, 529), (335, 539), (362, 617), (368, 609), (370, 600),
                     (370, 595), (291, 465), (310, 499), (318, 518), (322, 516))
FA2_OVER_CUDNN = statistics.median(a / b for a, b in _FA2_CUDNN_TFLOPS)
ATTENTION_KERNELS = ("cudnn", "fa2")
FP8_RECIPES = ("blockwise", "tensorwise")


@dataclass(frozen=True)
class SeqCurve:
    e_max: float
    s_half: float = 0.0
    rows_half: float = 0.0   # head-rows (batch x heads x query length) where the causal tail doubles the time

    def eff(self, seq_len: float, rows: float = math.inf) -> float:
        """Efficiency at key length `seq_len` for a call of `rows` head-rows (default: a call large
        enough that its tail is hidden)."""
        return self.e_max / (1.0 + self.s_half / max(seq_len, 1) + self.rows_half / max(rows, 1))


@dataclass(frozen=True)
class Profile:
    gpu: str
    gemm: dict            # precision -> GemmCurve
    grouped_gemm: dict    # precision -> GemmCurve
    attention: dict       # "fwd"/"bwd" -> SeqCurve
    memory_eff: float
    launch_s: float
    calibrated: bool
    provenance: dict = field(default_factory=dict, compare=False, hash=False)
    fp8_quant_fused: bool = True
    quant_bytes_per_elem: float = 0.0
    host_s: dict = field(default_factory=dict)
    gather_eff: float = 1.0
    transpose_eff: float = 0.0   # 0 = gather_eff
    cat_eff: float = 0.0         # 0 = gather_eff
    wave_tile: int = 0
    group_row_tile: int = 0
    grouped_setup_s: float = 0.0
    sustained: dict = field(default_factory=dict)   # kernel class -> burst / sustained time
    sustained_curves: dict = field(default_factory=dict)   # "<table>/<label>" -> burst / sustained time
    sustained_vs_curve: dict = field(default_factory=dict)  # "<table>/<label>" -> curve / sustained time
    sustained_held: dict = field(default_factory=dict)  # "<table>/<label>" -> median curve / held time
    gemm_memory_eff: float = 0.0
    gemm_overlap_p: float = 0.0   # compute.roofline_s: 0 = max(compute, memory)
    topk: dict = field(default_factory=dict)   # compute.topk_time_s: fixed_s, row_s, elem_s
    fp8_stack: dict = field(default_factory=dict)   # compute.fp8_cast_time_s, wgrad_1d1d_speed
    sm_reserve: dict = field(default_factory=dict)  # compute.untold_sm_slowdown: "untold_<prec>" -> [[sms, slowdown]]
    # comm.collective_time_s: NCCL collectives measured within one node, {op: {"latency_s",
    # "bus_bytes_per_s", "source"}} for op in comm.COLLECTIVES; empty: the catalog's links
    collectives: dict = field(default_factory=dict, compare=False, hash=False)
    eager: dict = field(default_factory=dict)       # real/'s eager layers only (calibration.layer_gaps)
    batched_gemm: dict = field(default_factory=dict)   # "<precision>/align<a>" -> BatchedCurve (calibration.decode_gemm)
    eager_decode: dict = field(default_factory=dict)   # real/'s eager decode only (calibration.decode_gemm)
    # another attention kernel's measured speed relative to the one the attention curves were
    # measured with, per direction: {"fa2": {"fwd": r, "bwd": r}} (calibration.dense_block, from
    # dense_block.csv's attention rows); empty: the FA3 paper's FA2_OVER_CUDNN
    attention_kernels: dict = field(default_factory=dict)
    # the HBM bandwidth fraction torch eager's elementwise chains reach (twin.costs.flops.eager_ops:
    # FP32 casts, reductions, complex RoPE, the FP32 loss; their ops' `eager` flag), measured on
    # real/dense.py's eager Llama blocks and heads (calibration.dense_block); 0 = memory_eff
    eager_elementwise_eff: float = 0.0
    # the HBM bandwidth fraction of the reduction a fused reduce-scatter of torch's micro-pipelined TP
    # ends with (torch.sum over the W stacked partial sums, compute.partials_reduce_time_s), per W
    # ("<W>" -> fraction), measured (calibration.async_tp.partials_reduce_terms); empty = memory_eff
    partials_reduce_eff: dict = field(default_factory=dict)
    # attention with dropout (training, p > 0: the kernel draws Philox random numbers per score tile,
    # forward and again in the backward) against the same call without, per kernel and direction:
    # {"cudnn"|"fa2": {"fwd": time ratio, "bwd": time ratio}}, measured (calibration.dense_dropout,
    # real/bench/dense_dropout.py's SDPA rows at p 0.1 and 0); a kernel without an entry: 1 (not costed)
    attention_dropout: dict = field(default_factory=dict)
    # s28mlm2's candidate (twin.costs.compute.ADOPT_ATTENTION_DROPOUT_PER_PROBABILITY): dropout inside an
    # attention kernel as seconds per drawn probability added to the call without dropout, per kernel and
    # direction ({"cudnn": {"fwd": s, "bwd": s}}), from the same rows as attention_dropout
    # (calibration.dense_dropout.attention_dropout_prob_terms); read by nothing while the switch is off
    attention_dropout_prob_s: dict = field(default_factory=dict)
    # s28mlm3's candidate (twin.costs.compute.ADOPT_DROPOUT_KERNEL_FACTOR): attention_dropout's ratio taken from
    # the same rows' profiled kernel seconds instead of their event-timed seconds (which carry the host's launch
    # gaps), {kernel: {"fwd", "bwd"}} (calibration.dense_dropout.attention_dropout_kernel_terms); read by nothing
    # while the switch is off
    attention_dropout_kernel: dict = field(default_factory=dict)
    # the kernel the attention curves now describe ('cudnn' as fitted; with_attention_kernel sets it)
    attention_curves_kernel: str = "cudnn"
    # the SM clock the GEMM curves describe, per precision family ("bf16", "fp8": MHz): the clock GEMMs
    # run at inside the fitting layers (calibration.fit.layer_gemm_clock_mhz, docs/notes/s14gemm_rule.md);
    # empty: each record's own clock, the CUDA-graph loops' (gemm.csv), as fitted before s14gemm
    gemm_clock_mhz: dict = field(default_factory=dict)
    # s14gemm's candidate L2: the BF16 GEMM curves' e_max is the records' times this in-layer speed-up
    # (calibration.fit.bf16_layer_speedup: in-layer over in-loop SM clock); 0: none, as fitted before
    bf16_layer_speedup: float = 0.0
    # s15gl's candidate G: a kernel's time inside a composed layer or step over the same call alone, per
    # class ("gemm/<bf16|fp8>", "grouped_gemm/<bf16|fp8>", "memory"), measured by s14gl's campaign
    # (calibration.gemm_in_layer.in_layer_factors); empty: 1 (kernels cost as timed alone)
    in_layer: dict = field(default_factory=dict)
    # s15gl2's candidate G2: the GEMM factors of in_layer on the compute time only
    in_layer_gemm_compute_only: bool = False

    def in_layer_factor(self, kernel_class: str) -> float:
        """The in-layer time factor of a kernel class (Profile.in_layer; 1 where unmeasured)."""
        return float(self.in_layer.get(kernel_class, 1.0)) if self.in_layer else 1.0

    def alone(self) -> "Profile":
        """The profile for kernels timed alone (the primitive records): no in-layer factors."""
        return dataclasses.replace(self, in_layer={}) if self.in_layer else self

    def attention_dropout_prob_cost_s(self, direction: str) -> float | None:
        """Seconds a drawn dropout probability adds to the attention kernel the curves describe, in
        'fwd' or 'bwd' (None where unmeasured: the kernel keeps its slowdown factor)."""
        c = self.attention_dropout_prob_s.get(self.attention_curves_kernel, {}).get(direction)
        return None if c is None else float(c)

    def attention_dropout_slowdown(self, direction: str, from_kernels: bool = False) -> float:
        """Time with dropout over time without, of the attention kernel the curves describe, in
        'fwd' or 'bwd' (1 where unmeasured). from_kernels (s28mlm3): the ratio of the profiled kernel
        seconds where the profile holds one for the kernel, else the event-timed ratio."""
        kernel = self.attention_curves_kernel
        if from_kernels and direction in self.attention_dropout_kernel.get(kernel, {}):
            return float(self.attention_dropout_kernel[kernel][direction])
        return float(self.attention_dropout.get(kernel, {}).get(direction, 1.0))

    @property
    def gemm_streaming_eff(self) -> float:
        """Fraction of HBM bandwidth a bandwidth-bound GEMM kernel reaches."""
        return self.gemm_memory_eff or self.memory_eff

    def partials_reduce_eff_at(self, ranks: int) -> float:
        """The partials' reduction's bandwidth fraction at `ranks` stacked partials: the measured
        table (partials_reduce_eff) interpolated in log2(ranks), the nearest measured W beyond its
        ends; memory_eff where unmeasured."""
        if not self.partials_reduce_eff:
            return self.memory_eff
        table = sorted((int(w), float(e)) for w, e in self.partials_reduce_eff.items())
        if ranks <= table[0][0]:
            return table[0][1]
        if ranks >= table[-1][0]:
            return table[-1][1]
        for (w0, e0), (w1, e1) in zip(table, table[1:]):
            if w0 <= ranks <= w1:
                t = (math.log2(ranks) - math.log2(w0)) / (math.log2(w1) - math.log2(w0))
                return e0 + t * (e1 - e0)
        return table[-1][1]

    def host(self, op_class: str) -> float:
        """Host dispatch seconds of one eager op of a class (falls back to the generic "op")."""
        return self.host_s.get(op_class, self.host_s.get("op", 0.0))

    def as_stack(self, fp8_quant_fused: bool) -> "Profile":
        """The same silicon under another software stack (e.g. the fused DeepGEMM/DeepEP stack that
        DeepSeek trained V3 with, simulated on a GPU whose profile was measured with real/)."""
        return dataclasses.replace(self, fp8_quant_fused=fp8_quant_fused)

    def under_sustained_load(self, vs_curve: bool | None = None, from_held: bool | None = None) -> "Profile":
        """The curves as they run under sustained load (the `sustained` ratios; 1 where unmeasured).
        `vs_curve` (default: whether ADOPT_SUSTAINED_VS_CURVE names this profile's GPU): the curves
        sustained_vs_curve holds take that ratio instead of sustained_curves'. `from_held` (default:
        ADOPT_SUSTAINED_FROM_HELD): the curves sustained_held holds take that ratio (over either). Idempotent:
        the result carries no ratios."""
        if not self.sustained:
            return self
        if vs_curve is None:
            vs_curve = self.gpu in ADOPT_SUSTAINED_VS_CURVE
        if from_held is None:
            from_held = ADOPT_SUSTAINED_FROM_HELD
        own = {**self.sustained_curves, **(self.sustained_vs_curve if vs_curve else {}),
               **(self.sustained_held if from_held else {})}
        r = {c: min(1.0, float(self.sustained.get(c, 1.0))) for c in ("gemm", "attention", "memory")}
        scaled = self._scaled_by(r["gemm"], r["attention"], r["memory"])
        if own:   # a curve measured on its own: its ratio instead of the class's
            scaled = dataclasses.replace(scaled, gemm=_own_sustained(own, "gemm", scaled.gemm, self.gemm),
                                         grouped_gemm=_own_sustained(own, "grouped_gemm", scaled.grouped_gemm,
                                                                     self.grouped_gemm))
        return dataclasses.replace(scaled, sustained={}, sustained_curves={}, sustained_vs_curve={},
                                   sustained_held={})

    def with_attention_kernel(self, kernel: str) -> "Profile":
        """The profile with another attention kernel than the one its records measured (cuDNN's
        SDPA, which PyTorch 2.11 runs on Hopper: calibration/measurements/*/kernels.csv name its
        sm90 flash fprop/bprop kernels): 'fa2' scales each direction's curve by FlashAttention-2's
        speed relative to cuDNN's as measured on this GPU (`attention_kernels`, SDPA's flash and
        cuDNN backends on the same head-dim-128 causal shapes), else by FA2_OVER_CUDNN."""
        if kernel == "cudnn":
            return self
        if kernel != "fa2":
            raise ValueError(f"attention kernel {kernel!r}: one of {ATTENTION_KERNELS}")
        speed = self.attention_kernels.get("fa2", {})
        return dataclasses.replace(self, attention={d: dataclasses.replace(c, e_max=c.e_max * speed.get(d, FA2_OVER_CUDNN))
                                                    for d, c in self.attention.items()},
                                   attention_curves_kernel="fa2")

    def with_fp8_recipe(self, recipe: str) -> "Profile":
        """The profile for another FP8 scaling recipe than DeepSeek's blockwise one, which the
        `fp8` curve and fp8_stack describe. 'tensorwise' (torchao's Float8Linear with dynamic
        tensorwise scales, as torchtitan trains: all three GEMMs of a linear run torch._scaled_mm
        with one scale per tensor): the `fp8` GEMM curve becomes the measured `fp8-tensor` one
        (gemm.csv; kept where the profile has none), and the weight gradient runs that same kernel,
        so it loses the 1x128 x 1x128 recipe's slowdown (fp8_stack wgrad_1d1d_speed). The cast
        kernels stay those of fp8_stack: one cast of the input and of the output gradient and one
        transposed copy of each for the weight gradient, as torchao needs (the amax each tensorwise
        cast needs first is left to torch.compile to fuse into the kernel producing the tensor)."""
        if recipe == "blockwise":
            return self
        if recipe != "tensorwise":
            raise ValueError(f"FP8 recipe {recipe!r}: one of {FP8_RECIPES}")
        gemm = {**self.gemm, "fp8": self.gemm.get("fp8-tensor", self.gemm["fp8"])}
        stack = {k: v for k, v in self.fp8_stack.items() if not k.startswith("wgrad_1d1d_speed")}
        return dataclasses.replace(self, gemm=gemm, fp8_stack=stack)

    def to_json(self) -> dict:
        return {
            "gpu": self.gpu,
            "calibrated": self.calibrated,
            "gemm": {p: vars(c) for p, c in self.gemm.items()},
            "grouped_gemm": {p: vars(c) for p, c in self.grouped_gemm.items()},
            "attention": {d: vars(c) for d, c in self.attention.items()},
            "memory_eff": self.memory_eff,
            "launch_s": self.launch_s,
            "fp8_quant_fused": self.fp8_quant_fused,
            "quant_bytes_per_elem": self.quant_bytes_per_elem,
            "host_s": dict(self.host_s),
            "gather_eff": self.gather_eff,
            "transpose_eff": self.transpose_eff,
            "cat_eff": self.cat_eff,
            "wave_tile": self.wave_tile,
            "group_row_tile": self.group_row_tile,
            "grouped_setup_s": self.grouped_setup_s,
            "sustained": dict(self.sustained),
            **({"sustained_curves": dict(self.sustained_curves)} if self.sustained_curves else {}),
            **({"sustained_vs_curve": dict(self.sustained_vs_curve)} if self.sustained_vs_curve else {}),
            **({"sustained_held": dict(self.sustained_held)} if self.sustained_held else {}),
            "gemm_memory_eff": self.gemm_memory_eff,
            "gemm_overlap_p": self.gemm_overlap_p,
            "topk": dict(self.topk),
            "fp8_stack": dict(self.fp8_stack),
            "sm_reserve": {k: [list(p) for p in v] for k, v in self.sm_reserve.items()},
            "eager": json.loads(json.dumps(self.eager)),
            **({"batched_gemm": {k: vars(c) for k, c in self.batched_gemm.items()}} if self.batched_gemm else {}),
            **({"eager_decode": json.loads(json.dumps(self.eager_decode))} if self.eager_decode else {}),
            **({"attention_kernels": json.loads(json.dumps(self.attention_kernels))} if self.attention_kernels else {}),
            **({"eager_elementwise_eff": self.eager_elementwise_eff} if self.eager_elementwise_eff else {}),
            **({"partials_reduce_eff": dict(self.partials_reduce_eff)} if self.partials_reduce_eff else {}),
            **({"attention_dropout": json.loads(json.dumps(self.attention_dropout))} if self.attention_dropout else {}),
            **({"attention_dropout_prob_s": json.loads(json.dumps(self.attention_dropout_prob_s))}
               if self.attention_dropout_prob_s else {}),
            **({"attention_dropout_kernel": json.loads(json.dumps(self.attention_dropout_kernel))}
               if self.attention_dropout_kernel else {}),
            **({"gemm_clock_mhz": dict(self.gemm_clock_mhz)} if self.gemm_clock_mhz else {}),
            **({"bf16_layer_speedup": self.bf16_layer_speedup} if self.bf16_layer_speedup else {}),
            **({"in_layer": dict(self.in_layer)} if self.in_layer else {}),
            **({"in_layer_gemm_compute_only": True} if self.in_layer_gemm_compute_only else {}),
            "provenance": self.provenance,
            **({"collectives": {k: dict(v) for k, v in self.collectives.items()}} if self.collectives else {}),
        }

    def scaled(self, compute: float = 1.0, memory: float = 1.0) -> "Profile":
        """A variant with every compute efficiency (and/or the memory efficiency) scaled: the hook
        for sensitivity and Monte Carlo analysis."""
        return self._scaled_by(compute, compute, memory)

    def _scaled_by(self, gemm: float, attention: float, memory: float) -> "Profile":
        """GEMM curves, attention curves and both bandwidth efficiencies scaled (capped at 1)."""
        def g(c: GemmCurve) -> GemmCurve:
            return dataclasses.replace(c, e_max=c.e_max * gemm)
        return dataclasses.replace(
            self,
            gemm={p: g(c) for p, c in self.gemm.items()},
            grouped_gemm={p: g(c) for p, c in self.grouped_gemm.items()},
            batched_gemm={p: g(c) for p, c in self.batched_gemm.items()},
            attention={d: dataclasses.replace(c, e_max=c.e_max * attention) for d, c in self.attention.items()},
            # the per-probability dropout term runs inside the attention kernel, at its clock
            attention_dropout_prob_s={k: {d: c / attention for d, c in v.items()}
                                      for k, v in self.attention_dropout_prob_s.items()},
            memory_eff=min(1.0, self.memory_eff * memory), gemm_memory_eff=min(1.0, self.gemm_memory_eff * memory),
            eager_elementwise_eff=min(1.0, self.eager_elementwise_eff * memory),
            partials_reduce_eff={w: min(1.0, e * memory) for w, e in self.partials_reduce_eff.items()},
            host_s=dict(self.host_s), fp8_stack=_scaled_casts(self.fp8_stack, memory))


def _own_sustained(ratios: dict, table: str, scaled: dict, fitted: dict) -> dict:
    """The curves of a GEMM table at their own measured sustained ratio where `ratios` has one
    ("<table>/<label>"; scaled from the fitted curve), else as the class ratio scaled them."""
    out = {}
    for label, curve in scaled.items():
        ratio = ratios.get(f"{table}/{label}")
        out[label] = curve if ratio is None else dataclasses.replace(curve, e_max=fitted[label].e_max * min(1.0, ratio))
    return out


def _scaled_casts(fp8_stack: dict, memory: float) -> dict:
    """The stack's cast-kernel bandwidth fractions scaled like the other bandwidths (capped at 1)."""
    return {k: (min(1.0, v * memory) if k.endswith("_eff") else v) for k, v in fp8_stack.items()}


def profile_from_json(data: dict) -> Profile:
    return Profile(
        gpu=data["gpu"],
        gemm={p: GemmCurve(**c) for p, c in data["gemm"].items()},
        grouped_gemm={p: GemmCurve(**c) for p, c in data["grouped_gemm"].items()},
        attention={d: SeqCurve(**c) for d, c in data["attention"].items()},
        memory_eff=data["memory_eff"],
        launch_s=data["launch_s"],
        calibrated=data.get("calibrated", True),
        provenance=data.get("provenance", {}),
        fp8_quant_fused=bool(data.get("fp8_quant_fused", True)),
        quant_bytes_per_elem=float(data.get("quant_bytes_per_elem", 0.0)),
        host_s={k: float(v) for k, v in data.get("host_s", {}).items()},
        gather_eff=float(data.get("gather_eff", 1.0)),
        transpose_eff=float(data.get("transpose_eff", 0.0)),
        cat_eff=float(data.get("cat_eff", 0.0)),
        wave_tile=int(data.get("wave_tile", 0)),
        group_row_tile=int(data.get("group_row_tile", 0)),
        grouped_setup_s=float(data.get("grouped_setup_s", 0.0)),
        sustained={k: float(v) for k, v in data.get("sustained", {}).items()},
        sustained_curves={k: float(v) for k, v in data.get("sustained_curves", {}).items()},
        sustained_vs_curve={k: float(v) for k, v in data.get("sustained_vs_curve", {}).items()},
        sustained_held={k: float(v) for k, v in data.get("sustained_held", {}).items()},
        gemm_memory_eff=float(data.get("gemm_memory_eff", 0.0)),
        gemm_overlap_p=float(data.get("gemm_overlap_p", 0.0)),
        topk={k: float(v) for k, v in data.get("topk", {}).items()},
        fp8_stack={k: float(v) for k, v in data.get("fp8_stack", {}).items()},
        sm_reserve={k: [(int(n), float(r)) for n, r in v] for k, v in data.get("sm_reserve", {}).items()},
        collectives=_collectives(data.get("collectives", {})),
        eager=dict(data.get("eager", {})),
        batched_gemm={k: BatchedCurve(**c) for k, c in data.get("batched_gemm", {}).items()},
        eager_decode=dict(data.get("eager_decode", {})),
        attention_kernels={k: {d: float(r) for d, r in v.items()} for k, v in data.get("attention_kernels", {}).items()},
        eager_elementwise_eff=float(data.get("eager_elementwise_eff", 0.0)),
        partials_reduce_eff={str(int(w)): float(e) for w, e in data.get("partials_reduce_eff", {}).items()},
        attention_dropout={k: {d: float(r) for d, r in v.items()} for k, v in data.get("attention_dropout", {}).items()},
        attention_dropout_prob_s={k: {d: float(r) for d, r in v.items()}
                                  for k, v in data.get("attention_dropout_prob_s", {}).items()},
        attention_dropout_kernel={k: {d: float(r) for d, r in v.items()}
                                  for k, v in data.get("attention_dropout_kernel", {}).items()},
        gemm_clock_mhz={k: float(v) for k, v in data.get("gemm_clock_mhz", {}).items()},
        bf16_layer_speedup=float(data.get("bf16_layer_speedup", 0.0)),
        in_layer={k: float(v) for k, v in data.get("in_layer", {}).items()},
        in_layer_gemm_compute_only=bool(data.get("in_layer_gemm_compute_only", False)),
    )


def _collectives(table: dict) -> dict:
    """The profile's measured collectives, checked: op -> latency_s, bus_bytes_per_s, source."""
    out = {}
    for op, row in table.items():
        lat, bw = float(row["latency_s"]), float(row["bus_bytes_per_s"])
        if not (lat >= 0 and bw > 0):
            raise ValueError(f"profile collectives.{op}: latency_s >= 0 and bus_bytes_per_s > 0 (got {lat}, {bw})")
        out[op] = {"latency_s": lat, "bus_bytes_per_s": bw, "source": str(row.get("source", ""))}
    return out


@functools.cache
def default_profile() -> Profile:
    """Uncalibrated fallback from published tables (see twin/data/default_profile.json)."""
    with resources.files("twin.data").joinpath("default_profile.json").open() as fh:
        return profile_from_json(json.load(fh))


def simulation_profile(data: dict) -> Profile:
    """A fitted profile's JSON as the twin simulates with it: DeepSeek's FP8 stack on that silicon,
    at sustained-load clocks (see load_profile)."""
    return profile_from_json(data).as_stack(fp8_quant_fused=True).under_sustained_load()


def load_profile(gpu_profile_name: str) -> Profile:
    """The calibrated profile for a GPU type (GPUSpec.calibrated_as), else the default, for
    simulating DeepSeek's V3 software stack: one fused cast kernel per FP8 operand and V3's
    weight-gradient recipe (V3 report §3.3, §3.5.2; the profile's fp8_stack terms, measured on
    the same silicon; calibration/H800.md). A calibrated profile records the stack it was
    measured with (real/: unfused eager quantization); that stack is used only to predict the
    records (calibration/predict.py), so here the silicon is kept and the stack switched; and
    the curves are those measured under sustained load (Profile.under_sustained_load)."""
    # kept per directory and s25dense setting: a profile read under one ADOPT_* setting is not served under another
    return _load_profile_from(gpu_profile_name, profiles_dir(), gpu_profile_name in ADOPT_SUSTAINED_VS_CURVE,
                              ADOPT_SUSTAINED_FROM_HELD)


@functools.cache
def _load_profile_from(gpu_profile_name: str, directory, vs_curve: bool = False, from_held: bool = False) -> Profile:
    path = directory.joinpath(f"{gpu_profile_name}.json")
    if path.is_file():
        with path.open() as fh:
            return profile_from_json(json.load(fh)).as_stack(fp8_quant_fused=True).under_sustained_load(vs_curve,
                                                                                                          from_held)
    return default_profile()


load_profile.cache_clear = _load_profile_from.cache_clear   # as for a functools.cache'd function


def fitted_profile(gpu_profile_name: str) -> Profile:
    """The committed profile of a GPU type as fitted (real/'s eager stack, short-benchmark clocks):
    what predicts the calibration records."""
    with profiles_dir().joinpath(f"{gpu_profile_name}.json").open() as fh:
        return profile_from_json(json.load(fh))
