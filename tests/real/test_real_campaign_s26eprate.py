"""real/campaigns/s26eprate.sh (issue 13): fresh EP2 steps, each timed step right after a host-pace probe on every
rank (docs/notes/s26eprate_rule.md); the CPU dry run of one part, the no-GPU path and the parts' shapes (none a
committed record holds)."""

import csv
import re
from pathlib import Path

from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s26eprate.sh"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_s26eprate_campaign_cpu_dry_run_probes_every_timed_step(tmp_path):
    """One part (one warm-up, one timed step a configuration): EP2 at 1 micro-batch in the fitting split and at 2,
    3, 4 held out, each op's host marks, and one launch and one Python probe a timed step and rank, carrying the
    configuration's split and the versions; no trace left behind."""
    d, log = dry_run("s26eprate", tmp_path, 120, S26EPRATE_PARTS="bench-small-4l")
    assert "s26eprate part bench-small-4l rc=0" in log, log[-2000:]
    assert "part mixtral-3l" not in log
    part = d / "bench-small-4l"
    rows = _rows(part / "pipeline_step.csv")
    assert [(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("ep_step", "1", "2", "1", "fit"), ("ep_step", "1", "2", "2", "holdout"),
        ("ep_step", "1", "2", "3", "holdout"), ("ep_step", "1", "2", "4", "holdout")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    probes = _rows(part / "pipeline_host_probe.csv")
    # one timed step a configuration: one probe of each kind a rank before it (cycle 0)
    assert sorted((r["num_microbatches"], r["cycle"], r["rank"], r["probe"], r["split"]) for r in probes) == sorted(
        (str(n), "0", str(rank), probe, "fit" if n == 1 else "holdout")
        for n in (1, 2, 3, 4) for rank in (0, 1) for probe in ("launch", "python"))
    assert all(float(r["us_per_call"]) > 0 and r["gpu_name"] and r["torch_version"] and r["bench"] == "ep_step"
               for r in probes)
    ops = _rows(part / "pipeline_ops.csv")
    assert {r["rep"] for r in ops} == {"0"} and all(r["host_start_s"] for r in ops)
    assert not list(part.glob("pipeline_trace_*.json"))
    assert (d / "host_s26eprate.txt").exists() and "s26eprate done" in log


def test_s26eprate_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s26eprate", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "bench-small-4l").exists()


def _shapes() -> dict:
    cases = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1].split()
    return {name: (model, int(n), int(seq), int(seqs))
            for name, spec in (c.split("=") for c in cases) for model, n, seq, seqs in [spec.split(":")]}


def test_s26eprate_parts_are_new_shapes_with_host_bound_models_and_a_control():
    shapes = _shapes()
    assert shapes == {"bench-small-4l": ("bench-small", 4, 768, 4), "bench-small-6l512": ("bench-small", 6, 512, 4),
                      "bench-small-10l": ("bench-small", 10, 384, 4), "bench-small-3l1k5": ("bench-small", 3, 1536, 2),
                      "mixtral-3l": ("mixtral-slice", 3, 1024, 2)}
    # every (model, layers, seq) of the committed EP2 steps on both pairs (pipeline_step rows with ep > 1), with
    # s24bwd3's and both s25ep deliveries' shapes
    recorded = {("bench-small", 4, 2048), ("bench-small", 4, 4096), ("bench-small", 4, 1024), ("bench-small", 5, 1024),
                ("bench-small", 6, 2048), ("bench-small", 8, 512), ("mixtral-mla-slice", 2, 4096),
                ("mixtral-slice", 2, 4096), ("qwen2moe-mla-slice", 4, 2048), ("qwen2moe-mla-slice", 4, 4096),
                ("qwen2moe-mla-slice", 4, 1024), ("qwen3moe-mla-slice", 4, 4096), ("qwen3moe-slice", 4, 4096),
                ("qwen3moe-slice", 4, 1024), ("v2-lite-slice", 4, 2048), ("v2-lite-slice", 8, 4096),
                ("bench-small", 3, 2048), ("bench-small", 7, 512), ("qwen2moe-mla-slice", 3, 512),
                ("v2-lite-slice", 2, 2048), ("bench-small", 6, 1024), ("bench-small", 9, 512),
                ("qwen3moe-slice", 3, 512), ("mixtral-slice", 2, 2048)}
    assert not {s[:3] for s in shapes.values()} & recorded
