"""TransformerEngine's userbuffers overlap priced from a held GEMM beside real TP traffic
(twin.training.step.ADOPT_TP_TRAFFIC_MEASURED; docs/notes/s30mlm_rule.md): today's assumptions reproduced
exactly, each measured factor moving only its own method, no other plan kind touched, and the plan screen
charging what the simulator charges."""

import pytest

from twin.training import step as step_mod
from tests.twin.training.test_step_parallel import scenario, step

# TP 2 at 16K tokens a sequence under TE's userbuffers (tests/twin/training/test_te_ring_excess.py's plan)
TE = dict(tp=2, pp=1, sequence_parallel=True, tp_comm_overlap=True, tp_overlap_kind="te_userbuffers", seq_len=16384)
TODAY = dict(TE_SM_GEMM_SLOWDOWN=None, TE_SM_COMM_SLOWDOWN=1.0, TE_CE_GEMM_SLOWDOWN=1.0, TE_CE_COMM_SLOWDOWN=1.0)


def _run(monkeypatch, adopt: bool, factors: dict, **plan):
    monkeypatch.setattr(step_mod, "ADOPT_TP_TRAFFIC_MEASURED", adopt)
    for k, v in {**TODAY, **factors}.items():
        monkeypatch.setattr(step_mod, k, v)
    monkeypatch.setattr(step_mod, "_PREPARED", {})   # costs built under other factors are kept there
    return step(scenario(**plan))


def test_on_with_todays_assumptions_is_off(monkeypatch):
    off, on = _run(monkeypatch, False, {}, **TE), _run(monkeypatch, True, {}, **TE)
    assert on.step_time_s == pytest.approx(off.step_time_s, rel=1e-12)
    assert on.op_time_s == pytest.approx(off.op_time_s, rel=1e-12)


def test_each_factor_moves_its_own_method(monkeypatch):
    off = _run(monkeypatch, False, {}, **TE)
    # the copy-engine ring: a GEMM slowed beside the transfers is a new compute task; the SM kernels' untouched
    ce = _run(monkeypatch, True, {"TE_CE_GEMM_SLOWDOWN": 1.2}, **TE)
    assert ce.op_time_s.get("tp_ce_gemms", 0.0) > 0 and ce.step_time_s > off.step_time_s
    for k in ("tp_ub_gemms", "tp_ub_gemms_bwd", "tp_reduce_scatter"):
        assert ce.op_time_s.get(k, 0.0) == pytest.approx(off.op_time_s.get(k, 0.0), rel=1e-12)
    # a slower SM kernel beside the GEMM: the pipelined reduce-scatter exposes more, the ring is untouched
    comm = _run(monkeypatch, True, {"TE_SM_COMM_SLOWDOWN": 1.5}, **TE)
    assert comm.op_time_s["tp_reduce_scatter"] > off.op_time_s["tp_reduce_scatter"]
    assert comm.op_time_s.get("tp_all_gather", 0.0) == pytest.approx(off.op_time_s.get("tp_all_gather", 0.0), rel=1e-12)
    assert "tp_ce_gemms" not in comm.op_time_s
    # the GEMM beside the SM kernels at a measured factor above the profile's (1.35): more slowed-GEMM time
    sm = _run(monkeypatch, True, {"TE_SM_GEMM_SLOWDOWN": 2.0}, **TE)
    assert sm.op_time_s["tp_ub_gemms"] > off.op_time_s["tp_ub_gemms"]
    assert sm.op_time_s["tp_ub_gemms_bwd"] > off.op_time_s["tp_ub_gemms_bwd"]


def test_other_plans_are_untouched(monkeypatch):
    slow = {"TE_SM_GEMM_SLOWDOWN": 2.0, "TE_SM_COMM_SLOWDOWN": 1.5, "TE_CE_GEMM_SLOWDOWN": 1.2, "TE_CE_COMM_SLOWDOWN": 1.3}
    for plan in ({**TE, "tp_overlap_kind": "torch_async_tp"}, {**TE, "tp_overlap_kind": "ideal"},
                 {**TE, "tp_comm_overlap": False}, {"tp": 1, "pp": 1, "seq_len": 16384}):
        assert _run(monkeypatch, True, slow, **plan).step_time_s == _run(monkeypatch, False, {}, **plan).step_time_s


@pytest.mark.parametrize("pp", [1, 2])
def test_the_screen_charges_what_the_simulator_charges(monkeypatch, pp):
    from twin.planning.screen import screen
    slow = {"TE_SM_GEMM_SLOWDOWN": 2.0, "TE_SM_COMM_SLOWDOWN": 1.5, "TE_CE_GEMM_SLOWDOWN": 1.2, "TE_CE_COMM_SLOWDOWN": 1.3}
    sim, est = {}, {}
    for kind in ("te_userbuffers", "ideal"):
        sc_plan = {**TE, "pp": pp, "tp_overlap_kind": kind}
        _run(monkeypatch, True, slow, **sc_plan)
        sc = scenario(**sc_plan)
        sim[kind], est[kind] = step(sc).step_time_s, screen(sc).step_time_s
    assert est["te_userbuffers"] - est["ideal"] == pytest.approx(sim["te_userbuffers"] - sim["ideal"], rel=1e-9)
