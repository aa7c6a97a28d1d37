"""real/campaigns/s29idle.sh (session s29idle): its cases are the ones calibration.s29idle predicted, one part runs as
a CPU dry run on two gloo ranks (the tiny model, DualPipe at 6 and 10 micro-batches), and it stops cleanly without two
GPUs."""

import csv
import re
from pathlib import Path

from calibration import s29idle
from real.bench.records import PIPELINE_STEP_COLS
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s29idle.sh"


def test_campaign_cases_are_the_predicted_ones():
    """PP's models and layers, the counts and the schedules are calibration.s29idle's; timeouts <= 230 s in all."""
    text = SCRIPT.read_text()
    cases = [c.split(":") for c in re.search(r'^PP="([^"]+)"', text, re.M)[1].split()]
    assert tuple((m, int(layers)) for m, layers, _, _ in cases) == s29idle.FRESH_CASES
    assert all(int(budget) < int(limit) for _, _, limit, budget in cases)   # the bench stops before its timeout
    assert sum(int(limit) for _, _, limit, _ in cases) <= 230
    assert re.search(r"--microbatches (\S+)", text)[1] == ",".join(map(str, s29idle.FRESH_MICROBATCHES))
    assert re.search(r"^schedules=(\S+)", text, re.M)[1] == ",".join(s29idle.SCHEDULES)
    assert "--seq-len 4096" in text and {r["seq_len"] for r in s29idle.fresh_rows()} == {4096}


def test_s29idle_part_cpu_dry_run(tmp_path):
    """One part (qwen2moe's; the others run the same command) on two gloo ranks: pipeline_step rows with the bench's
    environment columns and both ranks' ops (~19 s wall: two ranks and the parent)."""
    d, log = dry_run("s29idle", tmp_path, 150, S29IDLE_PARTS="qwen2moe-mla-slice")
    assert "s29idle part qwen2moe-mla-slice rc=0" in log, log[-2000:]
    assert "part dsv2-slice" not in log   # parts not asked for do not run
    with (d / "qwen2moe-mla-slice" / "pipeline_step.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == PIPELINE_STEP_COLS
    assert sorted((r["bench"], r["schedule"], r["pp"], r["num_microbatches"]) for r in rows) == [
        ("pipeline_step", "dualpipe", "2", str(n)) for n in sorted(s29idle.FRESH_MICROBATCHES, key=str)]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    with (d / "qwen2moe-mla-slice" / "pipeline_ops.csv").open(newline="") as f:
        assert {r["rank"] for r in csv.DictReader(f)} == {"0", "1"}
    assert "CUDA_VISIBLE_DEVICES=" in (d / "host_s29idle.txt").read_text() and "s29idle done" in log


def test_s29idle_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s29idle", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not any((d / m).exists() for m, _ in s29idle.FRESH_CASES)
