"""real/campaigns/s30dec.sh (session s30dec): section host_steps as a CPU dry run (the tiny model, control / probed
steps then back-to-back steps), the run on a host without a GPU, and its cases string against the pre-registered ones
(calibration.s30dec.CASES)."""

import csv
import os
import re
import subprocess
from pathlib import Path

from calibration import s30dec
from real.bench.whole_model import parse_serve_cases
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s30dec.sh"


def _campaign(tmp_path, gpus: int) -> Path:
    env = {**os.environ, "PY": FORKED_PY, "S30DEC_TINY": "1", "S30DEC_TINY_GPUS": str(gpus), "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=90)
    return tmp_path / "s30dec"


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_s30dec_campaign_cpu_dry_run(tmp_path):
    out = _campaign(tmp_path, 1)
    model = _rows(out / "cold" / "model.csv")
    assert [(r["bench"], r["model"], r["batch"], r["prompt_len"]) for r in model] == [
        ("prefill", "tiny", "2", "16"), ("decode", "tiny", "2", "16")]
    steps = [s for s in _rows(out / "cold" / "serve_steps.csv") if s["bench"] == "decode"]
    assert [s["block"] for s in steps] == ["control", "probed"] * 2 + ["back_to_back"] * 2
    assert all(float(s["step_s"]) > 0 and s["torch_version"] for s in steps)
    # the fitting repetitions each carry their own probe (what the judged ratio is fitted on)
    fit = [s for s in _rows(out / "cold" / "serve_steps.csv") if s["bench"] == "host_dispatch"]
    assert fit and all(float(s["host_probe_launch_s"]) > 0 for s in fit)
    log = (out / "s30dec.log").read_text()
    assert "s30dec part cold rc=0" in log and "s30dec done" in log
    assert (out / "host_s30dec.txt").exists()


def test_s30dec_campaign_without_a_gpu_runs_nothing(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "cold").exists() and "no GPU: nothing to run" in (out / "s30dec.log").read_text()


def test_s30dec_campaign_cases_are_the_preregistered_ones():
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == list(s30dec.CASES)
    rows = s30dec.case_rows()
    assert sum(r["bench"] == "decode" for r in rows) == 2 * 18 and sum(r["bench"] == "prefill" for r in rows) == 2 * 6
