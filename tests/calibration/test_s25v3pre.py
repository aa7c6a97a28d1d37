"""calibration.serve_prefill_kernels (docs/notes/s25v3pre_rule.md): the engine terms' constants are the fitting
record's fit, the twin under the switch prices the profiled steps, the committed refit matches the twin's constants,
the candidates' settings and the rule's set-F criteria."""

import pytest

from calibration import serve_prefill_kernels as spk
from calibration import serve_v3_prefill as v3
from calibration.serve_load_validation import FIGURES
from twin.serving import timing
from twin.serving.timing import engine_costs


@pytest.fixture(scope="module")
def steps():
    return spk.fitting_steps()


def test_the_twins_constants_are_the_fitting_records_fit():
    fitted = spk.fit_constants()
    for k, v in spk.engine_constants().items():
        assert v == pytest.approx(fitted[k], rel=0.005), k


def test_under_the_switch_the_twin_prices_every_profiled_step(steps, monkeypatch):
    """In sample (h100/s24v3pre): the prompt kernels within -9..+6% of each profiled step's kernel sum (off: v3-slice-2l
    14-28% short, qwen3moe 22-66% long)."""
    monkeypatch.setattr(timing, "ADOPT_ENGINE_PREFILL_KERNELS", True)
    kernels = v3.measured_kernels(v3.rec.MEASUREMENTS_DIR)
    measured = v3.measured_steps(v3.rec.MEASUREMENTS_DIR)
    for s in steps:
        key = (s["model"], s["prompts"], s["tokens"])
        row = measured[key]["row"]
        c = spk.costs_for(s["model"], row, spk.seh.probe_s(row), v3.TABLE, v3.rec.MEASUREMENTS_DIR)
        assert c.engine_prefill
        kern = c._kernels(0, 0.0, s["prompt_tokens"], float(s["tokens"]), 0.0, 0.0, s["pairs"])[0]
        assert -0.09 < kern / sum(kernels[key].values()) - 1 < 0.06, key


def test_the_committed_refit_matches_the_twin_and_drops_the_score_term():
    tables = spk.read_refit()
    assert set(tables) == set(spk.TABLE_FOLDERS)
    for t in tables.values():
        assert t["score_s_per_pair"] == 0.0 and set(spk.REFIT_TERMS) <= set(t)
        assert t["iteration_s"] > 0 and t["eager_iteration_s"] > 0 and t["fit_median_abs_rel_error"] < 0.05


def test_the_candidates_settings_and_their_restoration():
    committed = engine_costs("real-serve-h100-ep1")
    with spk.setting("P"):
        assert timing.ADOPT_ENGINE_PREFILL_KERNELS and timing.ADOPT_EAGER_PIPELINE
        e = engine_costs("real-serve-h100-ep1")
        assert e["score_s_per_pair"] == 0.0 and e["eager_op_s"] == pytest.approx(10.78e-6, rel=0.01)
        assert e["host_probe_launch_s"] == committed["host_probe_launch_s"]
    with spk.setting("Q"):
        assert timing.ADOPT_ENGINE_PREFILL_KERNELS and not timing.ADOPT_EAGER_PIPELINE
        assert engine_costs("real-serve-h100-ep1")["eager_op_s"] == 0.0
    with spk.setting(None):
        assert not timing.ADOPT_ENGINE_PREFILL_KERNELS
    assert engine_costs("real-serve-h100-ep1") == committed and timing.ADOPT_ENGINE_PREFILL_KERNELS   # T: on again
    with pytest.raises(ValueError, match="'R'"):
        spk.setting("R")


def _row(model: str, k: int, err: float) -> dict:
    return {"model": model, "run_id": f"n25v-{model}-{k}", **{f"{f}_rel_error": err for f in FIGURES},
            **{f"{f}_within_target": abs(err) < 0.05 for f in FIGURES}}


def test_set_f_criteria_need_six_complete_runs_and_both_models():
    off = [_row(m, k, 0.12) for m in spk.FRESH_MODELS for k in range(3)]
    better = [_row(m, k, 0.02) for m in spk.FRESH_MODELS for k in range(3)]
    assert spk.fresh_criteria(off, better)["met"]
    assert not spk.fresh_criteria(off[:5], better[:5])["met"]                                 # fewer than 6 runs
    assert not spk.fresh_criteria(off, better, incomplete=("n25v-x",))["met"]                # a run cut short
    # the mispriced model gains, the other loses its checks: F3 fails, the set fails
    off_mixed = [_row("v3-slice-2l", k, 0.12) for k in range(3)] + [_row("qwen3moe-mla-slice", k, 0.02) for k in range(3)]
    worse_other = [_row("v3-slice-2l", k, 0.02) for k in range(3)] + [_row("qwen3moe-mla-slice", k, 0.03 + k) for k in range(3)]
    f = spk.fresh_criteria(off_mixed, worse_other)
    assert f["criteria"]["F2_mispriced_no_fewer_lower_median"] and not f["criteria"]["F3_other_no_fewer"]
    assert not f["met"]
