"""real/campaigns/s33bubble.sh (session s33bubble): its train cases are the ones calibration.s33bubble predicted, it
runs as a CPU dry run (the tiny model), and without a GPU it runs nothing."""

import csv
import re
from pathlib import Path

from calibration import s33bubble
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s33bubble.sh"


def test_train_cases_are_the_preregistered_ones():
    text = SCRIPT.read_text()
    train = [(m, int(s), tuple(int(b) for b in bs.split(","))) for m, s, bs in
             (c.split(":") for c in re.search(r'^TRAIN="([^"]+)"', text, re.M)[1].split(";"))]
    assert tuple(train) == s33bubble.TRAIN_CASES
    # 16 H200 rows: two precisions a case (BF16 and the device's FP8 label)
    assert sum(len(b) for _, _, b in s33bubble.TRAIN_CASES) * 2 == 16
    assert "timeout -k 5 $((100 * scale))" in text and "--budget-s 80" in text


def test_s33bubble_cpu_dry_run(tmp_path):
    """The tiny model's train_step rows with the bench's environment columns (~7 s wall, one process)."""
    d, log = dry_run("s33bubble", tmp_path, 120)
    assert "s33bubble part train rc=0" in log and "s33bubble done" in log, log[-2000:]
    with (d / "train" / "model.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["bench"], r["model"], r["seq_len"], r["batch"]) for r in rows][0] == ("train_step", "tiny", "32", "2")
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)


def test_s33bubble_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s33bubble", tmp_path)
    assert "no GPU: nothing to run" in log and "s33bubble done" in log
    assert not (d / "train").exists()
