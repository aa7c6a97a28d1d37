"""real/campaigns/s24sort.sh: its CPU dry run writes the sweep under OUTDIR/s24sort; without a GPU it runs nothing."""
import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.campaigns import FORKED_PY   # the campaign's Python processes forked from the fork server (torch imported once)

REPO = Path(__file__).resolve().parents[2]


def _run(out: Path, env_extra: dict) -> Path:
    env = {**os.environ, "PYTHON": FORKED_PY, "PYTHONPATH": str(REPO), **env_extra}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24sort.sh"), str(out)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    return out / "s24sort"


def test_dry_run_writes_the_sweep_with_its_environment(tmp_path):
    out = _run(tmp_path, {"S24SORT_QUICK": "1"})
    rows = list(csv.DictReader(open(out / "sort_sweep.csv")))
    assert len(rows) == 6 and {r["op"] for r in rows} == {"argsort", "index_put"}
    assert "sort_sweep exit 0" in (out / "log.txt").read_text()
    assert (out / "env_sort_sweep.json").is_file()


def test_no_gpu_runs_nothing(tmp_path):
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi on the plain PATH: the campaign would run")
    out = _run(tmp_path, {"PATH": "/usr/bin:/bin"})
    assert "no GPU: nothing to run" in (out / "log.txt").read_text()
    assert not (out / "sort_sweep.csv").exists()
