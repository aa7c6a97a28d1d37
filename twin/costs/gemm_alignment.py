"""GEMMs whose widths are not multiples of 8 elements (16 bytes of BF16): cuBLAS cannot use the
Hopper kernels' 16-byte loads for them and runs cutlass kernels with 1/2/4-element alignment
(session s23align, docs/notes/s23align_rule.md).

A linear layer's three GEMMs (forward, input gradient, weight gradient) all have the layer's two
weight widths as their tensors' row lengths; the token count is never a row length. A GEMM's
alignment class is the largest of 8, 4, 2, 1 elements dividing both widths. Class 8 is today's
costing; a class below 8 costs the aligned time times a factor measured per GPU profile (and per
pass where the fit chose that form) in twin/data/gemm_alignment.json (calibration.gemm_align_fit,
real/bench/gemm_align.py records). A profile without factors (none measured) gets factor 1.
"""

from __future__ import annotations

import functools
import math
import json
from importlib import resources

ALIGN_CLASSES = (8, 4, 2, 1)
PASSES = ("fwd", "dgrad", "wgrad")


def align_elements(width: int) -> int:
    """Largest of 8, 4, 2, 1 elements dividing a row length."""
    return next(a for a in ALIGN_CLASSES if int(width) % a == 0)


def align_class(*widths: int) -> int:
    """The alignment class of a GEMM whose tensors' row lengths are `widths` (a linear layer's
    output and input widths)."""
    return min(align_elements(w) for w in widths)


@functools.cache
def _table() -> dict:
    with resources.files("twin.data").joinpath("gemm_alignment.json").open("r") as fh:
        return json.load(fh)


def alignment_factor(profile_gpu: str, align: int, pass_: str = "fwd") -> float:
    """Time factor of a dense BF16 GEMM of alignment class `align` on the profile `profile_gpu`
    (Profile.gpu) against the aligned time: 1 for class 8 or where the profile has no fit; the
    nearest coarser measured class where `align` itself has no factor (a class-2 GEMM without
    one runs as class 1's)."""
    if align >= 8:
        return 1.0
    fit = _table().get("fits", {}).get(profile_gpu)
    if not fit:
        return 1.0
    factors = fit["factors"]
    for a in (c for c in ALIGN_CLASSES if c <= align):
        key = f"{a}/{pass_}" if fit["form"] == "class_pass" else str(a)
        if key in factors:
            return float(factors[key])
    return 1.0


# --- the second form (s23align2, docs/notes/s23align2_rule.md): a factor per operand pattern ---
# A linear layer y_TO = x_TI w_OI^T's three GEMMs have fixed row-major operands; their row lengths
# (A, B, C) are a pass's layer widths: the forward reads x (I) and w (I) and writes y (O); the input
# and weight gradients read dy (O) and w or x (I) and write dx or dw (I).
OPERAND_WIDTHS = {"fwd": ("inputs", "inputs", "outputs"), "dgrad": ("outputs", "inputs", "inputs"),
                  "wgrad": ("outputs", "inputs", "inputs")}


def operand_alignments(outputs: int, inputs: int, pass_: str) -> tuple[int, int, int]:
    """(A, B, C) alignments in elements of a linear layer's GEMM of pass `pass_`."""
    widths = {"outputs": outputs, "inputs": inputs}
    return tuple(align_elements(widths[w]) for w in OPERAND_WIDTHS[pass_])


def kernel_family(aligns: tuple[int, ...]) -> str:
    """The cuBLAS kernel family a GEMM's operand alignments select (s23align's profiled kernels):
    "aligned" (Hopper nvjet) where every row is a multiple of 8 elements, "align1" (cutlass sm75)
    where any is odd, else "align2" (cutlass sm80, taken for 4-element rows too)."""
    low = min(aligns)
    return "aligned" if low >= 8 else ("align1" if low == 1 else "align2")


def pattern_key(aligns: tuple[int, int, int]) -> str:
    """"<family>/<mask>": the kernel family and the operands (of "abc") whose rows are misaligned."""
    mask = "".join(x for x, a in zip("abc", aligns) if a < 8)
    return f"{kernel_family(aligns)}/{mask}"


def pattern_factor(profile_gpu: str, aligns: tuple[int, int, int]) -> float:
    """Compute-time factor of a dense BF16 GEMM with operand alignments `aligns` on the profile
    `profile_gpu`: 1 where aligned or where the profile has no pattern fit; the pattern's measured
    factor, else (a pattern without records) its kernel family's."""
    family = kernel_family(aligns)
    fit = _table().get("pattern_fits", {}).get(profile_gpu)
    if family == "aligned" or not fit:
        return 1.0
    return float(fit["factors"].get(pattern_key(aligns), fit["family_factors"].get(family, 1.0)))


# --- the third form (s24align3, docs/notes/s24align3_rule.md): each kernel family's own rate curve ---
# The cutlass kernels cuBLAS runs for misaligned rows have their own shape dependence, so a factor on
# the aligned (nvjet) time cannot carry it. This form prices the misaligned kernel from its own
# achieved rate: log rate = log quant + c[family/pass/mask] + fill_exp[family] * log(fill) +
# k_exp[family] * log(k / (k + k0)) + mn_exp[family] * log(m n / mn_ref), where quant is the share
# of the tiles' padded output that is real (m n over the tiles' area: a 2049-wide output computes 17
# tiles of 128 for 16.01 tiles' work; exponent 1, not fitted), fill the last-wave occupancy of the
# family's tile for the pass (tiles / (waves * SMs), the tile the profiler named most often in the
# fitting records), the k term the contraction's prologue/epilogue share and the m n term the output
# size. Each of the four is clamped to the range the fitting rows span (no extrapolation: a 60-wide
# router output is priced at the narrowest quantisation measured, not at 60/256).
def curve_features(m: int, n: int, k: int, tile: tuple[int, int], num_sms: int) -> dict:
    """The rate curve's three fitted shape features of an m x n x k GEMM run with `tile` output tiles
    on `num_sms` SMs (the last wave's fill, the contraction k, the output size m n) and its tile
    quantisation (the real share of the tiles' padded output)."""
    rows, cols = -(-int(m) // tile[0]), -(-int(n) // tile[1])
    tiles = rows * cols
    waves = -(-tiles // num_sms)
    return {"fill": tiles / (waves * num_sms), "k": float(k), "mn": float(m) * float(n),
            "quant": float(m) * float(n) / (rows * tile[0] * cols * tile[1])}


def curve_key(aligns: tuple[int, int, int], pass_: str) -> str:
    """"<family>/<pass>/<mask>": the rate curve's constant's key."""
    family, mask = pattern_key(aligns).split("/")
    return f"{family}/{pass_}/{mask}"


def curve_log_constant(fit: dict, key: str) -> float:
    """The key's fitted constant; one without fitting rows takes the mean of its family and pass's
    constants, else its family's."""
    consts = fit["constants"]
    if key in consts:
        return float(consts[key])
    family, pass_, _ = key.split("/")
    same = [v for k, v in consts.items() if k.startswith(f"{family}/{pass_}/")] or \
        [v for k, v in consts.items() if k.startswith(f"{family}/")]
    return float(sum(same) / len(same))


def curve_rate_flops_per_s(profile_gpu: str, m: int, n: int, k: int, aligns: tuple[int, int, int], pass_: str,
                           num_sms: int) -> float | None:
    """Achieved FLOP/s of a misaligned dense BF16 GEMM's cutlass kernel on the profile `profile_gpu`
    (its operand alignments `aligns`, linear-layer pass `pass_`, the GPU's `num_sms`); None where it is
    aligned or the profile has no curve fit (the caller keeps today's time)."""
    family = kernel_family(aligns)
    fit = _table().get("curve_fits", {}).get(profile_gpu)
    if family == "aligned" or not fit or pass_ not in PASSES:
        return None
    fam = fit["families"][family]
    f = curve_features(m, n, k, tuple(fam["tiles"][pass_]), num_sms)
    lo, hi = fam["bounds_low"], fam["bounds_high"]
    clamp = {x: min(max(f[x], lo[x]), hi[x]) for x in lo}
    log_rate = (math.log(clamp["quant"]) + curve_log_constant(fit, curve_key(aligns, pass_))
                + fam["fill_exp"] * math.log(clamp["fill"])
                + fam["k_exp"] * math.log(clamp["k"] / (clamp["k"] + fit["k0"]))
                + fam["mn_exp"] * math.log(clamp["mn"] / fit["mn_ref"]))
    return math.exp(log_rate)
