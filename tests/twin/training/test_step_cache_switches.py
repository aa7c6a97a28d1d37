"""The step cache (twin.training.step._PREPARED) and the profile cache (twin.costs.profile.load_profile)
never serve what was built under another setting of an ADOPT_ switch: tests, plan searches and
scripts flip switches in one process, and a stale entry would hide the change being judged."""

import pytest

from twin.costs import profile as profile_mod
from twin.training import step as step_mod
from tests.twin.training.test_step_parallel import scenario, step


def test_flipping_a_switch_is_seen_without_clearing_the_step_cache(monkeypatch):
    sc = scenario(recompute="full", tp=4, sequence_parallel=True, kernels="fused_blocks")
    monkeypatch.setattr(step_mod, "ADOPT_COMPILED_FULL_AC_TAIL", False)
    whole = step(sc)
    monkeypatch.setattr(step_mod, "ADOPT_COMPILED_FULL_AC_TAIL", True)
    tail_cut = step(sc)
    assert tail_cut.op_time_s["recompute_mlp_fwd"] < whole.op_time_s["recompute_mlp_fwd"]
    monkeypatch.setattr(step_mod, "ADOPT_COMPILED_FULL_AC_TAIL", False)
    again = step(sc)
    assert again.op_time_s["recompute_mlp_fwd"] == pytest.approx(whole.op_time_s["recompute_mlp_fwd"])


def test_switch_state_names_every_loaded_twin_switch(monkeypatch):
    before = {(module, name): value for module, name, value in step_mod.switch_state()}
    assert before[("twin.training.step", "ADOPT_COMPILED_FULL_AC_TAIL")] is step_mod.ADOPT_COMPILED_FULL_AC_TAIL
    monkeypatch.setattr(step_mod, "ADOPT_COMPILED_FULL_AC_TAIL", not step_mod.ADOPT_COMPILED_FULL_AC_TAIL)
    monkeypatch.setattr(profile_mod, "ADOPT_GEMM_LAYER_CLOCK", not profile_mod.ADOPT_GEMM_LAYER_CLOCK)
    after = {(module, name): value for module, name, value in step_mod.switch_state()}
    changed = {key for key in before if after.get(key) != before[key]}
    assert changed == {("twin.training.step", "ADOPT_COMPILED_FULL_AC_TAIL"),
                       ("twin.costs.profile", "ADOPT_GEMM_LAYER_CLOCK")}


def test_the_profile_cache_follows_the_profiles_directory(monkeypatch):
    committed = profile_mod.load_profile("h100")
    monkeypatch.setattr(profile_mod, "ADOPT_GEMM_LAYER_CLOCK", True)
    candidate = profile_mod.load_profile("h100")
    assert candidate is not committed
    assert candidate != committed     # s14gemm's candidate curves differ from the committed ones
    monkeypatch.setattr(profile_mod, "ADOPT_GEMM_LAYER_CLOCK", False)
    assert profile_mod.load_profile("h100") is committed
