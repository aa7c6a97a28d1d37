"""real/campaigns/s30dec2.sh (session s30dec2): s30dec.sh's CPU dry run under the s30dec2 names, and its cases string
against the pre-registered ones (calibration.s30dec2.CASES)."""

import csv
import os
import re
import subprocess
from pathlib import Path

from calibration import s30dec2
from real.bench.whole_model import parse_serve_cases
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s30dec2.sh"


def test_s30dec2_campaign_cpu_dry_run(tmp_path):
    env = {**os.environ, "PY": FORKED_PY, "S30DEC2_TINY": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=90)
    out = tmp_path / "s30dec2"
    with (out / "cold" / "model.csv").open() as f:
        model = list(csv.DictReader(f))
    assert [(r["bench"], r["model"]) for r in model] == [("prefill", "tiny"), ("decode", "tiny")]
    log = (out / "s30dec2.log").read_text()
    assert "s30dec2 part cold rc=0" in log and "s30dec2 done" in log
    assert (out / "host_s30dec2.txt").exists() and not (tmp_path / "s30dec").exists()


def test_s30dec2_campaign_cases_are_the_preregistered_ones():
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == list(s30dec2.CASES)
    rows = s30dec2.case_rows()
    assert sum(r["bench"] == "decode" for r in rows) == 18 and sum(r["bench"] == "prefill" for r in rows) == 6
