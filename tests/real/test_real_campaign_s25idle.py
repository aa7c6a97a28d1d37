"""real/campaigns/s25idle.sh (docs/notes/s25idle_rule.md): the CPU dry run on four gloo ranks (tiny
model at 8 layers, both layouts under DualPipeV, each rank's op records of every op kind), the clean stop with fewer
than four GPUs, and the script's cases are calibration.idle_terms.FRESH_CASES within 150 s."""

import csv
import re
from pathlib import Path

from calibration import idle_terms
from real.pipeline.bench import layout_counts
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s25idle.sh"


def test_s25idle_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s25idle", tmp_path, 120, S25IDLE_PARTS="qwen3moe-mla-slice")
    assert "s25idle part qwen3moe-mla-slice rc=0" in log, log[-2000:]
    with (d / "qwen3moe-mla-slice" / "pipeline_step.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["pp"], r["ep"], r["schedule"], r["num_microbatches"], r["num_layers"]) for r in rows] == [
        ("2", "2", "dualpipev", "8", "8"), ("4", "1", "dualpipev", "12", "8")]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
    with (d / "qwen3moe-mla-slice" / "pipeline_ops.csv").open(newline="") as f:
        ops = list(csv.DictReader(f))
    for pp in ("2", "4"):
        mine = [o for o in ops if o["pp"] == pp]
        assert {o["rank"] for o in mine} == {"0", "1", "2", "3"}, pp
        assert {"F", "B", "W", "BW", "FB", "send", "recv"} <= {o["kind"] for o in mine}, pp
    assert "s25idle done" in log


def test_s25idle_stops_cleanly_without_four_gpus(tmp_path):
    d, log = without_gpus("s25idle", tmp_path)
    assert "needs 4: nothing run" in log and not (d / "qwen3moe-mla-slice").exists()


def test_s25idle_cases_are_the_fresh_ones_within_150_s():
    text = SCRIPT.read_text()
    cases = re.search(r'^MODELS="([^"]+)"', text, re.M)[1].split()
    parsed = [c.split(":") for c in cases]
    assert [(m, int(n), int(s), layout_counts(counts)) for m, n, s, counts, _, _ in parsed] == [
        (m, n, s, {k: list(v) for k, v in counts.items()}) for m, n, s, counts in idle_terms.FRESH_CASES]
    runs = re.search(r"^runs=\(([^)]+)\)", text, re.M)[1]
    assert re.search(r"--schedules (\S+)", runs)[1] == ",".join(idle_terms.SCHEDULES)
    assert "--whole-reps" in runs and "--reps-min 4 --reps-max 4" in runs
    assert sum(int(c[4]) for c in parsed) <= 150
