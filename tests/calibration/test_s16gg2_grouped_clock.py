"""s16gg2 (docs/notes/s16gg2_rule.md): candidate C, every grouped GEMM inside a layer at the in-layer
SM clock (calibration.grouped_clock, calibration.predict.ADOPT_GROUPED_LAYER_CLOCK); both settings
tested."""

import pandas as pd
import pytest

import calibration.predict as P
from calibration.fit import PROFILES_DIR
from calibration.grouped_clock import (alone_clocks_mhz, clock_factors, folder_clocks, gpu_clock_factors,
                                       in_layer_clock_mhz, time_weighted_median)
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model
from twin.costs import compute

H800 = "NVIDIA H800 SXM5 80GB"


def test_time_weighted_median():
    # weights 3 and 9 ms: the 1,600 MHz row holds three quarters of the time
    assert time_weighted_median([1980, 1600], [3e-3, 9e-3]) == 1600.0
    assert time_weighted_median([1980, 1600, 1700], [5, 1, 1]) == 1980.0


def test_statistics_use_fitting_rows_only():
    """f_in_layer from BF16 moe_layer rows of the fitting split (64 experts is held out: see
    calibration.split); f_alone_fit per curve from the fitting grouped rows; factors capped at 1."""
    base = {"model": "v3-slice-1l", "skew": 0.0, "precision": "bf16"}
    layers = pd.DataFrame([
        {**base, "bench": "moe_layer_fwd", "num_experts": 128, "sm_clock_mhz": 1700, "time_s": 2.0},
        {**base, "bench": "moe_layer_bwd", "num_experts": 128, "sm_clock_mhz": 1900, "time_s": 1.0},
        {**base, "bench": "moe_layer_fwd", "num_experts": 128, "sm_clock_mhz": 1300, "time_s": 1.0,
         "precision": "fp8-blockwise"},
    ])
    assert in_layer_clock_mhz(layers) == 1700.0     # FP8 row left out; 2 of 3 s at 1,700
    gemms = pd.DataFrame([
        {"bench": "grouped_gemm", "groups": 8, "tokens_per_group": 1024, "n": 4096, "k": 7168,
         "precision": "bf16", "sm_clock_mhz": 1400, "time_s": 1.0},
        {"bench": "grouped_gemm_wgrad", "groups": 8, "tokens_per_group": 1024, "n": 4096, "k": 7168,
         "precision": "bf16", "sm_clock_mhz": 1530, "time_s": 1.0},
    ])
    alone = alone_clocks_mhz(gemms, P.row_kernel)
    assert alone == {"bf16": 1400.0, "bf16/wgrad": 1530.0}
    assert clock_factors(1700.0, {**alone, "fast": 1800.0}) == pytest.approx(
        {"bf16": 1400 / 1700, "bf16/wgrad": 1530 / 1700, "fast": 1.0}, rel=1e-12)
    assert clock_factors(None, alone) == {}


def test_committed_records_factors():
    """The figures the rule quotes (fitting split): in-layer 1,695 / 1,725 MHz, BF16 curves fitted
    at 1,410-1,500 MHz; the H800 has no records (factor 1)."""
    for gpu, layer, bf16 in (("h100", 1695.0, 1410.0), ("h200", 1725.0, 1470.0)):
        f_in, alone = folder_clocks(gpu, P.row_kernel)
        assert f_in == layer and alone["bf16"] == bf16
        fac = gpu_clock_factors(P.gpu_spec(gpu).name, P.row_kernel)
        assert 0.8 < fac["bf16"] < fac["bf16/wgrad"] < fac["fp8-rowwise"] < 1.0
        assert fac["fp8-rowwise/small"] == 1.0
    assert gpu_clock_factors(H800, P.row_kernel) == {}


def test_compute_factor_scales_compute_only():
    """compute_factor 1 is today's time; a memory-bound call (few rows) moves less than the factor."""
    spec, prof = P.gpu_spec("h100"), load_fitted_profile("h100", None, PROFILES_DIR)[0]
    big = compute.grouped_gemm_time_s([4096] * 16, 4096, 7168, "bf16", spec, prof)
    assert compute.grouped_gemm_time_s([4096] * 16, 4096, 7168, "bf16", spec, prof, compute_factor=1.0) == big
    big_c = compute.grouped_gemm_time_s([4096] * 16, 4096, 7168, "bf16", spec, prof, compute_factor=0.8)
    small = compute.grouped_gemm_time_s([16] * 64, 4096, 7168, "bf16", spec, prof)
    small_c = compute.grouped_gemm_time_s([16] * 64, 4096, 7168, "bf16", spec, prof, compute_factor=0.8)
    assert 0.8 <= big_c / big < 0.85 and small_c / small > big_c / big


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_both_settings(gpu, monkeypatch):
    """Off: today's layer. On: the forward's and backward's grouped GEMMs faster, nothing else moved;
    the alone grouped records' predictions identical."""
    spec, prof = P.gpu_spec(gpu), load_fitted_profile(gpu, None, PROFILES_DIR)[0]
    model = get_model("v3-slice-1l")
    counts = [8192 * 8 / 32] * 32
    monkeypatch.setattr(P, "ADOPT_GROUPED_LAYER_CLOCK", False)
    f_off, b_off = P.moe_layer_ops(model, 8192, counts, "bf16", spec, prof)
    monkeypatch.setattr(P, "ADOPT_GROUPED_LAYER_CLOCK", True)
    f_on, b_on = P.moe_layer_ops(model, 8192, counts, "bf16", spec, prof)
    fac = gpu_clock_factors(spec.name, P.row_kernel)
    for off, on, calls in ((f_off, f_on, 2), (b_off, b_on, 4)):
        changed = [(a, b) for (_, a), (_, b) in zip(off.ops + off.w_ops, on.ops + on.w_ops) if a != b]
        assert len(changed) == calls
        assert all(fac["bf16"] - 1e-9 <= b / a < 1.0 for a, b in changed)
        assert (on.component_s.get("grouped_gemm", 0) + on.w_component_s.get("grouped_gemm", 0)
                < off.component_s.get("grouped_gemm", 0) + off.w_component_s.get("grouped_gemm", 0))
    row = {"bench": "grouped_gemm", "groups": 32, "tokens_per_group": 2048, "n": 4096, "k": 7168,
           "precision": "bf16", "timing": "cuda_graph"}
    monkeypatch.setattr(P, "ADOPT_GROUPED_LAYER_CLOCK", False)
    off_s = P.predict_s(row, spec, prof)
    monkeypatch.setattr(P, "ADOPT_GROUPED_LAYER_CLOCK", True)
    assert P.predict_s(row, spec, prof) == off_s
