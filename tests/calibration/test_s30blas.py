"""calibration.s30blas (the s30blas probe's reduction, diagnosis only): per condition and run the eager prompt
iterations by first-met class with the host probe; checked live on the committed s19srv repeat records (the same plan,
as is), whose met iterations s30ep read as still falling over identical repeats."""

from pathlib import Path

import pytest

from calibration import s30blas
from calibration.serve_ep_residual import first_met_excess
from calibration.records_io import read_json

REPO = Path(__file__).resolve().parents[2]
S19 = REPO / "calibration/measurements/h200x2/s19srv_repeat"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    camp = tmp_path_factory.mktemp("s30blas")
    (camp / "default").symlink_to(S19, target_is_directory=True)
    return s30blas.summary(camp)


def test_summary_reads_each_condition_present_in_process_order(table):
    assert list(table) == ["default"]
    t = table["default"]
    assert list(dict.fromkeys(t.run_id)) == ["ep2rep-poisson-r4-long", *(f"ep2rep-poisson-r20-short-{k}" for k in
                                                                        range(1, 5)), "ep2rep-closed-c4-short"]
    assert list(dict.fromkeys(t.order)) == list(range(6))
    assert (t.probe_before_py_s > 0).all() and (t.decode_median_s > 0).all()


def test_summary_agrees_with_first_met_excess_and_shows_the_met_drift(table):
    t = table["default"].set_index(["run_id", "cls"])
    ref = first_met_excess(S19).set_index(["run_id", "cls"])
    assert (t.iterations == ref.iterations.loc[t.index]).all()
    assert t.excess_median_s.sub(ref.excess_median_s.loc[t.index]).abs().max() < 1e-12
    met = [t.excess_median_s[(f"ep2rep-poisson-r20-short-{k}", "met")] for k in range(2, 5)]
    assert met[0] > met[-1]   # s30ep section 5: the met iterations' excess falls over identical repeats


def test_committed_summary_is_what_the_committed_records_give():
    """calibration/s30blas_summary.json (written by `python -m calibration.s30blas --json`) recomputed live from
    h200x2/s30blas: both conditions, every (run, class) row, the same figures."""
    import math

    committed = read_json(REPO / "calibration/s30blas_summary.json")
    live = s30blas.summary(REPO / "calibration/measurements/h200x2/s30blas")
    assert set(committed) == set(live) == {"default", "nocache"}
    for cond, rows in committed.items():
        t = live[cond].to_dict("records")
        assert len(rows) == len(t)
        for a, b in zip(rows, t):
            assert (a["run_id"], a["cls"], a["iterations"]) == (b["run_id"], b["cls"], b["iterations"])
            assert math.isclose(a["excess_median_s"], b["excess_median_s"], rel_tol=1e-6, abs_tol=1e-9)   # to_json keeps 10 digits
