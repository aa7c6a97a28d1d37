"""calibration/gemm_align_fit.py (session s23align): the alignment-class factors from the campaign's
records, the form chosen by leave-one-layer-out, the held-out scores; on synthetic records written in
the campaign's schema (times made from a known factor per class, so the fit must find them)."""

from __future__ import annotations

import csv
import json

import pytest

from calibration import gemm_align_fit as gf
from calibration import records as rec
from real.bench import gemm_align as ga
from twin.costs import compute
from twin.costs.gemm_alignment import align_class

TRUE = {8: 1.0, 4: 1.2, 2: 1.6, 1: 2.5}
PASS_EXTRA = {"fwd": 1.0, "dgrad": 1.0, "wgrad": 1.0}


def _write(tmp_path, pass_extra=PASS_EXTRA):
    folder = tmp_path / "h100" / "s23align"
    folder.mkdir(parents=True)
    with (folder / "gemm_align.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ga.COLUMNS, extrasaction="ignore")
        w.writeheader()
        for name, split, o, i, t, pass_, prec in ga.cases(quick=False):
            d = ga.gemm_dims(pass_, t, o, i)
            flops = 2.0 * d["m"] * d["n"] * d["k"]
            cls = align_class(o, i)
            extra = pass_extra[pass_] if cls < 8 else 1.0
            w.writerow({"layer": name, "split": split, "pass": pass_, "precision": prec, "tokens": t, "outputs": o,
                        "inputs": i, **d, "status": "ok" if prec == "bf16" else "refused",
                        "time_s": flops / 600e12 * TRUE[cls] * extra if prec == "bf16" else "",
                        "flops": flops, "gpu_name": "NVIDIA H100 80GB HBM3", "torch_version": "2.11"})


def test_fit_recovers_the_class_factors(tmp_path, monkeypatch):
    _write(tmp_path)
    monkeypatch.setattr(rec, "_ROOT", tmp_path)   # the records root gf.records reads (records_root)
    df = gf.records("h100")
    assert set(df["precision"]) == {"bf16"} and df["ratio"].notna().all()
    fit = gf.fit_gpu("h100")
    assert fit["form"] == "class"          # the per-pass form gains nothing here
    assert {k: round(v, 6) for k, v in fit["factors"].items()} == {"1": 2.5, "2": 1.6, "4": 1.2}
    assert fit["held_out_ratio"]["median_abs_error"] == pytest.approx(0.0, abs=1e-9)
    # misaligned held-out layers: 7.1b up f10923/f10922, down f10923/f10922/f10924; 2049 x 2; vocab 50257
    assert fit["held_out_ratio"]["rows"] == (5 + 3) * len(ga.TOKENS) * len(ga.PASSES)
    tw = fit["held_out_twin"]
    assert tw["misaligned_with"]["rows"] == tw["misaligned_without"]["rows"] > 0
    assert gf.fit_gpu("h200") is None      # no records: no fit


def test_per_pass_form_is_taken_only_past_the_margin(tmp_path, monkeypatch):
    _write(tmp_path, {"fwd": 1.0, "dgrad": 1.3, "wgrad": 0.8})
    monkeypatch.setattr(rec, "_ROOT", tmp_path)   # the records root gf.records reads (records_root)
    fit = gf.fit_gpu("h100")
    assert fit["form"] == "class_pass"
    assert fit["factors"]["1/dgrad"] == pytest.approx(2.5 * 1.3) and fit["factors"]["2/wgrad"] == pytest.approx(1.6 * 0.8)
    lolo = fit["fit_leave_one_layer_out"]
    assert lolo["class_pass"]["median_abs_error"] <= lolo["class"]["median_abs_error"] - gf.CLASS_PASS_MARGIN


def test_choose_form_and_padded_ratio():
    lolo = lambda c, cp, r: {"class": {"median_abs_error": c}, "class_pass": {"median_abs_error": cp},  # noqa: E731
                             "rounded": {"median_abs_error": r}}
    assert gf.choose_form(lolo(0.10, 0.09, 0.5)) == "class"
    assert gf.choose_form(lolo(0.10, 0.08, 0.5)) == "class_pass"
    assert gf.choose_form(lolo(0.10, 0.08, 0.05)) == "rounded"
    assert gf.padded_ratio(2048, 5461) == pytest.approx(5464 / 5461)


@pytest.fixture(scope="module")
def h100_fit():
    fit = gf.fit_gpu("h100")
    if fit is None:
        pytest.skip("no s23align H100 records")
    return fit


def test_committed_table_is_the_fit_of_the_committed_records(h100_fit):
    """twin/data/gemm_alignment.json holds what calibration.gemm_align_fit makes of the records (no hand edits)."""
    committed = json.loads(gf.TABLE.read_text())["fits"]["h100"]
    assert committed["form"] == h100_fit["form"] == "class"
    assert committed["factors"] == pytest.approx(h100_fit["factors"], rel=1e-12)
    # the misaligned kernels (cutlass sm75 align1, sm80 align2) run at ~1/5 and ~1/3 of the aligned nvjet's rate
    assert 4.0 < h100_fit["factors"]["1"] < 6.0 and 2.5 < h100_fit["factors"]["2"] < 3.6


def test_switch_follows_the_rule():
    """docs/notes/s23align_rule.md, Outcome: criterion 1 fails (held-out ratio median 12.2%, P90 31.5%): off."""
    assert compute.ADOPT_GEMM_ALIGNMENT is False


@pytest.mark.xfail(strict=True, reason="s23align held-out ratio (rule criterion 1), H100: median 12.2%, P90 31.5% "
                                       "(class-1 layers whose output width alone is odd run slower than the fitted "
                                       "input-odd class 1: square_out2049 fwd -45%, vocab_50257 fwd -31..-39%)")
def test_held_out_ratio_meets_the_rule(h100_fit):
    r = h100_fit["held_out_ratio"]
    assert r["median_abs_error"] <= 0.05 and r["p90_abs_error"] <= 0.10


def test_held_out_absolute_improves(h100_fit):
    """Rule criterion 2 (H100): the twin's time on held-out misaligned rows, 73.3% / 81.8% (median / P90 |error|)
    without the factor, 15.3% / 33.5% with it; the aligned rows' own median 16.9% (+5 points allowed)."""
    t = h100_fit["held_out_twin"]
    assert t["misaligned_with"]["median_abs_error"] < t["misaligned_without"]["median_abs_error"]
    assert t["misaligned_with"]["p90_abs_error"] < t["misaligned_without"]["p90_abs_error"]
    assert t["misaligned_with"]["median_abs_error"] <= t["aligned"]["median_abs_error"] + 0.05
