"""SMs reserved for communication: the twin's SM-share model against the H100/H200 records of
real/bench/sm_reserve.py (validation only; nothing here is fitted)."""

import json

import pytest

from calibration import records as rec
from calibration import sm_reserve

GPUS = ("h100", "h200")


@pytest.fixture(scope="module")
def rows():
    return {gpu: sm_reserve.compare(gpu) for gpu in GPUS}


@pytest.mark.parametrize("gpu", GPUS)
def test_records_carry_their_gpu_clocks_and_versions(gpu):
    df = sm_reserve.load(gpu)
    assert len(df) > 300 and set(df["mode"]) == set(sm_reserve.MODES)
    assert df["gpu_name"].str.contains(gpu.upper()).all()
    assert df["torch_version"].notna().all() and df["cuda_version"].notna().all()
    assert (df["sm_clock_mhz"] > 500).all()
    env = json.loads((rec.MEASUREMENTS_DIR / gpu / "env_sm_reserve.json").read_text())
    # one holder program a whole SM: 1,024 threads x >= 24 registers leave no room for a GEMM CTA
    assert env["sm_reserve_holder_regs_copy"] >= 24 and env["sm_reserve_holder_regs_spin"] >= 24


@pytest.mark.parametrize("gpu", GPUS)
def test_twin_lies_between_told_and_untold_gemms_at_v3s_20_sms(gpu, rows):
    # DeepGEMM is told its SM count; cuBLAS told (carveout) and untold beside a holder bracket it
    b = sm_reserve.bracket(rows[gpu])
    assert b["told"] < b["twin"] < b["untold"], b
    assert abs(b["twin"] / b["untold"] - 1) <= 0.10 and abs(b["twin"] / b["told"] - 1) <= 0.10, b


@pytest.mark.parametrize("gpu", GPUS)
def test_half_the_sms_held_halves_the_gemm_rate_as_the_twin_says(gpu, rows):
    for r in rows[gpu]:
        if r["mode"] == "spin" and r["reserved_sms"] == 66:
            assert abs(r["rel_error"]) <= 0.10, r


@pytest.mark.parametrize("gpu", GPUS)
def test_a_data_mover_on_the_reserved_sms_runs_slower_beside_gemms(gpu, rows):
    # the comm side: the holder's own span beside GEMMs against alone, at V3's 20 SMs (the twin
    # does not apply this; calibration/trace.py says why the trace's all-to-alls stay unmatched)
    slow = [r["holder_slowdown_beside_gemms"] for r in rows[gpu]
            if r["mode"] in ("spin", "copy") and r["reserved_sms"] == sm_reserve.V3_RESERVED_SMS]
    assert len(slow) == 6 and min(slow) > 1.2


def test_table_names_the_bracket_and_a_gpu_without_records_has_none(tmp_path, rows):
    assert "inside the bracket" in sm_reserve.format_table(rows["h100"])
    assert sm_reserve.compare("h100", root=tmp_path) == []
