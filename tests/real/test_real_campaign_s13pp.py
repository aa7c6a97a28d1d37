"""real/campaigns/s13pp.sh (issue 13: PP2 x EP2 on a 4-GPU host with the host's own probe, then
pinned with whole sets of timed steps): its three parts on four gloo ranks (tiny model, fewer
configurations), the clean stop on a host with fewer than four GPUs, and the bench's --whole-reps
rule (real.pipeline.bench.timed_reps)."""

import csv
import json
from pathlib import Path


from real.pipeline.bench import timed_reps
from tests.campaigns import dry_run, without_gpus


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_timed_reps_cuts_to_the_budget_or_skips_under_whole_reps():
    # enough steps for min_time_s, within [reps_min, reps_max]
    assert timed_reps(0.5, 100.0, 2.0, 3, 8) == 4
    assert timed_reps(0.5, 100.0, 0.0, 8, 8) == 8
    # the budget left holds 5 steps of 0.5 s: cut to 5 (at least 1 even with none left) ...
    assert timed_reps(0.5, 2.6, 0.0, 8, 8) == 5
    assert timed_reps(0.5, -1.0, 0.0, 8, 8) == 1
    # ... or, under --whole-reps, skipped (0): no row on fewer steps than asked
    assert timed_reps(0.5, 2.6, 0.0, 8, 8, whole=True) == 0
    assert timed_reps(0.5, -1.0, 0.0, 8, 8, whole=True) == 0
    assert timed_reps(0.5, 4.0, 0.0, 8, 8, whole=True) == 8


def test_s13pp_stops_cleanly_without_four_gpus(tmp_path):
    _, log = without_gpus("s13pp", tmp_path)
    assert "needs 4: nothing run" in log and "part" not in log
    assert not (tmp_path / "s13pp" / "x4").exists()


def test_s13pp_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s13pp", tmp_path, 900, scale=6)
    for part in ("probe", "unpinned", "pinned"):
        assert f"s13pp part {part} rc=0" in log, log[-2000:]
    # the probe's rows beside the unpinned steps, in the folder that becomes <gpu>x4/
    host = _rows(d / "x4" / "pipeline_host.csv")
    assert {(r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in host} == {("2", "2", "4", "fit")}
    assert {r["rank"] for r in host} == {"0", "1", "2", "3"}
    assert all(float(r["host_start_s"]) <= float(r["host_end_s"]) for r in host)
    steps = _rows(d / "x4" / "pipeline_step.csv")
    assert [(r["schedule"], r["num_microbatches"], r["split"], r["reps"]) for r in steps] == [
        ("dualpipe", "4", "fit", "5"), ("dualpipe", "8", "holdout", "5")]
    assert all(r["gpu_name"] and r["num_gpus"] == "4" and r["timestamp_utc"] for r in steps)
    ops = _rows(d / "x4" / "pipeline_ops.csv")
    assert {o["split"] for o in ops} == {"fit", "holdout"} and all(o["host_start_s"] for o in ops)
    # the pinned part: every row on exactly its 8 timed steps, each rank on its own CPUs
    pinned = _rows(d / "x4_pinned" / "pipeline_step.csv")
    assert [(r["schedule"], r["split"], r["reps"]) for r in pinned] == [("dualpipe", "holdout", "8")]
    assert {int(o["rep"]) for o in _rows(d / "x4_pinned" / "pipeline_ops.csv")} == set(range(8))
    cpus = json.loads((d / "x4_pinned" / "env_pipeline_pp2ep2.json").read_text())["pinned_cpus_by_rank"]
    assert len(cpus) == 4 and all(cpus)
    assert not json.loads((d / "x4" / "env_pipeline_pp2ep2.json").read_text())["pinned_cpus_by_rank"][0]
