"""real/campaigns/s16srv.sh on CPU (tiny model, short): its dense sweeps of real/serve/shapeprobe.py (2-D
weights only), every size once per weight, in the part's order (the ascending and descending parts; the
shuffled part is the same probe in shapeprobe's default order, its sizes checked here too)."""

import csv
import os
import subprocess
from pathlib import Path

from real.serve import shapeprobe
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sizes_in_each_order_are_the_same_sizes():
    up, down, mixed = (shapeprobe.sizes(10, 10, order=o) for o in ("ascending", "descending", "shuffled"))
    assert up == list(range(1, 11)) and down == up[::-1] and sorted(mixed) == up and mixed != up


def test_s16srv_campaign_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S16SRV_DEVICE": "cpu", "S16SRV_MODEL": "tiny", "S16SRV_SHORT": "1",
           "S16SRV_PARTS": "asc desc", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s16srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    d = tmp_path / "s16srv"
    log = (d / "log.txt").read_text()
    assert all(f"{p} exit 0" in log for p in ("asc", "desc")) and "shuf exit" not in log and "s16srv end" in log
    assert (d / "host.txt").exists()
    for part, order in (("asc", "ascending"), ("desc", "descending")):
        rows = _read(d / part / "shapeprobe.csv")
        assert rows and {r["kind"] for r in rows} == {"linear"} and {r["size_order"] for r in rows} == {order}
        weight = rows[0]["weight"]
        ms = [int(r["m"]) for r in rows if r["weight"] == weight]
        assert sorted(ms) == list(range(1, 25))   # every size once
        assert ms == sorted(ms, reverse=order == "descending")
        assert all(float(r["first_s"]) > 0 and float(r["repeat_s"]) > 0 and r["torch_version"] for r in rows)
