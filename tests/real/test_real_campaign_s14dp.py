"""real/campaigns/s14dp.sh (issue 13: is the 4-GPU schedule ranking decidable): its two rounds on four
gloo ranks (tiny model, DualPipe and DualPipeV at 4 micro-batches), each configuration on exactly its
timed steps, the second round in the reverse order; and the clean stop on a host with fewer than
four GPUs."""

import csv
from pathlib import Path
from tests.campaigns import dry_run, without_gpus


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s14dp_stops_cleanly_without_four_gpus(tmp_path):
    _, log = without_gpus("s14dp", tmp_path)
    assert "needs 4: nothing run" in log and "part" not in log
    assert not (tmp_path / "s14dp" / "x4_a").exists()


def test_s14dp_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s14dp", tmp_path, 900, scale=6)
    for part in ("round_a", "round_b"):
        assert f"s14dp part {part} rc=0" in log, log[-2000:]
    # the two rounds: the same configurations in reverse order, every row on its 3 timed steps
    order = {}
    for r in ("a", "b"):
        steps = _rows(d / f"x4_{r}" / "pipeline_step.csv")
        order[r] = [row["schedule"] for row in steps]
        assert all(row["reps"] == "3" and row["num_gpus"] == "4" and row["gpu_name"] and row["timestamp_utc"]
                   for row in steps)
        ops = _rows(d / f"x4_{r}" / "pipeline_ops.csv")
        assert {int(o["rep"]) for o in ops} == {0, 1, 2} and {o["rank"] for o in ops} == {"0", "1", "2", "3"}
        assert all(o["host_start_s"] for o in ops)
    assert order["a"] == ["dualpipe", "dualpipev"] and order["b"] == ["dualpipev", "dualpipe"]
