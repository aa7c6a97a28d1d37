"""real/campaigns/s22dg.sh and real/bench/deepgemm_masked.py (session s22dg): DeepGEMM's masked grouped
GEMM beside torch's, as a CPU dry run (no DeepGEMM here: its rows are skipped, the torch rows and the
schema are checked)."""

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from real.bench import deepgemm_masked as dm
from tests.campaigns import FORKED_PY   # the campaign's Python processes forked from the fork server (torch imported once)

REPO = Path(__file__).resolve().parents[2]


def _campaign(tmp_path, gpus: int, dg_dir: str):
    env = {**os.environ, "PYTHON": FORKED_PY, "S22DG_QUICK": "1", "S22DG_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s22dg.sh"), str(tmp_path), dg_dir], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return tmp_path / "s22dg"


def test_s22dg_campaign_cpu_dry_run_without_deepgemm(tmp_path):
    """Torch BF16 rows for every quick case and timing, every column, DeepGEMM skipped and logged."""
    out = _campaign(tmp_path, 1, str(tmp_path / "no_deepgemm_here"))
    with (out / "deepgemm_masked.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == dm.COLUMNS
        rows = list(reader)
    want = [(c[0], c[2], t) for c in dm.cases(quick=True) for t in dm.TIMINGS]
    assert [(r["shape"], int(r["expected_rows"]), r["timing"]) for r in rows] == want
    for r in rows:
        assert r["kernel"] == "torch_grouped_mm_bf16" and r["error"] == ""
        assert float(r["time_s"]) > 0 and float(r["time_p10_s"]) <= float(r["time_s"]) <= float(r["time_p90_s"])
        n, k = dm.QUICK_SHAPES_NK[r["shape"]]
        assert float(r["flops"]) == pytest.approx(2.0 * int(r["rows_sum"]) * n * k, rel=1e-5)
        assert json.loads(r["masked_rows_json"]) == [int(r["expected_rows"])] * int(r["groups"])
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["deepgemm_commit"] == ""
    log = (out / "log.txt").read_text()
    assert "DeepGEMM rows skipped" in log and "s22dg done" in log


def test_s22dg_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0, "")
    assert "nothing to run" in (out / "log.txt").read_text()
    assert not (out / "deepgemm_masked.csv").exists()


def test_grid_puts_ep144_first_and_pads_the_masked_rows():
    grid = dm.cases(quick=False)
    assert grid[0][:4] == ("gate_up", 2, 8, "equal") and {c[1] for c in grid[:2 * len(dm.EXPECTED_ROWS)]} == {2}
    scattered = [c for c in grid if c[3] == "scatter"]
    assert len(scattered) == len(dm.SCATTER_GROUPS) * 2 * len(dm.SCATTER_ROWS) * dm.SCATTER_DRAWS
    assert all(len(c[4]) == c[1] for c in scattered) and any(c[4] != [c[2]] * c[1] for c in scattered)
    assert dm.scatter_rows(2, 128, 0) == dm.scatter_rows(2, 128, 0)   # a fixed seed
    assert [dm.padded_m_max(r) for r in ([8], [128, 3], [129], [261, 250])] == [128, 128, 256, 384]
