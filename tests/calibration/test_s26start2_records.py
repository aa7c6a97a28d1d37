"""The s26start round-2 records (calibration/measurements/h200/s26start2/, docs/notes/s26start2_rule.md): one H200
delivery of 8 fitting load runs (fit/<model>/) and set I (v2-lite-slice, v3-slice-1l, bench-small at lengths, rates and
concurrencies no record held). T's host terms as committed (calibration/s26start2_fit.json, written by
`python -m calibration.serve_load_host fit --json`) refitted live from the fitting records; the judgement as committed
(calibration/s26start2_judgement.json, written by `python -m calibration.serve_load_host --json`): set I's criteria
recomputed from its rows, the guards' from their committed counts, one run replayed live under the committed twin
against its stored row, and the strict xfail printing the figures."""

import csv
import math
from pathlib import Path
from unittest import mock

import pytest

from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_load_host as slh
from calibration import serve_start_sync as ssy
from calibration.records_io import open_csv, read_json
from calibration.serve_load_validation import FIGURES
from tests.calibration.conftest import assert_complete_held_out_set
from twin.serving import timing

JUDGEMENT = Path(slh.__file__).resolve().parent / "s26start2_judgement.json"


@pytest.fixture(scope="module")
def judgement():
    return read_json(JUDGEMENT)


def test_the_delivery_holds_eight_complete_fitting_runs_and_six_held_out_runs_on_one_h200():
    assert_complete_held_out_set(slh.NAME, slh.FRESH_MODELS, runs_per_model=2, gpu="h200", gpu_name="NVIDIA H200")
    for model in slh.FIT_MODELS:
        with open_csv(rec.MEASUREMENTS_DIR / "h200" / slh.NAME / "fit" / model / "serve_load.csv") as f:
            runs = list(csv.DictReader(f))
        assert len(runs) == 2 and all(r["split"] == "fit" and r["model"] == model for r in runs)
        assert all(r["num_completed"] == r["num_requests"] and r["gpu_name"] == "NVIDIA H200" for r in runs)
    assert slh.fit_cards() == ["h200"] and slh.fit_run_count() == slh.FIT_RUNS


def test_the_committed_host_terms_are_the_fitting_runs_fit():
    """calibration/s26start2_fit.json is load_host_fit on the fitting records now (nothing of set I enters it), and
    the judgement was made under those terms."""
    committed = read_json(slh.FIT_FILE)["tables"]
    live = slh.load_host_fit()
    for t, terms in committed.items():
        for k in (*slh.TERMS, "sync_s"):
            assert live[t][k] == pytest.approx(terms[k], rel=1e-9), (t, k)
        assert live[t]["card"] == "h200"
    assert read_json(JUDGEMENT)["constants"] == committed


def test_the_committed_judgement_is_its_criteria(judgement):
    off, on = judgement["I"]["None"], judgement["I"][slh.JUDGED]
    assert len(off) == len(on) == slh.FRESH_RUNS and {r["gpu"] for r in off + on} == {"h200"}
    i = slh.fresh_criteria(off, on)
    assert {k: v for k, v in judgement["criteria"].items() if k.startswith("I")} == i["criteria"]
    sets = judgement["seen_sets"]
    assert set(sets) == set(slh.GUARD_LABELS)
    m = ssy.SET_MARGIN_CHECKS
    for label, (a, b) in sets.items():
        assert judgement["criteria"][f"K2_set_{label}_within_{m}"] == (b[0] >= a[0] - m)
    summ = {k: (v["committed"], v[slh.JUDGED]) for k, v in judgement["summary"].items()}
    k3 = ssy.committed_criteria({k: a for k, (a, _) in summ.items()}, {k: b for k, (_, b) in summ.items()})
    assert {k: v for k, v in judgement["criteria"].items() if k.startswith("K3")} == k3
    assert judgement["criteria"][f"fit_runs_{slh.FIT_RUNS}"] and judgement["incomplete"] == []
    assert judgement["passes"] == all(judgement["criteria"].values())
    assert judgement["adopt"] == (slh.JUDGED if judgement["passes"] else None)


def test_one_run_replayed_live_is_its_committed_row(judgement):
    run = "n26i-bench-poisson-r26-i"
    with ssy.setting(None), mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", False):   # as judged: every switch off
        live = seh.set_rows(slh.NAME, ("bench-small",), run_ids={run})
    assert len(live) == 1
    stored = next(r for r in judgement["I"]["None"] if r["run_id"] == run)
    for f in FIGURES:
        a, b = live[0][f"{f}_rel_error"], stored[f"{f}_rel_error"]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), f


def test_the_candidate_is_adopted_its_three_switches_on():
    assert all(getattr(timing, name) for name in timing.T_SWITCHES)
    assert set(timing.T_SWITCHES) == {"ADOPT_ENGINE_PREFILL_KERNELS", "ADOPT_EAGER_PIPELINE", "ADOPT_EAGER_START_SYNC"}


def test_candidate_t_meets_its_rule(judgement):
    """The rule's verdict (every criterion met): adopt T."""
    i = slh.fresh_criteria(judgement["I"]["None"], judgement["I"][slh.JUDGED])
    (a, b) = i["all"]
    assert i["met"] and b[0] > a[0] and b[1] < a[1], i["all"]
    assert judgement["adopt"] == slh.JUDGED and all(judgement["criteria"].values())


def test_the_tables_carry_t_and_the_three_switches_price_it(monkeypatch):
    """twin/data/serve_engines.toml's `start_sync` sections are the refit's terms and spread and the committed fit's
    five host terms; with the three switches on a one-GPU table prices with them (T as judged), with any off as
    committed; EP tables carry none."""
    from twin.core.specs import serve_engines
    adopted = slh.adopted_terms()
    for t, terms in adopted.items():
        assert serve_engines()[t][timing.ADOPTED_TERMS_KEY] == terms
    assert timing.ADOPTED_TERMS_KEY not in serve_engines()["real-serve-h100-ep2"]
    for name in timing.T_SWITCHES:
        monkeypatch.setattr(timing, name, False)
    committed = {t: timing.engine_costs(t) for t in adopted}
    for name in ("ADOPT_ENGINE_PREFILL_KERNELS", "ADOPT_EAGER_PIPELINE"):
        monkeypatch.setattr(timing, name, True)
    assert {t: timing.engine_costs(t) for t in adopted} == committed   # START_SYNC off: committed
    monkeypatch.setattr(timing, "ADOPT_EAGER_START_SYNC", True)
    for t, terms in adopted.items():
        got = timing.engine_costs(t)
        assert all(got[k] == terms[k] for k in (*slh.TERMS, "sync_s", "iteration_s", "eager_iteration_s"))
        assert timing.engine_spread(t).rows[True][0] == terms["spread"]["prompt"][0]
