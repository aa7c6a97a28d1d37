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
