"""Profile.sustained_vs_curve and ADOPT_SUSTAINED_VS_CURVE (docs/notes/s25dense_rule.md): the simulation
profile scales a curve by its own time at the held shape over the held time where the switch names the GPU,
by sustained_curves' burst / held ratio otherwise."""

import dataclasses
import json

import pytest

from twin.costs import profile as profile_mod
from twin.costs.profile import default_profile, load_profile, profile_from_json

# class ratio 0.96; the BF16 curve's burst / held 0.90 and curve / held 0.95 (the H100's 0.902 / 0.953, rounded)
BASE = dataclasses.replace(default_profile(), gpu="h100", sustained={"gemm": 0.96, "attention": 0.9, "memory": 1.0},
                           sustained_curves={"gemm/bf16": 0.90}, sustained_vs_curve={"gemm/bf16": 0.95})


def test_the_ratio_against_the_curve_replaces_the_burst_one_only_where_asked():
    off, on = BASE.under_sustained_load(vs_curve=False), BASE.under_sustained_load(vs_curve=True)
    assert off.gemm["bf16"].e_max == pytest.approx(BASE.gemm["bf16"].e_max * 0.90)
    assert on.gemm["bf16"].e_max == pytest.approx(BASE.gemm["bf16"].e_max * 0.95)
    # every other curve at the class ratio either way
    for label in set(BASE.gemm) - {"bf16"}:
        assert on.gemm[label] == off.gemm[label]
        assert on.gemm[label].e_max == pytest.approx(BASE.gemm[label].e_max * 0.96)
    assert on.grouped_gemm == off.grouped_gemm and on.attention == off.attention
    # idempotent: the result carries no ratios
    assert on.sustained_vs_curve == {} and on.under_sustained_load(vs_curve=True) is on


def test_the_switch_names_gpus(monkeypatch):
    monkeypatch.setattr(profile_mod, "ADOPT_SUSTAINED_VS_CURVE", ("h200",))
    assert BASE.under_sustained_load() == BASE.under_sustained_load(vs_curve=False)
    monkeypatch.setattr(profile_mod, "ADOPT_SUSTAINED_VS_CURVE", ("h100",))
    assert BASE.under_sustained_load() == BASE.under_sustained_load(vs_curve=True)


def test_the_ratio_round_trips_through_the_profile_json():
    assert profile_from_json(json.loads(json.dumps(BASE.to_json()))).sustained_vs_curve == {"gemm/bf16": 0.95}
    assert "sustained_vs_curve" not in dataclasses.replace(BASE, sustained_vs_curve={}).to_json()


def test_load_profile_serves_each_setting(monkeypatch):
    """The committed H100 profile: its BF16 curve under the switch is 0.953 / 0.902 of today's (the
    ratios in its JSON), every other curve the same; the cache never serves one setting for the other. (s28tt2's
    ADOPT_SUSTAINED_FROM_HELD, which takes the held ratio over both, held off.)"""
    monkeypatch.setattr(profile_mod, "ADOPT_SUSTAINED_FROM_HELD", False)
    monkeypatch.setattr(profile_mod, "ADOPT_SUSTAINED_VS_CURVE", ())
    off = load_profile("h100")
    monkeypatch.setattr(profile_mod, "ADOPT_SUSTAINED_VS_CURVE", ("h100",))
    on = load_profile("h100")
    data = json.loads(profile_mod.PROFILES.joinpath("h100.json").read_text())
    want = data["sustained_vs_curve"]["gemm/bf16"] / data["sustained_curves"]["gemm/bf16"]
    assert on.gemm["bf16"].e_max / off.gemm["bf16"].e_max == pytest.approx(want)
    assert {k: v for k, v in on.gemm.items() if k != "bf16"} == {k: v for k, v in off.gemm.items() if k != "bf16"}
    monkeypatch.setattr(profile_mod, "ADOPT_SUSTAINED_VS_CURVE", ())
    assert load_profile("h100") is off
