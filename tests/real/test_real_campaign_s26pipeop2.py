"""real/campaigns/s26pipeop2.sh (docs/notes/s26pipeop2_rule.md): the CPU dry run on four gloo ranks of the
reversed part alone (tiny model at 8 layers: the host probe into probe/<part>/, then both layouts under
DualPipe into <part>/; the other parts run the same two commands in the plain GPU order), the clean stop
with fewer than four GPUs, and the script's cases are calibration.pipe_op_terms.FRESH2_CASES within 340 s."""

import csv
import re
from pathlib import Path

from calibration import pipe_op_terms
from calibration.records_io import read_csv
from real.pipeline.bench import layout_counts
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s26pipeop2.sh"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_s26pipeop2_campaign_cpu_dry_run(tmp_path):
    part = "qwen2moe-mla-slice-rev"
    d, log = dry_run("s26pipeop2", tmp_path, 240, S26PIPEOP2_PARTS=part)
    assert f"s26pipeop2 part {part}-probe rc=0" in log and f"s26pipeop2 part {part} rc=0" in log, log[-2000:]
    assert f"part {part}: GPUs 3,2,1,0" in log and "qwen3moe" not in log
    probe = _rows(d / "probe" / part / "pipeline_step.csv")
    assert [(r["pp"], r["ep"], r["dp"], r["num_microbatches"], r["split"]) for r in probe] == [("1", "1", "4", "8", "fit")]
    rows = _rows(d / part / "pipeline_step.csv")
    assert [(r["pp"], r["ep"], r["schedule"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("2", "2", "dualpipe", "6", "holdout"), ("4", "1", "dualpipe", "12", "holdout")]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in probe + rows)
    pace = pipe_op_terms.host_pace(read_csv(d / "probe" / part / "pipeline_ops.csv"))
    assert sorted(pace) == [0, 1, 2, 3] and all(0.3 < v < 3 for v in pace.values()), pace
    assert "s26pipeop2 done" in log


def test_s26pipeop2_stops_cleanly_without_four_gpus(tmp_path):
    d, log = without_gpus("s26pipeop2", tmp_path)
    assert "needs 4: nothing run" in log and not (d / "qwen3moe-mla-slice").exists()


def test_s26pipeop2_cases_are_the_fresh_ones_within_340_s():
    text = SCRIPT.read_text()
    parts = [line.split(":") for line in re.search(r'^PARTS="([^"]+)"', text, re.M)[1].splitlines()]
    plain = [p for p in parts if p[5] == "0,1,2,3"]
    assert [(p[1], int(p[2]), int(p[3]), layout_counts(p[4])) for p in plain] == [
        (m, n, s, {k: list(v) for k, v in counts.items()}) for m, n, s, counts in pipe_op_terms.FRESH2_CASES]
    assert all(p[6] == "all" for p in plain)
    (rev,) = [p for p in parts if p[5] == "3,2,1,0"]
    assert rev[0] == rev[1] + "-rev" and rev[6] == "dualpipe" and rev[1:5] == plain[1][1:5]
    assert re.search(r"^all=(\S+)", text, re.M)[1] == ",".join(pipe_op_terms.SCHEDULES)
    assert re.search(r"^PROBE_SEQ=(\d+)", text, re.M)[1] == str(pipe_op_terms.HOSTPROBE_SEQ)
    assert re.search(r"^PROBE_COUNTS=ep1=(\d+)", text, re.M)[1] == str(pipe_op_terms.HOSTPROBE_MICROBATCHES)
    runs = re.search(r"^runs=\(([^)]+)\)", text, re.M)[1]
    assert "--whole-reps" in runs and "--reps-min 4 --reps-max 4" in runs and "--ep-holdout 0" in runs
    assert sum(int(p[7]) + int(p[8]) for p in parts) <= 340
    assert all(int(p[9]) < int(p[8]) and int(p[7]) > 20 for p in parts)   # each bench inside its timeout
