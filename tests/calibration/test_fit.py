import json
import math

import pytest

from calibration import records as rec
from calibration.fit import fit_gpu, fit_profile, fit_rows, write_profile
from calibration.split import is_held_out, split
from tests.calibration.conftest import TRUE
from twin.costs.profile import profile_from_json


def test_fit_recovers_known_curves(synthetic_root):
    df = rec.load_records("h100", synthetic_root)
    prof, stats = fit_profile(df, "h100")
    assert stats["rms_log_residual"] < 0.02  # data carry +-1% noise
    for table in ("gemm", "grouped_gemm"):
        for label in ("bf16", "fp8-rowwise"):
            got, want = getattr(prof, table)[label], getattr(TRUE, table)[label]
            assert got.e_max == pytest.approx(want.e_max, rel=0.03), (table, label)
            for f in ("m_half", "n_half", "k_half"):
                assert getattr(got, f) == pytest.approx(getattr(want, f), rel=0.15), (table, label, f)
        # the twin's fp8 curve is the measured FP8 kernel (rowwise here: no blockwise records)
        assert getattr(prof, table)["fp8"] == getattr(prof, table)["fp8-rowwise"]
    for d in ("fwd", "bwd"):
        assert prof.attention[d].e_max == pytest.approx(TRUE.attention[d].e_max, rel=0.03)
        assert prof.attention[d].s_half == pytest.approx(TRUE.attention[d].s_half, rel=0.15)
    assert prof.memory_eff == pytest.approx(TRUE.memory_eff, rel=0.02)
    assert not prof.fp8_quant_fused  # a fitted profile describes real/'s eager stack
    for cls in ("op", "gemm.bf16", "gemm.fp8-rowwise", "grouped_gemm.bf16", "grouped_gemm.fp8-rowwise"):
        assert prof.host(cls) == pytest.approx(TRUE.host(cls), rel=0.3), cls
    assert stats["quant_bytes_per_elem"] == pytest.approx(TRUE.quant_bytes_per_elem, rel=0.15)
    assert stats["gather_eff"] == pytest.approx(TRUE.gather_eff, rel=0.15)


def test_fit_uses_only_fitting_split(synthetic_root):
    df = rec.load_records("h100", synthetic_root)
    rows = fit_rows(df)
    assert not rows.apply(is_held_out, axis=1).any()
    assert set(rows.bench) <= set(rec.PRIMITIVE_BENCHES)
    held = split(df)
    assert held.sum() > 0 and (~held).sum() > 0


def test_split_is_by_shape_family():
    g = dict(bench="grouped_gemm", m=0, n=4096, k=7168, groups=16, tokens_per_group=128)
    assert is_held_out(g)
    assert not is_held_out({**g, "groups": 8})
    assert is_held_out({**g, "groups": 8, "tokens_per_group": 512})
    assert is_held_out(dict(bench="gemm", m=128, n=2112, k=7168))
    assert not is_held_out(dict(bench="gemm", m=128, n=24576, k=1536))
    moe = dict(bench="moe_layer_fwd", model="v3-slice-1l", num_experts=64, skew=1.0)
    assert not is_held_out(moe)
    assert is_held_out({**moe, "skew": 1.5}) and is_held_out({**moe, "num_experts": 32})
    assert is_held_out(dict(bench="train_step"))


def test_profile_json_round_trip_and_provenance(synthetic_root, tmp_path):
    prof, stats = fit_gpu("h100", synthetic_root)
    path = write_profile(prof, tmp_path)
    data = json.loads(path.read_text())
    back = profile_from_json(data)
    assert back == prof
    prov = back.provenance
    for key in ("records_sha256", "record_files_sha256", "git_commit", "fitted_utc", "gpu_name", "torch_version",
                "cuda_version", "num_fit_points"):
        assert key in prov, key
    assert len(prov["records_sha256"]) == 64
    assert set(prov["record_files_sha256"]) == {"gemm.csv", "attention.csv", "memory.csv", "moe_layer.csv"}
    assert prov["num_fit_points"] == stats["num_fit_points"] > 0
    assert prov["gpu_name"] == "NVIDIA H100 80GB HBM3" and prov["cuda_version"] == "12.8"
    assert back.calibrated and math.isfinite(back.launch_s)


def test_missing_records_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"twin calibrate --out DIR"):
        rec.load_records("h100", tmp_path)
