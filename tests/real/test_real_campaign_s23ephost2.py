"""real/campaigns/s23ephost2.sh (issue 13): fresh EP2 steps beside PP2 forwards timed in the same run, as a
CPU dry run on two gloo ranks (the tiny model), and the script's models are calibration.ep_postsync's."""

import csv
import re
from pathlib import Path

from calibration import ep_postsync
from real.bench.records import PIPELINE_STEP_COLS
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s23ephost2.sh"


def test_s23ephost2_campaign_cpu_dry_run(tmp_path):
    """One part (the others run the same command): PP2 1f1b at 4 micro-batches (fit) first, then the EP2
    steps at 1, 2, 4 (held out), with the bench's environment columns and each op's host marks."""
    d, log = dry_run("s23ephost2", tmp_path, 120, S23EPHOST2_PARTS="bench-small")
    assert "s23ephost2 part bench-small rc=0" in log and "part v2-lite-slice" not in log, log[-2000:]
    with (d / "bench-small" / "pipeline_step.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == PIPELINE_STEP_COLS
    assert [(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("pipeline_step", "2", "1", "4", "fit"), ("ep_step", "1", "2", "1", "holdout"),
        ("ep_step", "1", "2", "2", "holdout"), ("ep_step", "1", "2", "4", "holdout")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    with (d / "bench-small" / "pipeline_ops.csv").open(newline="") as f:
        ops = list(csv.DictReader(f))
    assert {r["split"] for r in ops if r["pp"] == "2"} == {"fit"} and all(r["host_start_s"] for r in ops)
    assert "s23ephost2 done" in log


def test_s23ephost2_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s23ephost2", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "bench-small").exists()


def test_campaign_models_are_the_ones_calibration_reads():
    text = re.search(r'^MODELS="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    assert tuple((m, int(n)) for m, n in (c.split(":") for c in text.split())) == ep_postsync.OWN_RATE_MODELS
