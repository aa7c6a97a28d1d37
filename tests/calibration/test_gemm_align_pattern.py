"""calibration/gemm_align_pattern.py (session s23align2): the operand-pattern factors fitted on the
s23align records and judged on the s23align2 ones; on synthetic records in the campaign's schema
(times made from a known factor per pattern, so the fit must find them), then the committed table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from calibration import gemm_align_fit as gf
from calibration import records as rec
from calibration import gemm_align_pattern as gp
from real.bench import gemm_align as ga
from twin.costs import compute
from twin.costs.gemm_alignment import operand_alignments, pattern_key

TRUE = {"align1/a": 5.0, "align1/ab": 6.0, "align1/bc": 5.5, "align1/c": 8.0, "align1/abc": 7.0,
        "align2/a": 3.0, "align2/ab": 3.5, "align2/bc": 2.8, "align2/c": 2.6}


def _write(tmp_path, shape_set, folder):
    path = tmp_path / "h100" / folder
    path.mkdir(parents=True)
    with (path / "gemm_align.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ga.COLUMNS, extrasaction="ignore")
        w.writeheader()
        for name, split, o, i, t, pass_, prec in ga.cases(quick=False, shape_set=shape_set):
            d = ga.gemm_dims(pass_, t, o, i)
            flops = 2.0 * d["m"] * d["n"] * d["k"]
            factor = TRUE.get(pattern_key(operand_alignments(o, i, pass_)), 1.0)
            w.writerow({"layer": name, "split": split, "pass": pass_, "precision": prec, "tokens": t, "outputs": o,
                        "inputs": i, **d, "status": "ok" if prec == "bf16" else "refused",
                        "time_s": flops / 600e12 * factor if prec == "bf16" else "", "flops": flops,
                        "gpu_name": "NVIDIA H100 80GB HBM3", "torch_version": "2.11"})


def test_fit_recovers_the_pattern_factors_and_scores_fresh_shapes(tmp_path, monkeypatch):
    _write(tmp_path, "s23align", "s23align")
    monkeypatch.setattr(rec, "_ROOT", tmp_path)   # the records root gf.records reads (records_root)
    assert gp.fit_gpu("h100").get("held_out_ratio") is None      # no s23align2 records yet
    _write(tmp_path, "s23align2", "s23align2")
    fit = gp.fit_gpu("h100")
    # s23align has every pattern but both-odd (no layer with two odd widths)
    assert fit["factors"] == pytest.approx({k: v for k, v in TRUE.items() if k != "align1/abc"}, rel=1e-12)
    assert fit["fit_leave_one_layer_out"]["median_abs_error"] == pytest.approx(0.0, abs=1e-9)
    held = gp.with_patterns(gf.records("h100", gp.RECORDS2, gp.NEIGHBOUR2))
    errs = gp.ratio_errors(held, fit)
    assert len(errs) == fit["held_out_ratio"]["rows"] > 0
    # every fresh row but 2049 x 2049's (both odd: its family's factor, not 7.0) is exact
    both_odd = held[(held["family"] != "aligned")]["layer"].eq("square_2049").to_numpy()
    assert np.abs(errs[~both_odd]).max() < 1e-9 and np.abs(errs[both_odd]).min() > 0.01
    assert gf.fit_gpu("h200") is None and gp.fit_gpu("h200") is None


@pytest.fixture(scope="module")
def h100_pattern_fit():
    fit = gp.fit_gpu("h100")
    if fit is None:
        pytest.skip("no s23align H100 records")
    return fit


def test_committed_table_is_the_fit_of_the_committed_records(h100_pattern_fit):
    """twin/data/gemm_alignment.json's pattern_fits hold what calibration.gemm_align_pattern makes of
    the s23align records (no hand edits); the odd-output forward's kernel is the slowest."""
    committed = json.loads(gf.TABLE.read_text())["pattern_fits"]["h100"]
    assert committed["factors"] == pytest.approx(h100_pattern_fit["factors"], rel=1e-12)
    assert committed["family_factors"] == pytest.approx(h100_pattern_fit["family_factors"], rel=1e-12)
    f = h100_pattern_fit["factors"]
    assert f["align1/c"] == max(f.values()) and max(v for k, v in f.items() if k.startswith("align2")) < 4.0


def test_switch_follows_the_rule():
    """docs/notes/s23align2_rule.md, Outcome: the switch as the rule's verdict says."""
    assert compute.ADOPT_GEMM_ALIGNMENT_PATTERN is False


@pytest.fixture(scope="module")
def h100_fresh():
    held = gf.records("h100", gp.RECORDS2, gp.NEIGHBOUR2)
    if held.empty:
        pytest.skip("no s23align2 H100 records")
    return gp.with_patterns(held)


@pytest.mark.xfail(strict=True, reason="s23align2 held-out ratio (rule criterion 1), H100, 90 rows of 10 fresh misaligned "
                                       "layers: median 8.2%, P90 18.4% (29 within 5%, 55 within 10%); the factors read "
                                       "low on the smaller fresh layers (hidden 2560: -8..-18%; 3000 x 2049: -15%)")
def test_fresh_held_out_ratio_meets_the_rule(h100_pattern_fit):
    r = h100_pattern_fit["held_out_ratio"]
    assert r["median_abs_error"] <= 0.05 and r["p90_abs_error"] <= 0.10


def test_fresh_held_out_absolute_improves(h100_fresh):
    """Rule criterion 2 (H100): the twin's time on the fresh misaligned rows, 79.4% / 84.1% (median / P90
    |error|) without the pattern factor, 10.1% / 24.8% with it; the aligned rows' own median 16.0% (+5
    points allowed) and unchanged by the switch."""
    t = gp.twin_errors(h100_fresh, "h100")
    assert t["misaligned_with"]["median_abs_error"] < t["misaligned_without"]["median_abs_error"]
    assert t["misaligned_with"]["p90_abs_error"] < t["misaligned_without"]["p90_abs_error"]
    assert t["misaligned_with"]["median_abs_error"] <= t["aligned"]["median_abs_error"] + 0.05
    assert t["aligned_max_rel_change"] == 0.0
