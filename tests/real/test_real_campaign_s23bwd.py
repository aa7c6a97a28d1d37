"""real/campaigns/s23bwd.sh (issue 13: where bench-small's EP2 backward spends its host time): one part as a
CPU dry run on two gloo ranks (the tiny model), the probe's timed steps and its profiled step's GPU
activities with their launching host op, every row split fit."""

import csv

from tests.campaigns import dry_run


def test_s23bwd_campaign_bench_part_cpu_dry_run(tmp_path):
    d, log = dry_run("s23bwd", tmp_path, 120, S23BWD_PARTS="bench")
    assert "s23bwd part bench rc=0" in log and "part control" not in log, log[-2000:]
    with (d / "bench-small" / "pipeline_host.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # the EP2 step's forward, backward and gradient reduction, host-marked, fitting split only
    assert {(r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows} == {("1", "2", "1", "fit")}
    assert {r["rank"] for r in rows} == {"0", "1"}
    assert all(float(r["host_end_s"]) >= float(r["host_start_s"]) for r in rows)
    with (d / "bench-small" / "pipeline_kernel_events.csv").open(newline="") as f:
        events = list(csv.DictReader(f))
    assert any(r["event"] == "op_host" for r in events)        # each op's host range on the profiler's axis
    assert {r["num_gpus"] for r in events} == {"2"} and all(r["timestamp_utc"] and r["torch_version"] for r in events)
