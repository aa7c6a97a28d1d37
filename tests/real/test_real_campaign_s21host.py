"""real/campaigns/s21host.sh (session s21host): section host_input as a CPU dry run (tiny MLA and GQA
models, two processes: cold and repeat), every record beside its host probe, and its cases string
against the pre-registered ones (calibration.prereg.S21HOST)."""

import csv
import os
import re
import subprocess
from pathlib import Path

from calibration import prereg
from tests.campaigns import FORKED_PY
from real.bench.whole_model import parse_serve_cases

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s21host.sh"


def _campaign(tmp_path, gpus: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S21HOST_QUICK": "1", "S21HOST_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=90)
    return tmp_path / "s21host"


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_s21host_campaign_cpu_dry_run(tmp_path):
    """Both parts write the fitting host_dispatch infer rows and the serve rows, and one probe row per
    record with the record's key, taken before it."""
    out = _campaign(tmp_path, 1)
    for part in ("cold", "repeat"):
        model, hd, probes = (_rows(out / part / f) for f in ("model.csv", "host_dispatch.csv", "host_probe.csv"))
        assert [(r["bench"], r["model"], r["batch"], r["prompt_len"], r["gen_len"]) for r in model] == [
            ("prefill", "tiny", "2", "16", "0"), ("decode", "tiny", "2", "16", "8"), ("decode", "tiny-gqa", "2", "16", "8")]
        assert hd and all(r["phase"] == "infer" and r["split"] == "fit" for r in hd)
        serve_probes = [p for p in probes if p["bench"] in ("prefill", "decode")]
        layer_probes = [p for p in probes if p["bench"] == "host_dispatch"]
        assert [(p["bench"], p["model"], p["batch"], p["prompt_len"], p["gen_len"]) for p in serve_probes] == [
            (r["bench"], r["model"], r["batch"], r["prompt_len"], r["gen_len"]) for r in model]
        assert [(p["config"], p["phase"], p["precision"]) for p in layer_probes] == [
            (r["config"], r["phase"], r["precision"]) for r in hd]
        for p in probes:
            assert float(p["host_probe_launch_s"]) > 0 and float(p["probe_window_s"]) > 0 and p["gpu_name"]
        for r, p in zip(model, serve_probes):
            assert p["timestamp_utc"] <= r["timestamp_utc"] and float(r["time_s"]) > 0 and r["torch_version"]
    assert "s21host done" in (out / "log.txt").read_text()


def test_s21host_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "cold").exists() and "no GPU: nothing to run" in (out / "log.txt").read_text()


def test_s21host_campaign_cases_are_the_preregistered_ones():
    """The script's cases string and calibration.prereg.S21HOST.cases (what was predicted) are the same list."""
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == list(prereg.S21HOST.cases)
