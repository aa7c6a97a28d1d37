"""real/campaigns/s21pp4.sh (session s21pp4): real/pipeline's four-GPU steps (pp4, then pp2ep2) of the
slices of other MoE families as a CPU dry run on four gloo ranks (the tiny model at 8 layers), the clean
stop with fewer than four GPUs, and the script's models, layouts, schedules and counts are the ones
calibration.prereg_pp4 predicted."""

import csv
import re
from pathlib import Path

from calibration import prereg_pp4
from real.bench.records import PIPELINE_STEP_COLS
from real.pipeline.bench import layout_counts
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s21pp4.sh"


def test_s21pp4_campaign_cpu_dry_run(tmp_path):
    """One part (the first model's; the others run the same command) writes a pipeline_step row per
    layout and schedule of the dry run, pp4 first, with the bench's environment columns, and the ops of
    all four ranks (each rank's idle is read from them)."""
    d, log = dry_run("s21pp4", tmp_path, 120, S21PP4_PARTS="qwen3moe-mla-slice")
    assert "s21pp4 part qwen3moe-mla-slice rc=0" in log, log[-2000:]
    assert "part qwen2moe-mla-slice" not in log   # parts not asked for do not run
    with (d / "qwen3moe-mla-slice" / "pipeline_step.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == PIPELINE_STEP_COLS
    assert [(r["pp"], r["ep"], r["dp"], r["schedule"], r["num_microbatches"], r["num_layers"]) for r in rows] == [
        ("4", "1", "1", "dualpipev", "8", "8"), ("4", "1", "1", "dualpipe", "8", "8"),
        ("2", "2", "2", "dualpipev", "4", "8"), ("2", "2", "2", "dualpipe", "4", "8")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
               and r["split"] == "holdout" for r in rows)
    with (d / "qwen3moe-mla-slice" / "pipeline_ops.csv").open(newline="") as f:
        assert {r["rank"] for r in csv.DictReader(f)} == {"0", "1", "2", "3"}
    assert "s21pp4 done" in log


def test_s21pp4_stops_cleanly_without_four_gpus(tmp_path):
    d, log = without_gpus("s21pp4", tmp_path)
    assert "needs 4: nothing run" in log and not (d / "qwen3moe-mla-slice").exists()


def test_layout_counts():
    assert layout_counts("pp4=8/16,pp2ep2=4") == {(4, 1): [8, 16], (2, 2): [4]}
    assert layout_counts("") == {}


def test_campaign_cases_are_the_preregistered_ones():
    """The script's model:layers list, layouts, schedules and counts are calibration.prereg_pp4's."""
    text = SCRIPT.read_text()
    models = re.search(r'^MODELS="([^"]+)"', text, re.M)[1]
    assert [(c.split(":")[0], int(c.split(":")[1])) for c in models.split()] == list(prereg_pp4.CASES)
    runs = re.search(r"^runs=\(([^)]+)\)", text, re.M)[1]
    assert re.search(r"--schedules (\S+)", runs)[1] == ",".join(prereg_pp4.SCHEDULES)
    assert layout_counts(re.search(r"--layout-microbatches (\S+)", runs)[1]) == {
        k: list(v) for k, v in prereg_pp4.MICROBATCHES.items()}
    assert re.search(r"--layouts (\S+)", text)[1] == "pp4,pp2ep2"
    assert {(pp, ep) for pp, ep in prereg_pp4.LAYOUTS} == {(4, 1), (2, 2)}
    # each part's timeout within the campaign's 200 s
    assert sum(int(c.split(":")[2]) for c in models.split()) <= 200
