"""The twin's prediction of one measured case, with the twin's own cost functions.

Every kernel is costed by `twin.costs.compute` (gemm_time_s, grouped_gemm_time_s, attention_time_s,
memory_time_s, quantize_time_s), so a fitted profile means the same thing in the fit, in validation
and in a simulated step. What differs is the software stack: the records time real/ in eager
PyTorch, so a case is predicted as the eager op sequence real/ issues (counted from real/model.py
and real/fp8.py), with the host dispatch time of each op (profile.host_s) and unfused FP8
quantization (profile.fp8_quant_fused false), under the timing method the record names
(`timing` column, `window_s`): single kernels captured in CUDA graphs (GPU time only, launch_s
per kernel), or layers timed per repetition with CUDA events (host dispatch included). MLA and MoE layers are composed here from those ops, not from the twin's
attention_ops/moe_ops (which describe DeepSeek's fused V3 stack on an EP group).

Precision labels in the records are kernel names (`bf16`, `fp8-rowwise`, `fp8-tensor`,
`fp8-blockwise`); the twin knows `bf16` and `fp8`. A profile may carry one curve per label; the
twin's `fp8` curve is the kernel V3 uses (blockwise, else rowwise). An FP8 case is predicted by the
twin's `fp8` roofline with that label's curve substituted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json

import numpy as np

from twin.costs import compute
from twin.costs.flops import BF16_BYTES, Op, OpKind
from twin.costs.gemm_alignment import align_class
from twin.costs.profile import Profile
from twin.core.specs import GPUSpec, ModelSpec, get_gpu, get_model
from twin.moe.load import expected_topk_rows, zipf_weights

from calibration import b_kernels
from calibration.bwd_grouped import layout_factors
from calibration.grouped_clock import gpu_clock_factors
from calibration.index_put import index_put_s_per_elem

# which GEMM benches/labels the twin can predict
FP8_PREFERENCE = ("fp8-blockwise", "fp8-rowwise", "fp8-tensor", "fp8")


def gpu_spec(gpu: str) -> GPUSpec:
    """Records folder name (h100, h200, ...) -> catalog GPU spec."""
    return get_gpu(gpu.lower())


def twin_precision(label: str) -> str:
    return "bf16" if label in ("bf16", "") else "fp8"


# label -> (profile, profile_for_label(profile, label)) of the last call: a fit predicts every record
# row under one trial profile at a time, and rebuilding it per row (dataclasses.replace) was a large
# part of fit_gpu (the synthetic H200 fit of tests/calibration/test_validate.py 58-72 s -> 31-46 s
# in three paired runs on a shared machine, the same profile out). Keyed by the (frozen) profile
# object itself, held here, so an id is never reused.
_LAST_FOR_LABEL: dict[str, tuple[Profile, Profile]] = {}


def profile_for_label(profile: Profile, label: str) -> Profile:
    """The profile with the `fp8` curves replaced by those of an FP8 kernel label (if it has them):
    the forward's and the weight-gradient form's (`<label>/wgrad`, the curve row_kernel names a
    grouped_gemm_wgrad row's and a fit fits, read by compute.grouped_gemm_time_s as `fp8/wgrad`)."""
    if twin_precision(label) == "bf16" or label == "fp8":
        return profile
    last = _LAST_FOR_LABEL.get(label)
    if last is not None and last[0] is profile:
        return last[1]
    g = profile.gemm.get(label, profile.gemm["fp8"])
    grouped = {**profile.grouped_gemm, "fp8": profile.grouped_gemm.get(label, profile.grouped_gemm["fp8"])}
    wgrad = label_wgrad_curve(profile.grouped_gemm, label)
    if wgrad is not None:
        grouped[compute.wgrad_curve("fp8")] = wgrad
    out = dataclasses.replace(profile, gemm={**profile.gemm, "fp8": g}, grouped_gemm=grouped)
    _LAST_FOR_LABEL[label] = (profile, out)
    return out


def label_wgrad_curve(curves: dict, label: str):
    """The weight-gradient curve of an FP8 grouped kernel label: its own (`<label>/wgrad`) where the
    table has one, else the twin's `fp8/wgrad`; None where neither (the forward curve then serves)."""
    return curves.get(compute.wgrad_curve(label), curves.get(compute.wgrad_curve("fp8")))


def grouped_kernel(label: str, rows_per_group, n: int, k: int) -> str:
    """The kernel configuration torch._scaled_grouped_mm runs for a row-wise FP8 grouped GEMM on
    Hopper, by its dispatch rule on the mean rows per group m, n and k (PyTorch 2.11
    aten/src/ATen/native/cuda/ScaledGroupMM.cu, dispatch_fp8_grouped_gemm_on_tile_size, no fast
    accumulation as real/ calls it): m <= 128 or n <= 128 -> 64x128x128 ping-pong tiles
    (`<label>/small`); two of m, n, k >= 2048 (m with either) -> 128x128x128 cooperative (the
    label's own curve); otherwise 128x256x64 cooperative (`<label>/medium`). A profile may hold one
    curve per configuration; other labels (BF16 torch._grouped_mm) map to themselves."""
    if label != "fp8-rowwise":
        return label
    rows = [r for r in rows_per_group]
    m = sum(rows) / max(1, len(rows))
    if m <= 128 or n <= 128:
        return f"{label}/small"
    large = (m >= 2048 and k >= 2048) or (m >= 2048 and n >= 2048) or (k >= 2048 and n >= 2048)
    return label if large else f"{label}/medium"


def row_kernel(row) -> str:
    """The GEMM curve a gemm/grouped_gemm record row is timed with (grouped_kernel for grouped
    rows, `<label>/wgrad` for the weight-gradient form, the precision label otherwise)."""
    if row["bench"] == "grouped_gemm_wgrad":
        return compute.wgrad_curve(row["precision"])
    if row["bench"] == "grouped_gemm":
        return grouped_kernel(row["precision"], [int(row["tokens_per_group"])] * int(row["groups"]),
                              int(row["n"]), int(row["k"]))
    return row["precision"]


def _memory_ops(row, e: "Eager") -> None:
    """real/bench.py bench_memory ops as the kernels they launch (bytes per kernel counted from
    the code; `bytes_moved` in the records counts each input read once and output written once)."""
    op, T, width = row["op"], int(row["tokens"]), int(row["width"])
    nbytes = float(row["bytes_moved"])
    if op == "swiglu":                      # silu(a) then * b: 2 kernels, 10 bytes per output element,
        e.strided(nbytes * 10.0 / 6.0, kernels=2)   # both on strided chunk views (Eager.strided)
    elif op == "rmsnorm":                   # fused F.rms_norm: two passes over each row (sum of
        e.mem(nbytes * 1.5)                 # squares, then normalize) + the write: 3 x T x D x 2 B
    elif op == "router_topk":               # real/model.py route(), V3's 8 groups, top-4 groups, top-8
        E, G = width, 8
        e.mem(T * E * 4 * 2.0)              # sigmoid (the bench's input)
        e.mem(T * E * 4 * 3.0)              # + bias
        e.topk(T * G, E // G, 2)            # best two per group
        e.mem(T * G * 2 * 4 * 2.0)          # their sum
        e.topk(T, G, 4)                     # top-4 groups
        e.small(2)                          # ones_like, scatter
        e.mem(T * E * 4 * 2.0 + T * G)      # masked_fill
        e.topk(T, E, 8)                     # top-8 experts
        e.small(5)                          # gather, sum, clamp, div, * route_scale
    elif op == "mla_qk_cat":                # MLA's q and k: two cats of strided split views
        e.cat(nbytes, kernels=2)
    elif op.startswith("topk"):             # bench_topk: one torch.topk
        e.topk(T, width, int(op[4:]))
    elif op in ("fp8_quant_1x128", "fp8_quant_rowwise"):
        e.quant(T * width)
    elif op in ("silu_strided", "mul_strided"):   # memory_alone: one kernel of swiglu on chunk views
        e.strided(nbytes)
    elif op in ("index_gather", "index_copy", "index_put_acc"):   # memory_alone: one row gather/scatter
        e.gather(nbytes)
    else:                                   # copy, softmax: one kernel each
        e.mem(nbytes)


def record_clock_factor(row, profile: Profile) -> float:
    """A primitive GEMM record's time at the profile's GEMM clock over its time at its own clock
    (clock_factor; 1 where the profile's curves are at the records' own clocks)."""
    if not profile.gemm_clock_mhz:
        return 1.0
    return clock_factor(row["precision"], row.get("sm_clock_mhz"), profile.gemm_clock_mhz)


# the BF16 GEMM curves (table, label) an in-layer speed-up applies to (s14gemm's candidate L2)
BF16_GEMM_CURVES = (("gemm", "bf16"), ("grouped_gemm", "bf16"), ("grouped_gemm", "bf16/wgrad"))


def with_bf16_speed(profile: Profile, speed: float) -> Profile:
    """The profile with the BF16 GEMM curves' e_max x `speed` (capped at 1): the compute-bound part
    of a BF16 GEMM at another SM clock (time ~ 1 / clock), the memory-bound part unchanged."""
    tables = {"gemm": dict(profile.gemm), "grouped_gemm": dict(profile.grouped_gemm)}
    for table, label in BF16_GEMM_CURVES:
        curve = tables[table].get(label)
        if curve is not None:
            tables[table][label] = dataclasses.replace(curve, e_max=min(1.0, curve.e_max * speed))
    return dataclasses.replace(profile, gemm=tables["gemm"], grouped_gemm=tables["grouped_gemm"])


def at_records_speed(profile: Profile) -> Profile:
    """The profile a primitive GEMM record is predicted with: under L2 (Profile.bf16_layer_speedup)
    the BF16 curves back at the records' loop clock; else the profile itself."""
    if not profile.bf16_layer_speedup:
        return profile
    return with_bf16_speed(profile, 1.0 / profile.bf16_layer_speedup)


def clock_family(precision: str) -> str:
    """Profile.gemm_clock_mhz key of a GEMM record's precision label: 'fp8' for every FP8 kernel."""
    return "fp8" if str(precision).startswith("fp8") else "bf16"


def clock_factor(precision: str, row_clock_mhz, clocks: dict) -> float:
    """A GEMM record's time at the curves' clock over its time as measured: row clock / curve clock
    where the record ran below the curve clock (time ~ 1 / SM clock), else 1 (no clock, or not
    throttled)."""
    curve_clock = clocks.get(clock_family(precision))
    if not curve_clock or not row_clock_mhz or not np.isfinite(row_clock_mhz):
        return 1.0
    return min(1.0, float(row_clock_mhz) / curve_clock)


# the benches that time one kernel alone (CUDA-graph loops, records.PRIMITIVE_BENCHES): predicted
# without the in-layer factors (Profile.alone; s15gl's candidate G)
ALONE_BENCHES = ("gemm", "grouped_gemm", "grouped_gemm_wgrad", "attn_fwd", "attn_bwd", "memory", "memory_alone")
_LAST_ALONE: list = []   # [(profile, profile.alone())] of the last call: one object per trial profile


def alone_profile(profile: Profile) -> Profile:
    """profile.alone(), the same object for the same profile (profile_for_label's cache keys on it)."""
    if not profile.in_layer:
        return profile
    if not _LAST_ALONE or _LAST_ALONE[0][0] is not profile:
        _LAST_ALONE[:] = [(profile, profile.alone())]
    return _LAST_ALONE[0][1]


@functools.cache
def record_model(name: str) -> ModelSpec:
    """get_model(name), built once a process: a layer record names its catalog model, and building
    the (frozen) spec again for each row under each trial profile (fields.build's checks) was a
    quarter of a fit's stage 2 (the committed H100 fit_profile 6.8 -> 5.1 s of CPU, the same profile)."""
    return get_model(name)


def predict_s(row, gpu: GPUSpec, profile: Profile) -> float | None:
    """Predicted seconds of a record row, or None when the twin has no prediction for its bench."""
    b = row["bench"]
    if b in ALONE_BENCHES:
        profile = alone_profile(profile)
    e = Eager(gpu, profile)
    if b in ("gemm", "grouped_gemm", "grouped_gemm_wgrad"):
        e = Eager(gpu, at_records_speed(profile))   # L2 (s14gemm): the curves as the records ran them
        label = row["precision"]
        if b != "gemm":   # grouped_gemm_wgrad: dW = x^T g per group (real/fp8.py _Fp8GroupedMM backward)
            e.grouped([int(row["tokens_per_group"])] * int(row["groups"]), int(row["n"]), int(row["k"]), label,
                      transposed=b == "grouped_gemm_wgrad", in_layer=False)
        else:
            e.gemm(int(row["m"]), int(row["n"]), int(row["k"]), label)
        # curves at the in-layer clock (s14gemm): the record is predicted at the clock it ran at
        return window_s(row, [], e.ops) / record_clock_factor(row, profile)
    if b in ("attn_fwd", "attn_bwd"):
        op = Op("attn_core", OpKind.ATTENTION, "attn", batch=int(row["batch"]), seq_len=int(row["seq_len"]),
                heads=int(row["num_heads"]), qk_dim=int(row["qk_head_dim"]), v_dim=int(row["v_head_dim"]),
                causal=bool(row["causal"]), precision="bf16")
        e.attention(op, "fwd")
        if b == "attn_fwd":
            return window_s(row, [], e.ops)
        bwd = Eager(gpu, profile)
        bwd.attention(op, "bwd")
        return window_s(row, e.ops, bwd.ops)
    if b in ("memory", "memory_alone"):   # memory_alone: s15gl2's fitting rows (real/bench/memory.py)
        _memory_ops(row, e)
        return window_s(row, [], e.ops)
    direction = "fwd" if b.endswith("_fwd") else "bwd"
    if b in ("mla_layer_fwd", "mla_layer_bwd"):
        f, bw = mla_layer_ops(record_model(row["model"]), int(row["batch"]), int(row["seq_len"]), row["precision"], gpu,
                              profile)
        f.call_edges("fwd")     # each timed call's host before its first and after its last launch
        bw.call_edges("bwd")
        return _layer_time_s(row, f, bw, direction)
    if b in ("moe_layer_fwd", "moe_layer_bwd"):
        spec = record_model(row["model"])
        counts = expert_rows(row, spec.top_k)
        f, bw = moe_layer_ops(spec, int(row["tokens"]), counts, row["precision"], gpu, profile)
        return _layer_time_s(row, f, bw, direction)
    return None


def mla_layer_ops(spec, batch: int, seq: int, label: str, gpu: GPUSpec, profile: Profile,
                  split_weight_grads: bool = False, grad: bool = True) -> tuple["Eager", "Eager"]:
    """real/'s MLA layer forward and backward as it runs eagerly: the named ops (_mla_ops) and the
    kernels they launch beyond those (Eager.missing_kernels); under autograd (`grad`; False for a
    no-grad forward: prefill, decode) the host time per dispatched operator where the profile holds
    it (Eager.host_per_op)."""
    f, b = _mla_ops(spec, batch, seq, label, gpu, profile, split_weight_grads)
    f.missing_kernels("mla_layer_fwd", label)
    b.missing_kernels("mla_layer_bwd", label)
    if grad:
        f.host_per_op("mla_layer_fwd", label, spec.name)
        b.host_per_op("mla_layer_bwd", label, spec.name)
    return f, b


def gqa_layer_ops(spec, batch: int, seq: int, label: str, gpu: GPUSpec, profile: Profile,
                  split_weight_grads: bool = False, grad: bool = True) -> tuple["Eager", "Eager"]:
    """real/'s GQA layer (real/model.py GQA) forward and backward as it runs eagerly: the named ops
    of _gqa_ops only. No layer record of it exists, so neither the kernels MLA's records show beyond
    its named ops (Eager.missing_kernels) nor a measured host time per aten operator
    (Eager.host_per_op) is carried over; `grad` is accepted for attention_layer_ops' signature."""
    return _gqa_ops(spec, batch, seq, label, gpu, profile, split_weight_grads)


def attention_layer_ops(spec, batch: int, seq: int, label: str, gpu: GPUSpec, profile: Profile,
                        split_weight_grads: bool = False, grad: bool = True) -> tuple["Eager", "Eager"]:
    """The attention sublayer real/model.py Block runs for `spec.attention`: MLA or GQA."""
    layer_ops = gqa_layer_ops if spec.attention == "gqa" else mla_layer_ops
    return layer_ops(spec, batch, seq, label, gpu, profile, split_weight_grads, grad=grad)


def moe_layer_ops(spec, tokens: int, counts, label: str, gpu: GPUSpec, profile: Profile,
                  split_weight_grads: bool = False, gate_grad: bool = False,
                  token_side: bool = True, argsort_passes: bool = True,
                  token_sort_elems: float | None = None) -> tuple["Eager", "Eager"]:
    """real/'s MoE layer (injected routing) forward and backward as it runs eagerly (_moe_ops plus
    Eager.missing_kernels); `gate_grad`: the routing weights come from the gate and take a
    gradient (a model's layer, not a layer record's injected routing); `token_side` False: the
    forward without the sort and un-sort of the (token, slot) rows (_moe_ops); `argsort_passes`:
    _moe_ops's; `token_sort_elems`: an EP rank's own tokens x top-k (sort_path_kernels)."""
    f, b = _moe_ops(spec, tokens, counts, label, gpu, profile, split_weight_grads, gate_grad, token_side,
                    argsort_passes=argsort_passes)
    f.missing_kernels("moe_layer_fwd", label, sort_elems=tokens * spec.top_k, token_sort_elems=token_sort_elems)
    b.missing_kernels("moe_layer_bwd", label, sort_elems=tokens * spec.top_k, token_sort_elems=token_sort_elems)
    return f, b


def sort_path_kernels(direction: str, missing: int, radix: int, sort_elems: float,
                      token_sort_elems: float | None = None) -> tuple[int, int]:
    """(missing kernels, radix kernels among them) of a MoE layer call once its sorts take their paths.
    `sort_elems`: the layer's routed rows (an EP layer: the priced rank's received rows);
    `token_sort_elems`: an EP rank's own tokens x top-k (its token-side argsorts), None: `sort_elems`.
    Off (ADOPT_PER_SORT_FWD / _BWD): the whole layer, both directions, on torch's threshold at
    `sort_elems` (3 small-sort kernels a sort, two sorts)."""
    if direction == "bwd" and ADOPT_PER_SORT_BWD:
        counts = (sort_elems, sort_elems if token_sort_elems is None else token_sort_elems)
        if max(counts) <= CUB_SINGLE_TILE_ITEMS:
            return max(0, missing - radix + INDEX_PUT_SORTS), 0
        return missing, radix
    if direction == "fwd" and ADOPT_EP_FOUR_SORTS and token_sort_elems is not None:
        # s25ep F4: an EP rank's four argsorts (real/ep.py), two on its own tokens x top-k, two on its
        # received rows, each above torch's threshold with half the layer's measured radix kernels
        counts = (sort_elems, sort_elems, token_sort_elems, token_sort_elems)
        small = sum(1 for c in counts if c <= SMALL_SORT_ELEMS)
        kept = int(round(radix * (len(counts) - small) / FWD_ARGSORTS))
        return max(0, missing - radix + kept + small * SMALL_SORT_KERNELS), kept
    if direction == "fwd" and ADOPT_PER_SORT_FWD:
        counts = (sort_elems, sort_elems if token_sort_elems is None else token_sort_elems)
        small = sum(1 for c in counts if c <= SMALL_SORT_ELEMS)
        kept = int(round(radix * (FWD_ARGSORTS - small) / FWD_ARGSORTS))
        return max(0, missing - (radix - kept) + small * SMALL_SORT_KERNELS), kept
    if sort_elems <= SMALL_SORT_ELEMS:
        return max(0, missing - radix + 2 * SMALL_SORT_KERNELS), 0
    return missing, radix


# ---------------------------------------------------------------------------------------------
# Eager execution of real/ (what the records timed): a host that dispatches PyTorch ops one by
# one and a GPU that runs each op's kernel(s) once dispatched. Per-repetition CUDA events start
# when the GPU reaches them, so a host-bound op measures its host cycle and a GPU-bound one its
# kernels (steady state of back-to-back repetitions, `timed_window_s`).


# s15bw (docs/notes/s15bw_rule.md, the rule committed before the held-out figures under it): the
# MoE backward's index_put_ (accumulate) kernels at their measured seconds per element
# (calibration.index_put, fitting split's kernel records) instead of a gather at gather_eff
ADOPT_INDEX_PUT_RATE = True

# s15bw2 (docs/notes/s15bw2_rule.md, candidate J, the rule committed before the held-out figures
# under it): BF16 zero fills, index_put_'s radix passes and cross entropy's softmax at their
# measured rates (calibration.b_kernels, fitting split's pipeline kernel records)
ADOPT_B_KERNEL_RATES = False

# s16rx (docs/notes/s16rx_rule.md, the rule committed before the held-out figures under it; s15bw2's
# after-the-fact figures for this part were seen): J's third law alone, index_put_'s onesweep radix
# passes at the measured seconds a pass (calibration.b_kernels radix_pass_s). Adopted by its rule.
ADOPT_RADIX_PASSES = True
# s16rx, the same note: the forward's torch.argsort calls (real/model.py MoE.routed, real/ep.py dispatch
# and combine), 8 onesweep passes of int64 keys each, at the forward's measured seconds a pass
# (calibration.b_kernels argsort_pass_s), judged after ADOPT_RADIX_PASSES. Not adopted (its rule's
# criterion 3: the 2xH100 EP step +0.62 point, the EP2 layers' P90 +0.67 point)
ADOPT_ARGSORT_PASSES = False

# s15gg (docs/notes/s15gg_rule.md, candidate K, the rule committed before the held-out figures under
# it): the MoE backward's dgrad and wgrad grouped GEMMs at their layout's measured rate relative to
# the forward's in the same layer (calibration.bwd_grouped, fitting split's kernel records)
ADOPT_BWD_GROUPED_LAYOUT = True

# s16gg2 (docs/notes/s16gg2_rule.md, the rule committed before the held-out figures under it): every
# grouped GEMM inside a layer, step, block or serving replay at the in-layer SM clock: its compute
# time x f_alone_fit / f_in_layer (calibration.grouped_clock, fitting split's clock readings);
# the alone kernel records keep the curves as fitted
ADOPT_GROUPED_LAYER_CLOCK = False

# PyTorch aten/src/ATen/native/cuda/Sort.h should_use_small_sort: a sort of at most 4,096 elements
# runs sortKeyValueInplace (after fillSliceWithIndex and a copy) instead of the radix sort
SMALL_SORT_ELEMS = 4096
SMALL_SORT_KERNELS = 3
# s24sort (docs/notes/s24sort_rule.md, the rule committed before any figure under it): each sort takes
# the path of its own element count. (F) the forward's two modelled argsorts split the layer's radix
# kernels evenly, each on torch's threshold with its own count (an EP rank's token-side argsorts sort its
# own tokens x top-k, the receive side its received rows: real/ep.py); (B) the backward's sorts are
# index_put_'s cub radix_sort_pairs (Indexing.cu), which torch's threshold does not gate: its radix kernels
# stay unless the rows fit cub's single tile (CUB_SINGLE_TILE_ITEMS), one kernel per index_put_ sort.
# Both adopted by the rule: (B) S1, the 64 one-GPU moe_layer_bwd records at 4,096 rows, median |error| H100
# 4.65 -> 3.87%, H200 3.47 -> 2.77%; (F) S2, the 8l EP2 forward a micro-batch closer on 4 of 4 rows; no other
# validated row moves
ADOPT_PER_SORT_FWD = True
ADOPT_PER_SORT_BWD = True
# cub DeviceRadixSort's single tile for int64 key-value pairs: SingleTilePolicy 256 threads x 19 items
# for 4-byte keys, scaled to 9 items for 8-byte ones (cub/device/dispatch/dispatch_radix_sort.cuh
# policies); read from the source, not measured
CUB_SINGLE_TILE_ITEMS = 256 * 9
# the MoE backward's index_put_ sorts: three histogram kernels in every profiled backward (kernels.csv)
INDEX_PUT_SORTS = 3
FWD_ARGSORTS = 2   # MoE.routed's argsort and argsort(order): the sorts the forward's radix kernels were measured on

# s25ep (docs/notes/s25ep_rule.md, the rule committed before any figure under it; off until it passes).
# F4: an EP layer's forward prices the four argsorts an EP rank runs (real/ep.py: dispatch's argsort of the
# expert ids and combine's argsort(order) on the rank's own tokens x top-k, the local-expert argsort and
# argsort(perm) on its received rows), each on torch's threshold with its own count, where s24sort's (F)
# prices two (sort_path_kernels)
ADOPT_EP_FOUR_SORTS = False
# H: a cub radix launch (CubLaunch: the layer's radix kernels among its missing ones, launched from inside
# its sort's one ATen dispatch) takes CUB_LAUNCH_HOST_S[gpu] host seconds where a step's op lists take a
# per-launch host rate (with_host_terms with a rate and the CUB_LAUNCH_TERM key: calibration.pipeline's
# stage ops), not the rate; the rates solved from host intervals price it the same way
ADOPT_CUB_LAUNCH_HOST = False
CUB_LAUNCH_TERM = "cub_launch_host"
# host seconds a cub radix launch (memsets included) inside one torch.argsort call: real/bench/sort_sweep.py
# rows of that GPU's host, calibration.ep_sort_host.cub_launch_host_s (the median over the argsort sizes above
# 4,096 of (host_s - host at 4,000-4,096) / (device ops - device ops there)); tests/calibration/
# test_ep_sort_host.py recomputes each from its record
CUB_LAUNCH_HOST_S: dict[str, float] = {
    "h100": 3.353e-6,   # h100/s24sort_20261128_0424 (one NVIDIA H100 80GB HBM3, torch 2.11.0+cu130)
    "h200": 4.152e-6,   # h200x2/s25ep_20261128_0532/sortsweep (the s25ep pair's GPU 0, NVIDIA H200, torch 2.11.0+cu130)
}
INT64_BYTES = 8   # argsort's keys (expert ids, orders) and its index output

# real/fp8.py quantize_rowwise / quantize_1x128 / quantize_128x128: abs, amax, float (scale),
# clamp, divide, float (x), divide, clamp, cast -> 9 kernels (4-6 of them full-size passes)
QUANT_KERNELS = 9


class FixedHost(tuple):
    """An eager op (host_s, gpu_s) whose host time was measured for that very call (a collective:
    calibration.parallel_blocks), kept as it is where Eager.use_eager_host gives every other op
    the layer's measured host dispatch per kernel."""


class PerOpHost(tuple):
    """An eager op (host_s, gpu_s) whose host time is its layer's share of the host time per
    dispatched aten operator times the operators the layer dispatches (Eager.host_per_op), kept as
    it is where Eager.use_eager_host gives every other op the host time per kernel."""


class NoGradHost(tuple):
    """An eager op (host_s, gpu_s) dispatched from Python inside an autograd.Function's forward or
    backward (real/fp8.py _Fp8Linear, _Fp8GroupedMM: the FP8 GEMMs, their quantizations and
    transposed copies), where grad mode is off: no autograd node is recorded or run per op, so it
    dispatches as a no-grad forward does. Eager.use_eager_host gives it the profile's measured
    no-grad host time per kernel (Profile.eager host_s["infer"], the `infer` phase of the
    host_dispatch records: a layer forward under torch.no_grad)."""


class CubLaunch(tuple):
    """One of a MoE layer's cub radix launches (onesweep passes, histogram, exclusive sum, memsets of a
    sort): (0.0, launch_s) as Eager.missing_kernels builds it (launched from inside the sort's one
    dispatch); with_host_terms gives it CUB_LAUNCH_HOST_S (ADOPT_CUB_LAUNCH_HOST) where the others take a
    rate. Eager.use_eager_host keeps it (host 0.0)."""


class EpOp(tuple):
    """An op of real/ep.py's dispatch or combine forward whose host time the EP host marks measure
    (s13ep): `term` names its key in calibration.pipeline's EP host terms. A launch like any other
    (Eager.use_eager_host keeps the class) unless a records folder's terms are adopted
    (calibration.pipeline.ADOPT_EP_HOST_TERMS, with_host_terms; the EP layer cases since s13epl:
    calibration.whole_step.ADOPT_EP_LAYER_HOST_TERMS)."""

    term = ""


class EpCountsCall(EpOp):
    """The split-size exchange: dist.all_to_all_single of the per-expert counts."""

    term = "ep_counts_a2a"


class EpTokensCall(EpOp):
    """A token all-to-all through torch.distributed.nn's autograd wrapper (dispatch or combine)."""

    term = "ep_tokens_a2a"


class EpSendSync(EpOp):
    """Dispatch's first .tolist() (send splits): a synchronisation after the counts exchange."""

    term = "ep_send_sync"


class EpRecvSync(EpOp):
    """Dispatch's second .tolist() (receive splits): a synchronisation on an idle GPU."""

    term = "ep_recv_sync"


class EpBwdTokensCall(EpOp):
    """A token all-to-all's backward node (torch.distributed.nn's _AlltoAllSingle.backward on the autograd
    thread: its output allocation and the call), dispatch's or combine's: its host seconds are
    calibration.pipeline's EP_BWD_A2A_TERM where ADOPT_EP_BWD_HOST (s23bwd2), otherwise a launch."""

    term = "ep_bwd_a2a"


# the key of the post-sync host ratio among the EP host terms (calibration.pipeline.ADOPT_EP_POSTSYNC_HOST)
EP_POSTSYNC_TERM = "ep_postsync_ratio"
# ... and of the ratio every other launch of an EP forward takes (candidate B of the same rule)
EP_PRESYNC_TERM = "ep_rest_ratio"


def with_host_terms(ops: list, host_s: float | None, ep_terms: dict | None = None) -> list:
    """`ops` with every launch's host time set to `host_s` (synchronisations kept); unchanged if None.
    `ep_terms` (calibration.pipeline.EP_HOST_TERMS, measured by real/ep.py's host marks, adopted):
    each EP all-to-all call (EpOp) takes its measured host seconds, and after each of dispatch's
    synchronisations the host spends its measured extra seconds (a host-only op); with the key
    EP_POSTSYNC_TERM (s23ephost) the launches between the receive-splits sync and combine's
    all-to-all call take that ratio times their host seconds."""
    if not ep_terms and host_s is None:
        return ops
    # s23ephost (ADOPT_EP_POSTSYNC_HOST, calibration.ep_postsync): every launch the host issues after
    # dispatch's receive-splits .tolist() (the GPU idle) up to combine's all-to-all call takes
    # `ep_postsync_ratio` times its host seconds; 1 (absent) leaves it as it is
    ratio = (ep_terms or {}).get(EP_POSTSYNC_TERM, 1.0)
    # candidate B (s23ephost): every other launch of an EP forward (one with a receive-splits sync)
    rest = (ep_terms or {}).get(EP_PRESYNC_TERM, 1.0)
    if rest != 1.0 and not any(isinstance(op, EpRecvSync) for op in ops):
        rest = 1.0
    # s25ep H (ADOPT_CUB_LAUNCH_HOST): a cub radix launch at its measured host seconds where the rest take
    # a rate, unscaled by the EP ratios
    cub_s = (ep_terms or {}).get(CUB_LAUNCH_TERM) if ADOPT_CUB_LAUNCH_HOST and host_s is not None else None
    out, post, calls = [], False, 0
    for op in ops:
        h, g = op
        if cub_s is not None and isinstance(op, CubLaunch):
            out.append(CubLaunch((cub_s, g)))
            continue
        term = (ep_terms or {}).get(op.term) if isinstance(op, EpOp) else None
        if h is None:
            out.append(op)
            if term is not None:
                out.append((term, 0.0))
            post, calls = post or isinstance(op, EpRecvSync), 0
            continue
        if isinstance(op, EpTokensCall) and post:
            calls += 1
            post = calls < 2          # combine's all-to-all (the second call) ends the stretch
        new = (term if term is not None else h if host_s is None else host_s, g)
        if not isinstance(op, EpOp) and (ratio if post else rest) != 1.0:
            new = (new[0] * (ratio if post else rest), g)   # a float, or calibration.pipeline's solved-rate marker
        out.append(type(op)(new) if isinstance(op, EpOp) else new)   # EpOp kept: ep_host.twin_groups
    return out


def component_of(host_class: str) -> str:
    """The component an eager op's GPU time counts under (Eager.component_s), by its host class."""
    for prefix, name in (("grouped_gemm", "grouped_gemm"), ("gemm", "gemm"), ("attn", "attention")):
        if host_class.startswith(prefix):
            return name
    return "memory"


# s30mem (docs/notes/s30mem_rule.md): the GPU time of a pipeline stage's kernels per component at the rate the
# profiled pipeline ops measured (calibration.pipeline.stage_kernel_scale, the switch
# calibration.pipeline.ADOPT_PIPELINE_KERNEL_RATES): while `stage_kernel_scale` is open, Eager.add multiplies an op's
# GPU seconds by {("fb" | "w", component): factor} ("w": an op inside weight_grad() of a split backward, "fb" any
# other); the launch-bound ops ("launch") and ops with their own measured time (fixed) keep theirs
_STAGE_KERNEL_SCALE: dict | None = None


@contextlib.contextmanager
def stage_kernel_scale(scale: dict | None):
    """Eager.add's factors by (direction, component) while open (None: none); nests, restoring the outer one."""
    global _STAGE_KERNEL_SCALE
    outer, _STAGE_KERNEL_SCALE = _STAGE_KERNEL_SCALE, scale
    try:
        yield
    finally:
        _STAGE_KERNEL_SCALE = outer


class Eager:
    """Ops of one eager region in issue order: (host_s, gpu_s) pairs, costed with the twin's own
    cost functions (twin.costs.compute) under `profile`, label-specific GEMM curves included."""

    def __init__(self, gpu: GPUSpec, profile: Profile, split_weight_grads: bool = False,
                 component_scale: dict | None = None):
        self.gpu, self.profile, self.ops = gpu, profile, []
        # {component: factor} on the GPU time of every op added under it (None: 1): a block's
        # kernels as measured beside the twin's costing of them (calibration.parallel_blocks
        # block_component_factors, from the fitting split's traces)
        self.component_scale = component_scale or {}
        # zero-bubble schedules run weight gradients as separate W ops: with split_weight_grads the
        # ops issued inside weight_grad() go to w_ops instead (otherwise they stay in issue order)
        self.split_weight_grads, self.w_ops, self._in_wgrad = split_weight_grads, [], False
        self._in_function = False   # inside an autograd.Function (NoGradHost)
        # GPU seconds per component (component_of: gemm, grouped_gemm, attention, nccl, memory,
        # launch) of the ops and of the w_ops: where a composed op's kernel time goes
        # (calibration.pipeline.op_components sets it beside the profiled kernels)
        self.component_s: dict[str, float] = {}
        self.w_component_s: dict[str, float] = {}
        self.transposed_bytes = 0.0   # bytes named by transpose() (calibration.layer_gaps.measured_transpose_eff)

    def add(self, host_class: str, gpu_s: float, component: str | None = None) -> None:
        target = self.w_ops if (self._in_wgrad and self.split_weight_grads) else self.ops
        component = component or component_of(host_class)
        gpu_s = gpu_s * self.component_scale.get(component, 1.0)
        if _STAGE_KERNEL_SCALE:   # s30mem: a pipeline stage's kernels at the profiled ops' rate
            gpu_s = gpu_s * _STAGE_KERNEL_SCALE.get(
                ("w" if self._in_wgrad and self.split_weight_grads else "fb", component), 1.0)
        op = (self.profile.host(host_class), gpu_s)
        target.append(NoGradHost(op) if self._in_function else op)
        self._count(component, gpu_s)

    def _count(self, component: str, gpu_s: float, w: bool | None = None) -> None:
        w = (self._in_wgrad and self.split_weight_grads) if w is None else w
        sums = self.w_component_s if w else self.component_s
        sums[component] = sums.get(component, 0.0) + float(gpu_s)

    @contextlib.contextmanager
    def autograd_function(self):
        """Ops issued inside run in an autograd.Function's forward or backward (NoGradHost)."""
        outer, self._in_function = self._in_function, True
        try:
            yield
        finally:
            self._in_function = outer

    def fixed(self, host_s: float, gpu_s: float) -> None:
        """An op with its own measured host time (FixedHost)."""
        target = self.w_ops if (self._in_wgrad and self.split_weight_grads) else self.ops
        target.append(FixedHost((float(host_s), gpu_s)))
        self._count("fixed", gpu_s)

    @contextlib.contextmanager
    def weight_grad(self):
        """Ops issued inside are weight-gradient work (dW GEMMs and their operand preparation)."""
        self._in_wgrad = True
        try:
            yield
        finally:
            self._in_wgrad = False

    def mem(self, bytes_: float, kernels: int = 1) -> None:
        """`kernels` bandwidth-bound eager ops moving `bytes_` in total."""
        for _ in range(kernels):
            self.add("op", compute.memory_time_s(bytes_ / kernels, self.gpu, self.profile))

    def gather(self, bytes_: float, kernels: int = 1) -> None:
        """Row gather/scatter kernels (index, index_copy, index_put): `profile.gather_eff` of the
        streaming bandwidth."""
        self.mem(bytes_ / self.profile.gather_eff, kernels)

    def index_put(self, rows: float, width: int, dest_rows: float | None = None,
                  unnamed_fill_rows: float = 0.0) -> None:
        """Autograd's backward of a row gather x[idx] after its zeroed gradient: torch's index_put_
        with accumulate=True (sort-based indexing_backward_kernel) of `rows` x `width` BF16
        elements. Under ADOPT_INDEX_PUT_RATE at the GPU's measured seconds per element
        (calibration.index_put) where the fitting split has them; else a gather reading and
        writing them (gather_eff).
        Under ADOPT_B_KERNEL_RATES or ADOPT_RADIX_PASSES, where measured (calibration.b_kernels), its
        GPU time also holds the sort's onesweep radix passes into `dest_rows` rows beyond the launch
        each one already has among the layer's missing kernels (Profile.eager radix_sort_kernels);
        under ADOPT_B_KERNEL_RATES also the zeroed gradient of `unnamed_fill_rows` x `width` where
        the op list names no fill for it (its launch is a missing kernel too): one op, no new host
        dispatch."""
        rate = index_put_s_per_elem(self.gpu.name) if ADOPT_INDEX_PUT_RATE else None
        if rate is None:
            gpu_s = compute.memory_time_s(2 * rows * width * BF16_BYTES / self.profile.gather_eff, self.gpu, self.profile)
        else:
            gpu_s = rows * width * rate
        self.add("op", gpu_s + self._index_put_extra_s(width, dest_rows, unnamed_fill_rows))

    def _index_put_extra_s(self, width: int, dest_rows: float | None, unnamed_fill_rows: float) -> float:
        """index_put_'s radix passes past their launches (ADOPT_B_KERNEL_RATES or ADOPT_RADIX_PASSES)
        and an unnamed zero fill (ADOPT_B_KERNEL_RATES)."""
        passes_on = ADOPT_B_KERNEL_RATES or ADOPT_RADIX_PASSES
        pass_s = b_kernels.law(self.gpu.name, "radix_pass_s") if passes_on else None
        fill_s_per_byte = b_kernels.law(self.gpu.name, "fill_s_per_byte") if ADOPT_B_KERNEL_RATES else None
        extra = 0.0
        if pass_s is not None and dest_rows:
            extra += b_kernels.radix_passes(dest_rows) * max(0.0, pass_s - self.profile.launch_s)
        if fill_s_per_byte is not None and unnamed_fill_rows:
            extra += unnamed_fill_rows * width * BF16_BYTES * fill_s_per_byte
        return extra

    def argsort(self, elems: float, passes: bool = True) -> None:
        """torch.argsort of `elems` int64 keys: three streaming kernels over the keys and indices
        (the sort's launches are among the layer's missing kernels, Profile.eager radix_sort_kernels).
        Under ADOPT_ARGSORT_PASSES, where measured (calibration.b_kernels argsort_pass_s), the first
        also holds cub's onesweep passes (ARGSORT_PASSES, the keys' 64 bits) beyond the launch each
        already has, when the sort takes the radix path (more than SMALL_SORT_ELEMS keys). `passes`
        False: a sort the op list names that real/ does not run (EP's local layer's token side)."""
        kernels = 3
        per_kernel_s = compute.memory_time_s(elems * INT64_BYTES * 2 * 4 / kernels, self.gpu, self.profile)
        self.add("op", per_kernel_s + (self._argsort_passes_s(elems) if passes else 0.0))
        for _ in range(kernels - 1):
            self.add("op", per_kernel_s)

    def _argsort_passes_s(self, elems: float) -> float:
        """argsort's onesweep passes past their launches (ADOPT_ARGSORT_PASSES), 0 on the small-sort path."""
        pass_s = b_kernels.law(self.gpu.name, "argsort_pass_s") if ADOPT_ARGSORT_PASSES else None
        if pass_s is None or elems <= SMALL_SORT_ELEMS:
            return 0.0
        return b_kernels.ARGSORT_PASSES * max(0.0, pass_s - self.profile.launch_s)

    def fill(self, bytes_: float) -> None:
        """A BF16 zero fill (new_zeros, autograd's zeroed gradients) writing `bytes_`: under
        ADOPT_B_KERNEL_RATES at the GPU's measured seconds per byte written (calibration.b_kernels:
        write-only fills run at ~3.26 TB/s on H100 and H200 alike), else a streaming kernel."""
        rate = b_kernels.law(self.gpu.name, "fill_s_per_byte") if ADOPT_B_KERNEL_RATES else None
        if rate is None:
            self.mem(bytes_)
            return
        self.add("op", bytes_ * rate)

    def transpose(self, bytes_: float, kernels: int = 1) -> None:
        """Copies of transposed views made contiguous (`.t().contiguous()`): the inner dimension is
        strided on one side, so each warp's loads or stores are uncoalesced; costed at the fitted
        `profile.transpose_eff` of the streaming bandwidth (gather_eff where the profile has none)."""
        eff = self.profile.transpose_eff or self.profile.gather_eff
        self.transposed_bytes += bytes_
        self.mem(bytes_ / eff, kernels)

    def strided(self, bytes_: float, kernels: int = 1) -> None:
        """Elementwise kernels over a strided view (a.chunk(2, -1) halves: inner dim contiguous,
        row stride 2x the width): TensorIterator cannot coalesce them into one contiguous dim, so
        it runs its unrolled OffsetCalculator loop with per-element loads instead of the
        vectorized contiguous loop, which is the loop the index/gather kernels run; costed at
        the same fitted streaming efficiency (`profile.gather_eff`)."""
        self.gather(bytes_, kernels)

    def cat(self, bytes_: float, kernels: int = 1) -> None:
        """torch.cat over strided split views (CatArrayBatchedCopy with per-element offsets):
        `profile.cat_eff` of the streaming bandwidth (gather_eff where the profile has none)."""
        self.mem(bytes_ / (self.profile.cat_eff or self.profile.gather_eff), kernels)

    def topk(self, rows: float, width: int, k: int) -> None:
        self.add("op", compute.topk_time_s(rows, width, k, self.gpu, self.profile))

    def missing_kernels(self, layer_bench: str, label: str, sort_elems: float | None = None,
                        token_sort_elems: float | None = None) -> None:
        """real/'s eager layer as the kernel records show it (Profile.eager, measured by
        calibration.layer_gaps): the kernels it launches that the op list above does not name
        (argsort's radix passes and memsets, index bookkeeping, copies), spread evenly through the
        op sequence, each launch-bound on the GPU (launch_s); and, where measured, the host
        dispatch per launched kernel of the layer's direction (`host_s`: autograd's backward
        dispatches slower than the forward), for the named ops and the missing ones alike."""
        eager = self.profile.eager or {}
        direction = layer_bench.rsplit("_", 1)[-1]
        host = self.use_eager_host(direction)
        n = int(round(eager.get("extra_kernels", {}).get(f"{layer_bench}/{twin_precision(label)}", 0)))
        radix = int(round(eager.get("radix_sort_kernels", {}).get(layer_bench, 0.0)))
        if sort_elems is not None and radix:
            # torch.sort/argsort of <= 4096 elements runs in place (fill indices, copy, one sort
            # kernel: 3 a sort) instead of cub's radix passes and memsets (sort_path_kernels)
            n, radix = sort_path_kernels(direction, n, radix, sort_elems, token_sort_elems)
        if n <= 0:
            return
        h = float(host) if host is not None else self.profile.host("op")
        # cub's radix-sort passes and memsets are launched from inside the sort op's one dispatch:
        # no host time of their own (host 0.0, which use_eager_host keeps)
        missing = [CubLaunch((0.0, self.profile.launch_s)) if j < min(radix, n) else (h, self.profile.launch_s)
                   for j in range(n)]
        ops, out = self.ops, []
        step = len(ops) / n if ops else 0.0
        k = 0
        for i, op in enumerate(ops):
            while k < n and k * step <= i:
                out.append(missing[k])
                k += 1
            out.append(op)
        out += missing[k:]
        self.ops = out
        self._count("launch", n * self.profile.launch_s, w=False)

    def host_per_op(self, layer_bench: str, label: str, model: str) -> bool:
        """Where the profile holds a host time per dispatched aten operator for this layer,
        direction and precision and the operators `model`'s layer dispatches (Profile.eager
        host_s_per_op, aten_ops: calibration.layer_gaps), the layer's host time is their product,
        spread evenly over its dispatched launches (ops and w_ops; synchronisations, kernels launched
        inside another op's dispatch (host 0.0) and ops with their own measured host time kept):
        PerOpHost. False (nothing changed) where either is missing."""
        eager = self.profile.eager or {}
        key = f"{layer_bench}/{twin_precision(label)}"
        rate, n = eager.get("host_s_per_op", {}).get(key), eager.get("aten_ops", {}).get(f"{key}/{model}")
        if rate is None or n is None:
            return False
        spots = [(ops, i) for ops in (self.ops, self.w_ops) for i, op in enumerate(ops)
                 if op[0] and not isinstance(op, FixedHost)]
        if not spots:
            return False
        each = float(rate) * float(n) / len(spots)
        for ops, i in spots:
            ops[i] = PerOpHost((each, ops[i][1]))
        return True

    def call_edges(self, direction: str) -> bool:
        """One timed call of the layer (a record's repetition; not a layer inside a step): where the
        profile holds call edges (Profile.eager["call_edges"][direction], measured by
        calibration.mla_traces from the fitting split's Chrome traces, in kernels' worth of the
        direction's host time per kernel), the host time from the call's start to its first launch
        (`start`: the autograd engine's start and the first node's dispatch, or the module call)
        and from its last launch to its return (`end`) are taken out of the host time the ops
        share evenly and put at the call's edges: the first dispatched op carries `start`, a
        host-only op (FixedHost, no GPU time) closes the call with `end`. The call's host total is
        unchanged (the per-kernel rate was measured over whole calls, edges included); where the
        edges exceed it nothing changes. False (nothing changed) without the term or a rate."""
        eager = self.profile.eager or {}
        edges, rate = eager.get("call_edges", {}).get(direction), eager.get("host_s", {}).get(direction)
        spots = [i for i, op in enumerate(self.ops) if op[0] and not isinstance(op, FixedHost)]
        if not edges or not rate or not spots:
            return False
        start, end = float(edges.get("start", 0.0)) * rate, float(edges.get("end", 0.0)) * rate
        total = sum(self.ops[i][0] for i in spots)
        if start + end >= total:
            return False
        keep = (total - start - end) / total
        for i in spots:
            op = self.ops[i]
            self.ops[i] = type(op)((op[0] * keep + (start if i == spots[0] else 0.0), op[1]))
        self.ops.append(FixedHost((end, 0.0)))
        return True

    def use_eager_host(self, direction: str) -> float | None:
        """Where the profile holds a measured host dispatch time per launched kernel of eager
        forward or autograd backward work (Profile.eager["host_s"], from host_dispatch.csv,
        calibration.layer_gaps), every op issued so far takes it but those with their own measured
        host time (FixedHost); returns it (None: unmeasured)."""
        rates = (self.profile.eager or {}).get("host_s", {})
        host, nograd = rates.get(direction), rates.get("infer")
        if host is not None:
            def each(op):
                # kept: a synchronisation (None), a kernel launched inside another op's dispatch
                # (0.0), an op with its own measured host time (FixedHost); an op inside an
                # autograd.Function dispatches at the no-grad rate where it is measured (NoGradHost)
                if not op[0] or isinstance(op, (FixedHost, PerOpHost)):
                    return op
                if isinstance(op, NoGradHost) and nograd is not None:
                    return NoGradHost((float(nograd), op[1]))
                if isinstance(op, EpOp):
                    return type(op)((float(host), op[1]))
                return (float(host), op[1])
            self.ops = [each(op) for op in self.ops]
            self.w_ops = [each(op) for op in self.w_ops]
        return host

    def sync(self) -> None:
        """A host synchronisation (.item(), .tolist() of a GPU tensor): timed_window_s."""
        self.ops.append((None, 0.0))

    def extend(self, other: "Eager") -> None:
        self.ops += other.ops
        self.w_ops += other.w_ops
        for mine, theirs in ((self.component_s, other.component_s), (self.w_component_s, other.w_component_s)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0.0) + v

    def small(self, n: int) -> None:
        """n tiny ops (index bookkeeping, views that launch a kernel): launch-bound."""
        for _ in range(n):
            self.add("op", self.profile.launch_s, "launch")

    def gemm(self, m: int, n: int, k: int, label: str, pass_: str = "fwd") -> None:
        """A dense GEMM of a linear layer's pass ("fwd", "dgrad", or "wgrad": the weight gradient,
        m x n the weight; every GEMM inside weight_grad() is one): its alignment class is that of
        the layer's two widths, n and k of a forward or input gradient, m and n of a weight
        gradient; the token count is never a row length (compute.ADOPT_GEMM_ALIGNMENT). The layer's
        (outputs, inputs) for the operand pattern (ADOPT_GEMM_ALIGNMENT_PATTERN): (n, k) of a forward,
        (k, n) of an input gradient, (m, n) of a weight gradient."""
        prof = profile_for_label(self.profile, label)
        wgrad = self._in_wgrad or pass_ == "wgrad"
        align, pass_ = (align_class(m, n), "wgrad") if wgrad else (align_class(n, k), pass_)
        widths = {"fwd": (n, k), "dgrad": (k, n), "wgrad": (m, n)}[pass_]
        self.add(f"gemm.{label}", compute.gemm_time_s(m, n, k, twin_precision(label), self.gpu, prof,
                                                      align=align, pass_=pass_, widths=widths))

    def grouped(self, rows, n: int, k: int, label: str, transposed: bool = False, layout: str = "fwd",
                in_layer: bool = True) -> None:
        """One grouped GEMM kernel; `layout` ("fwd", or the backward's "dgrad" / "wgrad"): under
        ADOPT_BWD_GROUPED_LAYOUT a backward layout's time is scaled by its measured factor
        (calibration.bwd_grouped.layout_factors; 1 where the GPU has none). `in_layer` False: a
        kernel timed alone (the grouped records), which ADOPT_GROUPED_LAYER_CLOCK leaves at the
        curve's own clock."""
        kernel = label if transposed else grouped_kernel(label, rows, n, k)
        prof = profile_for_label(self.profile, kernel)
        curve = compute.wgrad_curve(label) if transposed else kernel
        clock = gpu_clock_factors(self.gpu.name, row_kernel).get(curve, 1.0) if ADOPT_GROUPED_LAYER_CLOCK and in_layer else 1.0
        gpu_s = compute.grouped_gemm_time_s(rows, n, k, twin_precision(label), self.gpu, prof, transposed=transposed,
                                            compute_factor=clock)
        if ADOPT_BWD_GROUPED_LAYOUT and layout != "fwd":
            gpu_s *= layout_factors(self.gpu.name).get(layout, 1.0)
        self.add(f"grouped_gemm.{label}", gpu_s)

    def quant(self, elems: float, kernels: int = QUANT_KERNELS) -> None:
        """One unfused quantization (real/fp8.py quantize_*): `kernels` eager ops."""
        t = compute.quantize_time_s(elems, kernels, self.gpu, self.profile)
        for _ in range(kernels):
            self.add("op", t / kernels)

    def attention(self, op: Op, direction: str) -> None:
        self.add(f"attn_{direction}", compute.attention_time_s(op, direction, self.gpu, self.profile))


TIMINGS = ("per_rep_events", "batched_events", "cuda_graph")


def timing_of(row) -> str:
    """The record's timing method (real/bench.py `timing` column); rows from before the column
    existed were timed per repetition."""
    t = row.get("timing") if hasattr(row, "get") else None
    return t if isinstance(t, str) and t in TIMINGS else "per_rep_events"


def window_s(row, setup: list, timed: list) -> float:
    """Predicted time of `timed` ops as the record's timing method measured them:
    cuda_graph      GPU time per call: the kernels back to back, no host (graph replay);
    batched_events  many eager calls between one event pair: steady state, whichever of the host's
                    dispatch and the GPU's kernels is slower per call;
    per_rep_events  CUDA events around each eager repetition (`timed_window_s`)."""
    t = timing_of(row)
    if t == "cuda_graph":
        return sum(g for _, g in timed)
    if t == "batched_events":
        return max(sum(h for h, _ in timed), sum(g for _, g in timed))
    return timed_window_s(setup, timed)


def timed_window_s(setup: list, timed: list, reps: int = 3) -> float:
    """Median-repetition time of `timed` ops (host_s, gpu_s) run back to back after untimed
    `setup` ops, CUDA events around each repetition (real/bench.py Timer, records as committed).
    An op with host_s None is a host synchronisation (Eager.sync: .item(), .tolist()): the host
    waits there until the GPU has run everything issued before it."""
    host = gpu = start = 0.0

    def run(ops):
        nonlocal host, gpu
        for h, g in ops:
            if h is None:
                host = max(host, gpu)
                continue
            host += h
            gpu = max(gpu, host) + g

    for _ in range(reps):
        run(setup)
        start = gpu = max(gpu, host)
        run(timed)
    return gpu - start


def _fp8_linear_fwd(e: Eager, m: int, n: int, k: int, label: str) -> None:
    """real/fp8.py linear() forward, y_MN = x_MK w_NK^T: quantize x and w on every call, then
    the kernel (blockwise if the shape allows, else rowwise)."""
    kern = label if (label != "fp8-blockwise" or (n % 128 == 0 and k % 512 == 0)) else "fp8-rowwise"
    with e.autograd_function():       # _Fp8Linear.forward
        e.quant(m * k)
        e.quant(n * k)
        e.gemm(m, n, k, kern)


def _linear_fwd(e: Eager, m: int, n: int, k: int, label: str) -> None:
    if twin_precision(label) == "bf16":
        e.gemm(m, n, k, "bf16")
    else:
        _fp8_linear_fwd(e, m, n, k, label)


def _linear_bwd(e: Eager, m: int, n: int, k: int, label: str) -> None:
    """dX = dY W (m x k over n) and dW = dY^T X (n x k over m); FP8 quantizes both operands of
    both GEMMs. real/fp8.py _Fp8Linear.backward -> fp8_mm quantizes `b_KN.t()` and `a_MK` after
    .contiguous(): W^T for dX, dY^T and X^T for dW are transposed views, so each is first copied
    (a copy_ of a transposed view, Eager.transpose)."""
    if twin_precision(label) == "bf16":
        e.gemm(m, k, n, "bf16", pass_="dgrad")
        with e.weight_grad():
            e.gemm(n, k, m, "bf16")
        return
    with e.autograd_function():       # _Fp8Linear.backward
        e.transpose(2 * n * k * BF16_BYTES)                      # W^T made contiguous
        _fp8_linear_fwd(e, m, k, n, label)
        with e.weight_grad():
            e.transpose(2 * (m * n + m * k) * BF16_BYTES, kernels=2)  # g^T and x^T made contiguous
            _fp8_linear_fwd(e, n, k, m, label)


def swiglu_bwd(e: Eager, rows: float, width: int) -> None:
    """Backward of silu(a) * b on the two chunk views of h = [a | b] (rows x 2 width, BF16), as
    autograd runs it (the kernels the profiler records in a training step's backward):
      g * b            reads b through its strided view: the unrolled, non-vectorised elementwise
                       kernel (Eager.strided), 6 B an element;
      g * silu(a)      silu(a) saved contiguous: the vectorised kernel, 6 B;
      silu_backward    reads a through its strided view (non-vectorised), 6 B;
      cat of the two   chunk's backward: the halves' gradients into one (rows x 2 width) tensor,
                       vectorised, 8 B.
    The non-vectorised kernels reach the gather rate (H200 train_step records, 2026-11-26:
    silu_backward and the strided mul ~0.4-0.5 of the streaming rate, the vectorised ones ~1)."""
    n = rows * width * BF16_BYTES
    e.strided(3 * n)
    e.mem(3 * n)
    e.strided(3 * n)
    e.mem(4 * n)


def _rope(e: Eager, elems: float, backward: bool = False) -> None:
    """apply_rope on BF16 values: neg, cat, float x2, mul x2, add, cast (fp32 intermediates). The
    forward's cat([-x2, x1]) of the chunk halves is a CatArrayBatchedCopy over strided views (the
    kernel records show it beside q's and k's cats), costed at cat_eff; its backward mirror is
    slices and elementwise kernels (the chunk's backward cat is costed by the caller)."""
    if backward:
        e.mem(elems * (4 + 4 + 6 * 2 + 12 * 2 + 12 + 6), kernels=8)
        return
    e.mem(elems * (4 + 6 * 2 + 12 * 2 + 12 + 6), kernels=7)
    e.cat(elems * 4)


def _mla_ops(spec, batch: int, seq: int, label: str, gpu: GPUSpec, profile: Profile,
             split_weight_grads: bool = False, down_tokens: int | None = None,
             with_core: bool = True, component_scale: dict | None = None) -> tuple[Eager, Eager]:
    """real/model.py MLA forward and backward as eager op lists (training path: expanded K/V).
    `down_tokens`: the tokens the down-projections (W_qa, W_kva) and their norms run on, where
    they differ from the sequence's (real/tp.py TPMLABlock under sequence parallelism: T/W);
    with_core False leaves the attention core out (a caller that costs it otherwise: ring
    attention). `component_scale`: Eager's, on both op lists."""
    T, D, H = batch * seq, spec.hidden_size, spec.num_heads
    t = T if down_tokens is None else down_tokens
    P, R, O, C, Q = spec.qk_nope_head_dim, spec.qk_rope_head_dim, spec.v_head_dim, spec.kv_lora_rank, spec.q_lora_rank
    B2 = BF16_BYTES
    f, b = Eager(gpu, profile, component_scale=component_scale), Eager(gpu, profile, split_weight_grads, component_scale)
    lins = ([(t, Q, D), (T, H * (P + R), Q)] if Q else [(T, H * (P + R), D)]) + [(t, C + R, D), (T, H * (P + O), C), (T, D, H * O)]
    core = Op("attn_core", OpKind.ATTENTION, "attn", batch=batch, seq_len=seq, heads=H, qk_dim=P + R, v_dim=O, causal=True,
              precision="bf16")
    # forward
    _linear_fwd(f, *lins[0], label)
    if Q:
        f.mem(3 * t * Q * B2)                       # q_norm (fused rms_norm: reads each row twice)
        _linear_fwd(f, *lins[1], label)
    _rope(f, T * H * R)
    _linear_fwd(f, *lins[-3], label)                # kv_a
    f.mem(3 * t * C * B2)                           # kv_norm (fused rms_norm: reads each row twice)
    _rope(f, T * R)
    _linear_fwd(f, *lins[-2], label)                # kv_b
    f.cat((T * H * (P + R) * 2 + T * H * P + T * R + T * H * (P + R)) * B2, kernels=2)  # q = cat(q_nope, q_pe); k = cat(k_nope, kpe expanded)
    if with_core:
        f.attention(core, "fwd")
    f.mem(2 * T * H * O * B2)                       # o transposed -> contiguous for the output projection
    _linear_fwd(f, *lins[-1], label)
    # backward (autograd): mirror, GEMMs twice, elementwise ops' gradients
    _linear_bwd(b, *lins[-1], label)
    b.mem(2 * T * H * O * B2)
    if with_core:
        b.attention(core, "bwd")
    # q and k's cat backward are slices (views); the shared rope key's expand backward sums over
    # heads. Each split of a projection's output (and each rope's chunk) is a cat of the parts'
    # gradients in backward: CatArrayBatchedCopy kernels (calibration/measurements/<gpu>/
    # kernels.csv: five in the MLA backward), costed at the measured cat_eff like the forward's
    b.mem((T * H * R + T * R) * B2)                 # expand backward
    b.cat(2 * T * H * (P + O) * B2)                 # kv_b output split([P, O]) backward
    _linear_bwd(b, *lins[-2], label)
    _rope(b, T * R, backward=True)
    b.cat(2 * T * R * B2)                           # rope's chunk backward (shared key)
    b.mem(3 * t * C * B2, kernels=2)                # kv_norm backward
    b.cat(2 * t * (C + R) * B2)                     # kv_a output split([C, R]) backward
    _linear_bwd(b, *lins[-3], label)
    _rope(b, T * H * R, backward=True)
    b.cat(2 * T * H * R * B2)                       # rope's chunk backward (queries)
    b.cat(2 * T * H * (P + R) * B2)                 # q split([P, R]) backward
    if Q:
        _linear_bwd(b, *lins[1], label)
        b.mem(3 * t * Q * B2, kernels=2)            # q_norm backward
    _linear_bwd(b, *lins[0], label)
    b.mem(3 * T * D * B2)                           # dx = sum of the two input gradients
    return f, b


def _gqa_ops(spec, batch: int, seq: int, label: str, gpu: GPUSpec, profile: Profile,
             split_weight_grads: bool = False) -> tuple[Eager, Eager]:
    """real/model.py GQA forward and backward as eager op lists (training: no cache). H query heads
    and V key-value heads of A: the q/k/v/o projections on the fitted GEMM curves (FP8 as
    real/fp8.py linear runs them), the optional per-head QK RMSNorm and RoPE (apply_rope, as
    MLA's rope part) on the memory curves, repeat_kv's copies of K and V out to H heads, the causal
    SDPA core on the profile's attention curve (torch 2.11's SDPA picks cuDNN on Hopper at head dim
    128: calibration/measurements/h100/dense_dropout.csv, sdpa_backend 'auto' ran 'cudnn'), the
    output's copy to contiguous before W_o (as in the MLA op list, whose kernel records show it)."""
    T, D, H, V, A = batch * seq, spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
    B2 = BF16_BYTES
    f, b = Eager(gpu, profile), Eager(gpu, profile, split_weight_grads)
    q_lin, k_lin, v_lin, o_lin = (T, H * A, D), (T, V * A, D), (T, V * A, D), (T, D, H * A)
    core = Op("attn_core", OpKind.ATTENTION, "attn", batch=batch, seq_len=seq, heads=H, qk_dim=A, v_dim=A, causal=True,
              precision="bf16")
    repeated = H > V
    # forward
    for lin in (q_lin, k_lin, v_lin):
        _linear_fwd(f, *lin, label)
    if spec.qk_norm:
        f.mem(3 * T * H * A * B2)                   # q_norm over each head (fused rms_norm)
        f.mem(3 * T * V * A * B2)                   # k_norm
    _rope(f, T * H * A)
    _rope(f, T * V * A)
    if repeated:
        f.mem(2 * T * (V + H) * A * B2, kernels=2)  # repeat_kv of K and V: expand + reshape copies
    f.attention(core, "fwd")
    f.mem(2 * T * H * A * B2)                       # o transposed -> contiguous for the output projection
    _linear_fwd(f, *o_lin, label)
    # backward (autograd): mirror
    _linear_bwd(b, *o_lin, label)
    b.mem(2 * T * H * A * B2)
    b.attention(core, "bwd")
    if repeated:
        b.mem(2 * T * (H + V) * A * B2, kernels=2)  # repeat_kv backward: dK, dV summed over the repeats
    _rope(b, T * V * A, backward=True)
    b.cat(2 * T * V * A * B2)                       # rope's chunk backward (keys)
    _rope(b, T * H * A, backward=True)
    b.cat(2 * T * H * A * B2)                       # rope's chunk backward (queries)
    if spec.qk_norm:
        b.mem(3 * T * V * A * B2, kernels=2)        # k_norm backward
        b.mem(3 * T * H * A * B2, kernels=2)        # q_norm backward
    for lin in (v_lin, k_lin, q_lin):
        _linear_bwd(b, *lin, label)
    b.mem(2 * 3 * T * D * B2, kernels=2)            # dx = sum of the three projections' input gradients
    return f, b


def zipf_expert_rows(tokens: int, num_experts: int, top_k: int, skew: float) -> np.ndarray:
    """Expected routed rows per expert under real/bench/moe_layer.py skewed_routing: skew 0 is exact
    round-robin; skew s > 0 draws top_k distinct experts per token with Zipf(s) popularity
    (twin.moe.load: zipf_weights, and expected_topk_rows for the rows)."""
    if skew == 0:
        return np.full(num_experts, tokens * top_k / num_experts)
    return expected_topk_rows(zipf_weights(num_experts, skew), top_k, tokens)


def _moe_ops(spec, tokens: int, counts, label: str, gpu: GPUSpec, profile: Profile,
             split_weight_grads: bool = False, gate_grad: bool = False,
             token_side: bool = True, component_scale: dict | None = None,
             argsort_passes: bool = True) -> tuple[Eager, Eager]:
    """real/model.py MoE.forward on one GPU with injected routing (expert_ffn: two grouped GEMMs
    over all experts on rows padded to 16 per expert), plus the shared experts; and its backward.
    Routed grouped GEMMs: FP8 row-wise forward (x and every expert's weights quantized on each
    call), BF16 backward (real/fp8.py _Fp8GroupedMM).
    `token_side` False: the forward leaves out MoE.routed's one-GPU sort of the (token, slot) rows
    (argsort, expert_counts, order // K, x_TD[order // K], ids[order]) and their un-sort
    (argsort(order), y_ND[argsort(order)]): under expert parallelism real/ep.py dispatch and
    combine run those (calibration.whole_step._dispatch, _combine), and the local experts get
    expert_ffn only. The backward is unchanged (its token-side index ops are the backward of
    dispatch's and combine's gathers: whole_step.ep_moe_ops). `component_scale`: Eager's, on both
    op lists. `argsort_passes` False: the token side's two argsorts take no radix passes
    (Eager.argsort; EP's local layer, whose token side real/ does not run: dispatch and combine's
    four argsorts take them)."""
    T, D, F_, K = tokens, spec.hidden_size, spec.moe_intermediate_size, spec.top_k
    E, S = len(counts), spec.moe_intermediate_size * spec.num_shared_experts
    N = T * K
    rows = np.ceil(np.asarray(counts, float) / 16.0) * 16.0     # GROUP_ALIGN padding
    Np = (N + E * 15 + 15) // 16 * 16                           # static capacity
    B2, I8 = BF16_BYTES, 8
    gl = "bf16" if twin_precision(label) == "bf16" else "fp8-rowwise"
    f, b = Eager(gpu, profile, component_scale=component_scale), Eager(gpu, profile, split_weight_grads, component_scale)
    # --- forward: sort (token, slot) pairs by expert, gather rows, pad
    if token_side:
        f.argsort(N, argsort_passes)                 # argsort (radix sort passes)
        f.small(2)                                   # expert_counts: zeros, scatter_add
        f.mem(2 * N * I8)                            # order // K
        f.gather(2 * N * D * B2)                        # x_TD[order // K]
        f.mem(2 * N * I8)                            # ids[order]
    f.small(12)                                  # group_offsets bookkeeping
    f.fill(Np * D * B2)                          # new_zeros(capacity, D)
    f.gather(2 * N * D * B2)                        # index_copy
    for n_, k_ in ((2 * F_, D), (D, F_)):
        if gl != "bf16":
            with f.autograd_function():     # _Fp8GroupedMM.forward
                f.quant(Np * k_)
                f.quant(E * n_ * k_)
                f.grouped(rows, n_, k_, gl)
        else:
            f.grouped(rows, n_, k_, gl)
        if n_ == 2 * F_:
            f.strided(Np * F_ * B2 * 2 + Np * F_ * B2 * 3, kernels=2)   # silu(a), * b on chunk views
    f.gather(2 * N * D * B2)                        # y_NpD[pos]
    if token_side:
        f.argsort(N, argsort_passes)                 # argsort(order)
        f.gather(2 * N * D * B2)                        # y_ND[inverse order]
    f.mem(2 * N * D * B2)                        # * weights
    f.mem(N * D * B2 + T * D * B2)               # sum over K
    if S:
        _linear_fwd(f, T, 2 * S, D, label)
        f.strided(T * S * B2 * 2 + T * S * B2 * 3, kernels=2)   # silu(a), * b on chunk views
        _linear_fwd(f, T, D, S, label)
        f.mem(3 * T * D * B2)                    # routed + shared
    # --- backward
    if S:
        _linear_bwd(b, T, D, S, label)
        swiglu_bwd(b, T, S)                      # silu * b backward, cat of chunk grads
        _linear_bwd(b, T, 2 * S, D, label)
    # sum over K backward: dY broadcast over the K slots times the weights (a broadcast, expanded
    # view: the non-vectorised kernel; the layer records' kernels show one such multiply, their
    # routing injected); with the gate's weights also their gradient: dY broadcast times the rows
    # (another), summed over D
    b.strided(N * D * B2 + T * D * B2)
    if gate_grad:
        b.strided(2 * N * D * B2 + T * D * B2)
        b.mem(N * D * B2)
    b.fill(N * D * B2)                           # y_ND[argsort(order)] backward: zeros (N, D),
    b.index_put(N, D, dest_rows=N)               # index_put
    b.fill(Np * D * B2)                          # y_NpD[pos] backward: zeros (Np, D),
    b.index_put(N, D, dest_rows=Np)              # index_put
    # FP8: _Fp8GroupedMM.backward runs the two BF16 grouped GEMMs inside the Function
    in_function = b.autograd_function if gl != "bf16" else contextlib.nullcontext
    with in_function():
        b.grouped(rows, F_, D, "bf16", layout="dgrad")               # d(h) = dy W2^T
        with b.weight_grad():
            b.grouped(rows, F_, D, "bf16", transposed=True, layout="wgrad")   # dW2
    swiglu_bwd(b, Np, F_)                        # silu * b backward, cat
    with in_function():
        b.grouped(rows, D, 2 * F_, "bf16", layout="dgrad")           # dx = dh W13^T
        with b.weight_grad():
            b.grouped(rows, 2 * F_, D, "bf16", transposed=True, layout="wgrad")  # dW13
    # index_copy backward: a gather of the padded rows' gradients; the profiler shows torch's
    # vectorized_gather_kernel at the streaming rate (H200 moe_layer kernels, 2026-11-24), not the
    # index/scatter kernels' gather_eff
    b.mem(2 * N * D * B2)
    b.mem(2 * T * D * B2, kernels=2)
    b.index_put(N, D, dest_rows=T, unnamed_fill_rows=T)   # x[order // K] backward: zeros (T, D), index_put, add
    return f, b


def _layer_time_s(row, fwd: Eager, bwd: Eager, direction: str) -> float:
    if direction == "fwd":
        return window_s(row, [], fwd.ops)
    return window_s(row, fwd.ops, bwd.ops)


def expert_rows(row, top_k: int) -> np.ndarray:
    """Routed rows per expert of a moe_layer record: the measured `tokens_per_expert` (JSON list,
    records from 2026-11-24 07:16 on) or, for older rows, the Zipf expectation."""
    tpe = row.get("tokens_per_expert") if hasattr(row, "get") else None
    if isinstance(tpe, str) and tpe.strip().startswith("["):
        return np.asarray(json.loads(tpe), dtype=float)
    return zipf_expert_rows(int(row["tokens"]), int(row["num_experts"]), top_k, float(row["skew"]))
