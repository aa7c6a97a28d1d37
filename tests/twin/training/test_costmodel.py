import pytest

from twin.training.costmodel import energy_of, gpu_hours, gpu_power_w, rental_cost_usd
from twin.core.run_specs import EnergySpec


def test_power_between_idle_and_busy():
    e = EnergySpec(gpu_busy_power_frac=1.0, gpu_idle_power_frac=0.2)
    assert gpu_power_w(700, 0.0, e) == pytest.approx(140)
    assert gpu_power_w(700, 1.0, e) == pytest.approx(700)
    assert gpu_power_w(700, 0.5, e) == pytest.approx(420)
    assert gpu_power_w(700, 7.0, e) == pytest.approx(700)  # clamped


def test_energy_includes_node_overhead_and_pue_and_carbon():
    e = EnergySpec(gpu_busy_power_frac=1.0, gpu_idle_power_frac=0.0, node_overhead_w=4600, pue=1.5, carbon_kg_per_kwh=0.5)
    out = energy_of(3600.0, 16, 8, 700.0, 1.0, e)
    it_w = 16 * 700 + 2 * 4600
    assert out.it_power_w == pytest.approx(it_w)
    assert out.energy_kwh == pytest.approx(it_w * 1.5 / 1000)
    assert out.carbon_kg == pytest.approx(out.energy_kwh * 0.5)
    assert energy_of(3600.0, 16, 8, 700.0, 1.0, EnergySpec()).carbon_kg is None


def test_gpu_hours_and_rental():
    assert gpu_hours(7200, 2048) == pytest.approx(4096)
    assert rental_cost_usd(2.788e6, 2.0) == pytest.approx(5.576e6)
