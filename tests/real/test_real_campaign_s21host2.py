"""real/campaigns/s21host2.sh (session s21host2): section host_steps as a CPU dry run (tiny MLA and GQA
models, the cold part): every fitting repetition and every other serve step beside its own probe, the
control steps between them, the decode kernel count; and its cases string against the pre-registered
ones (calibration.prereg.S21HOST2)."""

import csv
import math
import os
import re
import statistics
import subprocess
from pathlib import Path

from calibration import prereg
from real.bench.whole_model import parse_serve_cases
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s21host2.sh"


def _campaign(tmp_path, gpus: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S21HOST2_QUICK": "1", "S21HOST2_QUICK_GPUS": str(gpus),
           "S21HOST2_PARTS": "cold", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=90)
    return tmp_path / "s21host2"


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_s21host2_campaign_cpu_dry_run(tmp_path):
    """The cold part writes the fitting host_dispatch rows with a probe per repetition, and per serve record
    its steps alternating control / probed (a probe on the probed ones only), the model.csv row = the probed
    steps' median, and a decode step's kernel count."""
    out = _campaign(tmp_path, 1)
    assert not (out / "repeat").exists()
    cold = out / "cold"
    model, hd, steps, kernels = (_rows(cold / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv",
                                                            "serve_kernels.csv"))
    assert [(r["bench"], r["model"], r["batch"], r["prompt_len"], r["gen_len"]) for r in model] == [
        ("prefill", "tiny", "2", "16", "0"), ("decode", "tiny", "2", "16", "10"), ("decode", "tiny-gqa", "2", "16", "10")]
    assert hd and all(r["phase"] == "infer" and r["split"] == "fit" for r in hd)
    reps = [s for s in steps if s["bench"] == "host_dispatch"]
    assert [(s["config"], s["precision"]) for s in reps] == [(r["config"], r["precision"]) for r in hd for _ in range(2)]
    assert all(s["block"] == "probed" and float(s["host_probe_launch_s"]) > 0 for s in reps)
    for r in model:
        mine = [s for s in steps if (s["bench"], s["model"], s["batch"], s["prompt_len"], s["gen_len"])
                == (r["bench"], r["model"], r["batch"], r["prompt_len"], r["gen_len"])]
        n = 4 if r["bench"] == "prefill" else 10 - 6
        assert [s["block"] for s in mine] == ["control", "probed"] * (n // 2)
        assert all(math.isnan(float(s["host_probe_launch_s"] or "nan")) == (s["block"] == "control") for s in mine)
        assert all(float(s["step_s"]) >= float(s["host_s"]) > 0 and s["torch_version"] for s in mine)
        probed = sorted(float(s["step_s"]) for s in mine if s["block"] == "probed")
        assert math.isclose(float(r["time_s"]), statistics.median(probed), rel_tol=1e-5)   # the csv keeps 6 digits
        if r["bench"] == "decode":
            assert [int(s["cache_len"]) for s in mine] == list(range(16 + 4, 16 + 4 + n))
    assert [(k["model"], int(k["aten_ops"]) > 0) for k in kernels] == [("tiny", True), ("tiny-gqa", True)]
    assert "s21host2 done" in (out / "log.txt").read_text()


def test_s21host2_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "cold").exists() and "no GPU: nothing to run" in (out / "log.txt").read_text()


def test_s21host2_campaign_cases_are_the_preregistered_ones():
    """The script's cases string and calibration.prereg.S21HOST2.cases (what was predicted) are the same list."""
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == list(prereg.S21HOST2.cases)


def test_s21host2b_back_to_back_block_after_the_decode_record(tmp_path):
    """real/campaigns/s21host2b.sh (diagnostic): after the decode record's alternating steps and its tail, the
    back-to-back steps (no probe), numbered on, their cache lengths continuing past the tail's."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S21HOST2B_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s21host2b.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=90)
    steps = [s for s in _rows(tmp_path / "s21host2b" / "cold" / "serve_steps.csv") if s["bench"] == "decode"]
    assert [s["block"] for s in steps] == ["control", "probed"] * 2 + ["back_to_back"] * 4
    assert [int(s["step"]) for s in steps] == list(range(8))
    assert [int(s["cache_len"]) for s in steps] == list(range(20, 24)) + list(range(26, 30))
    assert all(float(s["step_s"]) > 0 and not s["host_probe_launch_s"] for s in steps[4:])
