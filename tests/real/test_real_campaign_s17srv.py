"""real/campaigns/s17srv.sh on CPU (tiny model, short): real/serve/shapeprobe.py --together, one row per size
(every 2-D weight called back to back, first pass and repeat), shuffled then ascending."""

import csv
import os
import subprocess
from pathlib import Path
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s17srv_campaign_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S17SRV_DEVICE": "cpu", "S17SRV_MODEL": "tiny", "S17SRV_SHORT": "1",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s17srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    d = tmp_path / "s17srv"
    log = (d / "log.txt").read_text()
    assert all(f"{p} exit 0" in log for p in ("tshuf", "tasc")) and "s17srv end" in log and (d / "host.txt").exists()
    for part, order in (("tshuf", "shuffled"), ("tasc", "ascending")):
        rows = _read(d / part / "shapeprobe.csv")
        ms = [int(r["m"]) for r in rows]
        assert {r["kind"] for r in rows} == {"together"} and {r["size_order"] for r in rows} == {order}
        assert sorted(ms) == list(range(1, 25)) and (ms == sorted(ms)) == (order == "ascending")
        assert all(float(r["first_s"]) > 0 and float(r["repeat_s"]) > 0 and r["torch_version"] for r in rows)
        assert {int(r["n"]) for r in rows} == {int(rows[0]["n"])} and int(rows[0]["n"]) > 1   # the weights per pass
