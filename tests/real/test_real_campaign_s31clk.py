"""real/campaigns/s31clk.sh (issue 13, the per-rank power-capped clock): its cases are calibration.s31clk's fresh set,
one part runs as a CPU dry run on two gloo ranks (the tiny model, DualPipeV at 4 micro-batches), and it stops cleanly
without two GPUs."""

import csv
import re
from pathlib import Path

from calibration import s31clk
from real.bench.records import PIPELINE_STEP_COLS
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s31clk.sh"


def test_campaign_cases_are_the_fresh_set():
    """PP's models and layers, the counts and the schedules are calibration.s31clk's; timeouts <= 270 s in all."""
    text = SCRIPT.read_text()
    cases = [c.split(":") for c in re.search(r'^PP="([^"]+)"', text, re.M)[1].split()]
    assert tuple((m, int(layers)) for m, layers, _, _ in cases) == s31clk.FRESH_CASES
    assert all(int(budget) < int(limit) for _, _, limit, budget in cases)   # the bench stops before its timeout
    assert sum(int(limit) for _, _, limit, _ in cases) <= 270
    assert re.search(r"^mbs=(\S+)", text, re.M)[1] == ",".join(map(str, s31clk.FRESH_MICROBATCHES))
    assert re.search(r"^schedules=(\S+)", text, re.M)[1] == ",".join(s31clk.SCHEDULES)


def test_s31clk_part_cpu_dry_run(tmp_path):
    """One part (phi35moe's; the others run the same command) on two gloo ranks: pipeline_step rows with the bench's
    environment columns and both ranks' ops."""
    d, log = dry_run("s31clk", tmp_path, 150, S31CLK_PARTS="phi35moe-slice")
    assert "s31clk part phi35moe-slice rc=0" in log, log[-2000:]
    assert "part llama3-8b-slice" not in log and not (d / "llama3-8b-slice").exists()
    with (d / "phi35moe-slice" / "pipeline_step.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == PIPELINE_STEP_COLS
    assert [(r["bench"], r["schedule"], r["pp"], r["num_microbatches"]) for r in rows] == [
        ("pipeline_step", "dualpipev", "2", "4")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    with (d / "phi35moe-slice" / "pipeline_ops.csv").open(newline="") as f:
        assert {r["rank"] for r in csv.DictReader(f)} == {"0", "1"}
    assert "CUDA_VISIBLE_DEVICES=" in (d / "host_s31clk.txt").read_text() and "s31clk done" in log


def test_s31clk_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s31clk", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not any((d / m).exists() for m, _ in s31clk.FRESH_CASES)


SCRIPT1 = REPO / "real/campaigns/s31clk1.sh"


def test_one_gpu_cases_are_the_predicted_ones():
    """s31clk1.sh's CASES are calibration.s31clk's ONE_GPU_CASES, at its micro-batch count; timeouts <= 225 s."""
    text = SCRIPT1.read_text()
    cases = [c.split(":") for c in re.search(r'^CASES="([^"]+)"', text, re.M)[1].split()]
    assert tuple((m, int(layers)) for m, layers, _, _ in cases) == s31clk.ONE_GPU_CASES
    assert all(int(budget) < int(limit) for _, _, limit, budget in cases)
    assert sum(int(limit) for _, _, limit, _ in cases) <= 225
    assert int(re.search(r"^mbs=(\S+)", text, re.M)[1]) == s31clk.ONE_GPU_MICROBATCHES


def test_s31clk1_part_cpu_dry_run(tmp_path):
    """The one-GPU part on one gloo rank (the tiny model): one ep_step row (pp 1, ep 1) with the bench's columns."""
    d, log = dry_run("s31clk1", tmp_path, 150, S31CLK1_PARTS="olmoe-slice")
    assert "s31clk1 part olmoe-slice rc=0" in log, log[-2000:]
    assert "part llama3-8b-slice" not in log
    with (d / "olmoe-slice" / "pipeline_step.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["bench"], r["pp"], r["ep"], r["num_gpus"], r["num_microbatches"]) for r in rows] == [
        ("ep_step", "1", "1", "1", "2")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    assert "s31clk1 done" in log


def test_s31clk1_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s31clk1", tmp_path)
    assert "0 GPUs, needs 1: nothing run" in log and not any((d / m).exists() for m, _ in s31clk.ONE_GPU_CASES)
