"""StepCosts(share_blocks=True), the plan screen's: candidates that differ only in how blocks are
arranged (STAGE_ONLY_PLAN_FIELDS, the cluster size) share one set of block ops and task memo, and
their chains are the unshared StepCosts' own, float for float."""

import dataclasses

import pytest

from twin.core.schedules import build_schedule
from twin.costs.profile import load_profile
from twin.planning.space import Candidate, apply
from twin.training import step as step_mod
from twin.training.step import STAGE_ONLY_PLAN_FIELDS, StepCosts, routing_loads


def _costs(base, share: bool, **settings) -> StepCosts:
    sc = apply(base, Candidate(tuple(sorted(settings.items()))))
    sc.check()
    p = sc.plan
    schedule = build_schedule(p.schedule, p.pp, sc.num_microbatches, p.virtual_stages)
    return StepCosts(sc, schedule, load_profile(sc.gpu.calibrated_as), routing_loads(sc), 1.0, share_blocks=share)


def _all_chains(costs: StepCosts) -> dict:
    s = costs.schedule
    return {(st, kind): costs._chain(st, kind) for st in range(s.num_model_stages) for kind in ("F", "B", "BW", "W")}


ARRANGED = [{"plan.zero_stage": 2}, {"plan.pp": 8}, {"plan.schedule": "1f1b"}, {"plan.schedule": "dualpipev"},
            {"plan.schedule": "interleaved-1f1b", "plan.virtual_stages": 2, "plan.pp": 8, "cluster.num_gpus": 1024},
            {"plan.stage_cut": "even"}, {"cluster.num_gpus": 4096}, {"plan.zero_stage": 3, "plan.pp": 8}]


@pytest.mark.parametrize("settings", ARRANGED)
def test_arranged_alike_share_their_blocks_and_give_the_unshared_chains(v3, settings):
    step_mod._SHARED.clear()
    first = _costs(v3, True)
    other = _costs(v3, True, **settings)
    assert other.blocks is first.blocks and other._block_memo is first._block_memo
    alone = _costs(v3, False, **settings)
    assert alone.blocks is not first.blocks
    assert _all_chains(other) == _all_chains(alone)   # Task equality: every duration the same float


@pytest.mark.parametrize("settings", [{"plan.tp": 2}, {"plan.recompute": "full"}, {"plan.gemm_precision": "bf16"},
                                      {"plan.micro_batch_seqs": 2}, {"plan.comm_sms": 32}, {"cluster.gpu": "h200"},
                                      {"plan.cp": 2}])
def test_block_costs_that_differ_are_not_shared(v3, settings):
    step_mod._SHARED.clear()
    first = _costs(v3, True)
    other = _costs(v3, True, **settings)
    assert other.blocks is not first.blocks
    assert _all_chains(other) == _all_chains(_costs(v3, False, **settings))


def test_every_plan_field_but_the_stage_only_ones_is_in_the_key(v3):
    key_fields = {name for name, _ in step_mod._block_cost_key(v3, load_profile("h100"), 1.0, 1.0)[0]}
    plan_fields = {f.name for f in dataclasses.fields(v3.plan)}
    assert key_fields == plan_fields - STAGE_ONLY_PLAN_FIELDS
    assert STAGE_ONLY_PLAN_FIELDS <= plan_fields


def test_a_flipped_switch_or_per_layer_loads_are_not_served_shared_blocks(v3, monkeypatch):
    step_mod._SHARED.clear()
    first = _costs(v3, True)
    monkeypatch.setattr(step_mod, "ADOPT_COMPILED_FULL_AC_TAIL", not step_mod.ADOPT_COMPILED_FULL_AC_TAIL)
    assert _costs(v3, True).blocks is not first.blocks
    assert step_mod._shared_blocks(v3, load_profile("h100"), [1.0] * 61, 1.0) is None


def test_the_shared_store_is_bounded(v3, monkeypatch):
    step_mod._SHARED.clear()
    monkeypatch.setattr(step_mod, "_MAX_SHARED", 3)
    for sms in (20, 24, 28, 32, 36):
        _costs(v3, True, **{"plan.comm_sms": sms})
    assert len(step_mod._SHARED) == 3
