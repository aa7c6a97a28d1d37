"""DeepGEMM's masked grouped GEMM model (twin/costs/masked_gemm.py, docs/notes/s22dg_rule.md part A): the
release's tile choice, the persistent kernel's waves, and the time's shape in rows."""

from __future__ import annotations

import pytest

from twin.core.specs import get_gpu
from twin.costs.masked_gemm import MaskedGemmParams, masked_config, masked_gemm_time_s, masked_params, wave_tiles

H100 = get_gpu("h100")
# round numbers for the shape tests (not a fit): 10 us fixed, 1 us a wave, 2.7 TB/s, 60% of the MMA peak
PARAMS = MaskedGemmParams(fixed_s=10e-6, wave_s=1e-6, bw_bytes_per_s=2.7e12, mma_eff=0.6, overlap_p=4.0)


def test_tile_choice_is_the_releases():
    """get_best_configs of DeepGEMM 6c5da03 at 132 SMs (checked against its code at every rows 1..700 for
    N 256..7168 and 1..11 groups when written): block_m switches at 64 expected rows; block_n is the
    fewest waves, then the fullest last wave."""
    assert masked_config(64, 4096, 2, 132) == (64, 64)
    assert masked_config(65, 4096, 2, 132) == (128, 64)
    assert masked_config(256, 4096, 2, 132) == (128, 128)     # 2 x 32 x 2 = 128 tiles: one wave
    assert masked_config(264, 4096, 2, 132) == (128, 96)      # 3 row blocks: 258 tiles in 2 full-ish waves
    assert masked_config(128, 7168, 9, 132) == (128, 128)


def test_waves_hold_every_groups_tiles():
    assert wave_tiles([256, 256], 4096, 128, 128, 132) == [128]
    assert wave_tiles([257, 256], 4096, 128, 128, 132) == [132, 28]       # 3 + 2 row blocks x 32
    assert wave_tiles([0, 10], 7168, 64, 112, 132) == [64]
    assert wave_tiles([], 7168, 64, 112, 132) == []


def test_time_steps_at_row_blocks_and_is_zero_without_rows():
    """Nine groups (several waves of tiles: compute-bound past one row block): flat within a 128-row block,
    a step at the next; two groups at one row block stream their weights (memory-bound)."""
    t = lambda rows: masked_gemm_time_s(rows, 4096, 7168, H100, PARAMS, expected_rows=rows[0])
    assert masked_gemm_time_s([0, 0], 4096, 7168, H100, PARAMS) == 0.0
    assert t([200] * 9) == pytest.approx(t([256] * 9), rel=0.01)      # two 128-row blocks either way
    assert t([264] * 9) > t([256] * 9) * 1.2                           # a third block: more waves
    weights_s = 2 * 4096 * 7168 / PARAMS.bw_bytes_per_s
    assert t([32, 32]) == pytest.approx(PARAMS.fixed_s + PARAMS.wave_s + weights_s, rel=0.05)


def test_h800_uses_the_h100_fit():
    assert get_gpu("h800").calibrated_as == "h100"
    p = masked_params("h100")
    assert p.bw_bytes_per_s > 0 and 0 < p.mma_eff
    with pytest.raises(ValueError, match="no DeepGEMM masked-kernel fit"):
        masked_params("b200")
