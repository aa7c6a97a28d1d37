"""real/campaigns/s12ep2.sh (issue 13: the 2xH200 EP2 step's forward tail): its probe part on two
gloo ranks (tiny shapes), the EP2 configurations of s12ep's ep2 part under real.pipeline.probe
--kernel-events; the ep2 part is s12ep.sh's command (tests/real/test_real_pipeline.py runs it)."""

import csv
from tests.campaigns import dry_run


def test_s12ep2_campaign_probe_part_cpu_dry_run(tmp_path):
    d, log = dry_run("s12ep2", tmp_path, 300, S12EP2_PARTS="probe")
    assert "s12ep2 part probe rc=0" in log, log[-2000:]
    assert "part ep2" not in log                                  # S12EP2_PARTS chose the probe only
    with open(d / "probe" / "pipeline_host.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the EP2 configurations of s12ep's ep2 part, 2 micro-batches held out as there
    assert {(r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows} == {
        ("1", "2", "1", "fit"), ("1", "2", "2", "holdout"), ("1", "2", "4", "fit")}
    with open(d / "probe" / "pipeline_kernel_events.csv", newline="") as f:
        events = list(csv.DictReader(f))
    assert {r["num_microbatches"] for r in events} == {"1", "2", "4"}   # every configuration profiled
    assert {r["num_gpus"] for r in events} == {"2"} and all(r["timestamp_utc"] for r in events)
