"""twin.costs.context_parallel's candidate of docs/notes/s27cp_rule.md (ADOPT_COMPILED_CP_SCHEDULE_WAIT):
a compiled torch_allgather pass adds its ranks' meeting loss, a measured fraction of its attention-core
seconds; nothing with the switch off, eager, or at a CP degree never measured."""

import pytest

from twin.costs import context_parallel as cpx


@pytest.fixture
def fracs(monkeypatch):
    monkeypatch.setattr(cpx, "COMPILED_CP_SCHEDULE_WAIT_FRAC", {4: {"fwd": 0.03, "bwd": 0.05}})
    return monkeypatch


def test_off_the_compiled_pass_charges_its_collectives_only(fracs):
    fracs.setattr(cpx, "ADOPT_COMPILED_CP_SCHEDULE_WAIT", False)
    # forward: the gather; backward: (one gather merged away) the 4 dK/dV hand-overs
    assert cpx.torch_cp_exposed_s(4, 0.1, 0.004, 0.003, False, compiled=True) == pytest.approx(0.004)
    assert cpx.torch_cp_exposed_s(4, 0.3, 0.004, 0.003, True, compiled=True) == pytest.approx(4 * 0.003)


def test_on_each_compiled_pass_adds_its_fraction_of_the_core(fracs):
    fracs.setattr(cpx, "ADOPT_COMPILED_CP_SCHEDULE_WAIT", True)
    # forward 0.004 + 0.03 x 0.1 s; backward 4 x 0.003 + 0.05 x 0.3 s
    assert cpx.torch_cp_exposed_s(4, 0.1, 0.004, 0.003, False, compiled=True) == pytest.approx(0.004 + 0.003)
    assert cpx.torch_cp_exposed_s(4, 0.3, 0.004, 0.003, True, compiled=True) == pytest.approx(0.012 + 0.015)
    # a degree never measured, and the eager pass (its collectives overlap the calls): nothing added
    assert cpx.compiled_schedule_wait_s(16, 0.1, False) == 0.0
    assert cpx.torch_cp_exposed_s(4, 0.1, 0.004, 0.003, False, compiled=False) == pytest.approx(0.0)


@pytest.mark.parametrize("own", [False, True])
def test_a_block_with_its_own_fractions_takes_them_only_under_s29cp_switch(fracs, own):
    """docs/notes/s29cp_rule.md's candidate (ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK): the (model, TP) block with
    its own table takes it; every other block, and every block with the switch off, the shared table."""
    fracs.setattr(cpx, "ADOPT_COMPILED_CP_SCHEDULE_WAIT", True)
    fracs.setattr(cpx, "ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK", own)
    fracs.setattr(cpx, "COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK", {("m405", 8): {4: {"fwd": 0.5, "bwd": 0.25}}})
    assert cpx.compiled_schedule_wait_s(4, 0.1, False, ("m405", 8)) == pytest.approx(0.05 if own else 0.003)
    assert cpx.compiled_schedule_wait_s(4, 0.2, True, ("m405", 8)) == pytest.approx(0.05 if own else 0.01)
    # another TP degree of the same model, another model, no block: the shared table
    assert cpx.compiled_schedule_wait_s(4, 0.1, False, ("m405", 4)) == pytest.approx(0.003)
    assert cpx.compiled_schedule_wait_s(4, 0.1, False, ("m8", 1)) == pytest.approx(0.003)
    assert cpx.compiled_schedule_wait_s(4, 0.1, False) == pytest.approx(0.003)
    # a degree the block's table lacks: nothing (its own table rules where the switch is on)
    assert cpx.compiled_schedule_wait_s(8, 0.1, False, ("m405", 8)) == 0.0


@pytest.mark.parametrize("fp8_on", [False, True])
def test_a_float8_block_takes_its_own_fractions_only_under_s29cp2_switch(fracs, fp8_on):
    """docs/notes/s29cp2_rule.md's candidate (ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK): a plan whose GEMMs run FP8
    takes its block's Float8 table; a BF16 plan of the same block, or the switch off, does not."""
    fracs.setattr(cpx, "ADOPT_COMPILED_CP_SCHEDULE_WAIT", True)
    fracs.setattr(cpx, "ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK", fp8_on)
    fracs.setattr(cpx, "ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK", False)
    fracs.setattr(cpx, "COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK", {("m8", 1): {4: {"fwd": 0.2, "bwd": 0.7}}})
    assert cpx.compiled_schedule_wait_s(4, 0.1, False, ("m8", 1, "fp8")) == pytest.approx(0.02 if fp8_on else 0.003)
    assert cpx.compiled_schedule_wait_s(4, 0.1, True, ("m8", 1, "fp8")) == pytest.approx(0.07 if fp8_on else 0.005)
    assert cpx.compiled_schedule_wait_s(4, 0.1, True, ("m8", 1, "bf16")) == pytest.approx(0.005)
    assert cpx.compiled_schedule_wait_s(4, 0.1, True, ("m405", 8, "fp8")) == pytest.approx(0.005)
