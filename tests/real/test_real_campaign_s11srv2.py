"""real/campaigns/s11srv2.sh on CPU (tiny model, short): the shape and solo parts under both
CUDA_MODULE_LOADING settings, the rows carrying the setting they ran under."""

import csv
import os
import subprocess
from pathlib import Path

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s11srv2_campaign_shape_and_solo_parts_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "SRV2_DEVICE": "cpu", "SRV2_MODEL": "tiny", "SRV2_SHORT": "1",
           "SRV2_PARTS": "shape solo", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           # the GPU campaign's 100 s budget cut the last part's timeout on a CPU machine under load (s29ci: load ~10 on
           # two cores, 'solo lazy' stopped at 98 s); the dry run checks the parts, not the budget: 280 s, under the
           # subprocess's 300
           "SRV2_BUDGET_S": "280"}
    env.pop("CUDA_MODULE_LOADING", None)
    subprocess.run(["bash", str(REPO / "real/campaigns/s11srv2.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s11srv2"
    log = (d / "log.txt").read_text()
    for part in ("shape", "solo"):
        assert f"{part} lazy exit 0" in log and f"{part} eager exit 0" in log
    assert "ep skipped" in log and "s11srv2 end" in log and (d / "host.txt").exists()
    for setting, loading in (("lazy", "LAZY"), ("eager", "EAGER")):
        shape = _read(d / f"shape_{setting}" / "shapeprobe.csv")
        assert shape and {r["module_loading"] for r in shape} == {loading}
        assert all(float(r["init_s"]) > 0 and float(r["first_s"]) > 0 for r in shape)
        solo = _read(d / f"solo_{setting}" / "hostprobe_solo_r0.csv")
        assert solo and {r["module_loading"] for r in solo} == {loading}
        assert {r["phase"] for r in solo} == {"decode", "mixed"}
