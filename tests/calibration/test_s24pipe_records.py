"""The s24pipe records (calibration/measurements/h100/s24pipe/; docs/notes/s24pipe_rule.md): set E (bench-small and
mixtral-mla-slice at configurations no earlier record held) and the eager iteration priced as a launch/kernel
pipeline (timing.ADOPT_EAGER_PIPELINE). The candidate was not adopted: set E loses (17 -> 16 of 30) and the committed
sets lose; the strict xfail prints the live figures."""

import csv
import math

import pytest

from calibration import serve_pipeline as sp
from calibration.records_io import open_csv
from calibration.serve_host_speed import before_t
from calibration.serve_load_validation import FIGURES
from twin.serving import timing
from twin.serving.timing import engine_costs


@pytest.fixture(scope="module")
def fit_check():
    return sp.fit_check()


def test_set_e_holds_six_complete_held_out_runs_on_an_h100():
    for model in sp.FRESH_MODELS:
        with open_csv(sp.rec.MEASUREMENTS_DIR / "h100" / sp.NAME / model / "serve_load.csv") as f:
            runs = list(csv.DictReader(f))
        assert len(runs) == 3 and all(r["split"] == "holdout" and r["model"] == model for r in runs)
        assert all(r["num_completed"] == r["num_requests"] and r["truncated"] == "0" for r in runs)
        assert all(r["gpu_name"] == "NVIDIA H100 80GB HBM3" and r["torch_version"] and r["nccl_version"] for r in runs)


def test_the_operator_cost_is_s24eagers_median():
    c = sp.op_cost()
    assert c["real-serve-h100-ep1"] == pytest.approx(10.78e-6, rel=0.01)
    assert c["real-serve-h200-ep1"] == pytest.approx(11.27e-6, rel=0.01)


def test_the_pipeline_gives_the_host_paced_models_their_tail(fit_check):
    """The fitting records' tail after the last launch (duration_s - host_s): on mixtral (its expert GEMMs late in
    the forward) the pipeline gives 0.6-0.9 of it on every composition; on the Qwen models within 0.6 ms."""
    for r in fit_check:
        if r["model"] == "mixtral-mla-slice":
            assert 0.55 < r["pipeline_tail_s"] / r["measured_tail_s"] < 1.0, r
        elif r["model"] in ("qwen2moe-mla-slice", "qwen3moe-mla-slice"):
            assert abs(r["pipeline_tail_s"] - r["measured_tail_s"]) < 0.6e-3, r


def test_the_candidate_was_not_adopted_and_its_pipeline_is_on_only_as_part_of_t():
    """s24pipe's candidate (the pipeline with head-scaled scores) was not adopted: the scores stay off. The pipeline is
    on since s26start round 2 adopted T (its three switches, docs/notes/s26start2_rule.md); with T's switches off the
    tables carry no eager_op_s, as committed at s24pipe's time."""
    assert not timing.ADOPT_HEAD_SCALED_SCORES
    assert timing.ADOPT_EAGER_PIPELINE and "ADOPT_EAGER_PIPELINE" in timing.T_SWITCHES and all(getattr(timing, name) for name in timing.T_SWITCHES)
    with before_t():
        assert all(engine_costs(t)["eager_op_s"] == 0 for t in sp.ONE_GPU_TABLES)


@pytest.mark.xfail(strict=True, reason="s24pipe rule: set E 17 -> 16 of 30 checks, median 9.37% -> 11.35% (E1, E2 "
                                       "missed); the committed sets lose (held out 66 -> 54 of 80)")
def test_the_candidate_meets_its_rule_on_set_e():
    costs = sp.op_cost()
    rows = {}
    for on in (False, True):
        with sp.setting(on, costs):
            rows[on] = sp.fresh_rows()
    e = sp.fresh_criteria(rows[False], rows[True])
    (a, b) = e["all"]
    assert len(rows[True]) == 6 and all(math.isfinite(r[f"{k}_rel_error"]) for r in rows[True] for k in FIGURES)
    live = f"set E {a[0]} -> {b[0]} of 30, median {a[1]:.2%} -> {b[1]:.2%} ({e['criteria']})"
    print(live)
    assert e["met"], live
