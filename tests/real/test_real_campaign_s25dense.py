"""real/campaigns/s25dense.sh (session s25dense): fresh dense BF16 GEMMs, linear-layer triples and an eager
MLP step, each timed as a burst, as a loop and held at the power limit (real.bench.dense_clock)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibration.records_io import read_csv
from real.bench import dense_clock as dc
from real.bench import gemm_align as ga

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path, gpus: str):
    env = {**os.environ, "PYTHON": sys.executable, "S25DENSE_QUICK": "1", "S25DENSE_QUICK_GPUS": gpus,
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s25dense.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return tmp_path / "s25dense"


def test_s25dense_campaign_needs_a_gpu(tmp_path):
    out = _run(tmp_path, "0")
    assert "nothing to run" in (out / "log.txt").read_text()
    assert not (out / "dense_clock.csv").exists()


def test_s25dense_dry_run_writes_every_phase(tmp_path):
    """The CPU dry run: each GEMM and triple timed as a loop and held in windows, the MLP step held (no
    burst or profiled kernels without a GPU), FLOPs of three GEMMs for a triple and nine for the MLP step,
    the environment in every row."""
    pd = pytest.importorskip("pandas")
    out = _run(tmp_path, "1")
    df = pd.read_csv(out / "dense_clock.csv")
    assert set(df["campaign"]) == {"s25dense"}
    assert set(zip(df["kind"], df["phase"])) == {("gemm", "loop"), ("gemm", "hold"), ("triple", "loop"),
                                                 ("triple", "hold"), ("mlp_step", "hold")}
    first = df.drop_duplicates("case").set_index("case")
    (_, m, n, k), (_, o, i, t), (_, tt, d, f) = dc.QUICK_GEMMS[0], dc.QUICK_TRIPLES[0], dc.QUICK_MLPS[0]
    assert first.loc["q_gemm", "flops"] == 2.0 * m * n * k
    assert first.loc["q_lin", "flops"] == 3 * 2.0 * o * i * t
    assert first.loc["q_mlp", "flops"] == 9 * 2.0 * tt * d * f
    assert (df.loc[df["phase"] == "hold", "window"] >= 1).all()
    assert df["torch_version"].notna().all() and df["gpu_name"].notna().all()


def _committed_gemm_shapes() -> set:
    """(m, n, k) of every dense GEMM the committed H100 records time (gemm.csv, s23align*, s24align3)."""
    root = REPO / "calibration/measurements/h100"
    g = read_csv(root / "gemm.csv")
    shapes = set(zip(g["m"], g["n"], g["k"]))
    for name in ("s23align", "s23align2", "s24align3"):
        a = read_csv(root / name / "gemm_align.csv")
        shapes |= set(zip(a["m"], a["n"], a["k"]))
    return {tuple(int(x) for x in s) for s in shapes}


def test_s25dense_shapes_are_fresh_and_aligned():
    """No GEMM of the campaign (alone, or one of a triple's three) was measured before, and every width is
    a multiple of 8 elements (the dense curve's kernels, not the cutlass fallbacks)."""
    seen = _committed_gemm_shapes()
    gemms = [(m, n, k) for _, m, n, k in dc.GEMMS]
    triples = [tuple(ga.gemm_dims(p, t, o, i)[x] for x in "mnk") for _, o, i, t in dc.TRIPLES for p in ga.PASSES]
    assert not set(gemms + triples) & seen
    assert all(ga.align_elements(x) == 8 for s in gemms + triples for x in s)
    assert len(dc.cases(quick=False)) == len(dc.GEMMS) + len(dc.TRIPLES) + len(dc.MLPS)
