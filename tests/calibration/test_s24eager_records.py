"""The s24eager records (calibration/measurements/h100/s24eager/; docs/notes/s24eager_rule.md): the engine's eager
iteration host time on the four serve-fit models, the host term fitted from it, and set D (v2-lite-slice and
v3-slice-1l, models no earlier record held). The candidate (head-scaled scores + the measured launch floor) was not
adopted: its rule's guards fail; the strict xfail prints the live figures."""

import math
import re

import pytest

from calibration import serve_eager_host as seh
from calibration import serve_score_heads as ssh
from calibration.serve_load_validation import FIGURES
from real.serve.eagerhost import COMPOSITIONS, FIT_MODELS
from twin.serving import timing
from twin.serving.timing import engine_costs

TABLE = "real-serve-h100-ep1"


@pytest.fixture(scope="module")
def fit_rows():
    return seh.read_fit()


def test_the_fitting_records_hold_every_model_composition_and_round(fit_rows):
    assert {r["model"] for r in fit_rows} == set(FIT_MODELS)
    for model in FIT_MODELS:
        mine = [r for r in fit_rows if r["model"] == model]
        assert len(mine) == 4 * (len(COMPOSITIONS) + sum(1 for c in COMPOSITIONS if c[2]))   # 4 rounds, setups
        assert {r["round"] for r in mine} == {"0", "1", "2", "3"}
        assert all(r["gpu_name"] == "NVIDIA H100 80GB HBM3" and r["torch_version"] and r["cuda_version"]
                   and r["nccl_version"] and r["sm_clock_mhz"] for r in mine)
        assert all(0 < float(r["host_s"]) <= float(r["duration_s"]) for r in mine)
        assert all(7e-6 < seh.probe_s(r) < 13e-6 for r in mine)


def test_the_host_follows_the_operator_count_within_20_percent(fit_rows):
    """Host time per dispatched operator at the table's reference host: 9.9-11.8 us on every model (the engine's eager
    host follows its operator count; per layer the counts are 300-320, so layers stand in for it)."""
    table = engine_costs(TABLE)
    per_op = [m["host_per_op_s"] for m in seh.per_model(fit_rows, table, seh.fit_floor(fit_rows, table))]
    assert max(per_op) / min(per_op) < 1.2
    assert all(8e-6 < p < 14e-6 for p in per_op)


def test_the_fitted_term_predicts_the_fresh_models_eager_host_time(fit_rows):
    """Reported beside the rule (never a criterion): set D's eager prompt iterations' host_s over the fitted term at
    each run's probe, median 0.95 (v2-lite-slice, 4 layers) and 1.12 (v3-slice-1l), against 1.33 and 1.71 over the
    committed table's host terms."""
    table = engine_costs(TABLE)
    fit = seh.fit_floor(fit_rows, table)
    for model, (lo, hi) in {"v2-lite-slice": (0.85, 1.05), "v3-slice-1l": (1.02, 1.22)}.items():
        h = seh.load_run_host(seh.rec.MEASUREMENTS_DIR / "h100" / seh.NAME / model, model, fit, table)
        assert h["iterations"] > 150
        assert lo < h["over_fit"][0] < hi and h["over_table"][0] > 1.25


def test_the_candidate_is_off():
    assert not timing.ADOPT_HEAD_SCALED_SCORES and not timing.ADOPT_LAUNCH_FLOOR
    assert all(engine_costs(t)["launch_floor_eager_s"] == 0 for t in seh.ONE_GPU_TABLES)


# ---- the judgement (docs/notes/s24eager_rule.md, Outcome) -----------------------------------------------------
# Held in calibration/s24eager_judgement.json, written by the judge's own command (`python -m
# calibration.serve_eager_host --no-committed --json ...`): replaying sets A-D under both settings took 36-71 s of
# every CI run. The criteria and verdict are recomputed here from the stored rows; set D is replayed again under both
# settings (a few seconds) and must equal the stored rows, so the file cannot go stale silently.

@pytest.fixture(scope="module")
def judged():
    return seh.read_judgement()


def test_the_committed_judgement_holds_set_d_and_the_guard_sets(judged):
    assert judged["command"] == ("python -m calibration.serve_eager_host --no-committed --json "
                                 "calibration/s24eager_judgement.json")
    assert re.fullmatch("[0-9a-f]{40}", judged["code_commit"])   # a clean tree's commit
    names = ssh.REGISTRATIONS + ssh.EXTRA + (ssh.FRESH.name,)
    for setting in ("off", "on"):
        d, g = judged["rows"][setting]["D"], judged["rows"][setting]["guard"]
        assert len(d) == 6 and {r["registration"] for r in d} == {seh.NAME}
        assert all(math.isfinite(r[f"{k}_rel_error"]) for r in d for k in FIGURES)
        assert {r["registration"] for r in g} == set(names) and len(g) == 81
    assert [r["run_id"] for r in judged["rows"]["off"]["guard"]] == [r["run_id"] for r in judged["rows"]["on"]["guard"]]


def test_the_committed_judgement_is_its_criteria(judged):
    """The criteria and verdict recomputed from the stored rows are the stored ones."""
    rows = judged["rows"]
    d = seh.fresh_criteria(rows["off"]["D"], rows["on"]["D"])
    g = seh.guard_criteria(rows["off"]["guard"], rows["on"]["guard"])
    assert judged["criteria"] == {**d["criteria"], **g["criteria"]}
    assert (judged["D_met"], judged["guard_met"]) == (d["met"], g["met"])
    assert not judged["committed_sets"] and judged["adopt"] is False   # no adoption without the committed sets (G2)


def test_the_committed_judgement_is_the_codes_on_set_d(judged):
    """Set D replayed under the code as it is, under both settings, equals the stored rows figure for figure."""
    terms = seh.floor_terms()
    for setting, on in (("off", False), ("on", True)):
        with seh.setting(on, terms):
            live = seh.slim(seh.fresh_rows())
        assert live == [{k: v for k, v in r.items() if not k.endswith("_within_target")}
                        for r in judged["rows"][setting]["D"]], setting


@pytest.mark.xfail(strict=True, reason="s24eager rule: set D gains (18 -> 21 of 30 checks) but the guards on sets B "
                                       "and C (56 -> 55, 22 -> 19) and the pooled median (9.38% -> 9.84%) fail")
def test_the_candidate_meets_its_rule_on_set_d_and_the_guards(judged):
    rows = judged["rows"]
    d = seh.fresh_criteria(rows["off"]["D"], rows["on"]["D"])
    g = seh.guard_criteria(rows["off"]["guard"], rows["on"]["guard"])
    (da, db), (ga, gb) = d["all"], g["pooled"]
    live = (f"set D {da[0]} -> {db[0]} of 30, median {da[1]:.2%} -> {db[1]:.2%} ({d['criteria']}); guards "
            + ", ".join(f"{k} {x[0]} -> {y[0]}" for k, (x, y) in g["sets"].items())
            + f", pooled median {ga[1]:.2%} -> {gb[1]:.2%} ({g['criteria']})")
    print(live)
    assert d["met"] and g["met"], live
