"""s14gemm (docs/notes/s14gemm_rule.md): GEMM curves fitted at the clock GEMMs run at inside layers,
behind calibration.fit.ADOPT_GEMM_LAYER_CLOCK / twin.costs.profile.ADOPT_GEMM_LAYER_CLOCK."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from calibration import fit
from calibration import records as rec
from calibration.predict import gpu_spec, predict_s
from twin.costs import profile as profile_mod
from twin.costs.profile import profile_from_json


def test_switches_are_off_until_adopted():
    """Candidates L and L2 not adopted (docs/notes/s14gemm_rule.md): switches off, the committed
    profiles read."""
    assert fit.ADOPT_GEMM_LAYER_CLOCK is False and fit.ADOPT_GEMM_LAYER_SPEED is False
    assert profile_mod.ADOPT_GEMM_LAYER_CLOCK is False and profile_mod.ADOPT_GEMM_LAYER_SPEED is False
    assert profile_mod.profiles_dir() == profile_mod.PROFILES


def test_profiles_dir_follows_the_switch(monkeypatch):
    monkeypatch.setattr(profile_mod, "ADOPT_GEMM_LAYER_CLOCK", True)
    assert profile_mod.profiles_dir() == profile_mod.PROFILES_GEMM_LAYER_CLOCK
    monkeypatch.setattr(profile_mod, "ADOPT_GEMM_LAYER_SPEED", True)
    assert profile_mod.profiles_dir() == profile_mod.PROFILES_GEMM_LAYER_SPEED


def _today(gpu: str):
    return profile_from_json(json.loads(profile_mod.PROFILES.joinpath(f"{gpu}.json").read_text()))


def test_l2_speed_moves_bf16_curves_only_and_records_see_them_back():
    """L2: the BF16 GEMM curves' e_max x speed-up; FP8 untouched; a primitive record is predicted
    with the curves as fitted (the same prediction as today's profile)."""
    from calibration.predict import at_records_speed, with_bf16_speed
    today = _today("h100")
    fast = dataclasses.replace(with_bf16_speed(today, 1.15), bf16_layer_speedup=1.15)
    assert fast.grouped_gemm["bf16"].e_max == pytest.approx(min(1.0, today.grouped_gemm["bf16"].e_max * 1.15))
    assert fast.gemm["fp8"] == today.gemm["fp8"]
    assert at_records_speed(fast).grouped_gemm["bf16"].e_max == pytest.approx(today.grouped_gemm["bf16"].e_max)
    row = {"bench": "grouped_gemm", "groups": 16, "tokens_per_group": 4096, "n": 4096, "k": 7168,
           "precision": "bf16", "timing": "cuda_graph", "m": 4096, "sm_clock_mhz": 1500.0}
    spec = gpu_spec("h100")
    assert predict_s(row, spec, fast) == pytest.approx(predict_s(row, spec, today))


def test_l2_sustained_bf16_curves_unchanged():
    """Under L2 a BF16 curve's sustained ratio is divided by the speed-up: its sustained e_max is today's."""
    curves = fit.sustained_at_layer_speed({"gemm/bf16": 0.9}, {"gemm": 0.96}, 1.2)
    assert curves["gemm/bf16"] == pytest.approx(0.9 / 1.2)
    assert curves["grouped_gemm/bf16"] == pytest.approx(0.96 / 1.2)   # no own ratio: the class's
    assert fit.sustained_at_layer_speed({"gemm/bf16": 0.9}, {"gemm": 0.96}, 0.0) == {"gemm/bf16": 0.9}


def test_l2_speedup_from_committed_records():
    """The fitting split's class medians: BF16 layers run at a higher clock than gemm.csv's loops
    (1,695 vs 1,440 MHz on the H100, 1,725 vs 1,485 on the H200: docs/notes/s14gemm_rule.md)."""
    for gpu in ("h100", "h200"):
        speed, layer, loop = fit.bf16_layer_speedup(rec.load_records(gpu))
        assert speed == pytest.approx(layer / loop) and 1.1 < speed < 1.25


def test_clock_factor_only_slows_throttled_rows():
    clocks = {"bf16": 1700.0, "fp8": 1965.0}
    assert fit.clock_factor("bf16", 1530, clocks) == pytest.approx(1530 / 1700)
    assert fit.clock_factor("fp8-rowwise", 1470, clocks) == pytest.approx(1470 / 1965)
    assert fit.clock_factor("bf16", 1980, clocks) == 1.0          # above the layer clock: unchanged
    assert fit.clock_factor("bf16", float("nan"), clocks) == 1.0  # no clock read
    assert fit.clock_factor("bf16", 1500, {}) == 1.0              # curves at the rows' own clocks


def test_layer_clock_is_time_weighted_per_family():
    """The long layers set the clock: one 9 ms layer at 1,600 MHz outweighs three 1 ms at 1,980."""
    rows = pd.DataFrame({
        "bench": ["moe_layer_fwd"] * 4 + ["moe_layer_bwd"] * 2 + ["gemm"],
        "precision": ["bf16"] * 4 + ["fp8-blockwise"] * 2 + ["bf16"],
        "sm_clock_mhz": [1980, 1980, 1980, 1600, 1965, 1950, 1400],
        "time_s": [1e-3, 1e-3, 1e-3, 9e-3, 1e-3, 2e-3, 1e-3],
        "model": ["v3-slice-1l"] * 7, "tokens": [512] * 7,
    })
    held = pd.Series([False] * len(rows))
    clocks = fit.layer_gemm_clock_mhz(rows, held)
    assert fit.time_weighted_median([1980, 1600], [3e-3, 9e-3]) == 1600.0
    assert clocks == {"bf16": 1600.0, "fp8": 1950.0}


def test_at_curve_clock_moves_gemm_rows_only():
    rows = pd.DataFrame({"bench": ["gemm", "grouped_gemm_wgrad", "memory", "gemm"],
                         "precision": ["bf16", "bf16", "bf16", "bf16"],
                         "sm_clock_mhz": [1500, 1700, 1500, 1980], "time_s": [1.0, 1.0, 1.0, 1.0]})
    out = fit.at_curve_clock(rows, {"bf16": 1700.0})
    assert out.time_s.tolist() == pytest.approx([1500 / 1700, 1.0, 1.0, 1.0])
    assert rows.time_s.tolist() == [1.0] * 4   # not in place


def test_sustained_ratio_keeps_the_power_limited_state():
    """A GEMM's sustained curve = the layer-clock curve x ratio x burst clock / layer clock, i.e. the
    burst-clock curve x ratio: the same sustained time as before the change."""
    per_kernel = [{"config": "gemm m=8192", "precision": "bf16", "class": "gemm", "ratio": 0.96,
                   "burst_sm_clock_mhz": 1440.0},
                  {"config": "copy", "precision": "bf16", "class": "memory", "ratio": 0.99,
                   "burst_sm_clock_mhz": 1905.0}]
    ratios, out = fit.sustained_at_curve_clock(per_kernel, {"bf16": 1700.0})
    assert ratios["gemm"] == pytest.approx(0.96 * 1440 / 1700)
    assert ratios["memory"] == pytest.approx(0.99)


def test_profile_json_carries_the_clock():
    data = json.loads(profile_mod.PROFILES.joinpath("h100.json").read_text())
    assert "gemm_clock_mhz" not in data   # today's profile: the records' own clocks
    prof = profile_from_json(data)
    assert prof.gemm_clock_mhz == {}
    moved = dataclasses.replace(prof, gemm_clock_mhz={"bf16": 1695.0})
    assert profile_from_json(moved.to_json()).gemm_clock_mhz == {"bf16": 1695.0}


def test_primitive_record_predicted_at_its_own_clock():
    """With curves at the layer clock, a gemm record read at a lower clock is predicted slower by
    the clock ratio; with today's profile (no clock) the prediction is the curve's."""
    data = json.loads(profile_mod.PROFILES.joinpath("h100.json").read_text())
    prof = profile_from_json(data)
    row = {"bench": "gemm", "m": 8192, "n": 4096, "k": 7168, "precision": "bf16", "timing": "cuda_graph",
           "sm_clock_mhz": 1500.0, "groups": 1, "tokens_per_group": 8192}
    spec = gpu_spec("h100")
    today = predict_s(row, spec, prof)
    at_layer = predict_s(row, spec, dataclasses.replace(prof, gemm_clock_mhz={"bf16": 1800.0}))
    assert at_layer == pytest.approx(today * 1800 / 1500)
    fast_row = {**row, "sm_clock_mhz": 1980.0}
    assert predict_s(fast_row, spec, dataclasses.replace(prof, gemm_clock_mhz={"bf16": 1800.0})) == pytest.approx(today)


def test_committed_records_layer_clock_above_the_gemm_rows():
    """The finding the change rests on (fitting split): BF16 layers run their GEMMs faster than the
    large gemm.csv rows are clocked, on both GPUs."""
    for gpu in ("h100", "h200"):
        df = rec.load_records(gpu)
        clocks = fit.layer_gemm_clock_mhz(df)
        rows = fit.fit_rows(df)
        large = rows[rows.bench.isin(list(fit.GEMM_TABLE)) & (rows.flops > 1e11) & (rows.precision == "bf16")]
        assert np.median(large.sm_clock_mhz) < clocks["bf16"] <= 1980.0


def _candidate(gpu: str):
    return profile_from_json(json.loads(profile_mod.PROFILES_GEMM_LAYER_CLOCK.joinpath(f"{gpu}.json").read_text()))


def test_candidate_profiles_carry_their_layer_clock():
    """The profiles regenerated under the switch describe the in-layer clock: faster GEMM curves
    (BF16 grouped e_max up) and a lower gather_eff (stage 2 no longer absorbs the GEMM excess)."""
    for gpu in ("h100", "h200"):
        cand = _candidate(gpu)
        today = profile_from_json(json.loads(profile_mod.PROFILES.joinpath(f"{gpu}.json").read_text()))
        assert set(cand.gemm_clock_mhz) == {"bf16", "fp8"}
        assert cand.grouped_gemm["bf16"].e_max > today.grouped_gemm["bf16"].e_max
        assert cand.gather_eff < today.gather_eff


def test_candidate_moves_the_trace_factors_toward_one():
    """Clause 1 of docs/notes/s14gemm_rule.md (fitting traces, H200): under the candidate's profile
    T's MoE grouped-GEMM and memory-bound factors are both closer to 1 than under today's."""
    from calibration.parallel_blocks import folder_terms
    folder = rec.MEASUREMENTS_DIR / "h200x2"
    today = profile_from_json(json.loads(profile_mod.PROFILES.joinpath("h200.json").read_text()))
    before = folder_terms(folder, "h200", today, True).component_factors["moe"]
    after = folder_terms(folder, "h200", _candidate("h200"), True).component_factors["moe"]
    for component in ("grouped_gemm", "memory"):
        assert abs(after[component] - 1) < abs(before[component] - 1)


def test_l2_candidate_profiles_hold_their_speedup():
    """The profiles regenerated under L2: the speed-up recorded, BF16 curves faster than today's,
    FP8 curves today's, gather_eff lower (stage 2 refitted after the faster GEMMs)."""
    for gpu in ("h100", "h200"):
        cand = profile_from_json(json.loads(profile_mod.PROFILES_GEMM_LAYER_SPEED.joinpath(f"{gpu}.json").read_text()))
        today = _today(gpu)
        assert 1.1 < cand.bf16_layer_speedup < 1.25
        assert cand.grouped_gemm["bf16"].e_max == pytest.approx(
            min(1.0, today.grouped_gemm["bf16"].e_max * cand.bf16_layer_speedup), rel=0.02)
        assert cand.gemm["fp8"].e_max == pytest.approx(today.gemm["fp8"].e_max, rel=0.02)
        assert cand.gather_eff < today.gather_eff
