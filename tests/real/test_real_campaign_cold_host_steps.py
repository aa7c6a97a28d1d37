"""The decode campaigns of issue 13 (real/campaigns/s29dec.sh, s29dec2.sh, s30dec.sh, s30dec2.sh;
s33blind.sh's serve part): each names its cases
and runs real/campaigns/cold_host_steps.sh, section host_steps in the cold process. The shared part's CPU dry run (the
tiny model: control / probed steps, then back-to-back steps) runs once, through one campaign; every campaign's run on a
host without a GPU (its names, and its dry-run switch reaching the part: the tiny cases in its log's first line), and
its cases string against the pre-registered ones (calibration.<name>.CASES). Until s31ci each campaign held a copy of
the part and its own test module ran the same dry run (four CPU dry runs of one command, names aside)."""

import csv
import importlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from real.bench.whole_model import parse_serve_cases
from tests.campaigns import FORKED_PY, without_gpus

REPO = Path(__file__).resolve().parents[2]
# campaign -> (decode records, prefill records) its cases give (calibration.<name>.case_rows: two leases before s30dec2)
CAMPAIGNS = {"s29dec": (2 * 16, 2 * 6), "s29dec2": (2 * 15, 2 * 5), "s30dec": (2 * 18, 2 * 6), "s30dec2": (18, 6),
             "s33blind": (18, 6)}
DRY_RUN = "s30dec2"   # the campaign whose CPU dry run stands for the part's (the last registered)


def _campaign(name: str, tmp_path: Path, gpus: int) -> Path:
    up = name.upper()
    env = {**os.environ, "PY": FORKED_PY, f"{up}_TINY": "1", f"{up}_TINY_GPUS": str(gpus), "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / f"real/campaigns/{name}.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=90)
    return tmp_path / name


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_the_parts_cpu_dry_run(tmp_path):
    out = _campaign(DRY_RUN, tmp_path, 1)
    model = _rows(out / "cold" / "model.csv")
    assert [(r["bench"], r["model"], r["batch"], r["prompt_len"]) for r in model] == [
        ("prefill", "tiny", "2", "16"), ("decode", "tiny", "2", "16")]
    steps = [s for s in _rows(out / "cold" / "serve_steps.csv") if s["bench"] == "decode"]
    assert [s["block"] for s in steps] == ["control", "probed"] * 2 + ["back_to_back"] * 2
    assert all(float(s["step_s"]) > 0 and s["torch_version"] for s in steps)
    # the fitting repetitions each carry their own probe (what the judged ratio is fitted on)
    fit = [s for s in _rows(out / "cold" / "serve_steps.csv") if s["bench"] == "host_dispatch"]
    assert fit and all(float(s["host_probe_launch_s"]) > 0 for s in fit)
    log = (out / f"{DRY_RUN}.log").read_text()
    assert log.startswith(f"{DRY_RUN} campaign ") and "cases tiny:16:10:2:2" in log.splitlines()[0]
    assert f"{DRY_RUN} part cold rc=0" in log and f"{DRY_RUN} done" in log
    assert (out / f"host_{DRY_RUN}.txt").exists() and [p.name for p in tmp_path.iterdir()] == [DRY_RUN]


def _cases(name: str) -> str:
    return re.search(r'^CASES="([^"]+)"', (REPO / f"real/campaigns/{name}.sh").read_text(), re.M)[1]


@pytest.mark.parametrize("name", CAMPAIGNS)
def test_without_a_gpu_each_campaign_runs_nothing_under_its_names(name, tmp_path):
    # as on a GPU host (no dry-run switch): its names, and its own cases handed to the part
    out, log = without_gpus(name, tmp_path / "plain")
    assert log.splitlines()[0].startswith(f"{name} campaign ") and log.splitlines()[0].endswith(f"cases {_cases(name)}")
    assert "no GPU: nothing to run" in log and f"{name} done" in log and not (out / "cold").exists()
    # its dry-run switches (<NAME>_TINY, <NAME>_TINY_GPUS) reach the part: the tiny cases, zero GPUs
    out = _campaign(name, tmp_path / "tiny", 0)
    first = (out / f"{name}.log").read_text().splitlines()[0]
    assert first.startswith(f"{name} campaign ") and first.endswith("0 GPU(s) visible, cases tiny:16:10:2:2"), first
    assert not (out / "cold").exists() and [p.name for p in out.parent.iterdir()] == [name]


@pytest.mark.parametrize("name", CAMPAIGNS)
def test_each_campaigns_cases_are_the_preregistered_ones(name):
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(_cases(name))]
    module = importlib.import_module(f"calibration.{name}")
    assert got == list(module.CASES)
    rows = module.case_rows()
    decode, prefill = CAMPAIGNS[name]
    assert sum(r["bench"] == "decode" for r in rows) == decode and sum(r["bench"] == "prefill" for r in rows) == prefill
