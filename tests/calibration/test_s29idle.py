"""calibration.s29idle and term M (calibration.pipeline.ADOPT_DUALPIPE_MIRROR_WAIT; docs/notes/s29idle_rule.md): M is
c * sqrt(n) on PP2 DualPipe rows of a GPU with a fit and nothing elsewhere; with the switch on, simulate_row adds it to
each rank's idle and to the step and moves nothing else; the candidate's predictions are B's plus M."""

import math

import pandas as pd
import pytest

from calibration import pipeline as pipe
from calibration import prereg, s29idle
from calibration.records_io import read_csv
from calibration.whole_step import gpu_spec

H200 = gpu_spec("h200").name


def test_the_term_applies_to_pp2_dualpipe_on_a_fitted_gpu_only():
    c = pipe.MIRROR_WAIT_PER_SQRT_MB_S[H200]
    assert 0 < c < 2e-3
    assert pipe.mirror_wait_s("dualpipe", 2, 6, H200) == pytest.approx(c * math.sqrt(6), rel=1e-12)
    assert pipe.mirror_wait_s("dualpipe", 2, 10, H200) == pytest.approx(c * math.sqrt(10), rel=1e-12)
    for schedule, pp, gpu in (("dualpipev", 2, H200), ("1f1b", 2, H200), ("zb1p", 2, H200), ("dualpipe", 4, H200),
                              ("dualpipe", 2, gpu_spec("h100").name)):
        assert pipe.mirror_wait_s(schedule, pp, 6, gpu) == 0.0


@pytest.fixture(scope="module")
def inputs():
    return {"h200": prereg.two_gpu_inputs("h200")}


@pytest.mark.parametrize("schedule", ["dualpipe", "dualpipev"])
def test_switch_on_adds_the_term_to_idle_and_step(inputs, schedule, monkeypatch):
    row = {**s29idle.fresh_rows()[0], "model": "qwen2moe-mla-slice", "schedule": schedule, "num_microbatches": 6}
    off = prereg.predict_ep([row], inputs=inputs).iloc[0]
    monkeypatch.setattr(pipe, "ADOPT_DUALPIPE_MIRROR_WAIT", True)
    on = prereg.predict_ep([row], inputs=inputs).iloc[0]
    w = pipe.mirror_wait_s(schedule, 2, 6, H200)
    assert (w > 0) == (schedule == "dualpipe")
    assert on["predicted_s"] == pytest.approx(off["predicted_s"] + w, abs=1e-12)
    for k in (0, 1):
        assert on[f"predicted_idle_r{k}_s"] == pytest.approx(off[f"predicted_idle_r{k}_s"] + w, abs=1e-12)
    # the candidate's predictions (with_term on B's) are what the switch gives
    cand = s29idle.with_term(pd.DataFrame([off]))
    assert cand["predicted_s"].iloc[0] == pytest.approx(on["predicted_s"], abs=1e-12)


def test_fresh_cases_are_new_and_every_schedule():
    rows = s29idle.fresh_rows()
    assert len(rows) == 24 and {r["schedule"] for r in rows} == set(s29idle.SCHEDULES)
    assert {r["num_microbatches"] for r in rows}.isdisjoint({4, 8, 16})   # counts the PP2 records of these hold


def test_registered_predictions_are_todays_code(inputs):
    """The committed predictions (written before the fresh run) are what today's code gives: one DualPipe row, B and
    C (C = B + M exactly on every DualPipe row, = B elsewhere)."""
    preds = read_csv(s29idle.PREDICTIONS_FILE)
    assert len(preds) == 24
    dual = preds["schedule"] == "dualpipe"
    w = [pipe.mirror_wait_s("dualpipe", 2, int(n), H200) for n in preds.loc[dual, "num_microbatches"]]
    assert list(preds.loc[dual, "cand_predicted_s"] - preds.loc[dual, "predicted_s"]) == pytest.approx(w, abs=1e-12)
    assert (preds.loc[~dual, "cand_predicted_s"] == preds.loc[~dual, "predicted_s"]).all()
    row = preds[dual].iloc[0]
    again = prereg.predict_ep([{k: row[k] for k in s29idle.fresh_rows()[0]}], inputs=inputs).iloc[0]
    assert again["predicted_s"] == pytest.approx(row["predicted_s"], rel=1e-9)
    assert again["predicted_idle_r1_s"] == pytest.approx(row["predicted_idle_r1_s"], rel=1e-9, abs=1e-12)
