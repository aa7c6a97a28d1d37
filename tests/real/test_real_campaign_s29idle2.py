"""real/campaigns/s29idle2.sh (issue 13: the first / last pipeline stages' kernels, a diagnosis profile): one part as a
CPU dry run on two gloo ranks (the tiny model, ZB1P at pp 2), the probe's timed steps with both ranks' host-marked ops
and its profiled step's events (kernels per op on a GPU), every row split fit; it stops cleanly without two GPUs."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s29idle2_part_cpu_dry_run(tmp_path):
    d, log = dry_run("s29idle2", tmp_path, 150, S29IDLE2_PARTS="qwen2moe-mla-slice")
    assert "s29idle2 part qwen2moe-mla-slice rc=0" in log and "part dsv2-slice" not in log, log[-2000:]
    with (d / "qwen2moe-mla-slice" / "pipeline_host.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["pp"], r["num_microbatches"], r["split"]) for r in rows} == {("2", "2", "fit")}
    assert {r["rank"] for r in rows} == {"0", "1"} and {"F", "B"} <= {r["kind"] for r in rows}
    # the profiled step's events (on a CPU no GPU kernels: each op's host range on the profiler's axis)
    with (d / "qwen2moe-mla-slice" / "pipeline_kernel_events.csv").open(newline="") as f:
        events = list(csv.DictReader(f))
    assert any(r["event"] == "op_host" for r in events)
    assert {r["num_gpus"] for r in events} == {"2"} and all(r["timestamp_utc"] and r["torch_version"] for r in events)
    assert "CUDA_VISIBLE_DEVICES=" in (d / "host_s29idle2.txt").read_text() and "s29idle2 done" in log


def test_s29idle2_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s29idle2", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "dsv2-slice").exists()
