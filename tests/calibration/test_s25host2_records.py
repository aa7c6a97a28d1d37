"""The s25host2 fresh runs (docs/notes/s25host2_rule.md; calibration/measurements/h100/s25host2/ and s25host2_b/, two
fresh H100s, cold): the rule's verdict on the judged run and issue 13's targets under the committed step-input twin (B)
on both (the second host reported, not judged)."""

import pytest

from calibration import bracket_judge as bj
from calibration import step_bracket


@pytest.fixture(scope="module")
def figures():
    errs = bj.judged_errors()
    if errs.empty:
        pytest.skip("no s25host2 records")
    return bj.group_summary(errs, "B_rel_error"), bj.group_summary(errs, "C_rel_error")


def test_bracketed_probe_is_not_adopted(figures):
    """The bracket (C) lost every criterion on the fresh run, so the switch stays off."""
    b, c = figures
    verdict = bj.bracket_criteria(b, c)
    assert verdict["judged"] and not verdict["adopt"] and not verdict["K1"]
    assert step_bracket.ADOPT_BRACKET_PROBE is False
    assert b["all"][0] == c["all"][0] == 14


def test_committed_twin_meets_issue13_on_fresh_decode(figures):
    n, median, p90, met = figures[0]["h100 decode"]
    assert met, f"H100 decode (s25host2, B): median {median:.1%}, P90 {p90:.1%} over {n} records"


@pytest.mark.xfail(strict=True, reason="issue 13: fresh one-GPU prefill of unseen models misses the P90 target")
def test_committed_twin_meets_issue13_on_fresh_prefill(figures):
    n, median, p90, met = figures[0]["h100 prefill"]
    print(f"H100 prefill (s25host2, B): median {median:.1%}, P90 {p90:.1%} over {n} records")
    assert met, f"H100 prefill (s25host2, B): median {median:.1%}, P90 {p90:.1%} over {n} records"


@pytest.fixture(scope="module")
def second_host():
    rows = bj.twin_rows("s25host2_b")   # B only (the switch off): one read of the grid
    if rows.empty:
        pytest.skip("no s25host2_b records")
    return bj.group_summary(rows, "step_rel_error")


@pytest.mark.xfail(strict=True, reason="issue 13: the second fresh H100 ran at a fitting ratio of 2.78 (the highest seen); "
                                       "B over-predicts every record")
@pytest.mark.parametrize("group", ["h100 decode", "h100 prefill"])
def test_committed_twin_meets_issue13_on_the_second_fresh_host(second_host, group):
    n, median, p90, met = second_host[group]
    print(f"{group} (s25host2_b, B): median {median:.1%}, P90 {p90:.1%} over {n} records")
    assert met, f"{group} (s25host2_b, B): median {median:.1%}, P90 {p90:.1%} over {n} records"
