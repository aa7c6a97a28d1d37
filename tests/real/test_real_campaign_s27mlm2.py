"""real/campaigns/s27mlm2.sh (docs/notes/s27mlm2_rule.md): the CPU dry run of one part on two gloo ranks
(real.fsdp_memory's FSDP2 step with per-op SAC, every step's row on both ranks, the environment and the
allocator setting in every row) and the clean stop without two GPUs. ~20 s of CPU: two gloo ranks each import
torch and set up FSDP2 (one part of four, five tiny steps)."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s27mlm2_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s27mlm2", tmp_path, 120, S27MLM2_PARTS=" e16 ")
    assert "s27mlm2 part e16 rc=0" in log, log[-2000:]
    assert "part n16" not in log   # the parts not asked for are not run
    rows = []
    for rank in (0, 1):
        with (d / "e16" / f"fsdp_memory_r{rank}.csv").open(newline="") as f:
            rows += list(csv.DictReader(f))
    assert [(r["rank"], r["step"]) for r in rows] == [(str(k), str(s)) for k in (0, 1) for s in range(1, 6)]
    assert all(r["status"] == "ok" and r["layers"] == "16" and r["world_size"] == "2" for r in rows)
    assert all(r["alloc_conf"] == "expandable_segments:True" and r["gpu_name"] and r["torch_version"]
               and r["timestamp_utc"] for r in rows)
    losses = [float(r["loss"]) for r in rows]
    assert all(5.0 < v < 8.0 for v in losses), losses   # ln(512) = 6.24 at the tiny model's start: a real step
    assert "s27mlm2 done" in log


def test_s27mlm2_stops_cleanly_without_two_gpus(tmp_path):
    d, log = without_gpus("s27mlm2", tmp_path)
    assert "needs 2: nothing run" in log and not (d / "e16").exists()
