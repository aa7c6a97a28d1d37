"""real/campaigns/s15mla.sh (issue 13, s15mla): s14mla's protocol again (the held-out V2-Lite MLA
layer records in rotated rounds beside the fitting MLA host rows of the same process), run on the
CPU with tiny shapes; and its stop on a GPU that is not an H100."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from real.bench import mla_paired as mp
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def _script(tmp_path: Path) -> Path:
    script = (ROOT / "real/campaigns/s15mla.sh").read_text().replace("python3 -m", f"{FORKED_PY} -m")
    (tmp_path / "s15mla.sh").write_text(script)
    return tmp_path / "s15mla.sh"


def test_campaign_script_runs_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(_script(tmp_path)), str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "TWIN_TESTS_PYTHON": sys.executable,   # FORKED_PY runs it
                            "TWIN_FORK_SERVER": os.environ.get("TWIN_FORK_SERVER", ""),   # its fork server, if any
                            "S15MLA_QUICK": "1", "PYTHONPATH": str(ROOT),
                            "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "s15mla" / "log.txt").read_text()
    assert "mla_paired exit 0" in log and "layout rotated" in log and "load average" in log
    rows = list(csv.DictReader((out / "s15mla" / "mla_paired.csv").open()))
    hosts = [r for r in rows if r["bench"] == "host_dispatch"]
    records = [r for r in rows if r["bench"].startswith("mla_layer")]
    assert {r["phase"] for r in hosts} == {"fwd", "infer", "bwd"} and records
    assert all(float(r["host_s"]) > 0 for r in hosts) and all(float(r["time_s"]) > 0 for r in records)
    # every round holds the fitting rows and the records: the round-paired estimator's pairs
    rounds = list(range(mp.QUICK_ROUNDS))
    assert sorted({int(r["round"]) for r in records}) == rounds == sorted({int(r["round"]) for r in hosts})
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)


def test_campaign_stops_cleanly_without_an_h100(tmp_path):
    # no nvidia-smi on this PATH: GPU 0 is 'none', nothing runs, exit 0
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(_script(tmp_path)), str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "s15mla" / "log.txt").read_text()
    assert "not an H100: nothing run" in log and not (out / "s15mla" / "mla_paired.csv").exists()
