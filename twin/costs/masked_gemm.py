"""DeepGEMM's masked grouped FP8 GEMM (m_grouped_gemm_fp8_fp8_bf16_nt_masked), the kernel DeepSeek's decode
runs its routed experts with: its tile configuration, its persistent kernel's waves, and a fitted per-wave
time (docs/notes/s22dg_rule.md).

The kernel (DeepGEMM 6c5da03, 2025-02-28, the release of DeepSeek's published serving figures): every group
(a GPU's local expert) holds up to m_max rows of which masked_m[g] are real; a host hint `expected_m` picks
the tile (jit_kernels/gemm.py get_best_configs): block_m 64 if expected_m <= 64 else 128, block_n in
16..128 (step 8) by the fewest waves of (blocks of expected_m rows x blocks of N x groups) tiles over the
SMs, then the fullest last wave, then the smaller block_n. The persistent kernel then runs each group's
ceil(masked_m / block_m) x ceil(N / block_n) tiles, one per SM at a time (fp8_gemm.cuh, scheduler.cuh).

Time (docs/notes/s22dg2_rule.md; the first form, docs/notes/s22dg_rule.md, failed its held-out check):
    fixed_s + waves x wave_s + roofline_p(compute_s, memory_s, overlap_p)
    memory_s  = sum over groups of (N x K + rows x K FP8 operands + rows x N x 2 BF16 output) / bw_bytes_per_s
                (each group's weights streamed once: the m-blocks of an n-block share the B tile in L2)
    compute_s = waves x 2 x block_m x block_n x K / (FP8 peak / num_sms x mma_eff)
The five parameters are fitted per GPU and timing on the fitting split of
calibration/measurements/<gpu>/deepgemm_masked.csv.xz (calibration/deepgemm_masked_fit.py) and shipped in
twin/data/deepgemm_masked.json.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources

from twin.core.specs import GPUSpec
from twin.costs.compute import roofline_s
from twin.costs.flops import BF16_BYTES, FP8_BYTES

BLOCK_K = 128
BLOCK_NS = tuple(range(16, 129, 8))
PARAM_NAMES = ("fixed_s", "wave_s", "bw_bytes_per_s", "mma_eff", "overlap_p")


@dataclass(frozen=True)
class MaskedGemmParams:
    """Fitted terms of the masked kernel on one GPU and timing (see the module docstring)."""

    fixed_s: float
    wave_s: float
    bw_bytes_per_s: float
    mma_eff: float
    overlap_p: float


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=4096)
def masked_config(expected_rows: int, n: int, num_groups: int, num_sms: int) -> tuple[int, int]:
    """(block_m, block_n) DeepGEMM 6c5da03 picks for a masked grouped GEMM (get_best_configs, non-contiguous
    layout): block_m 64 at <= 64 expected rows else 128; block_n by fewest waves, then the fullest last
    wave, then (equal) the smaller block_n."""
    block_m = 64 if expected_rows <= 64 else 128
    best_n, best_waves, best_util = None, None, None
    for block_n in BLOCK_NS:
        tiles = _ceil_div(expected_rows, block_m) * _ceil_div(n, block_n) * num_groups
        waves = _ceil_div(tiles, num_sms)
        util = tiles % num_sms or num_sms
        if best_n is None or waves < best_waves or (waves == best_waves and util > best_util):
            best_n, best_waves, best_util = block_n, waves, util
    return block_m, best_n


def wave_tiles(rows_per_group, n: int, block_m: int, block_n: int, num_sms: int) -> list[int]:
    """Tiles running in each wave of the persistent kernel: every group's ceil(rows / block_m) x
    ceil(n / block_n) tiles, num_sms at a time (the last wave partly filled)."""
    tiles = sum(_ceil_div(int(math.ceil(r)), block_m) * _ceil_div(n, block_n) for r in rows_per_group if r > 0)
    full, last = divmod(tiles, num_sms)
    return [num_sms] * full + ([last] if last else [])


def masked_gemm_time_s(rows_per_group, n: int, k: int, gpu: GPUSpec, params: MaskedGemmParams,
                       expected_rows: float | None = None, sm_frac: float = 1.0) -> float:
    """One masked grouped GEMM over the groups' real rows (`rows_per_group`), N x K per group, with the
    host hint `expected_rows` (default: the groups' mean rows, as DeepSeek's decode passes it)."""
    rows = [float(r) for r in rows_per_group]
    if not rows or max(rows) <= 0:
        return 0.0
    sms = max(1, int(gpu.num_sms * sm_frac))
    hint = expected_rows if expected_rows is not None else sum(rows) / len(rows)
    block_m, block_n = masked_config(max(1, int(math.ceil(hint))), n, len(rows), sms)
    waves = len(wave_tiles(rows, n, block_m, block_n, sms))
    memory_s = sum(n * k * FP8_BYTES + r * k * FP8_BYTES + r * n * BF16_BYTES for r in rows if r > 0) / params.bw_bytes_per_s
    compute_s = waves * 2.0 * block_m * block_n * k / (gpu.peak_flops_per_s("fp8") / gpu.num_sms * params.mma_eff)
    return params.fixed_s + waves * params.wave_s + roofline_s(compute_s, memory_s, params.overlap_p)


@functools.cache
def _table() -> dict:
    with resources.files("twin.data").joinpath("deepgemm_masked.json").open("r") as fh:
        return json.load(fh)


def masked_params(calibrated_as: str, timing: str = "l2_flush") -> MaskedGemmParams:
    """The fitted terms of a GPU profile name (`gpu.calibrated_as`: the H800 uses the H100's) and timing."""
    fits = _table()["fits"]
    if calibrated_as not in fits or timing not in fits[calibrated_as]:
        raise ValueError(f"no DeepGEMM masked-kernel fit for {calibrated_as!r} ({timing}); fitted: {sorted(fits)}")
    p = fits[calibrated_as][timing]["params"]
    return MaskedGemmParams(**{name: float(p[name]) for name in PARAM_NAMES})
