"""real/campaigns/s30mlm.sh (docs/notes/s30mlm_rule.md): the CPU dry run (two gloo ranks under torchrun:
real.bench.tp_traffic at a tiny shape, one window a condition) and the clean stop without two GPUs. ~6 s of
CPU: two ranks import torch."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s30mlm_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s30mlm", tmp_path, 120)
    assert "s30mlm part traffic rc=0" in log, log[-2000:]
    for rank in (0, 1):   # one file a rank, every (GEMM, condition) once, the traffic kinds named
        with (d / f"tp_traffic_rank{rank}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert {(r["gemm"], r["condition"]) for r in rows} == {
            (g, c) for g in ("fc1_fprop", "fc2_fprop") for c in ("alone", "ce", "rs", "ag")}
        assert all(r["campaign"] == "s30mlm" and r["rank"] == str(rank) and r["world_size"] == "2"
                   and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["nccl_channels"] == "16"
                   for r in rows)
        ok = [r for r in rows if r["status"] == "ok"]
        assert {r["condition"] for r in ok} == {"alone", "rs", "ag"} and all(float(r["gemm_time_s"]) > 0 for r in ok)
        assert all(float(r["traffic_time_beside_s"]) > 0 and int(r["traffic_calls"]) >= 2 and int(r["traffic_bytes"]) > 0
                   for r in ok if r["condition"] != "alone")
        # no symmetric memory on a CPU run: the copy-engine rows say why, nothing timed
        assert all(r["status"] == "unavailable" and r["timing"] for r in rows if r["condition"] == "ce")
    assert "s30mlm done" in log


def test_s30mlm_stops_cleanly_without_two_gpus(tmp_path):
    d, log = without_gpus("s30mlm", tmp_path)
    assert "needs 2: nothing run" in log and not list(d.glob("tp_traffic_*.csv"))
