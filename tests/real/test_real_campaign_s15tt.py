"""Campaign real/campaigns/s15tt.sh (the compiled torch_cp_scaling case at CP2/CP4/CP8 on one host):
its CPU dry run on two gloo ranks (the CP2 part runs the section under REAL_BENCH_CP_COMPILE and
records that PyTorch's CP needs CUDA; CP4 and CP8 are skipped), and a host without 8 GPUs, where it
runs nothing and exits 0."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = ROOT / "real/campaigns/s15tt.sh"


def test_campaign_dry_run_on_two_gloo_ranks(tmp_path):
    env = {**os.environ, "S15TT_QUICK": "1", "S15TT_QUICK_RANKS": "2", "PYTHON": FORKED_PY,
           "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(CAMPAIGN), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s15tt"
    cp2 = json.loads((out / "env_compiled_cp2.json").read_text())
    assert "CUDA" in cp2["torch_cp_skipped"] and cp2["world_size"] == 2
    log = (out / "s15tt.log").read_text()
    assert "part compiled cp2 exit 0" in log
    assert "the compiled CP4 part skipped" in log and "the compiled CP8 part skipped" in log
    assert "s15tt done" in log


def test_campaign_runs_nothing_without_eight_gpus(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi on the plain PATH: the campaign would run")
    env = {**os.environ, "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    env.pop("S15TT_QUICK", None)
    done = subprocess.run(["bash", str(CAMPAIGN), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s15tt"
    log = (out / "s15tt.log").read_text()
    assert "CP8 needs 8 on one host; nothing run" in log and "s15tt done" in log
    assert not list(out.glob("*.csv")) and not (out / "part_cp2").exists()
