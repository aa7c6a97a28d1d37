"""real/campaigns/s28pp4.sh (docs/notes/s28pp4_rule.md): the CPU dry run of the probe part on four gloo ranks (tiny
model at 8 layers, pp2ep2 under DualPipe at 4, split fit, the launch probe's rows: the part P's rate is solved from;
the judged parts run the same command with their own shapes), the clean stop with fewer than four GPUs, and the
script's parts equal to calibration.lease_probe's PROBE and CASES within the stated timeouts."""

import csv
import re
from pathlib import Path

from calibration import lease_probe
from real.pipeline.bench import layout_counts
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s28pp4.sh"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_s28pp4_campaign_cpu_dry_run_of_the_probe(tmp_path):
    d, log = dry_run("s28pp4", tmp_path, 240, S28PP4_PARTS="probe")
    assert "s28pp4 part probe rc=0" in log and "qwen3" not in log, log[-2000:]
    rows = _rows(d / "probe" / "pipeline_step.csv")
    assert [(r["pp"], r["ep"], r["schedule"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("2", "2", "dualpipe", "4", "fit")]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
    ops = _rows(d / "probe" / "pipeline_ops.csv")
    fwd = [o for o in ops if o["kind"] == "F" and o["split"] == "fit"]
    assert fwd and all(o["host_start_s"] not in ("", None) for o in fwd)   # the solved rate's input
    assert _rows(d / "probe" / "pipeline_host_probe.csv")
    assert "s28pp4 done" in log


def test_s28pp4_stops_cleanly_without_four_gpus(tmp_path):
    d, log = without_gpus("s28pp4", tmp_path)
    assert "needs 4: nothing run" in log and not (d / "probe").exists()


def test_s28pp4_parts_are_the_rule_s_within_345_s():
    text = SCRIPT.read_text()
    parts = [line.split(":") for line in re.search(r'^PARTS="([^"]+)"', text, re.M)[1].splitlines()]
    by = {p[0]: p for p in parts}
    assert [p[0] for p in parts] == ["probe"] + [c[0] for c in lease_probe.CASES] + ["marks"]
    model, layers, seq, counts = lease_probe.PROBE
    assert by["probe"][1:5] == [model, str(layers), str(seq), "pp2ep2=4"] and by["probe"][5] == "all"
    assert layout_counts(by["probe"][4]) == {k: list(v) for k, v in counts.items()}
    for name, model, layers, seq in lease_probe.CASES:
        p = by[name]
        assert p[1:4] == [model, str(layers), str(seq)] and p[5] == "all"
        assert layout_counts(p[4]) == {k: list(v) for k, v in lease_probe.COUNTS.items()}
    assert re.search(r"^all=(\S+)", text, re.M)[1] == ",".join(lease_probe.SCHEDULES)
    assert sum(int(p[6]) for p in parts) <= 345 and all(int(p[7]) + 15 <= int(p[6]) for p in parts)
    runs = re.search(r"^runs=\(([^)]+)\)", text, re.M)[1]
    assert "--whole-reps" in runs and "--reps-min 4 --reps-max 4" in runs
    # the probe's count is the fitting split, every judged count held out
    assert "probe) extra=(--holdout 8 --host-probe)" in text and "extra=(--holdout 8,12 " in text
    assert len(lease_probe.case_rows()) == 36
