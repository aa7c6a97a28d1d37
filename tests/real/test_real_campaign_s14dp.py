"""real/campaigns/s14dp.sh (issue 13: is the 4-GPU schedule ranking decidable): its two rounds on four
gloo ranks (tiny model, DualPipe and DualPipeV at 4 micro-batches), each configuration on exactly its
timed steps, the second round in the reverse order; and the clean stop on a host with fewer than
four GPUs."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s14dp_stops_cleanly_without_four_gpus(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi on the plain PATH: the campaign would run")
    env = {**os.environ, "PY": sys.executable, "PATH": "/usr/bin:/bin"}   # no nvidia-smi: 0 GPUs
    subprocess.run(["bash", str(REPO / "real/campaigns/s14dp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s14dp" / "s14dp.log").read_text()
    assert "needs 4: nothing run" in log and "part" not in log
    assert not (tmp_path / "s14dp" / "x4_a").exists()


def test_s14dp_campaign_cpu_dry_run(tmp_path):
    env = {**os.environ, "PY": sys.executable, "S14DP_TINY": "1", "S14DP_TIMEOUT_SCALE": "6",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s14dp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=900)
    d = tmp_path / "s14dp"
    log = (d / "s14dp.log").read_text()
    for part in ("round_a", "round_b"):
        assert f"s14dp part {part} rc=0" in log, log[-2000:]
    # the two rounds: the same configurations in reverse order, every row on its 3 timed steps
    order = {}
    for r in ("a", "b"):
        steps = _rows(d / f"x4_{r}" / "pipeline_step.csv")
        order[r] = [row["schedule"] for row in steps]
        assert all(row["reps"] == "3" and row["num_gpus"] == "4" and row["gpu_name"] and row["timestamp_utc"]
                   for row in steps)
        ops = _rows(d / f"x4_{r}" / "pipeline_ops.csv")
        assert {int(o["rep"]) for o in ops} == {0, 1, 2} and {o["rank"] for o in ops} == {"0", "1", "2", "3"}
        assert all(o["host_start_s"] for o in ops)
    assert order["a"] == ["dualpipe", "dualpipev"] and order["b"] == ["dualpipev", "dualpipe"]
