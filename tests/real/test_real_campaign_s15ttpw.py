"""Section copy_load (real/bench/copy_load.py) and its campaign real/campaigns/s15ttpw.sh on the CPU
with tiny shapes: the idle row, the copies alone at each side-stream count, then every kernel at
every count, with the copy_load schema and the environment every row must carry; and a host with no
GPU, where the campaign runs nothing and exits 0."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from real.bench import copy_load as cl
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "real/campaigns/s15ttpw.sh"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stream_counts_start_with_the_kernel_alone():
    assert cl.COPY_STREAMS[0] == 0 and list(cl.COPY_STREAMS) == sorted(set(cl.COPY_STREAMS))


def test_campaign_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "S15TTPW_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(CAMPAIGN), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s15ttpw"
    log = (out / "s15ttpw.log").read_text()
    assert "part copy_load exit 0" in log and "s15ttpw done" in log
    rows = _rows(out / "copy_load.csv")
    assert list(rows[0]) == SHAPE_COLS["copy_load"] + STAT_COLS + ENV_COLS
    assert rows[0]["kernel"] == "idle"
    alone = [r for r in rows if r["kernel"] == "copies only"]
    assert sorted({int(r["copy_streams"]) for r in alone}) == list(cl.COPY_STREAMS[1:])
    assert all(float(r["copy_bytes_per_s"]) > 0 for r in alone)
    kernels = {r["kernel"] for r in rows} - {"idle", "copies only"}
    assert len(kernels) == 2   # off a GPU: the BF16 GEMM and FA2's forward (the FP8 GEMM needs CUDA)
    for k in kernels:
        counts = {int(r["copy_streams"]) for r in rows if r["kernel"] == k}
        assert counts == set(cl.COPY_STREAMS)
    for r in rows:
        assert r["torch_version"] and r["timestamp_utc"]
        if r["kernel"] not in ("idle", "copies only"):
            assert float(r["time_s"]) > 0 and int(r["calls_per_period"]) >= 1


def test_campaign_runs_nothing_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi on the plain PATH: the campaign would run")
    env = {**os.environ, "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    env.pop("S15TTPW_QUICK", None)
    done = subprocess.run(["bash", str(CAMPAIGN), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "s15ttpw" / "s15ttpw.log").read_text()
    assert "no GPU: nothing run" in log and not (tmp_path / "s15ttpw" / "copy_load.csv").exists()
