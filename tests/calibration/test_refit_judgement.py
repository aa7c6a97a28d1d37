"""s26refit's judgement (docs/notes/s26refit_rule.md), read from calibration/s26refit_judgement.json (written by
`python -m calibration.refit_judge ... --write` from two `twin validate --json` results): every row's verdict
recomputed from its figures, the verdict from the rows, the switch as the verdict says; and one breached row,
the H200 train steps, recomputed by today's code under the committed profile and under the candidate (the
committed profile with the judgement's candidate terms), so the file cannot go stale unseen."""

import json

import numpy as np
import pytest

from calibration import fit, refit_judge, s33bubble
from calibration import records as rec
from calibration.split import split
from calibration.validate import predict_cases
from calibration.records_io import read_json
from twin.costs.profile import profile_from_json

STALE = "rerun the commands in calibration/refit_judge.py's docstring with --write"


@pytest.fixture(scope="module")
def judgement():
    return read_json(refit_judge.JUDGEMENT)


def test_each_row_and_the_verdict_follow_from_the_figures(judgement):
    for part in ("c1", "c2", "g2"):
        for r in judgement[part]:
            if "median_rise_pp" not in r:   # a count that may not fall
                assert r["passes"] == (r["after"] >= r["before"]), r
                continue
            rise_m = (r["median_after"] - r["median_before"]) * 100
            rise_p = (r["p90_after"] - r["p90_before"]) * 100
            assert rise_m == pytest.approx(r["median_rise_pp"]) and rise_p == pytest.approx(r["p90_rise_pp"])
            keep_met = not r["name"].startswith("decode GEMMs")
            assert r["passes"] == refit_judge.row_passes(rise_m, rise_p, r["median_margin_pp"], r["p90_margin_pp"],
                                                         r["met_before"], r["met_after"], keep_met), r
    assert all(r["passes"] == (not r["breaches"]) for r in judgement["g1"])
    assert judgement["verdict"] == refit_judge.verdict(judgement)
    assert judgement["verdict"]["failed"] == {"c2": ["h200 ep_comm 2 GPU", "h200 mla_layer 1 GPU", "h200 train_step 1 GPU"]}
    assert fit.ADOPT_REFIT_ALL_RECORDS == judgement["verdict"]["adopt"] is False


def test_the_candidate_differs_only_in_the_terms_a_refit_moves(judgement):
    for gpu, terms in judgement["candidate_terms"].items():
        assert set(terms) == {"gather_eff", "quant_bytes_per_elem", "transpose_eff", "batched_gemm"}, gpu


def _train_steps(profile) -> tuple[float, float]:
    df = rec.load_records("h200")
    df = df[df["bench"] == "train_step"].reset_index(drop=True)
    cases, _ = predict_cases(df, "h200", profile)
    assert len(cases) == len(df) and split(df).all()   # every whole-model step is held out
    err = np.abs([c["rel_error"] for c in cases])
    return float(np.median(err)), float(np.percentile(err, 90))


def test_the_h200_train_steps_are_recomputed_as_judged(judgement):
    row = next(r for r in judgement["c2"] if r["name"] == "h200 train_step 1 GPU")
    committed = json.loads((fit.PROFILES_DIR / "h200.json").read_text())
    # the H200 train steps as judged: without s33bubble's kernel bubble (adopted since; it moves these rows alone)
    with s33bubble.candidate(False):
        before = _train_steps(profile_from_json(committed))
        after = _train_steps(refit_judge.with_terms(committed, judgement["candidate_terms"]["h200"]))
    assert before == pytest.approx((row["median_before"], row["p90_before"]), rel=1e-9), STALE
    assert after == pytest.approx((row["median_after"], row["p90_after"]), rel=1e-9), STALE
    assert not row["passes"] and row["median_rise_pp"] > refit_judge.KIND_MEDIAN_PP
