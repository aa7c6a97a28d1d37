"""The expert-parallel all-to-all runs on the SMs held for it (s23csm): fewer than the 20 that
saturate IB and NVLink (V3 report §3.2.2) slow both legs in proportion, none cannot run it."""

import pytest

from twin.core.errors import ScenarioError
from twin.core.fields import build
from twin.core.scenario import load_scenario
from twin.core.search_specs import SearchSpec
from twin.core.specs import get_gpu
from twin.costs import comm
from twin.costs.flops import Op
from twin.planning.search import search

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


def test_the_plans_comm_sm_axis_refuses_none_and_keeps_v3s_twenty(v3):
    # s23walk: with a free all-to-all the search answered SM0 (16.29 s a step against 18.49 s at 20)
    spec = build(SearchSpec, {"tokens": 14.8e12, "days": 60, "gpu": ["h800"], "num_gpus": [2048], "tp": [1],
                              "pp": [16], "ep": [64], "comm_sms": [0, 10, 20, 32]}, "search")
    result = search(v3, spec, {"h800": 2.0}, workers=1)
    sms0 = [r for r in result.rows if r.plan["comm_sms"] == 0]
    assert sms0 and all(not r.feasible and "plan.comm_sms" in r.reason for r in sms0)
    assert result.best.plan["comm_sms"] == 20
