"""real/campaigns/s24bwd3.sh (issue 13): fresh EP2 steps whose fitting split holds one EP2 configuration of the
same shape (calibration.ep_bwd_run's per-run input); the CPU dry run of one part, the no-GPU path and the
parts' shapes."""

import csv
import re
from pathlib import Path

from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s24bwd3.sh"


def test_s24bwd3_campaign_cpu_dry_run(tmp_path):
    """One part: PP2 1f1b at 4 and EP2 at 1 micro-batch in the fitting split, EP2 at 2, 3, 4 held out, each op's
    host marks, and no trace left behind (the records are the CSVs)."""
    d, log = dry_run("s24bwd3", tmp_path, 120, S24BWD3_PARTS="bench-small-5l")
    assert "s24bwd3 part bench-small-5l rc=0" in log and "part qwen3moe-1k" not in log, log[-2000:]
    part = d / "bench-small-5l"
    with (part / "pipeline_step.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("pipeline_step", "2", "1", "4", "fit"), ("ep_step", "1", "2", "1", "fit"),
        ("ep_step", "1", "2", "2", "holdout"), ("ep_step", "1", "2", "3", "holdout"),
        ("ep_step", "1", "2", "4", "holdout")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    with (part / "pipeline_ops.csv").open(newline="") as f:
        ops = list(csv.DictReader(f))
    fit_bw = [r for r in ops if r["ep"] == "2" and r["kind"] == "BW" and r["split"] == "fit"]
    assert {r["num_microbatches"] for r in fit_bw} == {"1"} and {r["rank"] for r in fit_bw} == {"0", "1"}
    assert all(r["host_start_s"] for r in ops)
    assert not list(part.glob("pipeline_trace_*.json"))
    assert "s24bwd3 done" in log


def test_s24bwd3_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s24bwd3", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "bench-small-5l").exists()


def test_s24bwd3_parts_are_new_shapes_with_host_bound_models_and_a_control():
    cases = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1].split()
    shapes = {name: (model, int(n), int(seq), int(seqs))
              for name, spec in (c.split("=") for c in cases) for model, n, seq, seqs in [spec.split(":")]}
    assert shapes == {"bench-small-5l": ("bench-small", 5, 1024, 3), "bench-small-8l": ("bench-small", 8, 512, 2),
                      "qwen3moe-1k": ("qwen3moe-slice", 4, 1024, 4)}
    # every (model, layers, seq, seqs) the committed records hold for these models (s23ephost, s23ephost2, s23bwd,
    # s23bwd2)
    recorded = {("bench-small", 4, 1024, 2), ("bench-small", 4, 2048, 2), ("bench-small", 4, 4096, 1),
                ("bench-small", 6, 2048, 1), ("mixtral-slice", 2, 4096, 1), ("qwen3moe-slice", 4, 4096, 1)}
    assert not set(shapes.values()) & recorded
