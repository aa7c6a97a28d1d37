"""The idealised schedule: simulated bubbles against the DualPipe README's table."""

import json
import math

import pytest

from twin.core.errors import ScenarioError
from twin.sim.ideal import IdealCosts, ideal_schedule
from twin.core.schedules import PipeOp

F, B, W = 1.0, 2.0, 1.0  # the canonical case: W = F, B = 2F


def canonical_cases():
    for pp in (4, 8, 16):
        for n in sorted({pp, 2 * pp, max(20, pp)}):
            for name in ("1f1b", "zb1p"):
                yield name, pp, n, None
        for n in sorted({2 * pp, 2 * pp + 2, max(20, 2 * pp)}):  # both directions together
            for fb in (F + B, 2.5, B):  # F&B from no overlap down to B
                yield "dualpipe", pp, n, fb
        for n in sorted({2 * pp, 2 * pp + 1, max(20, 2 * pp)}):
            for fb in (F + B, 2.5, B):
                yield "dualpipev", pp, n, fb


@pytest.mark.parametrize("name,pp,n,fb", list(canonical_cases()))
def test_canonical_bubble_equals_formula(name, pp, n, fb):
    out = ideal_schedule(name, pp, n, F, B, W, fb)
    assert math.isclose(out["bubble_s"], out["formula_bubble_s"], rel_tol=1e-12, abs_tol=1e-12)
    assert "note" not in out


@pytest.mark.parametrize("name,pp,n,expected", [
    ("1f1b", 4, 8, (4 - 1) * (F + B)),
    ("zb1p", 4, 8, (4 - 1) * (F + B - 2 * W)),
    ("dualpipe", 8, 20, (8 / 2 - 1) * ((F + B) + B - 3 * W)),
    ("dualpipev", 4, 10, (8 / 2 - 1) * ((F + B) + B - 3 * W)),  # 4 ranks = 8 stages
])
def test_formula_values(name, pp, n, expected):
    assert ideal_schedule(name, pp, n, F, B, W)["formula_bubble_s"] == expected


def test_non_canonical_reports_both_numbers():
    # B = 3F: DualPipe's table gives (PP/2-1)(F&B+B-3W) = 1*(4+3-3) = 4; the simulation finds 3.
    out = ideal_schedule("dualpipe", 4, 16, 1.0, 3.0, 1.0)
    assert out["formula_bubble_s"] == 4.0 and out["bubble_s"] == 3.0
    assert "W = F, B = 2F" in out["note"]
    # 1F1B's formula holds for any op times
    out = ideal_schedule("1f1b", 4, 16, 1.0, 3.0, 0.5)
    assert out["bubble_s"] == out["formula_bubble_s"] == 12.0 and "note" not in out


def test_result_is_json_with_unit_keys():
    out = ideal_schedule("dualpipev", 2, 4, F, B, W)
    json.dumps(out)
    for key in ("schedule", "pp", "num_microbatches", "makespan_s", "bubble_s",
                "formula_bubble_s", "formula", "idle_s", "peak_inflight_activations"):
        assert key in out
    assert len(out["idle_s"]) == 2 and out["num_model_stages"] == 4
    assert max(out["idle_s"]) == out["bubble_s"]


def test_ideal_op_durations():
    c = IdealCosts(f_s=1.0, b_s=2.0, w_s=0.5, fb_s=2.5)
    assert c.duration_s(PipeOp("F", 0)) == 1.0
    assert c.duration_s(PipeOp("BW", 0)) == 2.0
    assert c.duration_s(PipeOp("B", 0)) == 1.5
    assert c.duration_s(PipeOp("W", 0)) == 0.5
    assert c.duration_s(PipeOp("FB", 0, 0, 1, 1)) == 2.5
    assert c.duration_s(PipeOp("FB", 0, 0, 1, 1, b_split=True)) == 2.0  # the W runs later
    assert c.p2p_s(0, 1, "F") == 0.0


def test_fewer_microbatches_than_ranks_gets_a_note():
    out = ideal_schedule("zb1p", 4, 1, F, B, W)
    assert out["bubble_s"] != out["formula_bubble_s"]
    assert "never fills" in out["note"]


@pytest.mark.parametrize("kwargs,field", [
    (dict(f_s=0.0), r"schedule\.f_s"),
    (dict(b_s=-1.0), r"schedule\.b_s"),
    (dict(w_s=3.0), r"schedule\.w_s: got 3\.0; allowed: <= b_s"),
    (dict(fb_s=float("nan")), r"schedule\.fb_s"),
    (dict(name="interleaved"), r"plan\.schedule"),
    (dict(pp=3, name="dualpipe"), r"plan\.pp"),
])
def test_invalid_inputs(kwargs, field):
    args = dict(name="1f1b", pp=4, num_microbatches=8, f_s=F, b_s=B, w_s=W, fb_s=None)
    args.update(kwargs)
    if args["name"] == "dualpipe":
        args["num_microbatches"] = 12
    with pytest.raises(ScenarioError, match=field):
        ideal_schedule(**args)
