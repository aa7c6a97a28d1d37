"""real/campaigns/s30fb.sh (issue 13: DualPipeV's end-stage FB pairs by micro-batch count, a diagnosis profile): one
part as a CPU dry run on two gloo ranks (the tiny model, DualPipeV at pp 2), the probe's timed steps with both ranks'
host-marked ops (FB pairs among them) and its profiled step's events, every row split fit; it stops cleanly without
two GPUs."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s30fb_part_cpu_dry_run(tmp_path):
    d, log = dry_run("s30fb", tmp_path, 150, S30FB_PARTS="mixtral-mla-slice")
    assert "s30fb part mixtral-mla-slice rc=0" in log and "part dsv2-slice" not in log, log[-2000:]
    with (d / "mixtral-mla-slice" / "pipeline_host.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["pp"], r["num_microbatches"], r["split"]) for r in rows} == {("2", "4", "fit")}
    assert {r["rank"] for r in rows} == {"0", "1"} and "FB" in {r["kind"] for r in rows}
    # the profiled step's events (on a CPU no GPU kernels: each op's host range on the profiler's axis)
    with (d / "mixtral-mla-slice" / "pipeline_kernel_events.csv").open(newline="") as f:
        events = list(csv.DictReader(f))
    assert any(r["event"] == "op_host" for r in events)
    assert {r["num_gpus"] for r in events} == {"2"} and all(r["timestamp_utc"] and r["torch_version"] for r in events)
    assert "CUDA_VISIBLE_DEVICES=" in (d / "host_s30fb.txt").read_text() and "s30fb done" in log


def test_s30fb_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s30fb", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "dsv2-slice").exists()
