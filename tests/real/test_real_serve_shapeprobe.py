"""real/serve/shapeprobe.py (the s11srv campaign's probe of the first call of a GEMM shape) and
real/campaigns/s11srv.sh's shape part on CPU, both heuristics-cache settings."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from real.serve import shapeprobe

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sizes_are_distinct_and_in_range():
    s = shapeprobe.sizes(40, 64, seed=3)
    assert len(s) == len(set(s)) == 40 and min(s) >= 1 and max(s) <= 64
    assert shapeprobe.sizes(100, 10) and len(shapeprobe.sizes(100, 10)) == 10   # no more sizes than exist


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as e:
        shapeprobe.main(["--out", "x", "--max-size", "5000"])
    assert e.value.code == 2


def test_probe_times_every_weight_at_each_size(tmp_path):
    assert shapeprobe.main(["--out", str(tmp_path), "--device", "cpu", "--model", "tiny", "--sizes", "3",
                            "--max-size", "32", "--seconds", "30"]) == 0
    rows = _read(tmp_path / "shapeprobe.csv")
    orders = {int(r["order"]) for r in rows}
    assert orders == {0, 1, 2}
    lin = [r for r in rows if r["kind"] == "linear"]
    per_size = {o: {r["weight"] for r in lin if int(r["order"]) == o} for o in orders}
    assert per_size[0] and per_size[0] == per_size[1] == per_size[2]   # every 2-D weight at every size
    for r in rows:
        assert float(r["first_s"]) > 0 and float(r["repeat_s"]) > 0
        assert r["heuristics_cache"] == os.environ.get(shapeprobe.CACHE_ENV, "default")
        assert r["torch_version"] and r["timestamp_utc"] and r["split"] == "fit"
    for r in lin:   # M is the flat size, n x k the weight's shape
        assert 1 <= int(r["m"]) <= 32 and int(r["n"]) > 1 and int(r["k"]) > 1


def test_s11srv_campaign_shape_part_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S11_DEVICE": "cpu", "S11_MODEL": "tiny", "S11_SHORT": "1",
           "S11_PARTS": "shape", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s11srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s11srv"
    log = (d / "log.txt").read_text()
    assert "shape default exit 0" in log and "shape nocache exit 0" in log and "s11srv end" in log
    assert "ep skipped" in log and (d / "host.txt").exists()
    for setting, cache in (("default", "default"), ("nocache", "0")):
        rows = _read(d / f"shape_{setting}" / "shapeprobe.csv")
        assert rows and {r["heuristics_cache"] for r in rows} == {cache}
