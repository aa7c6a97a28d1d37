import pytest

from twin.core.results import to_json
from twin.training.replay.run import replay
from twin.training.replay.uncertainty import uncertain_inputs
from twin.core.scenario import load_scenario

from fake_step import fake_step  # the analytic stand-in for the step twin (tests/ is on sys.path)


def test_band_brackets_base_and_widens_with_sigma():
    narrow = to_json(replay(load_scenario(overrides=["uncertainty.compute_eff_rel_sigma=0.02"]), step_fn=fake_step, sweep=False))
    wide = to_json(replay(load_scenario(overrides=["uncertainty.compute_eff_rel_sigma=0.3"]), step_fn=fake_step, sweep=False))
    for res in (narrow, wide):
        b = res["band"]["total_gpu_hours"]
        assert b["p10"] < res["total_gpu_hours"] < b["p90"]
        assert all(c["band"] is None or c["band"]["p10"] <= c["predicted"] <= c["band"]["p90"] for c in res["claims"])
    w = lambda r: r["band"]["total_gpu_hours"]["p90"] - r["band"]["total_gpu_hours"]["p10"]
    assert w(wide) > 2 * w(narrow)


def test_linear_method_and_tornado_order():
    res = to_json(replay(load_scenario(overrides=["uncertainty.method='linear'"]), step_fn=fake_step, sweep=False))
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
