"""calibration.s30mem and its candidate (calibration.pipeline.ADOPT_PIPELINE_KERNEL_RATES, off; docs/notes/s30mem.md):
with the switch on, a pipeline stage's kernel seconds per component are the twin's times the fitted factor of their
direction, launch-bound kernels and single-stage steps untouched; the committed factors are the fit's (recomputed
live); the committed screen (calibration/s30mem_judgement.json) says not adopted and the switch is off."""

import json

import pytest

from calibration import pipeline as pipe
from calibration import s30mem
from calibration.fit import PROFILES_DIR
from calibration.predict import Eager, stage_kernel_scale
from calibration.whole_step import gpu_spec
from twin.costs.profile import profile_from_json
from twin.core.specs import get_model

H200 = gpu_spec("h200")


@pytest.fixture(scope="module")
def profile():
    return profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))


def test_the_switch_is_off_and_fitted_for_the_h200_only():
    assert pipe.ADOPT_PIPELINE_KERNEL_RATES is False
    assert pipe.stage_kernel_scale(H200) is None
    assert set(pipe.STAGE_KERNEL_SCALE) == {H200.name}
    scale = pipe.STAGE_KERNEL_SCALE[H200.name]
    assert {d for d, _ in scale} == {"fb", "w"} and all(0.5 < v < 2.0 for v in scale.values())


def test_eager_scales_by_direction_and_component_while_open(profile):
    """An op's GPU seconds times its (direction, component) factor inside the context; the same ops outside it keep
    theirs."""
    scale = {("fb", "memory"): 2.0, ("w", "memory"): 3.0, ("fb", "launch"): 5.0}

    def ops(e: Eager) -> None:
        e.mem(1e8)
        e.small(1)
        with e.weight_grad():
            e.mem(1e8)
    plain, scaled = Eager(H200, profile, split_weight_grads=True), Eager(H200, profile, split_weight_grads=True)
    ops(plain)
    with stage_kernel_scale(scale):
        ops(scaled)
    ops(after := Eager(H200, profile, split_weight_grads=True))
    assert scaled.component_s["memory"] == pytest.approx(2.0 * plain.component_s["memory"], rel=1e-12)
    assert scaled.w_component_s["memory"] == pytest.approx(3.0 * plain.w_component_s["memory"], rel=1e-12)
    # small() counts under "launch" and is priced at launch_s: a factor keyed "launch" would apply, the fit has none
    assert "launch" not in {c for _, c in pipe.STAGE_KERNEL_SCALE[H200.name]}
    assert after.component_s == plain.component_s and after.w_component_s == plain.w_component_s


def test_stage_ops_take_the_factors_on_pipeline_stages_only(profile, monkeypatch):
    """A pipeline stage's F, B and W component seconds are the twin's times their factor; a single stage (first and
    last: an EP-only step) is untouched."""
    spec = get_model("qwen2moe-mla-slice")

    def parts(first: bool, last: bool) -> dict:
        return pipe.stage_ops(spec, range(1, 2), first, last, 1, 1024, "bf16", H200, profile).components
    off_mid, off_one = parts(False, False), parts(True, True)
    monkeypatch.setattr(pipe, "ADOPT_PIPELINE_KERNEL_RATES", True)
    on_mid, on_one = parts(False, False), parts(True, True)
    scale = pipe.STAGE_KERNEL_SCALE[H200.name]
    for kind, direction in (("F", "fb"), ("B", "fb"), ("W", "w")):
        for comp, v in off_mid[kind].items():
            want = v * scale.get((direction, comp), 1.0)
            assert on_mid[kind][comp] == pytest.approx(want, rel=1e-9), (kind, comp)
    assert on_mid["B"]["memory"] > off_mid["B"]["memory"] and on_mid["F"]["gemm"] < off_mid["F"]["gemm"]
    assert on_one == off_one     # one stage, first and last (an EP-only step): untouched


@pytest.fixture(scope="module")
def judgement():
    j = s30mem.read_judgement()
    assert j is not None, "rerun `python -m calibration.s30mem record`"
    return j


def test_the_committed_factors_are_the_fit_live(judgement):
    """The fit recomputed from the committed profiles (a few CPU-seconds) gives pipeline.STAGE_KERNEL_SCALE, and the
    record's fit is the same."""
    live = s30mem.fit_scale(s30mem.component_rows())
    committed = pipe.STAGE_KERNEL_SCALE[H200.name]
    assert set(live) == set(committed)
    for k, v in live.items():
        assert committed[k] == pytest.approx(v, abs=6e-5), k
        assert judgement["fit_scale"][f"{k[0]}:{k[1]}"] == pytest.approx(v, rel=1e-9), k


def test_the_screen_says_not_adopted_and_the_switch_agrees(judgement):
    crit = judgement["criteria"]
    assert set(crit) == {"S1_no_rank_row_lost", "S2_steps_not_worse", "S3_fitting_configs_not_worse"}
    assert judgement["adopt"] is False and not all(crit.values())
    assert pipe.ADOPT_PIPELINE_KERNEL_RATES is judgement["adopt"]
    # the verdicts are the recorded figures' (criteria() on them)
    assert s30mem.criteria(judgement["sets"], judgement["fitting_configs"], judgement["validate_guard"]) == crit
    assert {s["set"] for s in judgement["sets"]} == {label for label, _, _ in s30mem.GUARD_SETS}
    assert "s30mem verdict: not adopted" in s30mem.format_section(judgement)
