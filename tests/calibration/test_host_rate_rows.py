"""Which fitting rows give the eager layers' host rate per kernel (calibration.layer_gaps
HOST_RATE_ROWS, calibration.host_rate_rows: session s13mla's test of R2 / R, not adopted)."""

import json

import numpy as np
import pandas as pd
import pytest

from calibration import layer_gaps as lg
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.host_rate_rows import judge
from calibration.records_io import csv_exists
from twin.costs.profile import profile_from_json

CFG = "mla_layer v3-slice-1l b1 s1024"
ROWS = [(CFG, "bwd", "bf16", 47, 47 * 36e-6), (CFG, "bwd", "fp8-blockwise", 234, 234 * 30e-6),
        (CFG, "fwd", "bf16", 30, 30 * 23e-6), (CFG, "fwd", "fp8-blockwise", 117, 117 * 20e-6),
        (CFG, "infer", "bf16", 30, 30 * 19e-6), (CFG, "infer", "fp8-blockwise", 117, 117 * 21e-6)]


def _write(tmp_path, rows, split="fit"):
    (tmp_path / "h100").mkdir(exist_ok=True)
    frame = pd.DataFrame(rows, columns=["config", "phase", "precision", "kernels", "host_s"]).assign(
        split=split, profiled="phase", model="v3-slice-1l", batch=1, seq_len=1024, tokens=1024)
    path = tmp_path / "h100" / "host_dispatch.csv"
    if path.is_file():
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture(scope="module")
def h100_profile():
    return profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))


def test_every_row_rules_use_the_fp8_rows_the_class_rule_leaves_out(tmp_path, h100_profile):
    frame = _write(tmp_path, ROWS)
    fk = lg.function_kernels(frame, "h100", h100_profile)
    fp8 = frame["precision"] == "fp8-blockwise"
    assert (fk[fp8 & (frame["phase"] != "infer")] > 0).all() and (fk[~fp8 | (frame["phase"] == "infer")] == 0).all()
    by_class = lg.measured_host_s("h100", tmp_path, profile=h100_profile, rows="class")
    assert by_class == {"fwd": pytest.approx(23e-6), "bwd": pytest.approx(36e-6), "infer": pytest.approx(20e-6)}
    raw = lg.measured_host_s("h100", tmp_path, profile=h100_profile, rows="every_raw")
    assert raw == {"fwd": pytest.approx(21.5e-6), "bwd": pytest.approx(33e-6), "infer": pytest.approx(20e-6)}
    solved = lg.measured_host_s("h100", tmp_path, profile=h100_profile, rows="every_solved")
    for phase, rate, n in (("fwd", 20e-6, 117), ("bwd", 30e-6, 234)):
        k = float(fk[(frame["phase"] == phase) & (frame["precision"] != "bf16")].iloc[0])
        own = (n * rate - k * 20e-6) / (n - k)        # the FP8 row's autograd-class kernels
        assert solved[phase] == pytest.approx(np.median([by_class[phase], own]))
    assert solved["infer"] == pytest.approx(20e-6)


def test_held_out_rows_never_set_a_rate(tmp_path, h100_profile):
    _write(tmp_path, ROWS)
    before = {r: lg.measured_host_s("h100", tmp_path, profile=h100_profile, rows=r) for r in lg.HOST_RATE_ROW_RULES}
    _write(tmp_path, [(c, ph, p, k, 50 * h) for c, ph, p, k, h in ROWS], split="holdout")
    for r in lg.HOST_RATE_ROW_RULES:
        assert lg.measured_host_s("h100", tmp_path, profile=h100_profile, rows=r) == before[r]


def test_an_unknown_row_rule_names_the_allowed_ones(tmp_path):
    frame = _write(tmp_path, ROWS)
    with pytest.raises(ValueError, match="every_solved"):
        lg.host_rates_of(frame, "h100", rows="median")


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_the_committed_rates_are_the_class_rule_on_every_fitting_row(gpu):
    """The profile's eager host rates are the adopted rule's medians over the committed fitting
    rows (none of them fitted elsewhere, none held out)."""
    if not csv_exists(rec.MEASUREMENTS_DIR / gpu / "host_dispatch.csv"):   # plain or compressed
        pytest.skip(f"no {gpu} host_dispatch records")
    prof = profile_from_json(json.loads((PROFILES_DIR / f"{gpu}.json").read_text()))
    base = lg._committed_profile(gpu)
    rates = lg.measured_host_s(gpu, radix=lg.radix_sort_kernels(gpu), profile=base)
    assert rates == pytest.approx(prof.eager["host_s"])


BEFORE = {"kernels": (0.0283, 0.0807), "mla_layer": (0.031, 0.152), "moe_layer": (0.028, 0.071),
          "decode": (0.033, 0.092)}


def test_the_rule_wants_the_mla_p90_down_and_nothing_met_lost():
    good = {**BEFORE, "mla_layer": (0.03, 0.09), "decode": (0.035, 0.094)}
    assert judge(BEFORE, good, "h100") == []
    assert any("does not fall" in f for f in judge(BEFORE, {**good, "mla_layer": (0.03, 0.152)}, "h100"))
    assert any("moe_layer" in f for f in judge(BEFORE, {**good, "moe_layer": (0.028, 0.105)}, "h100"))
    assert any("0.3 points" in f for f in judge(BEFORE, {**good, "kernels": (0.0283, 0.0840)}, "h100"))
    assert any("decode" in f for f in judge(BEFORE, {**good, "decode": (0.037, 0.092)}, "h100"))
    # a kind missing its target before is not held to it (the H200 judges only what it meets)
    assert judge({**BEFORE, "mla_layer": (0.02, 0.09)}, {**BEFORE, "mla_layer": (0.02, 0.093)}, "h200") == []


def test_the_class_rule_rewrites_the_committed_eager_terms_unchanged(tmp_path):
    """The comparison's candidate profiles differ from the committed ones only by the row rule."""
    from calibration.host_rate_rows import candidate_profiles
    if not csv_exists(rec.MEASUREMENTS_DIR / "h200" / "host_dispatch.csv"):
        pytest.skip("no h200 host_dispatch records")
    out = candidate_profiles("class", tmp_path, gpus=("h200",))
    assert json.loads((out / "h200.json").read_text()) == json.loads((PROFILES_DIR / "h200.json").read_text())


def test_the_rate_bound_at_the_committed_rates_is_todays_figure():
    """One grid point at the committed rates gives the held-out MLA figures the profile gives."""
    from calibration.host_rate_rows import rate_bound
    from calibration.validate import predict_cases
    prof = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    host = prof.eager["host_s"]
    b = rate_bound("h100", fwd_us=[host["fwd"] * 1e6], bwd_us=[host["bwd"] * 1e6])
    df = rec.load_records("h100")
    cases, _ = predict_cases(df[df["bench"].isin(["mla_layer_fwd", "mla_layer_bwd"])], "h100", prof)
    err = np.array([abs(c["rel_error"]) for c in cases if c["held_out"]])
    assert b["figures"] == pytest.approx((np.median(err), np.percentile(err, 90)))
    assert len(b["errors"]) == err.size
