"""calibration/deepgemm_masked_fit.py (docs/notes/s22dg_rule.md part A): the split is the rule's, the shipped
table is the fit of the committed records, and the held-out DeepGEMM rows against the ladder's targets."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from calibration import deepgemm_masked_fit as dmf
from calibration import records as rec
from calibration.records_io import read_csv
from twin.costs.masked_gemm import PARAM_NAMES

REPO = Path(__file__).resolve().parents[2]


def campaign_expected_rows() -> tuple:
    """EXPECTED_ROWS of real/bench/deepgemm_masked.py, read without importing torch."""
    tree = ast.parse((REPO / "real/bench/deepgemm_masked.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXPECTED_ROWS":
            return ast.literal_eval(node.value)
    raise AssertionError("no EXPECTED_ROWS")


def test_fit_split_is_the_campaigns_even_rows():
    assert dmf.FIT_EXPECTED_ROWS == campaign_expected_rows()[::2]
    row = {"layout": "equal", "expected_rows": "24"}
    assert dmf.is_fit_row(row)
    assert not dmf.is_fit_row({**row, "expected_rows": "32"})
    assert not dmf.is_fit_row({**row, "layout": "scatter"})


@pytest.fixture(scope="module")
def refit():
    return dmf.fit_all()


def test_shipped_table_is_the_fit_of_the_committed_records(refit):
    shipped = json.loads(dmf.TABLE.read_text())["fits"]
    assert set(shipped) == set(refit) and "h100" in shipped
    for gpu, by_timing in refit.items():
        for timing, f in by_timing.items():
            assert shipped[gpu][timing]["records_sha256"] == f["records_sha256"]
            for name in PARAM_NAMES:
                assert shipped[gpu][timing]["params"][name] == pytest.approx(f["params"][name], rel=1e-3)


def test_held_out_masked_rows_meet_the_ladders_targets(refit):
    """Rule A1 (docs/notes/s22dg2_rule.md): the H100's held-out DeepGEMM rows timed with L2 flushed (equal
    and scattered rows) within median 5% / P90 10%; the table the decode unit uses."""
    held = refit["h100"]["l2_flush"]["held_out"]
    assert held["rows"] >= 100
    assert held["median_abs_error"] <= 0.05 and held["p90_abs_error"] <= 0.10


def test_every_masked_kernel_config_computed_the_gemm():
    """Rule A2: each kernel config's first call against an FP32 product of the dequantized operands."""
    df = read_csv(rec.MEASUREMENTS_DIR / "h100" / dmf.RECORDS, keep_default_na=False)
    checked = df[(df["kernel"] == dmf.KERNEL) & (df["rel_error"] != "")]
    configs = {(r["n"], r["groups"], r["block_m"], r["block_n"]) for r in df[df["kernel"] == dmf.KERNEL].to_dict("records")}
    assert {(r["n"], r["groups"], r["block_m"], r["block_n"]) for r in checked.to_dict("records")} == configs
    assert checked["rel_error"].astype(float).max() < 2e-2
