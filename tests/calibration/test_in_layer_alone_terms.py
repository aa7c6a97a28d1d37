"""s15gl2's candidate G2 (docs/notes/s15gl2_rule.md): G's in-layer factors with the GEMM ones on the
compute time only, and gather_eff / quant_bytes_per_elem fitted on alone memory rows of the fitting
split (memory_alone.csv), behind calibration.fit.ADOPT_IN_LAYER_ALONE_TERMS /
twin.costs.profile.ADOPT_IN_LAYER_ALONE_TERMS."""

import dataclasses
import json

import pandas as pd
import pytest

from calibration import fit
from calibration.predict import gpu_spec, predict_s
from tests.calibration.test_in_layer_factors import FACTORS, _today   # G's test factors and the committed profile
from twin.costs import compute
from twin.costs import profile as profile_mod
from twin.costs.profile import profile_from_json


def test_switches_follow_the_rule(monkeypatch):
    """G2's switches (off unless adopted by the rule); the twin reads G2's profiles only when on."""
    assert profile_mod.ADOPT_IN_LAYER_ALONE_TERMS is fit.ADOPT_IN_LAYER_ALONE_TERMS
    if not profile_mod.ADOPT_IN_LAYER_ALONE_TERMS:
        assert profile_mod.profiles_dir() == profile_mod.PROFILES
        assert not _today("h100").in_layer_gemm_compute_only
    monkeypatch.setattr(profile_mod, "ADOPT_IN_LAYER_ALONE_TERMS", True)
    assert profile_mod.profiles_dir() == profile_mod.PROFILES_IN_LAYER_ALONE


def test_gemm_factor_on_compute_time_leaves_memory_bound_gemms_alone():
    today = _today("h100")
    g = dataclasses.replace(today, in_layer=FACTORS)
    g2 = dataclasses.replace(g, in_layer_gemm_compute_only=True)
    spec = gpu_spec("h100")
    big = compute.gemm_time_s(8192, 8192, 8192, "bf16", spec, today)
    # a compute-bound GEMM: faster by about the factor (launch unscaled), as G within a launch
    assert compute.gemm_time_s(8192, 8192, 8192, "bf16", spec, g2) < big
    assert compute.gemm_time_s(8192, 8192, 8192, "bf16", spec, g2) == pytest.approx(0.9 * big, rel=0.02)
    # a few-row grouped GEMM (memory-bound): G scales the whole time, G2 much less
    rows = [16] * 64
    t0 = compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", spec, today)
    tg = compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", spec, g)
    tg2 = compute.grouped_gemm_time_s(rows, 4096, 7168, "bf16", spec, g2)
    assert tg == pytest.approx(0.8 * t0)
    assert tg < tg2 <= t0 and tg2 > 0.9 * t0
    # memory classes as G; the flag round-trips and an unflagged profile stays G
    assert compute.memory_time_s(1e9, spec, g2) == pytest.approx(1.2 * compute.memory_time_s(1e9, spec, today))
    assert profile_from_json(g2.to_json()).in_layer_gemm_compute_only
    assert not profile_from_json(g.to_json()).in_layer_gemm_compute_only


def _alone_rows(profile, spec) -> pd.DataFrame:
    """memory_alone rows timed as `profile` predicts them (a known truth for the fit to recover)."""
    rows = []
    for T in (2048, 8192, 32768):
        for op in fit.GATHER_EFF_OPS + fit.QUANT_OPS:
            width = 7168 if op in fit.QUANT_OPS or op.startswith("index") else 4096
            nbytes = T * width * 2 * 2.5
            r = {"bench": "memory_alone", "op": op, "tokens": T, "width": width, "bytes_moved": nbytes,
                 "timing": "cuda_graph"}
            rows.append({**r, "time_s": predict_s(r, spec, profile)})
    return pd.DataFrame(rows)


def test_alone_terms_recover_the_terms_the_rows_were_timed_with_and_ignore_factors():
    spec = gpu_spec("h100")
    truth = dataclasses.replace(_today("h100"), gather_eff=0.37, quant_bytes_per_elem=44.0)
    rows = _alone_rows(truth, spec)
    start = dataclasses.replace(truth, gather_eff=0.9, quant_bytes_per_elem=20.0, in_layer=FACTORS)
    quant_b, gather_eff = fit.alone_memory_terms(rows, start, spec)
    assert quant_b == pytest.approx(44.0, rel=1e-3) and gather_eff == pytest.approx(0.37, rel=1e-3)
    with pytest.raises(ValueError, match="memory_alone"):
        fit.alone_memory_terms(rows[rows["op"].isin(fit.QUANT_OPS)], start, spec)


def test_memory_alone_rows_are_read_from_the_fitting_split(tmp_path):
    (tmp_path / "h100").mkdir()
    df = pd.DataFrame([{"bench": "memory_alone", "op": "swiglu", "tokens": t, "width": 4096, "bytes_moved": 1e6,
                        "split": "fit", "time_s": 1e-5} for t in (2048, 16384)])
    df.to_csv(tmp_path / "h100" / fit.MEMORY_ALONE_FILE, index=False)
    got = fit.memory_alone_rows("h100", tmp_path)
    assert list(got["tokens"]) == [2048]            # tokens 16,384: held out as for `memory`
    assert fit.memory_alone_rows("h200", tmp_path).empty


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_committed_g2_profile_carries_the_alone_terms_of_its_records(gpu, monkeypatch):
    """G2's committed candidate profiles (docs/notes/s15gl2_rule.md) hold the gather_eff and
    quant_bytes_per_elem its memory_alone records give, G's factors on compute time, and the twin
    reads it only with the switch on (no cache clearing: load_profile keys on the directory)."""
    g2 = profile_from_json(json.loads(profile_mod.PROFILES_IN_LAYER_ALONE.joinpath(f"{gpu}.json").read_text()))
    assert g2.in_layer_gemm_compute_only and g2.in_layer == pytest.approx(fit.in_layer_terms(gpu))
    quant_b, gather_eff = fit.alone_memory_terms(fit.memory_alone_rows(gpu), g2, gpu_spec(gpu))
    assert (g2.quant_bytes_per_elem, g2.gather_eff) == pytest.approx((quant_b, gather_eff), rel=1e-6)
    assert g2.gather_eff != pytest.approx(_today(gpu).gather_eff, rel=0.02)
    monkeypatch.setattr(profile_mod, "ADOPT_IN_LAYER_ALONE_TERMS", True)
    assert profile_mod.load_profile(gpu).in_layer_gemm_compute_only
    monkeypatch.setattr(profile_mod, "ADOPT_IN_LAYER_ALONE_TERMS", False)
    assert not profile_mod.load_profile(gpu).in_layer_gemm_compute_only
