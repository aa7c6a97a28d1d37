"""real/campaigns/s28pp42.sh (docs/notes/s28pp42_rule.md): the CPU dry run of the probe part on two gloo ranks (EP2
at 1 and 4, split fit, host marks on every forward, the launch probe's rows: the part P's rate is solved from; the
judged parts run the same bench with their own shapes), the clean stop with fewer than two GPUs, and the script's
parts equal to calibration.lease_probe2's PROBE, CASES and CONTROL, every judged shape new to the committed records."""

import csv
import re
from pathlib import Path

from calibration import lease_probe2
from calibration.records_io import glob_csv, read_csv
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s28pp42.sh"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_s28pp42_campaign_cpu_dry_run_of_the_probe(tmp_path):
    d, log = dry_run("s28pp42", tmp_path, 240, S28PP42_PARTS="probe")
    assert "s28pp42 part probe rc=0" in log and "qwen" not in log, log[-2000:]
    rows = _rows(d / "probe" / "pipeline_step.csv")
    assert [(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("ep_step", "1", "2", "1", "fit"), ("ep_step", "1", "2", "4", "fit")]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
    ops = _rows(d / "probe" / "pipeline_ops.csv")
    fwd = [o for o in ops if o["kind"] == "F" and o["split"] == "fit" and o["ep"] == "2"]
    assert len(fwd) == 2 * (1 + 4) and all(o["host_start_s"] not in ("", None) for o in fwd)
    assert _rows(d / "probe" / "pipeline_host_probe.csv")
    assert not list((d / "probe").glob("pipeline_trace_*.json")) and "s28pp42 done" in log


def test_s28pp42_stops_cleanly_without_two_gpus(tmp_path):
    d, log = without_gpus("s28pp42", tmp_path)
    assert "needs 2: nothing run" in log and not (d / "probe").exists()


def test_s28pp42_parts_are_the_rule_s_new_shapes_within_215_s():
    text = SCRIPT.read_text()
    parts = [line.split(":") for line in re.search(r'^PARTS="([^"]+)"', text, re.M)[1].splitlines()]
    by = {p[0]: p for p in parts}
    assert [p[0] for p in parts] == ["probe"] + [c[0] for c in lease_probe2.CASES] + [lease_probe2.CONTROL[0]]
    model, layers, seq, counts = lease_probe2.PROBE
    assert by["probe"][1:6] == [model, str(layers), str(seq), "ep2", ",".join(map(str, counts))]
    for name, model, layers, seq in lease_probe2.CASES:
        assert by[name][1:6] == [model, str(layers), str(seq), "ep2", ",".join(map(str, lease_probe2.EP_COUNTS))]
    name, model, layers, seq = lease_probe2.CONTROL
    assert by[name][1:6] == [model, str(layers), str(seq), "pp2", ",".join(map(str, lease_probe2.PP_COUNTS))]
    assert re.search(r"^all=(\S+)", text, re.M)[1] == ",".join(lease_probe2.SCHEDULES)
    assert sum(int(p[6]) for p in parts) <= 215 and all(int(p[7]) + 10 <= int(p[6]) for p in parts)
    assert "--reps-min 4 --reps-max 4" in text and "--ep-holdout 0 --host-probe" in text
    assert len(lease_probe2.case_rows()) == 5 * 4 + 8
    # every judged shape (model, layers, seq, pp, ep) new to the committed 2- and 4-GPU step records (this
    # campaign's own delivery, filed later, left out); the probe's is the `h200x2` folder's own configuration
    seen = set()
    root = REPO / "calibration/measurements"
    for kind in ("h100x2", "h200x2", "h100x4", "h200x4"):
        for path in glob_csv(root / kind, "**/pipeline_step.csv"):
            d = read_csv(path)
            if "s28pp42_" not in str(path) and {"model", "num_layers", "seq_len", "pp", "ep"} <= set(d.columns):
                seen |= set(map(tuple, d[["model", "num_layers", "seq_len", "pp", "ep"]].drop_duplicates().values))
    judged = {(r["model"], r["num_layers"], r["seq_len"], r["pp"], r["ep"]) for r in lease_probe2.case_rows()}
    assert not judged & seen, judged & seen
    assert (*lease_probe2.PROBE[:3], 1, 2) in seen
