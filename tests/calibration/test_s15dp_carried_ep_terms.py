"""s15dp (docs/notes/s15dp_rule.md): candidate C, the 4-GPU pipelines' EP forwards at the EP host
terms of the same GPU's two-GPU folder (ADOPT_CARRIED_EP_HOST_TERMS), with the forwards' launch rate
solved with those terms in place: adopted by its rule (result in the note); both settings tested."""

from pathlib import Path

import pytest

import calibration.pipeline as pipe
from calibration.fit import PROFILES_DIR
from calibration.predict import EpCountsCall, EpSendSync, EpTokensCall
from calibration.validate import load_fitted_profile
from calibration.whole_step import with_measured_collectives

MEASUREMENTS = Path(__file__).resolve().parents[2] / "calibration/measurements"


def _layer(counts_s: float, tokens_s: float) -> list:
    """One MoE layer's forward as the twin lists it: launches, the counts call, the send-splits sync
    (host waits for the GPU), launches, a token call, launches."""
    return ([(25e-6, 8e-6)] * 30 + [EpCountsCall((counts_s, 5e-6)), EpSendSync((None, 0.0))]
            + [(25e-6, 6e-6)] * 10 + [EpTokensCall((tokens_s, 20e-6))] + [(25e-6, 30e-6)] * 40)


def test_solved_rate_inverts_the_issue_model_with_the_terms_in_place():
    """A forward whose EP calls and syncs take measured host seconds: the rate solved from the host
    interval the issue model gives at 30 us a launch (the terms in place) is 30 us; solved without
    the terms, the calls' host time lands on every launch and the rate comes out higher."""
    ops = _layer(25e-6, 25e-6) * 3
    terms = {"ep_counts_a2a": 160e-6, "ep_tokens_a2a": 190e-6, "ep_send_sync": 55e-6}
    lead = 1e-3
    interval = pipe.issue(pipe._with_host(ops, 30e-6, terms), lead)[1] + lead
    assert pipe.solved_host_rate_s(ops, lead, interval, 0.0, terms) == pytest.approx(30e-6, rel=1e-6)
    assert pipe.solved_host_rate_s(ops, lead, interval) > 31e-6


def _profile(gpu: str, folder: Path):
    prof, _ = load_fitted_profile(gpu, None, PROFILES_DIR)
    return with_measured_collectives(prof, folder)


def test_only_a_folder_without_its_own_marks_carries_the_two_gpu_terms():
    h100x4, h100x2 = MEASUREMENTS / "h100x4", MEASUREMENTS / "h100x2"
    assert not pipe.has_ep_host_marks(h100x4) and pipe.has_ep_host_marks(h100x2)
    carried = pipe.carried_ep_terms(h100x4, "h100", _profile("h100", h100x4))
    assert set(carried) == set(pipe.EP_HOST_TERMS)
    assert carried == pytest.approx(pipe.folder_ep_terms(h100x2, "h100", _profile("h100", h100x2)))
    assert pipe.carried_ep_terms(h100x2, "h100", _profile("h100", h100x2)) == {}


def _host(monkeypatch, name: str, gpu: str, on: bool) -> dict:
    monkeypatch.setattr(pipe, "ADOPT_CARRIED_EP_HOST_TERMS", on)
    folder = MEASUREMENTS / name
    return pipe.measured_host_s(folder, gpu, _profile(gpu, folder), pipe.measured_accumulate(folder, gpu))


def test_carried_terms_enter_only_when_adopted(monkeypatch):
    """Off: the 4-GPU folder's host rates have no EP terms and its forwards' rates
    absorb the calls' host time. On: the two-GPU host's terms, the forwards' rates solved lower
    (the calls' host seconds no longer spread over every launch), the other directions unchanged; a
    folder with its own marks (2xH100) is the same either way."""
    off, on = _host(monkeypatch, "h100x4", "h100", False), _host(monkeypatch, "h100x4", "h100", True)
    assert not set(pipe.EP_HOST_TERMS) & set(off)
    assert set(pipe.EP_HOST_TERMS) <= set(on)
    for key in ("fwd", "fwd@first", "fwd@middle", "fwd@last"):
        assert on[key] < off[key]
    for key in ("bwd", "wgrad", "between_ops", "device_gap"):
        assert on[key] == pytest.approx(off[key])
    assert _host(monkeypatch, "h100x2", "h100", True) == pytest.approx(_host(monkeypatch, "h100x2", "h100", False))


def test_a_run_kept_inside_the_4gpu_folder_carries_the_same_terms():
    """A run kept whole inside h100x4/ (s14dp's rounds, no EP marks of their own) finds h100x2/ as
    h100x4/ does: the same terms."""
    round_a = MEASUREMENTS / "h100x4" / "s14dp_rank_20261127_0147" / "round_a"
    assert not pipe.has_ep_host_marks(round_a)
    four = MEASUREMENTS / "h100x4"
    assert pipe.carried_ep_terms(round_a, "h100", _profile("h100", round_a)) == pytest.approx(
        pipe.carried_ep_terms(four, "h100", _profile("h100", four)))
