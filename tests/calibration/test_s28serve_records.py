"""The s28serve records (calibration/measurements/h200/s28serve/, docs/notes/s28serve_rule.md): set M on one H200
(bench-small, v2-lite-slice, v3-slice-1l, mixtral-mla-slice at Poisson 9/s and a closed loop of 3, recorded without
--timing) and bench-small's and v2-lite-slice's plans again with --timing (evidence). The judgement as committed
(calibration/s28serve_judgement.json, `python -m calibration.serve_floor_rejudge --json`): set M's criteria recomputed
from its rows, the guards from their committed counts with K1's committed margin, one run replayed live under the twin
in force against its stored row, and the verdict."""


import pytest

from calibration import records as rec
from calibration import serve_floor_rejudge as sfr
from calibration import serve_graph_floor as sgf
from calibration import serve_start_sync as ssy
from calibration.records_io import read_csv, read_json
from calibration.serve_load_validation import timed_run_ids
from tests.calibration.conftest import assert_complete_held_out_set, assert_live_row_is_committed
from twin.serving import timing

JUDGEMENT = sfr.NOISE_FILE.parent / "s28serve_judgement.json"


@pytest.fixture(scope="module")
def judgement():
    return read_json(JUDGEMENT)


def test_set_m_holds_eight_complete_held_out_runs_on_one_h200_and_the_timed_repeat():
    assert_complete_held_out_set(sfr.NAME, sfr.FRESH_MODELS, runs_per_model=2, gpu="h200", gpu_name="NVIDIA H200")
    assert_complete_held_out_set(f"{sfr.NAME}/timing", sfr.TIMED_MODELS, runs_per_model=2, gpu="h200",
                                 gpu_name="NVIDIA H200")
    for folder in sfr.FRESH_MODELS + sfr.TIMED_FOLDERS:
        its = read_csv(rec.MEASUREMENTS_DIR / "h200" / sfr.NAME / folder / "serve_iterations.csv",
                       usecols=["run_id", "host_s", "gpu_s"])
        timed = timed_run_ids(its.astype(str).to_dict("records"))
        assert len(timed) == (2 if folder.startswith("timing/") else 0), folder


def test_the_margin_and_the_term_are_the_committed_ones(judgement):
    noise = read_json(sfr.NOISE_FILE)
    assert judgement["K1_margin"] == noise["median_move"] == pytest.approx(0.00231, abs=1e-5)
    committed = read_json(sgf.FIT_FILE)["tables"]
    assert judgement["constants"][sgf.FIT_TABLE] == {sgf.TERM: committed[sgf.FIT_TABLE][sgf.TERM]}


def test_the_committed_judgement_is_its_criteria(judgement):
    off, on = judgement["J"]["None"], judgement["J"][sfr.JUDGED]
    assert len(off) == len(on) == sfr.FRESH_RUNS and {r["gpu"] for r in off + on} == {"h200"}
    j = {k.replace("I1_", "J1_").replace("I2_", "J2_"): v
         for k, v in sgf.slh.fresh_criteria(off, on, runs=sfr.FRESH_RUNS, models=sfr.FRESH_MODELS)["criteria"].items()}
    assert {k: v for k, v in judgement["criteria"].items() if k.startswith("J")} == j
    m = ssy.SET_MARGIN_CHECKS
    assert set(judgement["seen_sets"]) == set(sfr.GUARD_LABELS)
    for label, (a, b) in judgement["seen_sets"].items():
        assert judgement["criteria"][f"K2_set_{label}_within_{m}"] == (b[0] >= a[0] - m)
    (a, b) = judgement["pooled"]
    assert judgement["criteria"]["K1_pooled_no_fewer"] == (b[0] >= a[0])
    assert judgement["criteria"]["K1_pooled_median_within_noise"] == (b[1] <= a[1] + judgement["K1_margin"])
    summ = {k: (v["in_force"], v[sfr.JUDGED]) for k, v in judgement["summary"].items()}
    k3 = ssy.committed_criteria({k: a for k, (a, _) in summ.items()}, {k: b for k, (_, b) in summ.items()})
    assert {k: v for k, v in judgement["criteria"].items() if k.startswith("K3")} == k3
    assert judgement["incomplete"] == [] and judgement["passes"] == all(judgement["criteria"].values())
    assert judgement["adopt"] == (sfr.JUDGED if judgement["passes"] else None)
    assert judgement["seen_sets"]["E"][0] == judgement["seen_sets"]["E"][1]   # an H100 set: unchanged by construction


def test_one_run_replayed_live_is_its_committed_row(judgement):
    run = "n28m-mixtral-closed-c3-m"
    assert_live_row_is_committed(judgement, sfr.NAME, "mixtral-mla-slice", run)   # the twin in force, as judged


def test_v_h200_meets_its_rule_and_is_adopted(judgement):
    j = sgf.slh.fresh_criteria(judgement["J"]["None"], judgement["J"][sfr.JUDGED], runs=sfr.FRESH_RUNS,
                               models=sfr.FRESH_MODELS)
    (a, b), (pa, pb) = j["all"], judgement["pooled"]
    print(f"set M in force -> V-H200: checks {a[0]} -> {b[0]} of 40, median {a[1]:.2%} -> {b[1]:.2%}; sets A-H pooled "
          f"{pa[0]} -> {pb[0]}, median {pa[1]:.2%} -> {pb[1]:.2%} (margin {judgement['K1_margin'] * 100:.3f} points)")
    assert judgement["adopt"] == sfr.JUDGED and all(judgement["criteria"].values()), judgement["criteria"]
    assert timing.ADOPT_GRAPH_OP_FLOOR is True   # flipped as the rule says


def test_the_timed_repeat_is_kept_as_evidence_under_four_settings(judgement):
    assert set(judgement["timed"]) == set(sfr.EVIDENCE)
    assert all(len(rows) == 2 * len(sfr.TIMED_MODELS) for rows in judgement["timed"].values())
    assert timing.ADOPT_TIMING_INSTRUMENT is False   # evidence only: no criterion, the switch stays off
