"""s33pub's judgement (docs/notes/s33pub_rule.md; calibration/s33pub_judgement.json, written by
`python -m calibration.s33pub_judge --json ...`): the Llama 3 rows' communication as Meta's ISCA'25 paper states it.
The committed verdict follows its own figures, the switches stand as adopted, and one row is recomputed live."""

from pathlib import Path

import pytest

from calibration import judged_under as ju
from calibration import published_runs as pr
from calibration import s33pub_judge as judge
from calibration.records_io import read_json
from twin.training import step

JUDGEMENT = read_json(Path(__file__).resolve().parents[2] / "calibration" / "s33pub_judgement.json")
LLAMA3 = {"l3-405b-8k-gpus8192", "l3-405b-8k-gpus16384", "l3-405b-128k-cp16"}


def test_the_committed_verdict_follows_its_figures():
    off, on, crit = JUDGEMENT["summary_off"], JUDGEMENT["summary_on"], JUDGEMENT["criteria"]
    assert crit["C1_zero_stages"] and JUDGEMENT["zero_stage_on"] == judge.EXPECTED_ZERO
    assert crit["P1_within_not_lower"] == (on["num_within_row_target"] >= off["num_within_row_target"])
    assert crit["P2_median_not_higher"] == (on["median_abs_rel_error"] <= off["median_abs_rel_error"])
    assert crit["P3_none_leaves_10pct"] == (not crit["P3_left"])
    assert JUDGEMENT["adopt"] == all(v for k, v in crit.items() if k != "P3_left") is True
    assert set(JUDGEMENT["moved"]) == LLAMA3   # G1's published-rows part: no other row moved
    assert on["refused"] == off["refused"] == ["l3-405b-8k-gpus8192"]


def test_the_switches_stand_as_adopted_and_meta_s_rule_gives_the_judged_stages():
    assert pr.ADOPT_LLAMA3_ISCA_COMMS and step.ADOPT_ZERO2_PP_GRADS_WHEN_BORN
    runs = {r.id: r for r in pr.load_runs()[0]}
    assert {rid: runs[rid].plan["zero_stage"] for rid in LLAMA3} == judge.EXPECTED_ZERO
    for rid in LLAMA3:
        plan = runs[rid].plan
        assert not plan["tp_comm_overlap"] and "tp_overlap_kind" not in plan and plan["pp_grad_sync"] == "last_backward"
        assert sum("ISCA'25" in a for a in runs[rid].assumed) == 2


def test_the_16k_row_recomputed_live_as_judged():
    with ju.as_judged(JUDGEMENT), judge.switches(True):
        row = pr.evaluate(next(r for r in pr.load_runs()[0] if r.id == "l3-405b-8k-gpus16384"))
    then = JUDGEMENT["moved"]["l3-405b-8k-gpus16384"]["rel_error"]
    assert row["rel_error"] == pytest.approx(then[1], rel=1e-9) and abs(then[1]) < abs(then[0])
