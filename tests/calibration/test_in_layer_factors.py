"""s15gl's candidate G (docs/notes/s15gl_rule.md): measured in-layer / alone kernel-class factors on
kernels inside composed layers and steps, behind calibration.fit.ADOPT_IN_LAYER_FACTORS /
twin.costs.profile.ADOPT_IN_LAYER_FACTORS; the kernel records (timed alone) predicted without them."""

import dataclasses
import json

import pandas as pd
import pytest

from calibration import fit, gemm_in_layer
from calibration.predict import gpu_spec, predict_s
from twin.costs import compute
from twin.costs import profile as profile_mod
from twin.costs.profile import profile_from_json

FACTORS = {"gemm/bf16": 0.9, "grouped_gemm/bf16": 0.8, "grouped_gemm/fp8": 0.85, "memory": 1.2}


def _today(gpu: str):
    return profile_from_json(json.loads(profile_mod.PROFILES.joinpath(f"{gpu}.json").read_text()))


def test_switches_follow_the_rule(monkeypatch):
    """G's switches (off unless adopted by the rule); the twin reads G's profiles only when on."""
    assert profile_mod.ADOPT_IN_LAYER_FACTORS is fit.ADOPT_IN_LAYER_FACTORS
    if not profile_mod.ADOPT_IN_LAYER_FACTORS:
        assert profile_mod.profiles_dir() == profile_mod.PROFILES
        assert not _today("h100").in_layer
    monkeypatch.setattr(profile_mod, "ADOPT_IN_LAYER_FACTORS", True)
    assert profile_mod.profiles_dir() == profile_mod.PROFILES_IN_LAYER


def _pairs(rows):
    cols = ["precision", "op_class", "input_shapes", "calls", "layer_s", "graph_s"]
    return pd.DataFrame(rows, columns=cols)


def test_factors_pool_calls_by_class_and_drop_unidentified_and_thin_classes():
    pairs = _pairs([
        # grouped BF16: (2 x 9 + 1 x 1) / (2 x 10 + 1 x 1) = 19 / 21 (calls-weighted seconds)
        ("bf16", "grouped_gemm", "[[8, 4]]", 2, 9e-3, 10e-3),
        ("bf16", "grouped_gemm", "[[8, 4]]", 1, 1e-3, 1e-3),
        # BF16 memory classes pooled: (2.2 + 1.1) / (2 + 1)
        ("bf16", "elementwise", "[[4]]", 1, 2.2e-3, 2e-3),
        ("bf16", "gather", "[[4], [2]]", 1, 1.1e-3, 1e-3),
        # a tensor-list op: no shapes to join on, dropped
        ("bf16", "elementwise", "[[], []]", 1, 1e-3, 9e-3),
        # FP8 memory is not the memory factor's evidence; FP8 dense GEMMs under 1 ms: no factor
        ("fp8-blockwise", "elementwise", "[[4]]", 1, 5e-3, 1e-3),
        ("fp8-blockwise", "fp8_gemm", "[[4]]", 4, 0.2e-3, 0.1e-3),
    ])
    f = gemm_in_layer.in_layer_factors(pairs)
    assert set(f) == {"grouped_gemm/bf16", "memory"}
    assert f["grouped_gemm/bf16"] == pytest.approx(19 / 21)
    assert f["memory"] == pytest.approx(3.3 / 3.0)


def test_committed_records_give_gemms_faster_and_memory_slower_in_layers():
    """s14gl's fitting records (docs/notes/s14gl.md): GEMM classes run faster inside the layers
    than alone, memory-bound kernels slower; the H800 has no records (it takes the H100 profile's)."""
    for gpu in ("h100", "h200"):
        f = fit.in_layer_terms(gpu)
        assert set(f) == {"gemm/bf16", "grouped_gemm/bf16", "grouped_gemm/fp8", "memory"}
        assert all(0.85 < f[k] < 1.0 for k in f if k != "memory") and 1.0 < f["memory"] < 1.2
    assert fit.in_layer_terms("h800") == {}


def test_factors_scale_in_layer_kernels_and_round_trip():
    today = _today("h100")
    g = dataclasses.replace(today, in_layer=FACTORS)
    spec = gpu_spec("h100")
    assert compute.gemm_time_s(4096, 4096, 7168, "bf16", spec, g) == pytest.approx(
        0.9 * compute.gemm_time_s(4096, 4096, 7168, "bf16", spec, today))
    assert compute.gemm_time_s(4096, 4096, 7168, "fp8", spec, g) == compute.gemm_time_s(4096, 4096, 7168, "fp8", spec, today)
    assert compute.grouped_gemm_time_s([512] * 8, 4096, 7168, "fp8", spec, g) == pytest.approx(
        0.85 * compute.grouped_gemm_time_s([512] * 8, 4096, 7168, "fp8", spec, today))
    assert compute.memory_time_s(1e9, spec, g) == pytest.approx(1.2 * compute.memory_time_s(1e9, spec, today))
    assert profile_from_json(g.to_json()).in_layer == FACTORS
    assert g.alone().in_layer == {} and g.alone().gemm == today.gemm


def test_records_timed_alone_are_predicted_without_factors_layers_with():
    today = _today("h100")
    g = dataclasses.replace(today, in_layer=FACTORS)
    spec = gpu_spec("h100")
    grouped = {"bench": "grouped_gemm", "groups": 16, "tokens_per_group": 4096, "n": 4096, "k": 7168,
               "precision": "bf16", "timing": "cuda_graph", "m": 4096}
    memory = {"bench": "memory", "op": "copy", "tokens": 4096, "width": 7168, "bytes_moved": 2 * 2 * 4096 * 7168.0,
              "timing": "cuda_graph"}
    for row in (grouped, memory):
        assert predict_s(row, spec, g) == predict_s(row, spec, today)
    layer = {"bench": "moe_layer_fwd", "model": "v3-slice-1l", "tokens": 4096, "num_experts": 64, "top_k": 8,
             "skew": 0.0, "precision": "bf16", "timing": "per_rep_events"}
    assert predict_s(layer, spec, g) != pytest.approx(predict_s(layer, spec, today), rel=1e-3)


def test_the_twin_reads_g_profiles_only_when_on(monkeypatch):
    """G's committed candidate profiles carry the factors s14gl's records give; the twin's simulation
    profile reads them only with the switch on (the H800 simulates on the H100's: calibrated_as)."""
    # no cache clearing: load_profile keys its cache by the profiles directory the switch picks
    monkeypatch.setattr(profile_mod, "ADOPT_IN_LAYER_FACTORS", True)
    on = profile_mod.load_profile("h100")
    assert on.in_layer == pytest.approx(fit.in_layer_terms("h100"))
    monkeypatch.setattr(profile_mod, "ADOPT_IN_LAYER_FACTORS", False)
    assert profile_mod.load_profile("h100").in_layer == {}
