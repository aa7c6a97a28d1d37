"""The s28pp4 judgement (docs/notes/s28pp4_rule.md, calibration/s28pp4_judgement.json, written by
`python -m calibration.lease_probe record`): the verdict recomputed from the file's rows, the probe's rate solved
again from the committed probe records, one judged pp2ep2 row priced again live under each setting, the adopted
switch, and issue 13's targets under the adopted P (the step target met; idle and ranking missed: strict xfails that
print the live figure)."""

import json

import pytest

import calibration.pipeline as pipe
from calibration import lease_probe as lp
from calibration import records as rec

JUDGED = json.loads(lp.JUDGEMENT_FILE.read_text())
RUN = rec.MEASUREMENTS_DIR / "h200x4" / JUDGED["run"]
ROWS = lp.rows_of(JUDGED)
V = JUDGED["verdict"]


@pytest.fixture(scope="module")
def cache():
    c: dict = {}
    lp.inputs_of("base", cache=c)
    return c


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
