"""docs/notes/s29cp2_rule.md's judgement: calibration/s29cp2_judgement.json (written by `python -m
calibration.cp_schedule calibration/measurements/h200x2/s29cp2 --judge-s29cp2 --write`). The Float8 blocks' own
compiled CP schedules: C1-C4 held, P1 (the published median) failed, so the switch stays off and the tables
empty. Recomputed live from the committed traces (~1 s): the 405B Float8 slice's CP4 fractions and its ranks'
agreement (none defers, so nobody waits, where its BF16 form split two and two: s29cp), and C2."""

from pathlib import Path

import pytest

from calibration import cp_schedule
from calibration import judged_under
from calibration.records_io import read_json
from twin.costs import context_parallel as cpx

RUN = Path(cp_schedule.__file__).parent / "measurements" / "h200x2" / "s29cp2"


@pytest.fixture(scope="module")
def judgement():
    return read_json(cp_schedule.S29CP2_JUDGEMENT)


def test_the_verdict_is_not_adopted_on_the_median_and_the_switch_is_off(judgement):
    c = judgement["criteria"]
    assert {k: c[k]["holds"] for k in c} == {"C1": True, "C2": True, "C3": True, "C4": True, "P1": False,
                                              "P2": True, "P3": True}
    assert c["P1"]["on"] > c["P1"]["off"] and not judgement["adopt"]
    assert max(c["C4"]["row_spread"].values()) <= cp_schedule.C4_ROW_POINTS
    assert not cpx.ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK and not cpx.COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK


def _order(seq):
    return "".join({"issue": "I", "wait": "W", "attention": "f", "attention_bwd": "b"}[k]
                   for k in cp_schedule.attention_order(seq[(1, "bwd")]))


def test_live_405b_float8_cp4_every_rank_interleaves_and_nobody_waits(judgement):
    ranks = cp_schedule.load_ranks(RUN / "sched405" / "traces", cp_schedule.FAKE_PATTERN.format(cp=4))
    live = cp_schedule.schedule_fracs(ranks, cp_schedule.twin_transfer_s(4, heads=cp_schedule.S29CP_HEADS), 1)
    for ph in ("fwd", "bwd"):
        assert live[ph] == pytest.approx(judgement["fractions"]["sched405"]["4"][ph], abs=1e-9)
    assert live["bwd"] < 0.05
    assert all(_order(r).endswith("bbbIW") and _order(r).count("IW") == 5 and not _order(r).endswith("IWIW")
               for r in ranks)


def test_live_fake_cp2_float8_schedule_is_the_real_one():
    real = cp_schedule.load_ranks(RUN / "traces", cp_schedule.REAL_FP8_PATTERN.format(S=2 * cp_schedule.LOCAL_LEN))
    fake = cp_schedule.load_ranks(RUN / "sched8b" / "traces", cp_schedule.FAKE_PATTERN.format(cp=2))
    assert len(real) == len(fake) == 2
    assert all(cp_schedule.attention_order(f[(1, ph)]) == cp_schedule.attention_order(r[(1, ph)])
               for f, r in zip(fake, real) for ph in cp_schedule.PHASES)


def test_the_published_rows_as_judged_and_live(judgement):
    """s30stale: the file was computed before ADOPT_SLOWEST_BOARD_PACE (its computed_under); with that switch set back
    (judged_under.as_judged) the switch-off published figures are the recorded ones, so nothing else moved them. Live
    they are today's (median 6.97%, 23 within 10%: docs/notes/s30stale.md), under which P1 would hold on a tie; the
    verdict is history and stands (not adopted)."""
    with judged_under.as_judged(judgement) as back:
        # the board pace, and any switch adopted after it (set back to False: absent when this was judged)
        assert back["twin/training/step.py:ADOPT_SLOWEST_BOARD_PACE"] is False and not any(back.values())
        off = cp_schedule.published_figures_fp8(None)
    assert off["median"] == pytest.approx(judgement["published_off"]["median"], abs=1e-12)
    assert off["within"] == judgement["published_off"]["within"]
    assert off["rows"] == pytest.approx(judgement["published_off"]["rows"], abs=1e-12)
    assert not judgement["adopt"] and not cpx.ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK
