"""calibration.s32idle and its candidate (calibration.pipeline.ADOPT_RANK_CLOCK_SPREAD, off; docs/notes/s32idle.md): the
ranks' clock spread about their geometric mean moves a PP2 row's ranks apart (the held rank's kernels longer, the free
rank's shorter) and nothing else; the committed elasticities are the record's fit; the record (calibration/
s32idle_judgement.json, `python -m calibration.s32idle record`) says no form passes the screen and the switch is off;
one set's misses are recomputed live against it."""

import json
import math

import pandas as pd
import pytest

from calibration import pipeline as pipe
from calibration import s32idle
from calibration.fit import PROFILES_DIR
from calibration.whole_step import gpu_spec
from twin.costs.profile import profile_from_json

H200 = gpu_spec("h200")


@pytest.fixture(scope="module")
def judgement():
    j = s32idle.read_judgement()
    assert j is not None, "rerun `python -m calibration.s32idle record`"
    return j


@pytest.fixture(scope="module")
def profile():
    return profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))


def test_the_switch_is_off_and_fitted_for_the_h200_only():
    assert pipe.ADOPT_RANK_CLOCK_SPREAD is False
    assert set(pipe.RANK_CLOCK_ELASTICITY) == {H200.name}
    assert set(pipe.RANK_CLOCK_ELASTICITY[H200.name]) == set(pipe.SPREAD_FORMS)
    assert "launch" not in pipe.SPREAD_FORMS["uniform"] and "memory" not in pipe.SPREAD_FORMS["compute"]


def test_spread_factors_keep_the_geometric_mean():
    """Two ranks at 1,600 and 1,936 MHz (geometric mean 1760): factors (1760 / f)^a, their product 1; the held rank's
    above 1; equal clocks give none."""
    a, comps = 0.5, ("gemm", "memory")
    held, free = pipe.spread_scale(1600.0, 1760.0, a, comps), pipe.spread_scale(1936.0, 1760.0, a, comps)
    assert set(held) == {(d, c) for d in ("fb", "w") for c in comps}
    assert held[("fb", "gemm")] == pytest.approx(1.1 ** 0.5, rel=1e-12)       # 1760 / 1600 = 1.1
    assert held[("w", "memory")] * free[("w", "memory")] == pytest.approx(1.0, rel=1e-12)
    assert pipe.spread_scale(1800.0, 1800.0, a, comps) == {}


ROW = {"gpu": "h200", "model": "dsv2-slice", "schedule": "dualpipev", "pp": 2, "ep": 1, "dp": 1, "num_microbatches": 6,
       "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "num_layers": 4}


def test_the_switch_moves_the_held_rank_against_the_free_one_only(profile, monkeypatch):
    """DualPipeV at pp 2: the law holds rank 0 (both end stages) below rank 1; with the switch on rank 0's busy time
    grows, rank 1's shrinks, so rank 1's idle (the bubble) grows; a one-rank row is untouched."""
    off, _, _ = pipe.simulate_row(pd.Series(ROW), H200, profile)
    one = {**ROW, "pp": 1, "num_microbatches": 2}
    one_off = pipe.simulate_row(pd.Series(one), H200, profile)[1]
    monkeypatch.setattr(pipe, "ADOPT_RANK_CLOCK_SPREAD", True)
    on, _, det = pipe.simulate_row(pd.Series(ROW), H200, profile)
    clocks = det["rank_clock_mhz"]
    assert clocks[0] < clocks[1]
    assert on.busy_s[0] > off.busy_s[0] and on.busy_s[1] < off.busy_s[1]
    assert on.idle_s[1] > off.idle_s[1]
    # the factors' log-sum is 0: the ranks' summed busy moves by far less than either rank's
    assert abs(sum(on.busy_s) - sum(off.busy_s)) < 0.5 * (on.busy_s[0] - off.busy_s[0])
    assert pipe.simulate_row(pd.Series(one), H200, profile)[1] == one_off


def test_the_committed_elasticities_are_the_records_fit(judgement):
    for form, rec in judgement["forms"].items():
        assert judgement["fit"][form]["elasticity"] == pytest.approx(rec["elasticity"], abs=5e-5), form
        assert pipe.RANK_CLOCK_ELASTICITY[H200.name][form] == rec["elasticity"]


def test_the_record_says_not_adopted_and_why(judgement):
    """Every form fails the standing guards (a rank-row lost; a set's step P90 over B's + 0.1 point), so nothing is
    adopted and no campaign was asked; the figures the verdict rests on are in the record."""
    assert judgement["adopt"] is False and pipe.ADOPT_RANK_CLOCK_SPREAD is False
    assert judgement["screen_passed"] == []
    for form, rec in judgement["forms"].items():
        g = rec["guards"]
        lost = sum(len(s["lost_rank_rows"]) for s in rec["sets"])
        worse = any(s["C"][k] > s["B"][k] + s32idle.STEP_NOT_WORSE for s in rec["sets"]
                    for k in ("median_abs_rel_error", "p90_abs_rel_error"))
        assert g["G1_no_rank_row_lost"] == (lost == 0) and g["G2_steps_not_worse"] == (not worse), form
        assert not g["pass"]
    s = judgement["misses_summary"]
    assert s["num_missed"] == s["num_rank_rows"] - s["num_within"] == len(judgement["misses"])
    assert s["pace_share_of_abs_miss"] > 0.9 and s["within_without_pace"] > s["within_without_other_idle"]


def test_one_sets_misses_recomputed_live_match_the_record(judgement):
    """s28blind's PP2 rank-rows (32; ~1 s) in force, live: the same count within and the same missed rows."""
    label = "s28blind"
    d = s32idle.misses(sets=tuple(x for x in s32idle.SETS if x[0] == label))
    assert int(d["within"].sum()) == judgement["misses_summary"]["by_set"][label]["within"]
    live = d[~d["within"]]
    rec = [m for m in judgement["misses"] if m["set"] == label]
    assert len(live) == len(rec)
    for (_, a), b in zip(live.iterrows(), rec):
        assert (a["model"], a["schedule"], a["num_microbatches"], a["rank"]) == (
            b["model"], b["schedule"], b["num_microbatches"], b["rank"])
        assert math.isclose(a["idle_error_s"], b["idle_error_s"], rel_tol=1e-6, abs_tol=1e-9)
