"""DeepGEMM's masked grouped GEMM model (twin/costs/masked_gemm.py, docs/notes/s22dg_rule.md part A): the
release's tile choice, the persistent kernel's waves, and the time's shape in rows."""

from __future__ import annotations

import pytest

from twin.core.specs import get_gpu
from twin.costs.masked_gemm import MaskedGemmParams, masked_config, masked_gemm_time_s, masked_params, wave_tiles

H100 = get_gpu("h100")
# round numbers for the shape tests (not a fit): 2.5 TB/s, 40 GB/s per SM, 60% of the MMA peak
PARAMS = MaskedGemmParams(bw_bytes_per_s=2.5e12, sm_bytes_per_s=40e9, mma_eff=0.6, tile_s=1e-6, fixed_s=5e-6)


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
    t = lambda rows: masked_gemm_time_s(rows, 4096, 7168, H100, PARAMS, expected_rows=rows[0])
    assert masked_gemm_time_s([0, 0], 4096, 7168, H100, PARAMS) == 0.0
    assert t([120, 120]) == pytest.approx(t([128, 128]))           # one 128-row block either way
    assert t([136, 136]) > t([128, 128]) * 1.05                    # a second row block
    assert t([256, 256]) < t([264, 264])


def test_h800_uses_the_h100_fit():
    assert get_gpu("h800").calibrated_as == "h100"
    p = masked_params("h100")
    assert p.bw_bytes_per_s > 0 and 0 < p.mma_eff
    with pytest.raises(ValueError, match="no DeepGEMM masked-kernel fit"):
        masked_params("b200")
