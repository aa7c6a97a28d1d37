"""DeepSeek's decode pipeline list-scheduled (twin.serving.iteration.decode_stage_layers_s) and the
decode step under both settings of ADOPT_DECODE_STAGE_OVERLAP (docs/notes/s15srv_rule.md)."""

from pathlib import Path

import pytest

import twin.serving.iteration as iteration
from twin.core.scenario import SERVING, load_scenario
from twin.serving.iteration import decode_stage_layers_s, decode_step
from twin.serving.published import DEEPSEEK_PROFILE_DECODE_CONDITIONS

ROOT = Path(__file__).resolve().parents[3]


def test_no_all_to_all_is_the_compute_of_both_micro_batches():
    assert decode_stage_layers_s(10, 1.0, 2.0, 0.5, 1.5, 0.0, 0.0) == pytest.approx(10 * 2 * 5.0)


def test_a_short_all_to_all_hides_but_for_the_first_dispatch_and_the_last_combine():
    t = decode_stage_layers_s(10, 1.0, 2.0, 0.5, 1.5, 0.1, 0.1)
    assert 10 * 2 * 5.0 < t <= 10 * 2 * 5.0 + 0.2 + 1e-12


def test_a_long_all_to_all_sets_the_pace():
    # the communication stream runs four all-to-alls a layer back to back
    t = decode_stage_layers_s(10, 1.0, 1.0, 1.0, 1.0, 10.0, 10.0)
    assert t == pytest.approx(10 * 2 * 20.0, rel=0.06)
    assert t >= 10 * 2 * 20.0


def test_a_combine_longer_than_its_window_is_exposed_where_the_layer_max_hides_it():
    # one micro-batch: compute 5.1, all-to-all 3.5: n x max(C, A) hides the all-to-all, but x's combine
    # and y's dispatch (3.5) have only y's ATTN-1, y's SHARED and x's ATTN-0 (2.1) before y's MLP needs them
    a0, a1, sh, mlp, d, k = 1.0, 1.0, 0.1, 3.0, 0.5, 3.0
    layer_max = 10 * 2 * max(a0 + a1 + sh + mlp, d + k) + min(a0 + a1 + sh + mlp, d + k)
    staged = decode_stage_layers_s(10, a0, a1, sh, mlp, d, k)
    assert staged > layer_max
    assert staged - decode_stage_layers_s(9, a0, a1, sh, mlp, d, k) > 2 * (a0 + a1 + sh + mlp)


def _deepseek_profile_scenario(*extra):
    return load_scenario(ROOT / "scenarios" / "r1_serve_h800_decode.toml", [*DEEPSEEK_PROFILE_DECODE_CONDITIONS, *extra], SERVING)


@pytest.mark.parametrize("adopt", [False, True])
def test_decode_step_under_both_settings(monkeypatch, adopt):
    monkeypatch.setattr(iteration, "ADOPT_DECODE_STAGE_OVERLAP", adopt)
    sc = _deepseek_profile_scenario()
    s = sc.serve
    step = decode_step(sc.model, sc.gpu, s, s.batch)
    # the pieces of the pipeline add up to the layer's compute and all-to-all
    mb = step["per_microbatch_groups_s"]
    compute_s = sum(v for g, v in mb.items() if g not in ("dispatch", "combine"))
    a2a_s = mb["dispatch"] + mb["combine"]
    layer_max = 2 * max(compute_s, a2a_s)
    if adopt:
        assert step["per_moe_layer_s"] >= layer_max * (1 - 1e-9)
    else:
        assert step["per_moe_layer_s"] == pytest.approx(layer_max)
    one = decode_step(sc.model, sc.gpu, _deepseek_profile_scenario("serve.num_microbatches=1").serve, s.batch)
    monkeypatch.setattr(iteration, "ADOPT_DECODE_STAGE_OVERLAP", not adopt)
    assert decode_step(sc.model, sc.gpu, _deepseek_profile_scenario("serve.num_microbatches=1").serve, s.batch)["step_s"] == \
        pytest.approx(one["step_s"])   # one micro-batch: the switch does not enter


def test_switch_slows_the_step_only_where_the_all_to_all_outgrows_its_window(monkeypatch):
    # the all-to-all as DeepEP's table alone (s22dep's kernels off): with them on, the flight shrinks and both
    # forms hide it, the staged one's fill then 0.03 ms under the closed form's + min(C, A) at the profile
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SM_TIME", False)
    sc = _deepseek_profile_scenario()
    s = sc.serve
    monkeypatch.setattr(iteration, "ADOPT_DECODE_STAGE_OVERLAP", False)
    off = decode_step(sc.model, sc.gpu, s, s.batch)["step_s"]
    monkeypatch.setattr(iteration, "ADOPT_DECODE_STAGE_OVERLAP", True)
    on = decode_step(sc.model, sc.gpu, s, s.batch)["step_s"]
    assert on >= off
