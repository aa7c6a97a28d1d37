"""A train step's CUDA kernels by category, from the kernel's name alone (torch-free: the campaign's section and the
calibration side that reads its records share it; session s33train).

Categories, first match wins (names lower-cased):
  nccl         NCCL collectives
  attention    flash / fmha / cuDNN attention kernels
  gemm         dense and grouped GEMMs (cuBLAS / cuBLASLt / CUTLASS / nvjet / sm90 xmma / torch's grouped mm,
               the FP8 scaled mm's CUTLASS kernels)
  optimizer    the fused AdamW and the multi-tensor (foreach) kernels
  copy         copies, concatenations, gathers, scatters, index kernels
  fill         fills and zeroing
  reduce       reductions (sums, norms' statistics, softmax reductions, top-k / sort)
  elementwise  everything else (activations, casts, adds, the FP8 quantisation kernels, norms' elementwise parts)
"""

from __future__ import annotations

CATEGORIES = ("nccl", "attention", "gemm", "optimizer", "copy", "fill", "reduce", "elementwise")

_RULES = (
    ("nccl", ("nccl",)),
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm100_", "grouped_mm", "_mm_", "matmul",
              "wgmma", "f8f6f4")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "fused_sgd")),
    ("copy", ("catarray", "copy", "cat_", "memcpy", "gather", "scatter", "index", "indices")),
    ("fill", ("fill", "zero")),
    ("reduce", ("reduce", "norm", "sort", "topk", "radix", "scan", "cumsum", "softmax", "histogram", "bincount")),
)


def kernel_category(name: str) -> str:
    """One of CATEGORIES for a CUDA kernel's (demangled) name."""
    n = name.lower()
    for cat, words in _RULES:
        if any(w in n for w in words):
            return cat
    return "elementwise"
