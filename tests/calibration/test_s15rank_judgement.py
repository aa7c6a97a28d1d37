"""s15rank (docs/notes/s15rank_rule.md): the ranking target judged pair by pair on a two-round
ranking folder: a pair the pooled steps resolve (exact rank-sum p < 0.05, both rounds the same way)
by the twin's order, an unresolved pair by the Hodges-Lehmann 95% interval of the measured gap (so a
twin that predicts a gap the steps exclude fails even in the measured direction). The statistics on
their own, the judgement on synthetic steps, and the whole path (predict_folder on each round,
`twin validate`'s ranking entry) on TEST FIXTURE records."""

from math import comb

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

import calibration.pipeline_judgement as judgement
from calibration.validate import format_table, validate
from tests.calibration import pipeline_fixture as fx
from twin.costs.profile import fitted_profile


@pytest.mark.parametrize("m,n", [(1, 1), (3, 4), (5, 5), (10, 10), (11, 12)])
def test_rank_sum_null_counts_are_every_ordering_symmetric(m, n):
    c = judgement.rank_sum_null_counts(m, n)
    assert len(c) == m * n + 1 and c.sum() == comb(m + n, m)
    assert np.array_equal(c, c[::-1])   # U and mn - U equally likely


def test_interval_rank_matches_the_exact_tables():
    # two-sided 0.05 critical values of U (reject where U <= k - 1): 5 vs 5: 2, 10 vs 10: 23
    assert judgement.interval_rank(5, 5) == 3 and judgement.interval_rank(10, 10) == 24
    assert judgement.interval_rank(3, 3) == 0   # 3 against 3 steps: no 95% interval (the 2-GPU records' 3 steps)


def test_the_interval_excludes_zero_exactly_where_the_rank_sum_test_rejects():
    """The Moses interval is the rank-sum test inverted: 0 lies outside it where p < 0.05 (no ties)."""
    rng = np.random.default_rng(7)
    checked = 0
    for shift in (0.0, 0.003, 0.006, 0.01, 0.02):
        for _ in range(20):
            a = np.exp(rng.normal(0.0, 0.01, 11)).tolist()
            b = np.exp(rng.normal(shift, 0.01, 12)).tolist()
            d, lo, hi = judgement.hodges_lehmann_log_gap(a, b)
            p = mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue
            assert lo <= d <= hi
            assert (lo > 0 or hi < 0) == (p < 0.05), (lo, hi, p)
            checked += 1
    assert checked == 100


def test_hodges_lehmann_recovers_a_log_shift():
    a = [1.0, 1.01, 0.99, 1.02, 0.98, 1.005, 0.995, 1.015, 0.985, 1.0]
    d, lo, hi = judgement.hodges_lehmann_log_gap(a, [x * 1.05 for x in a])
    assert d == pytest.approx(np.log(1.05), abs=1e-12) and lo < d < hi


def _rounds(center_s: float, spread: float, shift_b: float = 0.0, reps: int = 11) -> list[list[float]]:
    """Two rounds of `reps` deterministic steps around center_s (+-spread), round b shifted."""
    steps = [center_s * (1 + spread * (2 * i / (reps - 1) - 1)) for i in range(reps)]
    return [steps, [t * (1 + shift_b) for t in steps]]


def test_a_resolved_pair_is_met_only_in_the_measured_order():
    a, b = _rounds(1.0, 0.01), _rounds(1.05, 0.01)
    right = judgement.judge_pair(a, b, twin_gap=0.01)
    assert right["decided"] and right["resolved"] and right["met"] and right["gap"] == pytest.approx(np.log(1.05), abs=0.01)
    wrong = judgement.judge_pair(a, b, twin_gap=-0.01)
    assert wrong["resolved"] and not wrong["met"]


def test_an_unresolved_pair_is_met_only_inside_the_interval():
    a, b = _rounds(1.0, 0.02), _rounds(1.002, 0.02)
    inside = judgement.judge_pair(a, b, twin_gap=-0.004)          # the other way round from the medians, small
    assert inside["decided"] and not inside["resolved"] and inside["lo"] < -0.004 < inside["hi"] and inside["met"]
    big = judgement.judge_pair(a, b, twin_gap=0.05)               # the medians' order, a gap the steps exclude
    assert not big["resolved"] and big["hi"] < 0.05 and not big["met"]


def test_rounds_that_disagree_leave_a_pair_unresolved():
    """A host drift that reverses the pair between the rounds (s14dp on 4xH100 at 4): pooled p may be
    small, but the pair is judged by the interval."""
    a = [[1.0 + 0.0005 * i for i in range(11)], [1.03 + 0.0005 * i for i in range(11)]]
    b = [[1.02 + 0.0005 * i for i in range(11)], [1.01 + 0.0005 * i for i in range(11)]]
    r = judgement.judge_pair(a, b, twin_gap=0.2)
    assert r["rounds_agree"] is False and not r["resolved"] and not r["met"]


def test_too_few_steps_leave_a_pair_undecided_and_not_met():
    a, b = _rounds(1.0, 0.01, reps=9), _rounds(1.1, 0.01, reps=9)
    r = judgement.judge_pair(a, b, twin_gap=0.09)
    assert not r["decided"] and r["resolved"] and not r["met"]
    assert not judgement.judge_pair(_rounds(1.0, 0.01), _rounds(1.1, 0.01), twin_gap=None)["met"]


def test_a_configuration_is_met_only_where_every_pair_is():
    steps = {4: {"x": _rounds(1.0, 0.01), "y": _rounds(1.1, 0.01), "z": _rounds(1.2, 0.01)}}
    good = judgement.judge_ranking(steps, {4: {"x": [1.0, 1.0], "y": [1.09, 1.1], "z": [1.25, 1.2]}})
    (g,) = good
    assert g["met"] and g["measured"] == g["predicted"] == ["x", "y", "z"] and len(g["pairs"]) == 3
    (bad,) = judgement.judge_ranking(steps, {4: {"x": [1.0, 1.0], "y": [1.3, 1.3], "z": [1.25, 1.2]}})
    assert not bad["met"] and [(p["a"], p["b"]) for p in bad["pairs"] if not p["met"]] == [("y", "z")]
    assert "NOT met (2 of 3 pairs)" in judgement.format_ranking_judgement("fixture", [bad])[0]


def _fixture_round(folder, stretch: dict, reps: int = 11):
    """TEST FIXTURE records: three schedules at 4 micro-batches, each step's ops scaled by a small
    deterministic jitter (so the steps of a schedule differ as a run's do)."""
    fx.write(folder, [fx.config(s) for s in ("1f1b", "zb1p", "dualpipev")], stretch=stretch, reps=reps)
    fx.jitter_steps(folder, reps)


@pytest.fixture(scope="module")
def fixture_rankings(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranking")
    for r in ("round_a", "round_b"):
        _fixture_round(root / "h100x2" / "as_twin" / r, {})
        _fixture_round(root / "h100x2" / "zb1p_slow" / r, {"zb1p": 1.2})
    return root


def test_ranking_judgement_on_fixture_rounds(fixture_rankings):
    prof = fitted_profile("h100")
    (same,) = judgement.ranking_judgement(fixture_rankings / "h100x2" / "as_twin", "h100", prof)
    assert same["config"] == 4 and same["met"] and same["measured"] == same["predicted"]
    assert all(p["steps"] == (22, 22) for p in same["pairs"])
    (slow,) = judgement.ranking_judgement(fixture_rankings / "h100x2" / "zb1p_slow", "h100", prof)
    assert not slow["met"] and slow["measured"][-1] == "zb1p" and slow["predicted"][-1] != "zb1p"
    # every pair here is resolved (steps 20% apart or the twin's own gaps, 0.4% jitter): met exactly
    # where the twin orders it as measured; 1F1B / ZB1P is the pair ZB1P's stretch reverses
    for p in slow["pairs"]:
        assert p["resolved"] and p["met"] == (np.sign(p["twin_gap"]) == np.sign(p["gap"]))
    assert [(p["a"], p["b"]) for p in slow["pairs"] if not p["met"]] == [("1f1b", "zb1p")]


def test_validate_carries_the_ranking_folders_judgement(fixture_rankings, monkeypatch):
    root = fixture_rankings
    fx.write(root / "h100x2", [fx.config(s) for s in ("1f1b", "zb1p", "dualpipev")])
    monkeypatch.setattr(judgement, "RANKING_FOLDERS", {"h100x2": "zb1p_slow"})
    result = validate(root)
    v = result["ranking"]["h100x2"]
    assert v["folder"] == "zb1p_slow" and v["gpu"] == "h100" and not v["configs"][0]["met"]
    assert "ranking h100x2/zb1p_slow n4: NOT met" in format_table(result)
