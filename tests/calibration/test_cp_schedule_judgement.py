"""docs/notes/s27cp_rule.md's judgement: calibration/s27cp_judgement.json (written by `python -m
calibration.cp_schedule calibration/measurements/h200x2/s27cp --judge --write`) holds C1-C4, the twin
takes its fractions, and one part is recomputed live from the committed traces (the CP4 fractions and
C2's schedule identity: eight traces, ~1 s) so the file cannot go stale."""

from pathlib import Path

import pytest

from calibration import cp_schedule
from calibration.records_io import read_json
from twin.costs import context_parallel as cpx

RUN = Path(cp_schedule.__file__).parent / "measurements" / "h200x2" / "s27cp"


@pytest.fixture(scope="module")
def judgement():
    return read_json(cp_schedule.JUDGEMENT)


def test_every_criterion_held_and_the_switch_is_on(judgement):
    c = judgement["criteria"]
    assert [c[k]["holds"] for k in ("C1", "C2", "C3", "C4")] == [True] * 4 and judgement["adopt"]
    assert abs(c["C1"]["err"]) <= cp_schedule.C1_TOL and abs(c["C3"]["err"]) <= cp_schedule.C3_TOL
    assert cpx.ADOPT_COMPILED_CP_SCHEDULE_WAIT


def test_the_twin_takes_the_judged_fractions(judgement):
    assert {int(cp): {ph: round(f[ph], 4) for ph in ("fwd", "bwd")} for cp, f in judgement["fractions"].items()} \
        == cpx.COMPILED_CP_SCHEDULE_WAIT_FRAC


def test_cp4_fractions_and_schedule_identity_recomputed_live(judgement):
    fake = cp_schedule.load_ranks(RUN / "sched" / "traces", cp_schedule.FAKE_PATTERN.format(cp=4))
    live = cp_schedule.schedule_fracs(fake, cp_schedule.twin_transfer_s(4), 1)
    assert {ph: live[ph] for ph in ("fwd", "bwd")} == pytest.approx(
        {ph: judgement["fractions"]["4"][ph] for ph in ("fwd", "bwd")}, rel=1e-9)
    real = cp_schedule.load_ranks(cp_schedule.S17CP_DIR / "traces", cp_schedule.REAL_PATTERN.format(S=4 * 32768))
    assert [[cp_schedule.attention_order(r[(1, ph)]) for ph in cp_schedule.PHASES] for r in fake] == \
        [[cp_schedule.attention_order(r[(1, ph)]) for ph in cp_schedule.PHASES] for r in real]
