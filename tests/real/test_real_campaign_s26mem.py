"""real/campaigns/s26mem.sh (docs/notes/s26mem2_rule.md): the CPU dry run on two gloo ranks (every stage
of real.runtime_memory recorded on both ranks, the environment in every row) and the clean stop
without two GPUs."""

import csv

from calibration.runtime_memory import STAGES
from tests.campaigns import dry_run, without_gpus


def test_s26mem_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s26mem", tmp_path, 120)
    assert "s26mem part runtime_memory rc=0" in log, log[-2000:]
    with (d / "runtime_memory.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["rank"], r["stage"]) for r in rows] == [(str(k), s) for k in (0, 1) for s in STAGES]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["world_size"] == "2" for r in rows)
    assert "s26mem done" in log


def test_s26mem_stops_cleanly_without_two_gpus(tmp_path):
    d, log = without_gpus("s26mem", tmp_path)
    assert "needs 2: nothing run" in log and not (d / "runtime_memory.csv").exists()
