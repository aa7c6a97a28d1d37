import importlib.util
from pathlib import Path

import pytest

from twin.replay import replay_run, uncertain_inputs
from twin.scenario import load_scenario

_spec = importlib.util.spec_from_file_location("replay_fake_step", Path(__file__).resolve().parents[1] / "reports" / "fake_step.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
fake_step = _mod.fake_step  # the analytic stand-in for the step twin, shared with the report tests


def test_band_brackets_base_and_widens_with_sigma():
    narrow = replay_run(load_scenario(overrides=["uncertainty.compute_eff_rel_sigma=0.02"]), step_fn=fake_step, sweep=False)[0]
    wide = replay_run(load_scenario(overrides=["uncertainty.compute_eff_rel_sigma=0.3"]), step_fn=fake_step, sweep=False)[0]
    for res in (narrow, wide):
        b = res["band"]["total_gpu_hours"]
        assert b["p10"] < res["total_gpu_hours"] < b["p90"]
        assert all(c["band"] is None or c["band"]["p10"] <= c["predicted"] <= c["band"]["p90"] for c in res["claims"])
    w = lambda r: r["band"]["total_gpu_hours"]["p90"] - r["band"]["total_gpu_hours"]["p10"]
    assert w(wide) > 2 * w(narrow)


def test_linear_method_and_tornado_order():
    res = replay_run(load_scenario(overrides=["uncertainty.method='linear'"]), step_fn=fake_step, sweep=False)[0]
    b = res["band"]["total_cost_usd"]
    assert b["p50"] == pytest.approx(res["total_cost_usd"])
    swings = [abs(s["total_cost_usd_high"] - s["total_cost_usd_low"]) for s in res["uncertainty"]["sensitivity"]]
    assert swings == sorted(swings, reverse=True)
    # PUE changes energy, never GPU-hours
    pue = next(s for s in res["uncertainty"]["sensitivity"] if s["input"] == "pue")
    assert pue["total_gpu_hours_low"] == pytest.approx(pue["total_gpu_hours_high"])
    assert pue["total_energy_kwh_low"] < pue["total_energy_kwh_high"]


def test_zero_sigma_inputs_are_dropped():
    sc = load_scenario(overrides=["uncertainty.link_bw_rel_sigma=0.0", "uncertainty.routing_imbalance_high=1.0"])
    names = {i.name for i in uncertain_inputs(sc)}
    assert "link_bw_scale" not in names and "routing_imbalance" not in names


def test_step_without_perturb_hook_is_reported_not_crashed():
    def no_hook(scenario):
        return fake_step(scenario)
    res = replay_run(load_scenario(), step_fn=no_hook, sweep=False)[0]
    assert any("perturb hook" in s for s in res["uncertainty"]["not_propagated"])
    assert res["band"]["total_gpu_hours"] is not None
