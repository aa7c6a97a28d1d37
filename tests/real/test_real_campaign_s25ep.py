"""real/campaigns/s25ep.sh (issue 13): the fitting sort sweep, then fresh EP2 steps whose fitting split holds one EP2
configuration of the same shape (docs/notes/s25ep_rule.md); the CPU dry run of the sweep and one part, the no-GPU
path and the parts' shapes (none a committed record holds)."""

import csv
import re
from pathlib import Path

from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s25ep.sh"


def test_s25ep_campaign_cpu_dry_run(tmp_path):
    """The sweep at the cliff's two sizes (2 calls each way), then one part (one warm-up, one timed step a
    configuration): EP2 at 1 micro-batch in the fitting split and at 2, 3, 4 held out, each op's host marks, no
    trace left behind."""
    d, log = dry_run("s25ep", tmp_path, 120, S25EP_PARTS="sortsweep bench-small-3l")
    assert "s25ep part sortsweep rc=0" in log and "s25ep part bench-small-3l rc=0" in log, log[-2000:]
    assert "part v2-lite-2l" not in log
    with (d / "sortsweep" / "sort_sweep.csv").open(newline="") as f:
        sweep = list(csv.DictReader(f))
    assert [(r["op"], r["elems"]) for r in sweep] == [("argsort", "4096"), ("argsort", "4097"),
                                                       ("index_put", "4096"), ("index_put", "4097")]
    assert {r["reps"] for r in sweep} == {"2"}      # the dry run's few calls (--reps 2)
    part = d / "bench-small-3l"
    with (part / "pipeline_step.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("ep_step", "1", "2", "1", "fit"), ("ep_step", "1", "2", "2", "holdout"),
        ("ep_step", "1", "2", "3", "holdout"), ("ep_step", "1", "2", "4", "holdout")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    with (part / "pipeline_ops.csv").open(newline="") as f:
        ops = list(csv.DictReader(f))
    fit_bw = [r for r in ops if r["kind"] == "BW" and r["split"] == "fit"]
    assert {r["num_microbatches"] for r in fit_bw} == {"1"} and {r["rank"] for r in fit_bw} == {"0", "1"}
    assert not list(part.glob("pipeline_trace_*.json"))
    assert "s25ep done" in log


def test_s25ep_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s25ep", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "bench-small-3l").exists()


def _shapes(var: str) -> dict:
    cases = re.search(rf'^{var}="([^"]+)"', SCRIPT.read_text(), re.M)[1].split()
    return {name: (model, int(n), int(seq), int(seqs))
            for name, spec in (c.split("=") for c in cases) for model, n, seq, seqs in [spec.split(":")]}


def test_s25ep_parts_are_new_shapes_with_host_bound_models_and_a_control():
    shapes = _shapes("CASES")
    round2 = _shapes("CASES2")
    assert round2 == {"bench-small-6l": ("bench-small", 6, 1024, 2), "bench-small-9l": ("bench-small", 9, 512, 3),
                      "qwen3moe-3l": ("qwen3moe-slice", 3, 512, 2), "mixtral-2l": ("mixtral-slice", 2, 2048, 2)}
    assert not {s[:3] for s in round2.values()} & {s[:3] for s in shapes.values()}
    assert shapes == {"bench-small-3l": ("bench-small", 3, 2048, 2), "bench-small-7l": ("bench-small", 7, 512, 4),
                      "qwen2moe-3l": ("qwen2moe-mla-slice", 3, 512, 2), "v2-lite-2l": ("v2-lite-slice", 2, 2048, 2)}
    # every (model, layers, seq) of the committed EP2 steps on both pairs (pipeline_step rows with ep > 1)
    recorded = {("bench-small", 4, 2048), ("bench-small", 4, 4096), ("bench-small", 4, 1024), ("bench-small", 5, 1024),
                ("bench-small", 6, 2048), ("bench-small", 8, 512), ("mixtral-mla-slice", 2, 4096),
                ("mixtral-slice", 2, 4096), ("qwen2moe-mla-slice", 4, 2048), ("qwen2moe-mla-slice", 4, 4096),
                ("qwen2moe-mla-slice", 4, 1024), ("qwen3moe-mla-slice", 4, 4096), ("qwen3moe-slice", 4, 4096),
                ("qwen3moe-slice", 4, 1024), ("v2-lite-slice", 4, 2048), ("v2-lite-slice", 8, 4096)}
    assert not {s[:3] for s in shapes.values()} & recorded
    assert not {s[:3] for s in round2.values()} & recorded
