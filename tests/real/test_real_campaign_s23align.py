"""real/campaigns/s23align.sh and real/bench/gemm_align.py (session s23align): aligned and misaligned
GEMMs of a linear layer's three passes, as a CPU dry run (tiny shapes, host clock)."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from real.bench import gemm_align as ga
from tests.campaigns import FORKED_PY   # the campaign's Python processes forked from the fork server (torch imported once)

REPO = Path(__file__).resolve().parents[2]


def _campaign(tmp_path, gpus: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S23ALIGN_QUICK": "1", "S23ALIGN_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s23align.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return tmp_path / "s23align"


def test_s23align_campaign_cpu_dry_run(tmp_path):
    """A row per quick case in run order, every column, dims and alignments as the pass says."""
    out = _campaign(tmp_path, 1)
    with (out / "gemm_align.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ga.COLUMNS
        rows = list(reader)
    want = [(c[0], int(c[4]), c[5], c[6]) for c in ga.cases(quick=True)]
    assert [(r["layer"], int(r["tokens"]), r["pass"], r["precision"]) for r in rows] == want
    for r in rows:
        assert r["status"] in ("ok", "refused") and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
        if r["status"] == "refused":   # FP8 may refuse a shape; BF16 never does
            assert r["precision"].startswith("fp8") and r["error"]
            continue
        assert float(r["time_p10_s"]) <= float(r["time_s"]) <= float(r["time_p90_s"])
        m, n, k = int(r["m"]), int(r["n"]), int(r["k"])
        assert float(r["flops"]) == pytest.approx(2.0 * m * n * k)
        assert sorted((m, n, k)) == sorted((int(r["tokens"]), int(r["outputs"]), int(r["inputs"])))
    down_dgrad = next(r for r in rows if r["layer"] == "q_down_f21" and r["pass"] == "dgrad")
    # dx_TI = dy_TO @ w_OI: contraction over the 16 outputs, the 21-wide input gradient is the output
    assert (down_dgrad["n"], down_dgrad["k"], down_dgrad["align_a"], down_dgrad["align_c"]) == ("21", "16", "8", "1")
    assert "s23align done" in (out / "log.txt").read_text()


def test_s23align_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert "nothing to run" in (out / "log.txt").read_text()
    assert not (out / "gemm_align.csv").exists()


def test_alignment_and_kernel_names():
    assert [ga.align_elements(x) for x in (5456, 5460, 5462, 5461, 10922, 50257, 50304)] == [8, 4, 2, 1, 2, 1, 8]
    names = ["void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align2>(Params)",
             "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT"]
    assert ga.kernel_align(names) == "2" and ga.kernel_align(names[1:]) == ""
    assert ga.kernel_family(names) == "cutlass_sm80;nvjet"


def test_split_and_run_order():
    splits = {name: split for name, split, _, _ in ga.LAYERS}
    assert all(splits[n] == "fit" for n in splits if n.startswith("gpt1.7b") or n == "square_2048")
    assert all(splits[n] == "heldout" for n in splits if n.startswith(("gpt7.1b", "vocab", "square_")) and n != "square_2048")
    grid = ga.cases(quick=False)
    assert grid[0][4] == 3072 and len(grid) == len(ga.LAYERS) * len(ga.TOKENS) * (len(ga.PASSES) + len(ga.FP8_KINDS))
