"""calibration/gemm_align_fit.py (session s23align): the alignment-class factors from the campaign's
records, the form chosen by leave-one-layer-out, the held-out scores; on synthetic records written in
the campaign's schema (times made from a known factor per class, so the fit must find them)."""

from __future__ import annotations

import csv

import pytest

from calibration import gemm_align_fit as gf
from real.bench import gemm_align as ga
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
    monkeypatch.setattr(gf, "MEASUREMENTS", tmp_path)
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
    monkeypatch.setattr(gf, "MEASUREMENTS", tmp_path)
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
