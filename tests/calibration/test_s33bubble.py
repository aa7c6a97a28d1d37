"""calibration.s33bubble (session s33bubble, docs/notes/s33bubble_rule.md): the H200 bubble in force is the fitting
traces' live fit, the candidate adds b to every GPU op of an H200 train step and nothing on an H100, and the fresh
set is fresh."""

import pytest

from calibration import s33bubble, whole_step
from calibration.predict import timed_window_s
from calibration.records import load_records
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model


def test_bubble_in_force_is_the_fitting_traces_fit():
    fit = s33bubble.fit()
    assert fit["gaps"] > 1000
    assert whole_step.TRAIN_KERNEL_BUBBLE_S == {whole_step.gpu_spec("h200").name: fit["bubble_s"]}
    assert 1.0e-6 < fit["bubble_s"] < 2.0e-6 and fit["median_gap_s"] < fit["bubble_s"]


@pytest.mark.parametrize("gpu", ["h200", "h100"])
def test_candidate_adds_b_per_gpu_op_on_h200_only(gpu):
    prof = load_fitted_profile(gpu, load_records(gpu))[0]
    spec, g = get_model("olmoe-slice"), whole_step.gpu_spec(gpu)
    with s33bubble.candidate(False):
        off = whole_step.train_step_ops(spec, 1, 512, "bf16", g, prof)
    with s33bubble.candidate(True):
        on = whole_step.train_step_ops(spec, 1, 512, "bf16", g, prof)
    n = sum(1 for op in off.ops if op[0] is not None)
    b = whole_step.TRAIN_KERNEL_BUBBLE_S.get(g.name, 0.0)
    assert [type(x) for x in on.ops] == [type(x) for x in off.ops]
    assert sum(op[1] for op in on.ops) - sum(op[1] for op in off.ops) == pytest.approx(n * b, rel=1e-9, abs=1e-12)
    step_off, step_on = timed_window_s([], off.ops, reps=1), timed_window_s([], on.ops, reps=1)
    if gpu == "h100":
        assert step_on == step_off
    else:
        assert step_off < step_on <= step_off + n * b + 1e-12


def test_fresh_set_is_fresh():
    assert s33bubble.fresh_violations() == []


def test_committed_predictions_cover_the_cases_from_one_commit():
    from calibration import prereg   # lazy: only this test reads the predictions file
    p = prereg.load_predictions(s33bubble.TRAIN.predictions_file, s33bubble.TRAIN)
    assert sorted(map(str, p[prereg.KEY].itertuples(index=False, name=None))) == sorted(
        str(tuple(r[k] for k in prereg.KEY)) for r in prereg.case_rows(s33bubble.TRAIN))
    assert len(set(p["code_commit"])) == 1
    h100, h200 = p[p["gpu"] == "h100"], p[p["gpu"] == "h200"]
    assert (h100["cand_predicted_s"] == h100["predicted_s"]).all()
    assert (h200["cand_predicted_s"] > h200["predicted_s"]).all()


JUDGEMENT = s33bubble.JUDGEMENT_FILE


def test_judgement_matches_a_live_recompute_and_the_switch():
    """The committed judgement's U figures equal a live recompute from the committed records and predictions (the
    guards' `twin validate` pair is not rerun: ~3 min), and the switch is where the verdict puts it."""
    from calibration.records_io import read_json   # lazy: only this test reads the judgement
    j = read_json(JUDGEMENT)
    rows = s33bubble.fresh_rows()
    for gpu, d in rows.groupby("gpu"):
        f, c = s33bubble._stats(d["rel_error"]), s33bubble._stats(d["cand_rel_error"])
        assert j["by_gpu"][gpu]["in_force"] == pytest.approx(f) and j["by_gpu"][gpu]["candidate"] == pytest.approx(c)
        assert j["by_gpu"][gpu]["criteria"] == s33bubble.criteria(f, c)
    assert whole_step.ADOPT_TRAIN_KERNEL_BUBBLE == (j["verdict"] == "adopt")
