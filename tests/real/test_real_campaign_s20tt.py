"""real/campaigns/s20tt.sh (issue 14, torchtitan's 405B rows: torch's fused async-TP ops re-measured on
two GPUs with every operand filled): the CPU dry run (gloo ranks, --quick sizes) writes every op of
both sections with the async_tp schema and the environment columns every row must carry; the fused
symmetric-memory ops, CUDA only, as 'unavailable'."""

import csv
import os
import subprocess
from pathlib import Path

from real.bench.async_tp import QUICK_CASES, async_tp_split
from real.bench.records import DIST_ENV_COLS, ENV_COLS

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_writes_both_sections_on_two_ranks(tmp_path):
    env = {**os.environ, "S20TT_TINY": "1", "PY": FORKED_PY, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", str(REPO / "real/campaigns/s20tt.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    root = tmp_path / "s20tt"
    log = (root / "s20tt.log").read_text()
    assert "part x2 rc=0" in log and "s20tt done" in log
    with open(root / "x2" / "async_tp.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for col in ENV_COLS + DIST_ENV_COLS:
        assert col in rows[0]
    tags = {r["shape_tag"] for r in rows}
    assert {tag for tag, *_ in QUICK_CASES} <= tags and any(t.startswith("tiny405") for t in tags)
    assert {int(r["world_size"]) for r in rows} == {2}
    for r in rows:
        assert r["split"] == async_tp_split(r["shape_tag"])
        if r["op"] in ("fused", "p2p_copy", "mm_beside_copy"):   # symmetric memory: CUDA only
            assert r["status"] == "unavailable"
        else:
            assert r["status"] == "ok" and float(r["time_s"]) > 0
