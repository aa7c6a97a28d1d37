"""calibration.mla_rounds (s14mla): the held-out MLA records and the fitting MLA host rows of one
run, each at its fastest round, and calibration.validate's replacement of the held-out records."""

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest

from calibration import mla_rounds as mr
from calibration.predict import gpu_spec, predict_s
from twin.costs.profile import fitted_profile

ROOT = Path(__file__).resolve().parents[2]
PILOT = ROOT / "calibration/measurements/h100/s9mla_paired/mla_paired.csv"
RATES = {"fwd": 25e-6, "bwd": 30e-6, "infer": 20e-6}    # the fitting row's host s a kernel at speed 1
RECORDS = [("v2-lite-slice", 4, 1024, "bf16"), ("v2-lite-slice", 1, 4096, "bf16")]


def _run(fit_speeds: list[float], rec_speeds: list[list[float]]) -> pd.DataFrame:
    """TEST FIXTURE (not measurements): rounds whose fitting host rows run at fit_speeds[round] and
    whose records run at rec_speeds[round][i]; each record's time is the twin's own prediction with
    the fitting row's rates at its speed (a host-bound record follows its host)."""
    prof, spec = fitted_profile("h100"), gpu_spec("h100")
    rows = []
    for rnd, (fs, rs) in enumerate(zip(fit_speeds, rec_speeds)):
        for phase in ("fwd", "infer", "bwd"):
            kernels = 46 if phase == "bwd" else 30
            rows.append({"bench": "host_dispatch", "round": rnd, "pair": 2 * rnd, "config": "mla_layer v3-slice-1l b1 s1024",
                         "phase": phase, "model": "v3-slice-1l", "batch": 1, "seq_len": 1024, "precision": "bf16",
                         "split": "fit", "profiled": "phase", "kernels": kernels, "host_s": kernels * RATES[phase] * fs,
                         "gpu_name": "NVIDIA H100 80GB HBM3"})
        for (m, b, s, label), speed in zip(RECORDS, rs):
            p = dataclasses.replace(prof, eager={**prof.eager, "host_s": {k: v * speed for k, v in RATES.items()}})
            for bench in ("mla_layer_fwd", "mla_layer_bwd"):
                r = {"bench": bench, "round": rnd, "pair": 2 * rnd, "model": m, "batch": b, "seq_len": s, "num_heads": 16,
                     "qk_head_dim": 192, "v_head_dim": 128, "causal": True, "precision": label, "split": "holdout",
                     "gpu_name": "NVIDIA H100 80GB HBM3"}
                r["time_s"] = predict_s(pd.Series({**r, "tokens": b * s}), spec, p)
                rows.append(r)
    df = pd.DataFrame(rows)
    return df.assign(tokens=df["batch"] * df["seq_len"])


def test_fastest_rounds_recover_a_two_state_host_and_median_rounds_do_not():
    # the host is fast (1.0) or slow (1.6) per item and round, as on h100/s9mla_paired
    run = _run([1.6, 1.0, 1.6, 1.6], [[1.0, 1.6], [1.6, 1.0], [1.0, 1.6], [1.6, 1.6]])
    prof = fitted_profile("h100")
    assert mr.run_rates(run, "h100", prof)["fwd"] == pytest.approx(RATES["fwd"])
    fastest = mr.held_out_summary(mr.predicted_records(run, "h100", prof))
    median = mr.held_out_summary(mr.predicted_records(run, "h100", prof, "median", "median"))
    assert fastest["num_cases"] == 4 and fastest["p90_abs_rel_error"] < 1e-6
    assert median["p90_abs_rel_error"] > 0.1


def test_complete_rounds_need_every_record_and_host_row():
    run = _run([1.0, 1.0, 1.0], [[1.0, 1.0]] * 3)
    assert mr.complete_rounds(run) == [0, 1, 2]
    cut = run.drop(run[(run["round"] == 1) & (run["bench"] == "mla_layer_bwd")].index[:1])
    assert mr.complete_rounds(cut) == [0, 2]
    cut = run.drop(run[(run["round"] == 2) & (run["phase"] == "infer")].index)
    assert mr.complete_rounds(cut) == [0, 1]
    with pytest.raises(ValueError):
        mr._pick(run, mr.RECORD_KEY, "time_s", "mean")


def _case(name, held, err=0.2, kind="mla_layer"):
    return {"name": name, "kind": kind, "held_out": held, "rel_error": err}


def test_with_rounds_replaces_only_the_held_out_records_it_has(monkeypatch):
    cases = [_case("a", True), _case("b", True), _case("v3", False), _case("m", True, kind="moe_layer")]
    rounds = {"valid": True, "cases": [_case("a", True, 0.01), _case("v3", False, 0.0)]}
    out = mr.with_rounds(cases, rounds)
    assert sorted((c["name"], c["rel_error"]) for c in out) == [("a", 0.01), ("b", 0.2), ("m", 0.2), ("v3", 0.2)]
    assert mr.with_rounds(cases, {**rounds, "valid": False}) == cases
    assert mr.with_rounds(cases, None) == cases
    monkeypatch.setattr(mr, "USE_MLA_ROUNDS", False)
    assert mr.with_rounds(cases, rounds) == cases


def test_committed_rounds_on_a_committed_run(tmp_path):
    # h100/s9mla_paired (8 rounds, one H100) laid out as a committed ROUNDS_FILE
    (tmp_path / "h100").mkdir()
    shutil.copy(PILOT, tmp_path / "h100" / mr.ROUNDS_FILE)
    prof = fitted_profile("h100")
    got = mr.committed_rounds(tmp_path, "h100", prof)
    assert got["rounds"] == 8 and got["valid"]
    held = [c for c in got["cases"] if c["held_out"]]
    assert len(held) == 12 and all("v2-lite-slice" in c["name"] for c in held)
    assert set(got["rates"]) == {"fwd", "bwd", "infer"}
    # on another GPU's name the run is not valid (the rule's point 1)
    (tmp_path / "h200").mkdir()
    shutil.copy(PILOT, tmp_path / "h200" / mr.ROUNDS_FILE)
    assert not mr.committed_rounds(tmp_path, "h200", fitted_profile("h200"))["valid"]
