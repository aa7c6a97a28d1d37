"""real/campaigns/s22host2.sh (session s22host2): section host_steps as a CPU dry run (the tiny MLA model, the cold
part, back-to-back steps after the decode record), and its cases string against the pre-registered ones
(calibration.prereg.S22HOST2)."""

import csv
import os
import re
import subprocess
from pathlib import Path

from calibration import prereg
from real.bench.whole_model import parse_serve_cases
from tests.campaigns import FORKED_PY   # the campaign's Python processes forked from the fork server (torch imported once)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s22host2.sh"


def _campaign(tmp_path, gpus: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S22HOST2_QUICK": "1", "S22HOST2_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=90)
    return tmp_path / "s22host2"


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_s22host2_campaign_cpu_dry_run(tmp_path):
    """The cold part: a prefill and a decode record of the synchronised protocol (timing per_step_events on a GPU;
    the host clock on the CPU), the decode record's control / probed steps then its back-to-back steps."""
    out = _campaign(tmp_path, 1)
    model = _rows(out / "cold" / "model.csv")
    assert [(r["bench"], r["model"], r["batch"], r["prompt_len"]) for r in model] == [
        ("prefill", "tiny", "2", "16"), ("decode", "tiny", "2", "16")]
    steps = [s for s in _rows(out / "cold" / "serve_steps.csv") if s["bench"] == "decode"]
    assert [s["block"] for s in steps] == ["control", "probed"] * 2 + ["back_to_back"] * 2
    assert all(float(s["step_s"]) > 0 and s["torch_version"] for s in steps)
    assert "s22host2 done" in (out / "log.txt").read_text()


def test_s22host2_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "cold").exists() and "no GPU: nothing to run" in (out / "log.txt").read_text()


def test_s22host2_campaign_cases_are_the_preregistered_ones():
    """The script's cases string and calibration.prereg.S22HOST2.cases (what was predicted) are the same list."""
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == list(prereg.S22HOST2.cases)
