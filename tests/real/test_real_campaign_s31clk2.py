"""real/campaigns/s31clk2.sh (issue 13, round 2): s31clk.sh at calibration.s31clk2's fresh set; one part runs as a CPU
dry run on two gloo ranks, and it stops cleanly without two GPUs."""

import csv
import re
from pathlib import Path

from calibration import s31clk2
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s31clk2.sh"


def test_campaign_cases_are_the_fresh_set():
    text = SCRIPT.read_text()
    cases = [c.split(":") for c in re.search(r'^PP="([^"]+)"', text, re.M)[1].split()]
    assert tuple((m, int(layers)) for m, layers, _, _ in cases) == s31clk2.FRESH_CASES
    assert all(int(budget) < int(limit) for _, _, limit, budget in cases)
    assert sum(int(limit) for _, _, limit, _ in cases) <= 270
    assert re.search(r"^mbs=(\S+)", text, re.M)[1] == ",".join(map(str, s31clk2.FRESH_MICROBATCHES))
    assert re.search(r"^schedules=(\S+)", (REPO / "real/campaigns/s31clk.sh").read_text(), re.M)[1] == ",".join(
        s31clk2.SCHEDULES)


def test_s31clk2_part_cpu_dry_run(tmp_path):
    """One part (v2-lite's) on two gloo ranks, under its own name: rows and both ranks' ops, the host file."""
    d, log = dry_run("s31clk2", tmp_path, 150, S31CLK2_PARTS="v2-lite-slice")
    assert "s31clk2 part v2-lite-slice rc=0" in log, log[-2000:]
    assert "part dsv2-slice" not in log and not (d / "dsv2-slice").exists()
    with (d / "v2-lite-slice" / "pipeline_step.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["schedule"], r["pp"], r["num_microbatches"]) for r in rows] == [("dualpipev", "2", "4")]
    with (d / "v2-lite-slice" / "pipeline_ops.csv").open(newline="") as f:
        assert {r["rank"] for r in csv.DictReader(f)} == {"0", "1"}
    assert "CUDA_VISIBLE_DEVICES=" in (d / "host_s31clk2.txt").read_text() and "s31clk2 done" in log


def test_s31clk2_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s31clk2", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not any((d / m).exists() for m, _ in s31clk2.FRESH_CASES)
