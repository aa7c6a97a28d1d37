"""The expert-parallel all-to-all runs on the SMs held for it (s23csm): fewer than the 20 that
saturate IB and NVLink (V3 report §3.2.2) slow both legs in proportion, none cannot run it."""

import pytest

from twin.core.errors import ScenarioError
from twin.core.scenario import load_scenario
from twin.core.specs import get_gpu
from twin.costs import comm
from twin.costs.flops import Op

DISPATCH = Op("dispatch", "dispatch", "mlp", bytes=3e8, ib_bytes=1e8, nvlink_bytes=2e8)


def _flight_s(sms: int | None) -> float:
    """The all-to-all's time without its fixed latency (the part the bandwidth sets)."""
    gpu = get_gpu("h800")
    return comm.all_to_all_time_s(DISPATCH, gpu, comm_sms=sms) - gpu.scale_out_latency_s


def test_the_links_saturate_at_twenty_sms_and_slow_below():
    full = _flight_s(None)
    assert _flight_s(comm.A2A_SMS_SATURATING) == pytest.approx(full, rel=1e-12)
    assert _flight_s(32) == pytest.approx(full, rel=1e-12)   # more SMs than saturate: no faster
    assert _flight_s(10) == pytest.approx(2 * full, rel=1e-12)
    assert _flight_s(5) > _flight_s(10)


def test_no_sms_cannot_run_an_all_to_all():
    with pytest.raises(ValueError, match="SM"):
        comm.all_to_all_time_s(DISPATCH, get_gpu("h800"), comm_sms=0)


def test_expert_parallelism_on_no_sms_is_refused_at_load():
    with pytest.raises(ScenarioError, match="plan.comm_sms"):
        load_scenario(overrides=["plan.comm_sms=0"])   # V3 on EP64
    # a dense model, or a MoE model without expert parallelism, holds none
    assert load_scenario(overrides=["plan.ep=1", "plan.comm_sms=0"]).plan.held_comm_sms == 0
