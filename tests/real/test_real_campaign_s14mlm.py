"""real/campaigns/s14mlm.sh (issue 14, Megatron's TP 8 rows: NCCL's in-node collectives at 4 ranks
beside 2): the CPU dry run (gloo ranks, --quick sizes) writes both sweeps' rows with the nccl schema,
each at its world size, with the environment columns every row must carry."""

import csv
import os
import subprocess
from pathlib import Path

from real.bench.nccl import OPS
from real.bench.records import DIST_ENV_COLS, ENV_COLS

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_writes_both_sweeps(tmp_path):
    env = {**os.environ, "S14MLM_TINY": "1", "PY": FORKED_PY, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", str(REPO / "real/campaigns/s14mlm.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    root = tmp_path / "s14mlm"
    log = (root / "s14mlm.log").read_text()
    assert "part x4 rc=0" in log and "part x2 rc=0" in log and "s14mlm done" in log
    for world in (4, 2):
        with open(root / f"x{world}" / "nccl.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["op"] for r in rows} == set(OPS)
        assert {int(r["world_size"]) for r in rows} == {world}
        for col in ENV_COLS + DIST_ENV_COLS:
            assert col in rows[0]
        assert all(float(r["time_s"]) > 0 for r in rows)
