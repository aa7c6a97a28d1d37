"""real/campaigns/s21pp4b.sh (s21pp4's second delivery of its pp2ep2 rows, docs/notes/s21pp4_rule.md
addendum A): the CPU dry run on four gloo ranks (tiny model at 8 layers, two schedules), the clean
stop with fewer than four GPUs, and the script's models and schedules are the ones calibration.prereg_pp4
predicted at pp2ep2, each configuration on whole timed steps."""

import csv
import re
from pathlib import Path

from calibration import prereg_pp4
from real.pipeline.bench import layout_counts
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s21pp4b.sh"


def test_s21pp4b_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s21pp4b", tmp_path, 120, S21PP4B_PARTS="qwen3moe-mla-slice")
    assert "s21pp4b part qwen3moe-mla-slice rc=0" in log, log[-2000:]
    with (d / "qwen3moe-mla-slice" / "pipeline_step.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["pp"], r["ep"], r["dp"], r["schedule"], r["num_microbatches"], r["num_layers"]) for r in rows] == [
        ("2", "2", "2", "zb1p", "4", "8"), ("2", "2", "2", "dualpipe", "4", "8")]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
    assert "s21pp4b done" in log


def test_s21pp4b_stops_cleanly_without_four_gpus(tmp_path):
    d, log = without_gpus("s21pp4b", tmp_path)
    assert "needs 4: nothing run" in log and not (d / "qwen3moe-mla-slice").exists()


def test_s21pp4b_cases_are_the_preregistered_pp2ep2_ones():
    text = SCRIPT.read_text()
    models = re.search(r'^MODELS="([^"]+)"', text, re.M)[1]
    assert [(c.split(":")[0], int(c.split(":")[1])) for c in models.split()] == list(prereg_pp4.CASES)
    runs = re.search(r"^runs=\(([^)]+)\)", text, re.M)[1]
    assert re.search(r"--schedules (\S+)", runs)[1] == ",".join(prereg_pp4.SCHEDULES)
    assert "--whole-reps" in runs and "--reps-min 4 --reps-max 4" in runs
    assert layout_counts(re.search(r"--layout-microbatches (\S+)", runs)[1]) == {(2, 2): list(prereg_pp4.MICROBATCHES[2, 2])}
    assert re.search(r"--layouts (\S+)", text)[1] == "pp2ep2"
    assert sum(int(c.split(":")[2]) for c in models.split()) <= 150
