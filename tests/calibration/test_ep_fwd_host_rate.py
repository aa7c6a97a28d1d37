"""s12ep2's candidate C (calibration.pipeline.ADOPT_EP_FWD_HOST_RATE, not adopted): EP-only steps'
forwards at their own host rate solved over the fitting split's EP-only forwards; pipelines keep
theirs. On the committed 2xH200 records (s12ep run)."""

from pathlib import Path

import pytest

import calibration.pipeline as pipe
from calibration.fit import PROFILES_DIR
from calibration.validate import load_fitted_profile
from calibration.whole_step import with_measured_collectives

FOLDER = Path(__file__).resolve().parents[2] / "calibration/measurements/h200x2"


def _rates(monkeypatch, adopt: bool) -> dict:
    monkeypatch.setattr(pipe, "ADOPT_EP_FWD_HOST_RATE", adopt)
    prof, _ = load_fitted_profile("h200", None, PROFILES_DIR)
    prof = with_measured_collectives(prof, FOLDER)
    return pipe.host_rates(pipe.host_marks(FOLDER), FOLDER, "h200", prof, pipe.measured_accumulate(FOLDER, "h200"))


def test_ep_forward_rate_is_solved_only_when_adopted_and_leaves_pipeline_rates(monkeypatch):
    off, on = _rates(monkeypatch, False), _rates(monkeypatch, True)
    assert "fwd_ep" not in off and "fwd_ep" in on
    assert {k: v for k, v in on.items() if k != "fwd_ep"} == pytest.approx(off)
    # the H200's EP forwards issue slower than its PP2 forwards (s12ep2: 31.3 against 28.0 us)
    assert on["fwd_ep"] > on["fwd"]
