"""calibration.idle_terms (docs/notes/s25idle_rule.md): the replay is the twin's own simulation (the
twin's op durations give the twin's idle exactly), the replay of the measured op durations of the seen
second delivery puts 46 of 48 rank-rows within 10% (the twin: 33), term S is the baseline exactly
where no seen ratios exist and the baseline is prereg_pp4's path, and the registered predictions are
what today's code predicts."""

import pytest

from calibration import idle_terms, prereg, prereg_pp4
from calibration import records as rec
from calibration.records_io import read_csv

SECOND = rec.MEASUREMENTS_DIR / "h200x4" / prereg_pp4.SECOND_SUBDIR


@pytest.fixture(scope="module")
def inputs():
    return {}


@pytest.fixture(scope="module")
def ratios(inputs):
    return idle_terms.seen_ratios(inputs=inputs)


@pytest.fixture(scope="module")
def second_rows():
    return idle_terms.folder_rows(SECOND)


def test_replay_of_the_twins_own_durations_is_the_twin(second_rows, inputs):
    for row, _ in second_rows[:4]:   # qwen3moe or mixtral's 1f1b, zb1p, dualpipev, dualpipe (FB pairs)
        result, _, details, hold_s = idle_terms.twin_row(row, "h200", inputs)
        again = idle_terms.simulate_durations(row, details, idle_terms.twin_op_s(result), hold_s)
        assert again.idle_s == pytest.approx(result.idle_s, abs=1e-9), row["schedule"]
        assert again.makespan_s == pytest.approx(result.makespan_s, abs=1e-9)


def test_replay_of_measured_durations_meets_the_seen_idle(inputs):
    rows = idle_terms.replay_rows(SECOND, "h200", inputs)
    assert len(rows) == 48
    assert sum(r["twin_within"] for r in rows) == 33          # s21pp4's second delivery, as judged there
    assert sum(r["replay_within"] for r in rows) == 46        # the rule's section 1
    # each rank's first op alone (the lead-in the next stage waits out) closes 7 of the 15 misses
    firsts = idle_terms.replay_rows(SECOND, "h200", inputs, frozenset({"first"}))
    assert sum(r["replay_within"] for r in firsts) == 40


def test_term_s_without_ratios_is_the_baseline_and_the_baseline_is_prereg_pp4s_path(inputs):
    rows = [r for r in idle_terms.fresh_case_rows(("h200",)) if r["pp"] == 2][:2]
    base = idle_terms.predict_rows(rows, None, inputs)
    assert idle_terms.predict_rows(rows, {}, inputs).equals(base)
    ref = prereg.predict_ep(rows, num_gpus=prereg_pp4.NUM_GPUS, inputs=inputs)
    assert base["predicted_s"].tolist() == pytest.approx(ref["predicted_s"].tolist(), rel=1e-12)
    cols = [c for c in ref.columns if c.startswith("predicted_idle")]
    assert base[cols].to_numpy() == pytest.approx(ref[cols].to_numpy(), abs=1e-12)


def test_registered_predictions_are_todays(inputs, ratios):
    """The file written before the run (B and S of the 32 fresh cases on each GPU) is what the code
    still predicts for the h200 pp2ep2 rows (a sample: the whole file takes ~20 s)."""
    reg = read_csv(idle_terms.PREDICTIONS_FILE)
    assert len(reg) == 64 and set(reg["term"]) == {"B", "S"}
    rows = [r for r in idle_terms.fresh_case_rows(("h200",)) if r["model"] == "qwen3moe-mla-slice" and r["pp"] == 2]
    for term, got in (("B", idle_terms.predict_rows(rows, None, inputs)),
                      ("S", idle_terms.predict_rows(rows, ratios, inputs))):
        want = reg[(reg["term"] == term) & (reg["gpu"] == "h200") & (reg["model"] == "qwen3moe-mla-slice")
                   & (reg["pp"] == 2)].sort_values("schedule")
        got = got.sort_values("schedule")
        assert got["predicted_s"].tolist() == pytest.approx(want["predicted_s"].tolist(), rel=1e-9), term


def test_term_s_scales_only_the_ops_of_a_seen_model_and_layout(inputs, ratios):
    assert set(ratios) == {(m, pp, ep) for m, _ in prereg_pp4.CASES for pp, ep in prereg_pp4.LAYOUTS}
    # the first op of a rank carries its own ratio (the lead-in the next stage waits out)
    assert ratios["qwen3moe-mla-slice", 2, 2]["F", "first", True] > ratios["qwen3moe-mla-slice", 2, 2]["F", "first", False]
    other = [{**r, "model": "v2-lite-slice"} for r in idle_terms.fresh_case_rows(("h200",))[:1]]
    assert idle_terms.predict_rows(other, ratios, inputs).equals(idle_terms.predict_rows(other, None, inputs))


@pytest.fixture(scope="module")
def fresh(inputs):
    """The fresh s25idle rows (4xH200, 2026-11-28 05:34-05:36 UTC) judged by docs/notes/s25idle_rule.md."""
    return idle_terms.fresh(inputs=inputs)


def _within(sec):
    return sum(i["within"] for i in sec["idle"]), len(sec["idle"])


def test_fresh_replay_meets_every_ranks_idle_r0(fresh):
    """R0: the twin's schedule simulation on each fresh configuration's measured op durations puts 64 of
    64 rank-rows within 10% / 1% of step (the twin itself 44): the misses are the op durations."""
    v = fresh["verdict"]["h200"]
    assert v["R0"] and v["replay_within"] == (64, 64)
    assert v["idle_within_B"] == (44, 64)


def test_fresh_term_s_is_not_adopted(fresh):
    """S (seen op ratios) met H2 (steps 4.5% -> 1.4% median, no row over +3%) and H3 (1 misordered pair
    either way) but not H1: 46 of 64 rank-rows within against the 54 it needed (B 44)."""
    v = fresh["verdict"]["h200"]
    assert v["idle_within_S"] == (46, 64) and not v["H1"] and v["H2"] and v["H3"] and not v["adopt_S"]
    assert not idle_terms.ADOPT_SEEN_OP_RATIOS
    assert fresh["S"]["by_gpu"]["h200"]["median_abs_rel_error"] < fresh["B"]["by_gpu"]["h200"]["median_abs_rel_error"]


def test_fresh_steps_meet_issue13_target_under_the_baseline(fresh):
    """B: 16 rows, median |error| 4.5%, P90 8.8%, every row under-predicted (pp2ep2 -5.5..-10.0%)."""
    s = fresh["B"]["by_gpu"]["h200"]
    assert s["num_cases"] == 16 and s["meets_target"]
    assert all(r["rel_error"] < 0.001 for r in fresh["B"]["rows"])


@pytest.mark.xfail(strict=True, reason="s25idle fresh rows, 4xH200: the twin (B) puts 44 of 64 rank-rows within 10% "
                   "of the measured idle or 1% of the step (pp2ep2 16/32, pp4 28/32), S 46, the diagnostic X 46; the "
                   "replay of the measured op durations 64/64: the idle target (every rank-row within) is missed")
def test_fresh_predicts_every_ranks_idle(fresh):
    assert _within(fresh["B"]) == (64, 64), _within(fresh["B"])


@pytest.mark.xfail(strict=True, reason="s25idle fresh rows, 4xH200: 22 of 24 pairs resolved, 1 misordered under B "
                   "and S (mixtral pp2ep2 n6 dualpipev/zb1p: measured zb1p 459.3 < dualpipev 473.2 ms, p 0.029)")
def test_fresh_orders_every_resolved_pair(fresh):
    assert all(p["ordered"] for p in fresh["B"]["ranking"] if p["resolved"])
