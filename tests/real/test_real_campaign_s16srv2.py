"""real/campaigns/s16srv2.sh on CPU (tiny model, short): real/serve/kernelmap.py names the kernels of every
2-D weight at every size 1..max once, ascending (no kernels on the CPU: the names stay empty there)."""

import csv
import os
import subprocess
from pathlib import Path
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def test_s16srv2_campaign_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S16SRV2_DEVICE": "cpu", "S16SRV2_MODEL": "tiny", "S16SRV2_SHORT": "1",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s16srv2.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    d = tmp_path / "s16srv2"
    log = (d / "log.txt").read_text()
    assert "kmap exit 0" in log and "s16srv2 end" in log and (d / "host.txt").exists()
    with open(d / "kmap" / "kernelmap.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    weights = {r["weight"] for r in rows}
    assert len(weights) > 3
    for w in weights:
        assert [int(r["m"]) for r in rows if r["weight"] == w] == list(range(1, 13))   # every size once, ascending
    assert all(int(r["num_kernels"]) >= 0 and int(r["n"]) > 1 and r["torch_version"] for r in rows)
