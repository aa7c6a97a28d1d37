"""real/campaigns/s20ppnew.sh (session s20ppnew): real/pipeline's PP2 step of the slices of other MoE
families under the four schedules as a CPU dry run on two gloo ranks (the tiny model), and the
script's models, schedules and counts are the ones calibration.prereg_pp predicted."""

import csv
import re
from pathlib import Path

from calibration import prereg_pp
from real.bench.records import PIPELINE_STEP_COLS
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s20ppnew.sh"


def test_s20ppnew_campaign_cpu_dry_run(tmp_path):
    """One part (the first model's; the others run the same command) writes a pipeline_step row per
    schedule and count, with the bench's environment columns, and the ops each rank's idle is read from."""
    d, log = dry_run("s20ppnew", tmp_path, 120, S20PPNEW_PARTS="qwen3moe-mla-slice")
    assert "s20ppnew part qwen3moe-mla-slice rc=0" in log, log[-2000:]
    assert "part qwen2moe-mla-slice" not in log   # parts not asked for do not run
    with (d / "qwen3moe-mla-slice" / "pipeline_step.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == PIPELINE_STEP_COLS
    assert sorted((r["bench"], r["schedule"], r["pp"], r["ep"], r["num_microbatches"]) for r in rows) == sorted(
        ("pipeline_step", s, "2", "1", str(n)) for s in prereg_pp.SCHEDULES for n in prereg_pp.MICROBATCHES)
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
    with (d / "qwen3moe-mla-slice" / "pipeline_ops.csv").open(newline="") as f:
        assert {r["rank"] for r in csv.DictReader(f)} == {"0", "1"}
    assert "s20ppnew done" in log


def test_s20ppnew_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s20ppnew", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "qwen3moe-mla-slice").exists()


def test_campaign_cases_are_the_preregistered_ones():
    """The script's model:layers list, schedules and counts are calibration.prereg_pp's (what was predicted)."""
    text = SCRIPT.read_text()
    models = re.search(r'^MODELS="([^"]+)"', text, re.M)[1]
    assert [(c.split(":")[0], int(c.split(":")[1])) for c in models.split()] == list(prereg_pp.CASES)
    assert re.search(r"--schedules (\S+)", text)[1] == ",".join(prereg_pp.SCHEDULES)
    assert re.search(r"--microbatches (\S+)", text)[1] == ",".join(map(str, prereg_pp.MICROBATCHES))
    # each part's timeout within the campaign's 120 s
    assert sum(int(c.split(":")[2]) for c in models.split()) <= 120
