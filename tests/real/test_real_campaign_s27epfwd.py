"""real/campaigns/s27epfwd.sh (issue 13): fresh EP2 steps and one PP2 part on shapes no record holds, judging the EP
forward's pooled host rate (docs/notes/s27epfwd_rule.md); the CPU dry run of one EP2 part, the no-GPU path and the
parts' shapes (none a committed 2-GPU record holds)."""

import csv
import re
from pathlib import Path

from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s27epfwd.sh"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_s27epfwd_campaign_cpu_dry_run_times_ep2_at_1_2_4_with_host_marks(tmp_path):
    """One EP2 part (one warm-up, one timed step a configuration): 1 micro-batch in the bench's fitting split, 2 and 4
    held out, every op with its host marks, rows carrying the versions; the other parts not run; no trace left."""
    d, log = dry_run("s27epfwd", tmp_path, 120, S27EPFWD_PARTS="bench-5l2k")
    assert "s27epfwd part bench-5l2k rc=0" in log, log[-2000:]
    assert "part qwen3-pp2" not in log and "part v3-3l" not in log
    part = d / "bench-5l2k"
    rows = _rows(part / "pipeline_step.csv")
    assert [(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("ep_step", "1", "2", "1", "fit"), ("ep_step", "1", "2", "2", "holdout"), ("ep_step", "1", "2", "4", "holdout")]
    assert all(float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] for r in rows)
    ops = _rows(part / "pipeline_ops.csv")
    assert {r["rep"] for r in ops} == {"0"} and all(r["host_start_s"] for r in ops)
    assert (part / "pipeline_routing.csv").exists() and not list(part.glob("pipeline_trace_*.json"))
    assert (d / "host_s27epfwd.txt").exists() and (d / "clocks_s27epfwd.txt").exists() and "s27epfwd done" in log


def test_s27epfwd_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s27epfwd", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "bench-5l2k").exists()


def _shapes() -> dict:
    cases = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1].split()
    return {name: (model, int(n), int(seq), int(seqs), layout)
            for name, spec in (c.split("=") for c in cases) for model, n, seq, seqs, layout in [spec.split(":")]}


def test_s27epfwd_parts_are_new_shapes_with_a_new_model_a_control_and_one_pp2_part():
    shapes = _shapes()
    assert shapes == {"qwen2-4l2k": ("qwen2moe-mla-slice", 4, 2048, 1, "ep2"),
                      "qwen3-4l3k": ("qwen3moe-mla-slice", 4, 3072, 1, "ep2"),
                      "qwen3g-4l2k": ("qwen3moe-slice", 4, 2048, 1, "ep2"),
                      "mixtral-2l2k": ("mixtral-mla-slice", 2, 2048, 1, "ep2"),
                      "v3-3l": ("v3-slice-2l", 3, 2048, 1, "ep2"),
                      "bench-5l2k": ("bench-small", 5, 2048, 1, "ep2"),
                      "qwen3-pp2": ("qwen3moe-mla-slice", 8, 2048, 1, "pp2")}
    # every (model, layers, seq, sequences) of the committed EP2 steps (pp 1, ep 2) and PP2 pipelines (pp 2, ep 1)
    # under h100x2, h200x2, h100x4 and h200x4, as the records held them when the rule was written
    ep2 = {('bench-small', 3, 1536, 2), ('bench-small', 3, 2048, 2), ('bench-small', 4, 768, 4),
           ('bench-small', 4, 1024, 2), ('bench-small', 4, 1280, 2), ('bench-small', 4, 2048, 2),
           ('bench-small', 4, 4096, 1), ('bench-small', 5, 640, 4), ('bench-small', 5, 1024, 3),
           ('bench-small', 6, 512, 4), ('bench-small', 6, 1024, 2), ('bench-small', 6, 2048, 1),
           ('bench-small', 7, 512, 4), ('bench-small', 8, 448, 4), ('bench-small', 8, 512, 2),
           ('bench-small', 9, 512, 3), ('bench-small', 10, 384, 4), ('bench-small', 12, 256, 4),
           ('mixtral-mla-slice', 2, 4096, 1), ('mixtral-slice', 2, 1536, 2), ('mixtral-slice', 2, 2048, 2),
           ('mixtral-slice', 2, 4096, 1), ('mixtral-slice', 3, 1024, 2), ('qwen2moe-mla-slice', 3, 512, 2),
           ('qwen2moe-mla-slice', 4, 1024, 4), ('qwen2moe-mla-slice', 4, 2048, 2),
           ('qwen2moe-mla-slice', 4, 4096, 1), ('qwen3moe-mla-slice', 4, 4096, 1), ('qwen3moe-slice', 3, 512, 2),
           ('qwen3moe-slice', 4, 1024, 4), ('qwen3moe-slice', 4, 4096, 1), ('v2-lite-slice', 2, 2048, 2),
           ('v2-lite-slice', 4, 2048, 2), ('v2-lite-slice', 8, 4096, 1)}
    pp2 = {('bench-small', 4, 1024, 2), ('bench-small', 4, 2048, 2), ('bench-small', 5, 1024, 3),
           ('bench-small', 6, 2048, 1), ('bench-small', 8, 512, 2), ('mixtral-mla-slice', 2, 4096, 1),
           ('mixtral-mla-slice', 4, 4096, 1), ('qwen2moe-mla-slice', 4, 1024, 4), ('qwen2moe-mla-slice', 4, 2048, 2),
           ('qwen2moe-mla-slice', 4, 4096, 1), ('qwen3moe-mla-slice', 4, 4096, 1), ('qwen3moe-slice', 4, 1024, 4),
           ('v2-lite-slice', 4, 2048, 2), ('v2-lite-slice', 8, 4096, 1)}
    for name, (model, n, seq, seqs, layout) in shapes.items():
        assert (model, n, seq, seqs) not in (ep2 if layout == "ep2" else pp2), name
    # the new model: no committed 2- or 4-GPU step of it
    assert not list((REPO / "calibration/measurements").glob("h*x*/**/v3-slice*"))
