"""real/campaigns/s26pipeop.sh (docs/notes/s26pipeop_rule.md): the CPU dry run on four gloo ranks of the
reversed part alone (tiny model at 8 layers: the data-parallel probe, then both layouts under DualPipe,
into <model>-rev/; the normal part runs the same command without the reversed GPU order, with all four
schedules on GPUs, DualPipe alone in the dry run: ~19 s of CPU saved), the clean stop with fewer than four GPUs, and the script's cases are
calibration.pipe_op_terms.FRESH_CASES within 320 s."""

import csv
import re
from pathlib import Path

from calibration import pipe_op_terms
from calibration.records_io import read_csv
from real.pipeline.bench import layout_counts
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s26pipeop.sh"


def test_s26pipeop_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s26pipeop", tmp_path, 240, S26PIPEOP_PARTS="qwen2moe-mla-slice-rev")
    for part in ("qwen2moe-mla-slice-rev",):
        assert f"s26pipeop part {part} rc=0" in log, log[-2000:]
        with (d / part / "pipeline_step.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert [(r["pp"], r["ep"], r["schedule"], r["num_microbatches"], r["split"]) for r in rows] == [
            ("1", "1", "1f1b", "4", "fit"), ("2", "2", "dualpipe", "10", "holdout"),
            ("4", "1", "dualpipe", "10", "holdout")], part
        assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
        # the probe gives every GPU a pace (each within a few tens of % of the mean on gloo's CPU ranks)
        pace = pipe_op_terms.gpu_pace(read_csv(d / part / "pipeline_ops.csv"))
        assert sorted(pace) == [0, 1, 2, 3] and all(0.3 < v < 3 for v in pace.values()), pace
    assert "part qwen2moe-mla-slice-rev: GPUs 3,2,1,0" in log and "part qwen2moe-mla-slice:" not in log
    assert "mixtral" not in log.replace("mixtral-mla-slice:", "")
    assert "s26pipeop done" in log


def test_s26pipeop_stops_cleanly_without_four_gpus(tmp_path):
    d, log = without_gpus("s26pipeop", tmp_path)
    assert "needs 4: nothing run" in log and not (d / "qwen2moe-mla-slice").exists()


def test_s26pipeop_cases_are_the_fresh_ones_within_320_s():
    text = SCRIPT.read_text()
    parsed = [c.split(":") for c in re.search(r'^MODELS="([^"]+)"', text, re.M)[1].split()]
    assert [(m, int(n), int(s), layout_counts(counts)) for m, n, s, counts, *_ in parsed] == [
        (m, n, s, {k: list(v) for k, v in counts.items()}) for m, n, s, counts in pipe_op_terms.FRESH_CASES]
    assert re.search(r"^schedules=(\S+)", text, re.M)[1] == ",".join(pipe_op_terms.SCHEDULES)
    runs = re.search(r"^runs=\(([^)]+)\)", text, re.M)[1]
    assert "--whole-reps" in runs and "--reps-min 4 --reps-max 4" in runs and "--ep-holdout 0" in runs
    assert f"ep1={pipe_op_terms.PROBE_MICROBATCHES}," in text and "--layouts ep1,pp2ep2,pp4" in text
    assert sum(int(c[4]) + int(c[6]) for c in parsed) <= 320
    assert all(int(c[5]) < int(c[4]) and int(c[7]) < int(c[6]) for c in parsed)   # each bench inside its timeout
