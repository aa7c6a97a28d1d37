"""The alignment term's third form (twin.costs.gemm_alignment curve functions, the
ADOPT_GEMM_ALIGNMENT_CURVE switch of twin/costs/compute.py, docs/notes/s24align3_rule.md): the shape
features, the rate lookup and its clamping, and that the rate replaces the compute term only, under
both settings."""

from __future__ import annotations

import math

import pytest

from twin.core.specs import get_gpu
from twin.costs import compute, gemm_alignment as ga
from twin.costs.profile import load_profile

H100 = get_gpu("h100")
PROF = load_profile("h100")
# round numbers for the mechanism tests (not a fit): exponents 0 except fill, so a rate is its key's
# constant times quant times fill^0.5
BOUNDS_LO = {"fill": 0.25, "k": 512.0, "mn": 1e6, "quant": 0.8}
BOUNDS_HI = {"fill": 1.0, "k": 1e5, "mn": 1e9, "quant": 1.0}
FAMILY = {"fill_exp": 0.5, "k_exp": 0.0, "mn_exp": 0.0, "bounds_low": BOUNDS_LO, "bounds_high": BOUNDS_HI}
TABLE = {"curve_fits": {"h100": {
    "constants": {"align1/fwd/c": math.log(100e12), "align1/fwd/ab": math.log(120e12),
                  "align1/dgrad/a": math.log(140e12), "align2/fwd/c": math.log(250e12)},
    "families": {"align1": {**FAMILY, "tiles": {"fwd": [128, 128], "dgrad": [256, 128], "wgrad": [128, 256]}},
                 "align2": {**FAMILY, "tiles": {"fwd": [128, 256], "dgrad": [128, 256], "wgrad": [256, 128]}}},
    "k0": 256.0, "mn_ref": 1e7}}}


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(ga, "_table", lambda: TABLE)


def test_curve_features():
    # 3072 x 2049 on 128 x 128 tiles: 24 x 17 = 408 tiles, 4 waves of 132 (528 slots)
    f = ga.curve_features(3072, 2049, 2048, (128, 128), 132)
    assert f["fill"] == pytest.approx(408 / 528) and f["k"] == 2048.0 and f["mn"] == 3072 * 2049
    assert f["quant"] == pytest.approx(2049 / (17 * 128))
    assert ga.curve_features(4096, 4096, 64, (128, 128), 132)["quant"] == 1.0
    assert ga.curve_key((8, 8, 1), "fwd") == "align1/fwd/c" and ga.curve_key((4, 8, 8), "wgrad") == "align2/wgrad/a"


def test_curve_rate_lookup(table):
    r = ga.curve_rate_flops_per_s
    assert r("h100", 3072, 4096, 4096, (8, 8, 8), "fwd", 132) is None       # aligned: today's time
    assert r("h200", 3072, 4096, 4096, (8, 8, 1), "fwd", 132) is None       # no fit for the profile
    # 3072 x 4096 on 128 x 128: 768 tiles, 6 waves (792 slots), quant 1
    assert r("h100", 3072, 4096, 4096, (8, 8, 1), "fwd", 132) == pytest.approx(100e12 * math.sqrt(768 / 792))
    # a key without rows (align1/fwd/abc): the mean of its family and pass's constants
    mean = math.exp((math.log(100e12) + math.log(120e12)) / 2)
    assert r("h100", 3072, 4096, 4096, (1, 1, 1), "fwd", 132) == pytest.approx(mean * math.sqrt(768 / 792))


def test_curve_features_are_clamped(table):
    """The qwen2moe router (8 tokens x 60 experts x 2048, an align2 forward): one tile of a 132-SM
    wave and a quarter-filled 256-wide tile, priced at the fitting range's edges, not extrapolated."""
    rate = ga.curve_rate_flops_per_s("h100", 8, 60, 2048, (8, 8, 4), "fwd", 132)
    assert rate == pytest.approx(250e12 * BOUNDS_LO["quant"] * math.sqrt(BOUNDS_LO["fill"]))


@pytest.mark.parametrize("adopt", [False, True])
def test_rate_replaces_the_compute_term_only(table, monkeypatch, adopt):
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT_CURVE", adopt)
    t = lambda m, n, k, **kw: compute.gemm_time_s(m, n, k, "bf16", H100, PROF, **kw)  # noqa: E731
    aligned = t(8192, 50257, 2048)
    assert t(8192, 50257, 2048, widths=(50304, 2048)) == aligned        # aligned widths: today's time
    odd = t(8192, 50257, 2048, widths=(50257, 2048))
    if not adopt:
        assert odd == aligned
        return
    flops = 2.0 * 8192 * 50257 * 2048
    rate = ga.curve_rate_flops_per_s("h100", 8192, 50257, 2048, (8, 8, 1), "fwd", H100.num_sms)
    # compute-bound: the curve's time plus the launch (the memory term adds < 1%)
    assert flops / rate + PROF.launch_s <= odd < 1.01 * flops / rate + PROF.launch_s
    # SMs held by communication slow the compute term as any GEMM's
    assert t(8192, 50257, 2048, widths=(50257, 2048), sm_frac=0.5) > 1.9 * (odd - PROF.launch_s)
    # grouped and FP8 GEMMs out of scope
    assert t(8192, 50257, 2048, widths=(50257, 2048), groups=2) == t(8192, 50257, 2048, groups=2)


def test_curve_takes_precedence_over_the_earlier_forms(table, monkeypatch):
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT_CURVE", True)
    t = lambda: compute.gemm_time_s(3072, 50257, 2048, "bf16", H100, PROF, align=1, widths=(50257, 2048))  # noqa: E731
    curve = t()
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT_PATTERN", True)
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT", True)
    assert t() == curve


def test_switch_default_off():
    """docs/notes/s24align3_rule.md: off unless the rule passes (its outcome sets it)."""
    assert compute.ADOPT_GEMM_ALIGNMENT_CURVE is False
