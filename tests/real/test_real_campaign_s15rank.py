"""real/campaigns/s15rank.sh (issue 13: the records that judge the 4-GPU schedule ranking,
docs/notes/s15rank_rule.md): its two rounds on four gloo ranks (tiny model, DualPipe and DualPipeV at
4 micro-batches), each configuration on exactly its timed steps, the second round in the reverse
order, every row with the GPU's name and timestamp and the run's versions in its env file; and the
clean stop on a host with fewer than four GPUs."""

import csv
import json
from pathlib import Path

from tests.campaigns import dry_run, without_gpus


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s15rank_stops_cleanly_without_four_gpus(tmp_path):
    _, log = without_gpus("s15rank", tmp_path)
    assert "needs 4: nothing run" in log and "part" not in log
    assert not (tmp_path / "s15rank" / "round_a").exists()


def test_s15rank_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s15rank", tmp_path, 900, scale=6)
    for part in ("round_a", "round_b"):
        assert f"s15rank part {part} rc=0" in log, log[-2000:]
    order = {}
    for r in ("a", "b"):
        folder = d / f"round_{r}"
        steps = _rows(folder / "pipeline_step.csv")
        order[r] = [row["schedule"] for row in steps]
        assert all(row["reps"] == "3" and row["num_gpus"] == "4" and row["gpu_name"] and row["timestamp_utc"]
                   and row["torch_version"] and {"sm_clock_mhz", "cuda_version", "nccl_version"} <= set(row)
                   for row in steps)
        ops = _rows(folder / "pipeline_ops.csv")
        assert {int(o["rep"]) for o in ops} == {0, 1, 2} and {o["rank"] for o in ops} == {"0", "1", "2", "3"}
        assert all(o["host_start_s"] for o in ops)
        env = json.loads((folder / "env_pipeline_pp2ep2.json").read_text())
        assert env["torch_version"] and env["config"]["reps_min"] == 3 and env["config"]["whole_reps"]
    assert order["a"] == ["dualpipe", "dualpipev"] and order["b"] == ["dualpipev", "dualpipe"]
