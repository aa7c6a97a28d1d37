"""The s28pp4 judgement (docs/notes/s28pp4_rule.md, calibration/s28pp4_judgement.json, written by
`python -m calibration.lease_probe record`): the verdict recomputed from the file's rows, the probe's rate solved
again from the committed probe records, one judged pp2ep2 row priced again live under each setting, the adopted
switch, and issue 13's targets under the adopted P (the step target met; idle and ranking missed: strict xfails that
print the live figure)."""


import pytest

import calibration.pipeline as pipe
from calibration import lease_probe as lp
from calibration import records as rec
from calibration.records_io import read_json
from tests import committed, lease_inputs

JUDGED = read_json(lp.JUDGEMENT_FILE)
RUN = rec.MEASUREMENTS_DIR / "h200x4" / JUDGED["run"]
ROWS = lp.rows_of(JUDGED)
V = JUDGED["verdict"]


@pytest.fixture(scope="module")
def cache():
    return lease_inputs.x4_cache()   # lp.inputs_of's, base and F4 (tests/lease_inputs.py: once a run)


def test_the_file_names_its_command_and_the_verdict_follows_from_its_rows():
    assert JUDGED["command"].startswith("python -m calibration.lease_probe record calibration/s28pp4_judgement.json")
    assert lp.verdict(ROWS, JUDGED["probe"]) == V
    assert (V["rows"], V["ep_rows"], V["control_rows"]) == (36, 24, 12) and V["judged"]
    assert V["F4"]["pass"] and V["P"]["pass"] and V["adopt"] == "P"
    assert V["P"]["ep_p90"] < V["F4"]["ep_p90"] < V["base"]["ep_p90"]


def test_the_rule_s_choice_is_the_committed_switch():
    assert pipe.ADOPT_EP_FORWARD_LEASE is (V["adopt"] == "P") and pipe.ADOPT_EP_FORWARD_HOST_X4 is (V["adopt"] == "F4")


def test_the_probe_s_rate_solved_again_from_the_records(cache):
    live = lp.probe_rate(RUN, cache=cache)
    assert live["ops"] == JUDGED["probe"]["ops"] == 256
    assert live["rate_s"] == pytest.approx(JUDGED["probe"]["rate_s"], rel=1e-9)
    assert 25e-6 < live["rate_s"] < 35e-6     # slower than the `h200x4` folder's lease (17.8 us)


def test_one_pp2ep2_row_priced_again_live_under_each_setting(cache):
    want = ROWS[(ROWS["part"] == "qwen2-2k5") & (ROWS["ep"] == 2) & (ROWS["schedule"] == "dualpipe")
                & (ROWS["num_microbatches"] == 12)].iloc[0]
    row, meas, routing = next((r, m, g) for r, m, g in lp.measured_rows(RUN) if r["part"] == "qwen2-2k5"
                              and r["ep"] == 2 and r["schedule"] == "dualpipe" and r["num_microbatches"] == 12)
    assert meas["time_s"] == want["time_s"]
    for name in lp.SETTINGS:
        live = lp.predict([row], name, JUDGED["probe"]["rate_s"], routing, cache)["predicted_s"].iloc[0]
        assert live == pytest.approx(want[f"predicted_{name}_s"], rel=1e-9), name


def test_issue_13_step_target_is_met_under_the_adopted_setting():
    p = V["P"]
    assert p["t"] and p["median"] <= lp.TARGET_MEDIAN and p["p90"] <= lp.TARGET_P90
    assert not V["base"]["t"]   # base missed it on this lease (10.25 / 16.89%)


@pytest.mark.xfail(strict=True, reason="issue 13 idle: every rank-row within 10% (or 1% of the step)")
def test_issue_13_idle_target_under_the_adopted_setting():
    met, total = lp.idle_within(ROWS, "P")
    assert met == total, f"P: {met} of {total} rank-rows within (base {V['base']['idle_within']})"


@pytest.mark.xfail(strict=True, reason="issue 13 ranking: every resolved schedule pair ordered as measured")
def test_issue_13_ranking_target_under_the_adopted_setting():
    bad = [p for p in lp.ranking(ROWS, "P") if p["resolved"] and not p["ordered"]]
    assert not bad, f"P misorders {len(bad)} resolved pairs: {[(p['model'], p['layout'], p['num_microbatches'], p['pair']) for p in bad]}"


def test_twin_validate_s_section_names_the_adopted_setting_and_the_registered_base():
    sec = committed.judged("prereg_s28pp4")   # lp.section(), as `twin validate` computes it (once a run)
    assert sec["delivery"] == JUDGED["run"] and len(sec["rows"]) == 36
    assert sec["judgement"]["verdict"] == V
    text = lp.format_section(sec)
    assert f"P (adopted): pp2ep2 median |err| {V['P']['ep_median']:.1%}, P90 {V['P']['ep_p90']:.1%}" in text
    assert "registered before the run, base (balanced routing):" in text and "s28pp4 base h200x4: 36 rows" in text


COMPONENTS = read_json(lp.COMPONENTS_FILE)


def test_item_4_the_schedule_is_right_and_the_backward_is_what_p_leaves(cache):
    """The record of `components` (diagnostic after the verdict): each pp2ep2 configuration's step span within 1% of
    the twin's schedule replayed with that step's own ops; under P the forwards within 7%, the B ops short by 10-28%
    (GPU-bound: the host ends them well ahead); the twin's forward split under P recomputed live."""
    assert COMPONENTS["rate_s"] == pytest.approx(JUDGED["probe"]["rate_s"], rel=1e-5)
    assert max(c["span_less_step_replay_max"] for c in COMPONENTS["configs"]) < 0.01
    ops = {(o["model"], o["kind"]): o for o in COMPONENTS["ops"] if o["layout"] == "pp2ep2"}
    for model in ("qwen3moe-mla-slice", "qwen2moe-mla-slice", "qwen3moe-slice"):
        f, b = ops[model, "F"], ops[model, "B"]
        assert abs(f["P_s"] / f["measured_s"] - 1) < 0.07 and f["base_s"] / f["measured_s"] - 1 < -0.3
        assert -0.3 < b["P_s"] / b["measured_s"] - 1 < -0.1 and b["lead_end_s"] > 0.004
    live = lp.twin_forward_split(JUDGED["probe"]["rate_s"], cache=cache)
    stored = COMPONENTS["forward"]["twin_P"]
    assert live["launches"] == stored["launches"] and live["launch_s"] == pytest.approx(stored["launch_s"], rel=1e-6)
    # nearly every launch at the probe's rate (the cub radix launches at their own measured seconds)
    assert live["launch_s"] == pytest.approx(live["launches"] * JUDGED["probe"]["rate_s"], rel=0.01)
