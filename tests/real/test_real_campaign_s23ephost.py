"""real/campaigns/s23ephost.sh (issue 13): EP2 steps under real/ep.py's host marks (fit) and fresh EP2
steps (held out), as a CPU dry run on two gloo ranks (the tiny model), and the script's model lists are
the ones calibration.ep_postsync reads."""

import csv
import re
from pathlib import Path

from calibration import ep_postsync
from real import ep
from real.bench.records import EP_HOST_MARKS_COLS, PIPELINE_STEP_COLS
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s23ephost.sh"


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_s23ephost_campaign_cpu_dry_run(tmp_path):
    """One fit part and one held-out part (the others run the same commands): the fit part writes EP2
    rows at 1 and 4 micro-batches and PP2 1f1b at 4 under both mark modes, with every mark of dispatch
    and combine in the EP2 forwards (CUDA-event GPU times only in events mode: none on CPU); the
    held-out part writes EP2 rows at 1, 2, 4, all held out, with the bench's environment columns."""
    d, log = dry_run("s23ephost", tmp_path, 280, S23EPHOST_PARTS="fit_qwen2moe-mla-slice ho_bench-small")
    assert "s23ephost part fit_qwen2moe-mla-slice rc=0" in log and "s23ephost part ho_bench-small rc=0" in log, log[-2000:]
    assert "part fit_qwen3moe-mla-slice" not in log and "part ho_mixtral-slice" not in log
    for mode in ("host", "events"):
        header, steps = _rows(d / "fit" / "qwen2moe-mla-slice" / f"marks_{mode}" / "pipeline_step.csv")
        assert header == PIPELINE_STEP_COLS
        assert [(r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in steps] == [
            ("1", "2", "1", "fit"), ("1", "2", "4", "fit"), ("2", "1", "4", "fit")]
        header, marks = _rows(d / "fit" / "qwen2moe-mla-slice" / f"marks_{mode}" / "ep_host_marks.csv")
        assert header == EP_HOST_MARKS_COLS
        forward = {r["mark"] for r in marks if r["kind"] == "F" and r["thread"] == "main"}
        assert {"tolist_send", "tolist_recv", "gather", "dispatch_end", "combine_end"} <= forward <= set(ep.MARK_SEGMENTS)
        assert all(r["split"] == "fit" and r["pp"] == "1" for r in marks)
    header, rows = _rows(d / "holdout" / "bench-small" / "pipeline_step.csv")
    assert header == PIPELINE_STEP_COLS
    assert [(r["bench"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("ep_step", "2", "1", "holdout"), ("ep_step", "2", "2", "holdout"), ("ep_step", "2", "4", "holdout")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    assert not (d / "holdout" / "bench-small" / "marks_host").exists()   # held-out steps run unmarked
    assert "s23ephost done" in log


def test_s23ephost_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s23ephost", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "fit").exists()


def test_campaign_models_are_the_ones_calibration_reads():
    text = SCRIPT.read_text()

    def models(name):
        return tuple((m, int(n)) for m, n in (c.split(":") for c in re.search(rf'^{name}="([^"]+)"', text, re.M)[1].split()))
    assert models("FIT_MODELS") == ep_postsync.FIT_MODELS
    assert models("HOLDOUT_MODELS") == ep_postsync.HOLDOUT_MODELS
    assert re.search(r"--ep-microbatches 1,2,4 --ep-holdout (\S+)", text)[1] == ",".join(
        map(str, ep_postsync.HOLDOUT_MICROBATCHES))
