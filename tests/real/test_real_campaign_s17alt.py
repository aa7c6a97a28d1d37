"""real/campaigns/s17alt.sh (issue 13: the schedules' steps timed side by side, docs/notes/s17alt_rule.md):
on a 4-GPU host PP2 x EP2 with the schedules interleaved (here four gloo ranks, the tiny model, DualPipe
and DualPipeV at 4 micro-batches): one pipeline_step row per configuration from its own timed steps, and
one pipeline_interleaved row per timed step, the two schedules' steps of a cycle sharing a pair_key in
the design's order, each step's loss that of its configuration; the versions in every row and the env
file; and the clean stop on a host without two GPUs."""

import csv
import json
from pathlib import Path

import pytest

from real.bench.records import PIPELINE_INTERLEAVED_COLS, PIPELINE_STEP_COLS
from real.pipeline import cycle_order
from tests.campaigns import dry_run, without_gpus


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s17alt_stops_cleanly_without_two_gpus(tmp_path):
    _, log = without_gpus("s17alt", tmp_path)
    assert "needs 2: nothing run" in log and "part" not in log
    assert not (tmp_path / "s17alt" / "interleaved").exists()


def test_s17alt_campaign_cpu_dry_run_on_four_ranks(tmp_path):
    d, log = dry_run("s17alt", tmp_path, 300, scale=4, S17ALT_GPUS="4")
    assert "s17alt part interleaved rc=0" in log, log[-2000:]
    folder = d / "interleaved"
    with open(folder / "pipeline_step.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == PIPELINE_STEP_COLS
    steps = _rows(folder / "pipeline_step.csv")
    assert [(r["schedule"], r["pp"], r["ep"], r["num_microbatches"], r["reps"]) for r in steps] == [
        ("dualpipe", "2", "2", "4", "4"), ("dualpipev", "2", "2", "4", "4")]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and {"nccl_version", "cuda_version"} <= set(r)
               for r in steps)
    with open(folder / "pipeline_interleaved.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == PIPELINE_INTERLEAVED_COLS
    each = sorted(_rows(folder / "pipeline_interleaved.csv"), key=lambda r: int(r["step_index"]))
    assert [int(r["step_index"]) for r in each] == list(range(8))
    # cycle c: one step of each schedule, in the design's order, sharing the cycle's pair_key
    names = ["dualpipe", "dualpipev"]
    assert [(r["cycle"], r["position"], r["schedule"]) for r in each] == [
        (str(c), str(p), name) for c in range(4) for p, name in enumerate(cycle_order(names, c))]
    assert all(r["pair_key"] == f"pp2ep2 n4 c{r['cycle']}" for r in each)
    for row in steps:   # the configuration's row is the median of its own steps; one loss throughout
        mine = [r for r in each if r["schedule"] == row["schedule"]]
        times = sorted(float(r["time_s"]) for r in mine)
        assert float(row["time_s"]) == pytest.approx((times[1] + times[2]) / 2, rel=1e-6)
        assert {r["loss"] for r in mine} == {row["loss"]}
    # both schedules compute the same batch on the same weights: the same loss
    assert float(steps[0]["loss"]) == pytest.approx(float(steps[1]["loss"]), rel=1e-5)
    assert not (folder / "pipeline_host_probe.csv").exists()   # the s18probe probe runs only when asked
    ops = _rows(folder / "pipeline_ops.csv")
    assert {o["rep"] for o in ops} == {"0", "1", "2", "3"} and {o["rank"] for o in ops} == {"0", "1", "2", "3"}
    env = json.loads((folder / "env_pipeline_pp2ep2.json").read_text())
    assert env["torch_version"] and env["config"]["interleave"] and env["config"]["whole_reps"]
