"""ADOPT_SUSTAINED_FROM_HELD and Profile.sustained_held (docs/notes/s28tt2_rule.md): the H100 simulation
profile's dense BF16 sustained ratio as the median curve / held ratio over the fitting held GEMMs
(sustained.csv + s25dense), judged on held records the estimator never reads (s25dense2, its in-hold MLP step,
s24mlm, s25dense's triples). The committed judgement (calibration/s28tt2_judgement.json, written by
`python -m calibration.sustained_held --json ...`) plus one live recompute."""

import dataclasses
import json

import pytest

from calibration import sustained_held as sh
from calibration.records_io import read_json
from twin.costs import profile as profile_mod
from twin.costs.profile import default_profile

JUDGED = read_json(sh.JUDGEMENT)
BASE = dataclasses.replace(default_profile(), gpu="h100", sustained={"gemm": 0.96, "attention": 0.9, "memory": 1.0},
                           sustained_curves={"gemm/bf16": 0.90}, sustained_vs_curve={"gemm/bf16": 0.95},
                           sustained_held={"gemm/bf16": 0.93})


def test_the_held_ratio_replaces_the_burst_one_only_when_on():
    off, on = BASE.under_sustained_load(False, from_held=False), BASE.under_sustained_load(False, from_held=True)
    assert off.gemm["bf16"].e_max == pytest.approx(BASE.gemm["bf16"].e_max * 0.90)
    assert on.gemm["bf16"].e_max == pytest.approx(BASE.gemm["bf16"].e_max * 0.93)
    # over s25dense's one-shape ratio too, where both are on; every other curve at the class ratio
    assert BASE.under_sustained_load(True, from_held=True).gemm["bf16"] == on.gemm["bf16"]
    assert {k: v for k, v in on.gemm.items() if k != "bf16"} == {k: v for k, v in off.gemm.items() if k != "bf16"}
    assert on.sustained_held == {} and on.under_sustained_load(from_held=True) is on
    assert "sustained_held" not in dataclasses.replace(BASE, sustained_held={}).to_json()
    assert profile_mod.profile_from_json(json.loads(json.dumps(BASE.to_json()))).sustained_held == {"gemm/bf16": 0.93}


def test_the_h100_profile_under_the_held_ratio():
    """The committed H100 profile with sustained_held as held_terms gives it (not written into the committed
    JSON while the switch is off: a refit from the manifest would not reproduce it): its BF16 curve is
    sustained_held / sustained_curves of the switch-off one."""
    data = json.loads(profile_mod.PROFILES.joinpath("h100.json").read_text())
    prof = profile_mod.profile_from_json({**data, "sustained_held": sh.held_terms("h100")}).as_stack(True)
    off, on = prof.under_sustained_load(False, from_held=False), prof.under_sustained_load(False, from_held=True)
    want = sh.held_terms("h100")["gemm/bf16"] / data["sustained_curves"]["gemm/bf16"]
    assert on.gemm["bf16"].e_max / off.gemm["bf16"].e_max == pytest.approx(want)


def test_the_committed_ratio_is_the_fitting_sets_median_live():
    """Live: the 9 fitting GEMMs (sustained.csv's shape + s25dense's 8) give the profile's sustained_held and the
    judgement's; the held-out sets are not among them. The H200 has none."""
    rows = sh.fitting_rows("h100")
    print([round(r["ratio"], 3) for r in rows])
    assert len(rows) == 9 and {r["source"] for r in rows} == {"sustained.csv", "s25dense"}
    assert sh.held_terms("h100") == JUDGED["sustained_held"]
    assert 0.90 < JUDGED["sustained_held"]["gemm/bf16"] < 1.0
    assert sh.held_terms("h200") == {}


def test_criteria_1_to_4_on_the_held_out_records():
    """docs/notes/s28tt2_rule.md criteria 1-4 as the committed judgement holds them."""
    print({k: JUDGED[k] for k in JUDGED if k.startswith("H")})
    h1 = JUDGED["H1_s25dense2_gemms"]
    assert h1["on"]["median"] <= 0.04 and h1["on"]["p90"] <= 0.08 and h1["on"]["median"] < h1["off"]["median"]
    h2 = JUDGED["H2_in_hold_mlp_step"]
    assert abs(h2["on"]) <= 0.05 and abs(h2["on"]) < abs(h2["off"])
    assert all(abs(a) < abs(b) for a, b in zip(JUDGED["H3_s24mlm_hold"]["on"], JUDGED["H3_s24mlm_hold"]["off"]))
    assert JUDGED["H4_s25dense_triples"]["on"]["median"] < JUDGED["H4_s25dense_triples"]["off"]["median"]
    assert all(JUDGED["criteria"].values())


def test_the_judgement_is_live():
    """One cheap live recompute of the held-out figures (so the committed judgement cannot go stale)."""
    live = sh.judge("h100")
    assert live["criteria"] == JUDGED["criteria"]
    for key in ("H1_s25dense2_gemms", "H4_s25dense_triples"):
        for side in ("off", "on"):
            assert live[key][side] == pytest.approx(JUDGED[key][side])
    for side in ("off", "on"):
        assert live["H2_in_hold_mlp_step"][side] == pytest.approx(JUDGED["H2_in_hold_mlp_step"][side])
        assert live["H3_s24mlm_hold"][side] == pytest.approx(JUDGED["H3_s24mlm_hold"][side])


def test_guards_from_validate_off_and_on():
    """G1-G3 as the committed judgement holds them (from `twin validate --json` off and on): only simulation-
    profile sections moved, the serving hold-out within 3 points, the H800 pair and the published median small."""
    g = JUDGED["guards"]
    print({k: v for k, v in g.items() if k != "serve_load_holdout"})
    assert g["G1_only_simulation_figures"] and g["G2_serving_holdout"] and g["G3_sizes"]
    assert not any(c.startswith(("gpus", "cases", "pipelines")) for c in g["changed"])


def test_guards_name_a_fitted_profile_move():
    """guards() itself can fail: a moved `gpus` section or an H200 serving section breaks G1."""
    base = read_json(sh.JUDGEMENT)["guards"]   # only for its shape: build two minimal validate files
    runs = [{"split": "holdout", **{f"{f}_rel_error": 0.01 for f in sh.SERVE_FIGURES}}]
    figs = {f: {"median_abs_rel_error": 0.01} for f in sh.SERVE_FIGURES}
    serve = {g: {"runs": runs, "holdout": {"figures": figs}} for g in ("h100", "h100x2")}
    off = {"gpus": {"h100": 1}, "serve_load": serve, "published_runs": {"summary": {"median_abs_rel_error": 0.07,
           "num_within_row_target": 18}}, "h800_trace": {"chunk_pair": {"rel_error": 0.01}}}
    on = json.loads(json.dumps(off))
    on["published_runs"]["summary"]["median_abs_rel_error"] = 0.08
    assert sh.guards(off, on)["G1_only_simulation_figures"] and base
    on["gpus"]["h100"] = 2
    assert not sh.guards(off, on)["G1_only_simulation_figures"]


def test_not_landed_yet():
    """docs/notes/s28tt2_rule.md: criteria 1-4 and guards G1-G3 met (verdict adopt), but the switch stays off
    until the serving fits that read the simulation profile are regenerated (docs/notes/s28tt2.md section 4)."""
    assert profile_mod.ADOPT_SUSTAINED_FROM_HELD is False
