"""real/campaigns/s33blind.sh (session s33blind): its train cases are the ones calibration.s33blind predicted, its
train part runs as a CPU dry run (the tiny model; the serve part is the cold part, whose dry run and cases
test_real_campaign_cold_host_steps.py holds), and without a GPU it runs nothing."""

import csv
import re
from pathlib import Path

from calibration import s33blind
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s33blind.sh"


def test_train_cases_are_the_preregistered_ones():
    text = SCRIPT.read_text()
    train = [(m, int(s), tuple(int(b) for b in bs.split(","))) for m, s, bs in
             (c.split(":") for c in re.search(r'^TRAIN="([^"]+)"', text, re.M)[1].split(";"))]
    assert tuple(train) == s33blind.TRAIN_CASES
    # 12 H200 rows: two precisions a case (BF16 and the device's FP8 label)
    assert sum(len(b) for _, _, b in s33blind.TRAIN_CASES) * 2 == 12
    # parts bounded: the serve part's 150 s (cold_host_steps.sh) and the train part's 100 s
    assert "timeout -k 5 $((100 * scale))" in text and "--budget-s 80" in text


def test_train_part_cpu_dry_run(tmp_path):
    """The train part alone (S33BLIND_PARTS=train) on the CPU: the tiny model's train_step rows with the bench's
    environment columns (~7 s wall, one process)."""
    d, log = dry_run("s33blind", tmp_path, 120, S33BLIND_PARTS="train")
    assert "s33blind part train rc=0" in log and "s33blind train done" in log, log[-2000:]
    assert not (d / "cold").exists()   # the serve part was not asked for
    with (d / "train" / "model.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["bench"], r["model"], r["seq_len"], r["batch"]) for r in rows][0] == ("train_step", "tiny", "32", "2")
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)


def test_s33blind_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s33blind", tmp_path)
    assert log.count("no GPU: nothing to run") == 2 and "s33blind train done" in log
    assert not (d / "cold").exists() and not (d / "train").exists()
