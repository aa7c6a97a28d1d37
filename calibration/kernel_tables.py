"""The serving twin's FP8 GEMM model against DeepGEMM's published H800 kernel table.

A published kernel table, not a serving claim: it justifies ServeSpec.fp8_gemm_curve's default.
"""

from __future__ import annotations

from twin.core.serve_specs import ServeSpec
from twin.core.specs import get_gpu
from twin.costs import compute
from twin.serving.iteration import serving_profile


def deepgemm_check(gpu_name: str = "h800") -> list[dict]:
    """The serving FP8 GEMM model vs DeepGEMM's published H800 table (hardware_catalog.yaml
    deepgemm_h800_fp8, S_DEEPGEMM_README_2503), for both curve choices. A published kernel
    table, not a serving claim: it justifies the fp8_gemm_curve default."""
    gpu = get_gpu(gpu_name)
    rows = []
    for m_, n_, k_, tflops in ((64, 2112, 7168, 206), (64, 24576, 1536, 289), (64, 7168, 16384, 336),
                               (128, 7168, 16384, 645), (128, 4096, 7168, 533), (4096, 2112, 7168, 1009),
                               (4096, 24576, 1536, 1125), (4096, 7168, 16384, 1426), (4096, 7168, 2048, 1168)):
        published = 2.0 * m_ * n_ * k_ / (tflops * 1e12)
        row = {"m": m_, "n": n_, "k": k_, "published_s": published}
        for curve in ("fp8-rowwise", "fp8"):
            prof = serving_profile(gpu, ServeSpec(fp8_gemm_curve=curve))
            row[f"{curve}_s"] = compute.gemm_time_s(m_, n_, k_, "fp8", gpu, prof)
            row[f"{curve}_rel_error"] = row[f"{curve}_s"] / published - 1.0
        rows.append(row)
    return rows
