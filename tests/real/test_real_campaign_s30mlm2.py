"""real/campaigns/s30mlm2.sh (docs/notes/s30mlm_rule.md, "Round 2"): the CPU dry run (two gloo ranks under torchrun:
real.bench.tp_te_order at a tiny shape, two iterations a window) and the clean stop without two GPUs. ~6 s of CPU."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s30mlm2_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s30mlm2", tmp_path, 120)
    assert "s30mlm2 part te_order rc=0" in log, log[-2000:]
    for rank in (0, 1):   # one file a rank: each transfer alone, then every (GEMM, condition) once
        with (d / f"tp_te_order_rank{rank}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        conds = ("ce_alone", "rs_alone", "ag_alone", "alone", "ce", "rs", "ag")
        assert {(r["gemm"], r["condition"]) for r in rows} == {(g, c) for g in ("fc1_fprop", "fc2_fprop") for c in conds}
        assert all(r["campaign"] == "s30mlm2" and r["rank"] == str(rank) and r["world_size"] == "2" and r["gpu_name"]
                   and r["torch_version"] and r["timestamp_utc"] and r["nccl_channels"] == "16" for r in rows)
        ok = {r["condition"]: r for r in rows if r["status"] == "ok" and r["gemm"] == "fc1_fprop"}
        assert set(ok) == {"rs_alone", "ag_alone", "alone", "rs", "ag"}
        assert float(ok["alone"]["gemm_end_s"]) > 0 and float(ok["rs_alone"]["traffic_end_s"]) > 0
        assert float(ok["ag"]["gemm_end_s"]) > 0 and float(ok["ag"]["traffic_end_s"]) > 0 and int(ok["ag"]["iterations"]) == 2
        # no symmetric memory on a CPU run: the copy-engine rows say why, nothing timed
        assert all(r["status"] == "unavailable" and r["timing"] for r in rows if r["condition"].startswith("ce"))
    assert "s30mlm2 done" in log


def test_s30mlm2_stops_cleanly_without_two_gpus(tmp_path):
    d, log = without_gpus("s30mlm2", tmp_path)
    assert "needs 2: nothing run" in log and not list(d.glob("tp_te_order_*.csv"))
