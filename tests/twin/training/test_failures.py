import math

import pytest

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.training.failures import cause_rates, failure_catalog, goodput
from twin.core.run_specs import FailureSpec


def test_llama3_rate_from_table5_counts():
    entry = failure_catalog()["llama3_405b"]
    total = sum(c[2] for c in entry["causes"])
    assert total == 419  # Table 5 counts sum to the 419 unexpected interruptions
    rate = sum(c.rate_per_gpu_hour for c in cause_rates("llama3_405b"))
    assert rate == pytest.approx(419 / (16384 * 54 * 24))


def test_young_daly_interval_and_ettr_formula():
    spec = FailureSpec(detection_s=100, restart_s=200, checkpoint_bytes_per_param=2.0,
                       checkpoint_write_bytes_per_s_per_node=1e9)
    g = goodput(spec, num_gpus=1024, num_params=1e9, num_nodes=128)
    w = 2.0 * 1e9 / (1e9 * 128)
    lam = sum(c.rate_per_gpu_hour for c in cause_rates("llama3_405b")) * 1024 / 3600
    assert g.checkpoint_write_s == pytest.approx(w)
    assert g.checkpoint_interval_s == pytest.approx(math.sqrt(2 * w / lam))
    dt = g.checkpoint_interval_s
    assert g.ettr_frac == pytest.approx((1 - lam * (300 + dt / 2)) / (1 + w / dt))
    # the Young/Daly interval is (near-)optimal: other intervals do no better
    for factor in (0.3, 3.0):
        other = goodput(FailureSpec(**{**spec.__dict__, "checkpoint_interval_s": dt * factor}), 1024, 1e9, 128)
        assert other.ettr_frac < g.ettr_frac
        assert other.interval_rule == "given"


def test_more_gpus_lower_goodput_and_zero_rate_is_ideal():
    spec = FailureSpec()
    small = goodput(spec, 256, 6.7e11, 32).ettr_frac
    big = goodput(spec, 16384, 6.7e11, 2048).ettr_frac
    assert 0 < big < small < 1
    none = goodput(FailureSpec(rate_scale=0.0, checkpoint_interval_s=0.0), 2048, 6.7e11, 256)
    assert none.ettr_frac == 1.0


def test_no_progress_is_infeasible_and_unknown_catalog_is_a_scenario_error():
    with pytest.raises(InfeasiblePlan, match="no progress"):
        goodput(FailureSpec(rate_scale=1000.0, restart_s=3600), 16384, 6.7e11, 2048)
    with pytest.raises(ScenarioError, match=r"failures\.catalog"):
        cause_rates("nope")
