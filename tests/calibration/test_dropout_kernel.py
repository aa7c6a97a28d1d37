"""s28mlm3 (docs/notes/s28mlm3_rule.md): attention dropout's factor from the profiled kernel seconds
(twin.costs.compute.ADOPT_DROPOUT_KERNEL_FACTOR, Profile.attention_dropout_kernel) and its judge
(calibration.dropout_kernel)."""

import dataclasses

import pandas as pd
import pytest

from calibration import dense_dropout, dropout_kernel
from calibration.predict import gpu_spec
from calibration.records_io import read_json
from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import fitted_profile, profile_from_json

CALL = dict(batch=4, seq_len=4096, heads=16, qk_dim=128, v_dim=128, causal=True)


def _op(dropout: float) -> Op:
    return Op("attn_core", OpKind.ATTENTION, "attn", dropout=dropout, **CALL)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
@pytest.mark.parametrize("direction", ["fwd", "bwd"])
def test_the_switch_takes_the_kernel_factor(monkeypatch, gpu, direction):
    prof, spec = fitted_profile(gpu), gpu_spec(gpu)
    monkeypatch.setattr(compute, "ADOPT_ATTENTION_DROPOUT_PER_PROBABILITY", False)
    base = compute.attention_time_s(_op(0.0), direction, spec, prof) - prof.launch_s
    timed = prof.attention_dropout.get("cudnn", {}).get(direction, 1.0)   # the h200 has none: dropout not costed
    kernel = prof.attention_dropout_kernel["cudnn"][direction]
    for on, factor in ((False, timed), (True, kernel)):
        monkeypatch.setattr(compute, "ADOPT_DROPOUT_KERNEL_FACTOR", on)
        assert compute.attention_time_s(_op(0.1), direction, spec, prof) - prof.launch_s == pytest.approx(
            base * factor, rel=1e-9)
    assert kernel != timed


def test_a_kernel_without_a_kernel_factor_keeps_its_timed_one():
    prof = dataclasses.replace(fitted_profile("h100"), attention_dropout_kernel={"cudnn": {"fwd": 2.0}})
    assert prof.attention_dropout_slowdown("fwd", from_kernels=True) == 2.0
    assert prof.attention_dropout_slowdown("bwd", from_kernels=True) == prof.attention_dropout["cudnn"]["bwd"]
    assert prof.with_attention_kernel("fa2").attention_dropout_slowdown("fwd", True) == prof.attention_dropout["fa2"]["fwd"]


def test_the_profile_fields_are_the_records_kernels():
    """h100 from the committed s11drop fitting rows (cuDNN forward 2.098 on the kernels against 1.904 event-timed);
    h200 from s28mlm2's fitting call."""
    h100, h200 = fitted_profile("h100"), fitted_profile("h200")
    assert h100.attention_dropout_kernel == dense_dropout.attention_dropout_kernel_terms("h100")
    assert h200.attention_dropout_kernel == dense_dropout.attention_dropout_kernel_terms("h200")
    assert h100.attention_dropout_kernel["cudnn"]["fwd"] == pytest.approx(2.098, abs=5e-4)
    assert h100.attention_dropout["cudnn"]["fwd"] == pytest.approx(1.904, abs=5e-4)
    assert set(h200.attention_dropout_kernel) == {"cudnn"} and not h200.attention_dropout


def test_the_profile_field_round_trips():
    prof = fitted_profile("h100")
    assert profile_from_json(prof.to_json()).attention_dropout_kernel == prof.attention_dropout_kernel
    assert dataclasses.replace(prof, attention_dropout_kernel={}).to_json().get("attention_dropout_kernel") is None


def test_kernel_rows_out_of_step_with_the_records_are_refused():
    rows = pd.DataFrame([{"bench": "attn_fwd", "model": "m", "attention_dropout": p, "sdpa_backend": "cudnn",
                          "hidden_dropout": 0.0, "time_s": 1.0} for p in (0.0, 0.1)])
    kernels = pd.DataFrame([{"bench": "attn_fwd", "model": "m", "attention_dropout": p, "sdpa_backend": "cudnn",
                             "hidden_dropout": 0.0, "time_s": t} for p, t in ((0.0, 0.4), (0.0, 0.1), (0.1, 0.7))])
    out = dense_dropout.with_kernel_sums(rows, kernels)
    assert list(out["time_s"]) == pytest.approx([0.5, 0.7]) and list(out["timed_s"]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="2 profiled records for 3 rows"):
        dense_dropout.with_kernel_sums(pd.concat([rows, rows.iloc[:1]]), kernels)
    with pytest.raises(ValueError, match="sdpa_backend do not follow"):
        dense_dropout.with_kernel_sums(rows.assign(sdpa_backend=["cudnn", "flash"]), kernels)


def test_factor_errors_predict_each_call_from_its_own_time_without():
    calls = pd.DataFrame([{"block": "attention", "num_heads": h, "batch": b, "bench": bench, "attention_dropout": p,
                           "time_s": t} for h, b in ((16, 1), (7, 2))
                          for bench, p, t in (("attn_fwd", 0.0, 1.0), ("attn_fwd", 0.1, 2.0),
                                              ("attn_fwd_bwd", 0.0, 3.0), ("attn_fwd_bwd", 0.1, 4.4))])
    rows = dropout_kernel.factor_errors(calls, {"fwd": 2.0, "bwd": 1.2})
    # the fitting call (16 x 1) is not judged; forward 1.0 x 2 = 2.0; forward+backward 2.0 + (3 - 1) x 1.2 = 4.4
    assert [(r["heads"], r["bench"]) for r in rows] == [(7, "attn_fwd"), (7, "attn_fwd_bwd")]
    assert [r["error"] for r in rows] == pytest.approx([0.0, 0.0], abs=1e-12)


# --- the committed judgement (calibration/s28mlm3_judgement.json, `python -m calibration.dropout_kernel --json`)

def _judgement() -> dict:
    return read_json(dropout_kernel.JUDGEMENT_FILE)


def test_the_committed_judgement_is_todays_on_the_committed_records():
    """One cheap live recompute (the judge on the committed h200/s28mlm2 kernels) against the committed file."""
    (card,) = _judgement()["cards"]
    (folder,) = dropout_kernel.fresh_dirs()
    live = dropout_kernel.judge(folder)
    for name in ("h100_timed_committed", "h100_kernel", "h200_kernel"):
        assert live["forms"][name]["n"] == card["forms"][name]["n"] == 18
        assert live["forms"][name]["median_abs"] == pytest.approx(card["forms"][name]["median_abs"], rel=1e-9)
        assert live["forms"][name]["p90_abs"] == pytest.approx(card["forms"][name]["p90_abs"], rel=1e-9)
    assert live["criteria"] == card["criteria"] and live["verdict"] == card["verdict"]


def test_the_switch_is_as_the_rule_decided():
    """K1-K3 (the judge) and G1-G2 (twin validate, tests/test_golden.py; docs/notes/s28mlm3_rule.md Outcome)."""
    assert compute.ADOPT_DROPOUT_KERNEL_FACTOR is (_judgement()["cards"][0]["verdict"] == "adopt")
