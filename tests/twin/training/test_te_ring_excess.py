"""TransformerEngine's ring_exchange all-gathers paying the copy-engine floor torch's fused ops pay
(twin.training.step.ADOPT_TE_RING_EXCESS with ATP_FUSED_EXCESS_FRAC; docs/notes/s27mlm_rule.md):
both settings, the methods it leaves alone, and the plan screen charging what the simulator charges."""

import pytest

from twin.training import step as step_mod
from tests.twin.training.test_step_parallel import scenario, step

# TP 2 at 16K tokens a sequence under TE's userbuffers: the forward all-gather's GEMM is long enough
# that the ring model hides most of it (0.93 of 2.86 ms exposed), so a floor can bite
TE = dict(tp=2, pp=1, sequence_parallel=True, tp_comm_overlap=True, tp_overlap_kind="te_userbuffers", seq_len=16384)
RING = ("tp_all_gather", "tp_all_gather_bwd")   # ring_exchange: in_fwd and out_bwd (tp_overlap.TE_METHODS)


def _run(monkeypatch, adopt: bool, frac: float, **plan):
    monkeypatch.setattr(step_mod, "ADOPT_TE_RING_EXCESS", adopt)
    monkeypatch.setattr(step_mod, "ATP_FUSED_EXCESS_FRAC", frac)
    monkeypatch.setattr(step_mod, "_PREPARED", {})   # costs built under another fraction are kept there
    return step(scenario(**plan))


def _ring_s(r) -> float:
    return sum(r.op_time_s.get(k, 0.0) for k in RING)


def test_off_the_fraction_changes_nothing(monkeypatch):
    base = _run(monkeypatch, False, 0.0, **TE)
    other = _run(monkeypatch, False, 0.9, **TE)
    assert other.step_time_s == base.step_time_s and other.op_time_s == base.op_time_s


def test_on_each_ring_all_gather_pays_at_least_its_share(monkeypatch):
    base = _run(monkeypatch, False, 0.0, **TE)
    whole = _run(monkeypatch, False, 0.0, tp=2, pp=1, sequence_parallel=True, seq_len=16384)   # every collective whole
    floor = _run(monkeypatch, True, 0.9, **TE)
    # the premise: the ring model hides part of the forward all-gather here
    assert base.op_time_s["tp_all_gather"] < 0.9 * whole.op_time_s["tp_all_gather"]
    # on: each ring all-gather exposes max(ring, 0.9 x its collective), never more than the collective whole
    for k in RING:
        assert floor.op_time_s[k] >= max(0.9 * whole.op_time_s[k], base.op_time_s[k]) * (1 - 1e-9)
        assert floor.op_time_s[k] <= whole.op_time_s[k] * (1 + 1e-9)
    # the pipeline and bulk methods (reduce-scatters, the slowed GEMMs) are untouched
    for k in ("tp_reduce_scatter", "tp_reduce_scatter_bwd", "tp_ub_gemms", "tp_ub_gemms_bwd"):
        assert floor.op_time_s.get(k, 0.0) == pytest.approx(base.op_time_s.get(k, 0.0), rel=1e-12)
    # the step grows, by no more than what the floor adds to the ring all-gathers (rule C2; one stage, so
    # no pipeline slot repeats it)
    assert base.step_time_s < floor.step_time_s <= base.step_time_s + (_ring_s(floor) - _ring_s(base)) * (1 + 1e-9)
    # a zero fraction is the ring model itself
    assert _run(monkeypatch, True, 0.0, **TE).step_time_s == pytest.approx(base.step_time_s, rel=1e-12)


def test_other_overlap_kinds_are_untouched(monkeypatch):
    for kind in ("torch_async_tp", "ideal"):
        plan = {**TE, "tp_overlap_kind": kind}
        assert _run(monkeypatch, True, 0.9, **plan).step_time_s == _run(monkeypatch, False, 0.9, **plan).step_time_s


@pytest.mark.parametrize("pp", [1, 2])
def test_the_screen_charges_what_the_simulator_charges_with_the_floor(monkeypatch, pp):
    from twin.planning.screen import screen
    monkeypatch.setattr(step_mod, "ADOPT_TE_RING_EXCESS", True)
    monkeypatch.setattr(step_mod, "ATP_FUSED_EXCESS_FRAC", 0.9)
    monkeypatch.setattr(step_mod, "_PREPARED", {})
    sim, est = {}, {}
    for kind in ("te_userbuffers", "ideal"):
        sc = scenario(**{**TE, "pp": pp, "tp_overlap_kind": kind})
        sim[kind], est[kind] = step(sc).step_time_s, screen(sc).step_time_s
    assert est["te_userbuffers"] - est["ideal"] == pytest.approx(sim["te_userbuffers"] - sim["ideal"], rel=1e-9)
