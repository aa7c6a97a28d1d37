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
