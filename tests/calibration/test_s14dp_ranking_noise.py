"""s14dp (docs/notes/s14dp_rule.md): whether the 4-GPU schedule ranking is decidable from the records'
own timed steps (calibration.pipeline_judgement.ranking_noise, records alone), and candidate H, the FB pair's
forward at its own host rate (ADOPT_FB_FORWARD_HOST_RATE: not adopted by its rule, both settings
tested)."""

from pathlib import Path

import pytest

import calibration.pipeline as pipe
import calibration.pipeline_judgement as judgement
from calibration.fit import PROFILES_DIR
from calibration.validate import load_fitted_profile
from calibration.whole_step import with_measured_collectives

MEASUREMENTS = Path(__file__).resolve().parents[2] / "calibration/measurements"
FOUR_GPU = ("h100x4", "h200x4")


@pytest.mark.parametrize("folder", FOUR_GPU)
def test_step_times_are_the_rows_timed_steps(folder):
    """pipeline_step's time_s is the median of the per-step times the ops give (each step's last op
    end on the shared axis), and reps counts them: the noise below is that of the step the row
    reports."""
    steps, ops = pipe.load(MEASUREMENTS / folder)
    for _, row in steps[steps["pp"] > 1].iterrows():
        times = judgement.step_times_by_rep_s(pipe.ops_of(row, ops))
        assert len(times) == int(row["reps"])
        assert sorted(times)[len(times) // 2] == pytest.approx(float(row["time_s"]), rel=1e-6)


def test_rank_sum_p_is_exact_and_bounded_by_the_step_counts():
    fast, slow = [1.0, 1.1, 1.2, 1.3, 1.4], [2.0, 2.1, 2.2, 2.3, 2.4]
    assert judgement.rank_sum_p(fast, slow) == pytest.approx(2 / 252)          # 5 against 5, apart
    assert judgement.rank_sum_p(fast, [2.0]) == pytest.approx(2 / 6)           # against one step: never < 0.33
    assert judgement.rank_sum_p(fast, [1.05, 1.15, 1.25, 1.35, 1.45]) > 0.5    # interleaved
    assert judgement.rank_sum_p([], slow) == 1.0


def _pairs(folder: str) -> dict:
    return {(int(g["config"]["num_microbatches"]), p["faster"], p["slower"]): p
            for g in judgement.ranking_noise(MEASUREMENTS / folder) for p in g["pairs"]}


def test_the_pairs_the_twin_misses_are_not_resolved_on_the_4gpu_records():
    """The configurations the twin ranks otherwise than measured (test_whole_runs' RANK_NOT_MET):
    each missed pair differs by 0.7-2.8% of the step, inside its schedules' own step-to-step spread,
    and its two sets of steps are not told apart (exact rank-sum p >= 0.3; DualPipeV at 8 on 4xH100
    has one step). Every pair the records do resolve is further apart than any missed pair (3.7-15.4%
    of the step): on these records the order is decided by the gap against the steps' spread."""
    h100, h200 = _pairs("h100x4"), _pairs("h200x4")
    missed = [h100[4, "dualpipev", "dualpipe"], h100[8, "dualpipev", "dualpipe"], h100[8, "1f1b", "zb1p"],
              h200[8, "dualpipev", "dualpipe"]]
    for p in missed:
        assert p["gap_frac"] < 0.03 and p["p"] >= 0.3 and not p["resolved"], p
    resolved = [p for pairs in (h100, h200) for p in pairs.values() if p["resolved"]]
    assert len(resolved) >= 9
    assert min(p["gap_frac"] for p in resolved) > max(p["gap_frac"] for p in missed)


def test_ranking_noise_lists_every_schedule_of_a_configuration():
    groups = judgement.ranking_noise(MEASUREMENTS / "h200x4")
    assert sorted(int(g["config"]["num_microbatches"]) for g in groups) == [4, 8, 16]
    for g in groups:
        meds = [s["median_s"] for s in g["schedules"]]
        assert meds == sorted(meds) and len(g["pairs"]) == len(meds) - 1
        assert all(s["spread_frac"] >= 0 for s in g["schedules"])
    assert "NOT resolved" in judgement.format_ranking_noise(groups)


def test_fb_forward_rate_inverts_the_issue_model():
    """An FB pair whose forward synchronises the host: the rate solved from the GPU time the issue
    model gives at 30 us a launch is 30 us; a forward without a synchronisation gives none (the pair
    is then GPU-bound or its time says nothing of the host)."""
    forward = [(25e-6, 10e-6)] * 40 + [(None, 0.0)] + [(25e-6, 10e-6)] * 200
    backward = [(25e-6, 200e-6)] * 50
    lead = 5e-3
    duration = pipe.issue(pipe._with_host(forward, 30e-6) + backward, lead)[0]
    assert pipe.fb_forward_rate_s(forward, backward, {}, lead, duration) == pytest.approx(30e-6, rel=1e-6)
    assert pipe.fb_forward_rate_s([(25e-6, 10e-6)] * 40, backward, {}, lead, duration) is None
    # shorter than the GPU work alone: no rate gives it
    assert pipe.fb_forward_rate_s(forward, backward, {}, lead, 1e-3) is None


def _host(monkeypatch, on: bool) -> dict:
    monkeypatch.setattr(pipe, "ADOPT_FB_FORWARD_HOST_RATE", on)
    folder = MEASUREMENTS / "h100x4"
    prof, _ = load_fitted_profile("h100", None, PROFILES_DIR)
    prof = with_measured_collectives(prof, folder)
    return pipe.measured_host_s(folder, "h100", prof, pipe.measured_accumulate(folder, "h100"))


def test_fb_forward_rates_enter_only_when_adopted(monkeypatch):
    """Off (the rule's outcome): no FB rate, FB pairs issue their forward at the standalone forward's
    rate. On: a rate per stage role from the fitting split's EP FB ops (4xH100: the middle stages'
    forwards issue faster inside a pair than alone), the other rates unchanged, and a DualPipeV
    step's prediction moves."""
    off, on = _host(monkeypatch, False), _host(monkeypatch, True)
    assert not any(k.startswith(pipe.FB_FORWARD) for k in off)
    assert {f"{pipe.FB_FORWARD}@{r}" for r in ("first", "middle", "last")} <= set(on)
    assert {k: v for k, v in on.items() if k in off} == pytest.approx(off)
    assert on[f"{pipe.FB_FORWARD}@middle"] < on["fwd@middle"]
    prof, _ = load_fitted_profile("h100", None, PROFILES_DIR)
    steps, _ = pipe.load(MEASUREMENTS / "h100x4")
    row = steps[(steps["schedule"] == "dualpipev") & (steps["num_microbatches"] == 4)].iloc[0]
    gpu = pipe.gpu_spec("h100")
    _, step_off, _ = pipe.simulate_row(row, gpu, prof, None, off)
    _, step_on, _ = pipe.simulate_row(row, gpu, prof, None, on)
    assert step_on != pytest.approx(step_off, rel=1e-4)
    # 1F1B has no FB pair: the FB rates change nothing
    row = steps[(steps["schedule"] == "1f1b") & (steps["num_microbatches"] == 4)].iloc[0]
    assert pipe.simulate_row(row, gpu, prof, None, on)[1] == pytest.approx(pipe.simulate_row(row, gpu, prof, None, off)[1])


S14DP = MEASUREMENTS / "h100x4" / "s14dp_rank_20261127_0147"


def test_the_s14dp_rounds_resolve_the_order_at_8_and_tie_at_4():
    """The campaign's two rounds on one fresh 4xH100 host (10 timed steps a schedule, the second
    round in reverse order; kept out of validation): at 8 micro-batches both rounds order the
    schedules DualPipe < DualPipeV < ZB1P < 1F1B (the twin's order on the validation folder) with the
    outer pairs resolved; at 4 DualPipe and DualPipeV swap between the rounds (host drift over a
    minute), so their pooled steps tie."""
    orders = {}
    for r in ("round_a", "round_b"):
        for g in judgement.ranking_noise(S14DP / r):
            n = int(g["config"]["num_microbatches"])
            orders[r, n] = [s["schedule"] for s in g["schedules"]]
            assert all(len(s["steps_s"]) == 10 for s in g["schedules"])
            for p in g["pairs"]:
                if {p["faster"], p["slower"]} != {"dualpipe", "dualpipev"}:
                    assert p["resolved"], p
    for r in ("round_a", "round_b"):
        assert orders[r, 8] == ["dualpipe", "dualpipev", "zb1p", "1f1b"]
    assert orders["round_a", 4][:2] == ["dualpipe", "dualpipev"]
    assert orders["round_b", 4][:2] == ["dualpipev", "dualpipe"]
    pooled = {}
    for r in ("round_a", "round_b"):
        steps, ops = pipe.load(S14DP / r)
        for _, row in steps[steps["num_microbatches"] == 4].iterrows():
            pooled.setdefault(row["schedule"], []).extend(judgement.step_times_by_rep_s(pipe.ops_of(row, ops)))
    assert judgement.rank_sum_p(pooled["dualpipe"], pooled["dualpipev"]) > 0.3
