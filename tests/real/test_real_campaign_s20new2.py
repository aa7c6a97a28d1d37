"""real/campaigns/s20new2.sh (session s20new2): real/'s prefill and decode (bench_serve) on s20new's
MLA slices of other MoE families, as a CPU dry run on the tiny model, and its cases string against
the pre-registered ones (calibration.prereg.S20NEW2)."""

import csv
import os
import re
import subprocess
from pathlib import Path

from calibration import prereg
from real.bench.whole_model import SERVE_CASES, parse_serve_cases
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s20new2.sh"


def _campaign(tmp_path, gpus: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S20NEW2_QUICK": "1", "S20NEW2_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=60)
    return tmp_path / "s20new2"


def test_s20new2_campaign_cpu_dry_run(tmp_path):
    """The tiny model's prefill and decode rows at the dry run's cases (prompt 16, 8 generated, batch 2),
    with the bench's environment columns."""
    out = _campaign(tmp_path, 1)
    with (out / "model.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["bench"], r["model"], r["batch"], r["prompt_len"], r["gen_len"]) for r in rows] == [
        ("prefill", "tiny", "2", "16", "0"), ("decode", "tiny", "2", "16", "8")]
    for r in rows:
        assert r["precision"] == "bf16" and float(r["time_s"]) > 0
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
    assert (out / "env.json").is_file() and "s20new2 done" in (out / "log.txt").read_text()


def test_s20new2_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "model.csv").exists() and "no GPU: nothing to run" in (out / "log.txt").read_text()


def test_s20new2_campaign_cases_are_the_preregistered_ones():
    """The script's cases string and calibration.prereg.S20NEW2.cases (what was predicted) are the same list."""
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    got = [(m, P, G, tuple(pb), tuple(db)) for m, P, G, pb, db in parse_serve_cases(text)]
    assert got == list(prereg.S20NEW2.cases)


def test_parse_serve_cases():
    assert parse_serve_cases("a:1024:32:1,4:8; b:64:8::2;") == [("a", 1024, 32, [1, 4], [8]), ("b", 64, 8, [], [2])]


def test_serve_cases_default_unchanged():
    """Without REAL_BENCH_SERVE_CASES the bench serves the DeepSeek slices as before session s20new2."""
    assert SERVE_CASES == [("v2-lite-slice", 1024, 32, [1, 4, 16, 64], [1, 8, 32, 128, 256]),
                           ("v3-slice-2l", 1024, 32, [1, 4, 16], [1, 8, 32, 64, 128, 256])]
