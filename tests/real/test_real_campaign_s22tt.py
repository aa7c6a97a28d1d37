"""Section power_activity (real/bench/power_activity.py) and its campaign real/campaigns/s22tt.sh on the
CPU with tiny shapes: the idle row, then the BF16 GEMM on every data pattern at every duty target with
the duty_sweep schema and the environment every row must carry; the data patterns' bits; and a host
with no GPU, where the campaign runs nothing and exits 0."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from real.bench import power_activity as pa
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "real/campaigns/s22tt.sh"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_patterns_toggle_fewer_bits_in_order():
    gen = torch.Generator().manual_seed(1)
    shape = (64, 64)
    zeros = pa.pattern_tensor(shape, "zeros", "cpu", gen)
    pow2 = pa.pattern_tensor(shape, "pow2", "cpu", gen)
    half = pa.pattern_tensor(shape, "half_zeros", "cpu", gen)
    assert not zeros.any()
    # powers of two: BF16's 7 mantissa bits all zero, exponents 2^-4 .. 2^3
    bits = pow2.view(torch.int16).int() & 0x7F
    assert not bits.any() and pow2.abs().min() == 2.0 ** -4 and pow2.abs().max() == 2.0 ** 3
    assert 0.4 < (half == 0).float().mean() < 0.6
    with pytest.raises(ValueError, match="unknown data pattern"):
        pa.pattern_tensor(shape, "ones", "cpu", gen)


def test_targets_hold_one_capped_and_three_free_points():
    t = pa.POWER_ACTIVITY_TARGETS
    assert t[0] == 1.0 and all(x <= 0.42 for x in t[1:]) and len(t) == 4   # s14tt: free at duty <= 0.42


def test_campaign_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "S22TT_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(CAMPAIGN), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s22tt"
    log = (out / "s22tt.log").read_text()
    assert "part power_activity exit 0" in log and "s22tt done" in log
    rows = _rows(out / "duty_sweep.csv")
    assert list(rows[0]) == SHAPE_COLS["duty_sweep"] + STAT_COLS + ENV_COLS
    assert rows[0]["kernel"] == "idle"
    kernels = {r["kernel"] for r in rows[1:]}
    assert {k.rsplit("data=", 1)[1] for k in kernels} == set(pa.PATTERNS)   # off a GPU: no FP8 GEMM
    for k in kernels:
        assert {float(r["duty_target"]) for r in rows if r["kernel"] == k} == set(pa.POWER_ACTIVITY_TARGETS)
    for r in rows[1:]:
        assert 0.0 <= float(r["duty_frac"]) <= 1.0 and float(r["time_s"]) > 0
        assert r["precision"] == "bf16" and r["torch_version"] and r["timestamp_utc"]


def test_campaign_runs_nothing_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi on the plain PATH: the campaign would run")
    env = {**os.environ, "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    env.pop("S22TT_QUICK", None)
    done = subprocess.run(["bash", str(CAMPAIGN), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "s22tt" / "s22tt.log").read_text()
    assert "no GPU: nothing run" in log and not (tmp_path / "s22tt" / "duty_sweep.csv").exists()
