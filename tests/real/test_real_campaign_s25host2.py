"""real/campaigns/s25host2.sh (session s25host2, docs/notes/s25host2_rule.md): section host_steps as a CPU dry run with
the probe after every timed step and fitting repetition (table step_after), and its cases string against the
pre-registered ones (calibration.prereg.S25HOST2)."""

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest

from calibration import prereg
from real.bench.whole_model import parse_serve_cases
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s25host2.sh"


def _campaign(tmp_path, gpus: int):
    # FORKED_PY: the campaign's `python -m real.bench` forked from the test run's server that imported torch once
    env = {**os.environ, "PYTHON": FORKED_PY, "S25HOST2_QUICK": "1", "S25HOST2_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=90)
    return tmp_path / "s25host2"


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    return _campaign(tmp_path_factory.mktemp("s25host2"), 1)


def test_s25host2_dry_run_brackets_every_step(dry_run):
    """Every serve_steps row (fitting repetitions, control and probed steps) has exactly one step_after row with the
    same key and a positive probe; the control steps still have no probe before them."""
    steps, after = _rows(dry_run / "cold" / "serve_steps.csv"), _rows(dry_run / "cold" / "step_after.csv")
    key = ("bench", "model", "batch", "prompt_len", "gen_len", "config", "phase", "precision", "step", "block")
    assert sorted(tuple(s[k] for k in key) for s in steps) == sorted(tuple(a[k] for k in key) for a in after)
    assert all(float(a["host_probe_after_s"]) > 0 and a["torch_version"] for a in after)
    blocks = {s["block"] for s in steps if s["bench"] in ("prefill", "decode")}
    assert blocks == {"control", "probed"}
    assert all(s["host_probe_launch_s"] == "" for s in steps if s["block"] == "control")
    assert {s["bench"] for s in steps} == {"host_dispatch", "prefill", "decode"}
    assert "s25host2 done" in (dry_run / "log.txt").read_text()


def test_s25host2_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "cold").exists() and "no GPU: nothing to run" in (out / "log.txt").read_text()


def test_s25host2_campaign_cases_are_the_preregistered_ones():
    """The script's cases string and calibration.prereg.S25HOST2.cases (what the grid predicts) are the same list."""
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == list(prereg.S25HOST2.cases)
