"""Session s32cold (docs/notes/s32cold_rule.md): candidate K's constants come from the probe's fitting records alone,
its charges reach only a warmed one-GPU replay on a card with a fit, and they fade with the sizes the process met."""


import pytest

from calibration import s32cold as s
from calibration import serve_eager_host as seh
from calibration import serve_load_validation as slv
from calibration.records_io import read_json
from tests.calibration.conftest import assert_cold_judgement, cold_run_replayed
from twin.serving import engine


def test_fit_recomputes_the_committed_constants_from_the_probe():
    got, committed = s.fit(), read_json(slv.COLD_FIT)
    assert got["points"] == committed["points"] == 63
    for key in ("shape_s", "fade_sizes"):
        assert got[key]["h200"] == pytest.approx(committed[key]["h200"], rel=1e-6)
    assert 0 < committed["shape_s"]["h200"] < 0.002 and 1 < committed["fade_sizes"]["h200"] < 1000


def test_cold_charges_only_for_one_gpu_on_a_fitted_card_with_a_shape_count():
    got = slv.cold_charges("NVIDIA H200", "bench-small")
    fit = read_json(slv.COLD_FIT)
    assert got["busy_s"] == got["idle_s"] == pytest.approx(11 * fit["shape_s"]["h200"])
    assert got["fade_sizes"] == fit["fade_sizes"]["h200"] and got["post_idle_prompt_s"] == 0.0
    assert slv.cold_charges("NVIDIA H200", "bench-small", ep_size=2) is None
    assert slv.cold_charges("NVIDIA H100 80GB HBM3", "bench-small") is None
    assert slv.cold_charges("NVIDIA H200", "no-such-model") is None


def test_k_charges_the_early_run_more_than_the_late_one(monkeypatch):
    """Set Q's bench-small process (seen): K lengthens the early Poisson run's predicted TTFT P50 (its sizes the
    process's first above the pass) by more than the late run's (after the loop met many sizes: the fade)."""
    off = {r["run_id"]: r for r in seh.set_rows("s31look", ("bench-small",))}
    monkeypatch.setattr(engine, "ADOPT_COLD_SIZES", True)
    on = {r["run_id"]: r for r in seh.set_rows("s31look", ("bench-small",))}
    rise = {k: on[k]["ttft_p50_s_predicted"] / off[k]["ttft_p50_s_predicted"] - 1 for k in off}
    early, late = rise["n31q-bench-poisson-early-q"], rise["n31q-bench-poisson-late-q"]
    assert early > 0.2 and late < early / 2, rise


CAL = slv.COLD_FIT.parent
JUDGEMENT = read_json(CAL / "s32cold_judgement.json")
RUN = "k32-v3s1l-poisson-early-k"


def test_the_judgement_is_its_commands_and_its_verdict_follows_the_criteria():
    assert_cold_judgement(JUDGEMENT, s, ("K1_three_more_checks_lower_median", "K2_early_ttft_p50_no_fewer_lower_median"),
                          "ADOPT_COLD_SIZES")
    assert engine.COLD_HOST_EXPOSED is False   # evidence only


def test_one_set_k_run_replayed_live_is_the_judgements(monkeypatch):
    """k32-v3s1l-poisson-early-k under both settings (~2 CPU-s): the same errors as the judgement file."""
    cold_run_replayed(monkeypatch, JUDGEMENT, s, "ADOPT_COLD_SIZES", RUN)


@pytest.mark.xfail(strict=True, reason="s32cold: candidate K not adopted (see docs/notes/s32cold.md)")
def test_candidate_k_adopted():
    a, b = (seh.checks(JUDGEMENT["J"][k]) for k in ("None", s.JUDGED))
    (ea, eb) = JUDGEMENT["early"]
    failed = [k for k, v in JUDGEMENT["criteria"].items() if not v]
    assert JUDGEMENT["adopt"] == s.JUDGED, (
        f"set K (H200, 60 checks): in force {a[0]} met, median {a[1]:.2%} -> K {b[0]}, {b[1]:.2%}; early TTFT P50 "
        f"{ea[0]} -> {eb[0]} met, median {ea[1]:.2%} -> {eb[1]:.2%}; failed: {', '.join(failed)}")
