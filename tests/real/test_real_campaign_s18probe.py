"""real/campaigns/s18probe.sh (issue 13: s17alt's interleaved run with a host-pace probe before every timed
cycle, real/pipeline/hostpace.py): on two gloo ranks, the tiny model, DualPipe and DualPipeV at 4
micro-batches, one pipeline_host_probe row per probe, timed cycle and rank, with the versions; the timed
steps as s17alt writes them; and the clean stop on a host without two GPUs."""

import csv

from real.bench.records import PIPELINE_HOST_PROBE_COLS, PIPELINE_INTERLEAVED_COLS
from tests.campaigns import dry_run, without_gpus


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s18probe_stops_cleanly_without_two_gpus(tmp_path):
    _, log = without_gpus("s18probe", tmp_path)
    assert "needs 2: nothing run" in log and "part" not in log
    assert not (tmp_path / "s18probe" / "interleaved").exists()


def test_s18probe_campaign_cpu_dry_run_probes_every_cycle_and_rank(tmp_path):
    d, log = dry_run("s18probe", tmp_path, 300, scale=4)
    assert "s18probe part interleaved rc=0" in log, log[-2000:]
    folder = d / "interleaved"
    with open(folder / "pipeline_host_probe.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == PIPELINE_HOST_PROBE_COLS
    probes = _rows(folder / "pipeline_host_probe.csv")
    steps = _rows(folder / "pipeline_interleaved.csv")
    with open(folder / "pipeline_interleaved.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == PIPELINE_INTERLEAVED_COLS
    cycles = sorted({int(r["cycle"]) for r in steps})
    assert cycles == list(range(len(cycles))) and len(cycles) >= 3
    # one launch and one python probe for every timed cycle on every rank, none else
    assert sorted((int(r["cycle"]), int(r["rank"]), r["probe"]) for r in probes) == [
        (c, rank, p) for c in cycles for rank in (0, 1) for p in ("launch", "python")]
    assert {(r["rank"], r["pp_rank"]) for r in probes} == {("0", "0"), ("1", "1")}
    for r in probes:
        assert float(r["us_per_call"]) > 0 and float(r["us_per_call_p50"]) > 0 and float(r["duration_s"]) > 0
        assert r["num_microbatches"] == "4" and r["split"] == "fit" and r["pp"] == "2"
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
        assert int(r["calls"]) == (128 if r["probe"] == "launch" else 8)
    # a probe's host time is its calls' (it adds no work beyond them)
    for r in probes:
        assert float(r["us_per_call"]) * int(r["calls"]) <= float(r["duration_s"]) * 1e6 * 1.001


# --host-probe without --interleave was refused until s26eprate; it now probes before each timed step of each
# configuration: tests/real/test_real_campaign_s26eprate.py
