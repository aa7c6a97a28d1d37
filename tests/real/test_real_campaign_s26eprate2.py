"""real/campaigns/s26eprate2.sh (issue 13, s26eprate round 2): fresh EP2 steps, each timed step run with a companion
thread sampling the host's pace during it (real/pipeline/hostpace.PaceSampler) and right after a host-pace probe
(docs/notes/s26eprate2_rule.md); the CPU dry run of one part, the no-GPU path and the parts' shapes (none a committed
record holds, round 1's included), and the sampler itself."""

import csv
import re
import time
from pathlib import Path

from real.pipeline.hostpace import SAMPLE_LOOPS, PaceSampler
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s26eprate2.sh"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_s26eprate2_campaign_cpu_dry_run_samples_every_timed_step(tmp_path):
    """One part (one warm-up, one timed step a configuration): EP2 at 1 micro-batch in the fitting split and at 2,
    3, 4 held out, one launch and one Python probe a timed step and rank, and the sampler's rows inside the steps
    (on the ops' shared axis, within the step's host span), carrying the configuration's split and the versions."""
    d, log = dry_run("s26eprate2", tmp_path, 120, S26EPRATE2_PARTS="bench-small-5l640")
    assert "s26eprate2 part bench-small-5l640 rc=0" in log, log[-2000:]
    assert "part mixtral-2l1k5" not in log
    part = d / "bench-small-5l640"
    rows = _rows(part / "pipeline_step.csv")
    assert [(r["bench"], r["pp"], r["ep"], r["num_microbatches"], r["split"]) for r in rows] == [
        ("ep_step", "1", "2", "1", "fit"), ("ep_step", "1", "2", "2", "holdout"),
        ("ep_step", "1", "2", "3", "holdout"), ("ep_step", "1", "2", "4", "holdout")]
    probes = _rows(part / "pipeline_host_probe.csv")
    assert sorted((r["num_microbatches"], r["cycle"], r["rank"], r["probe"]) for r in probes) == sorted(
        (str(n), "0", str(rank), probe) for n in (1, 2, 3, 4) for rank in (0, 1) for probe in ("launch", "python"))
    pace = _rows(part / "pipeline_host_pace.csv")
    ops = _rows(part / "pipeline_ops.csv")
    assert pace and {r["rep"] for r in pace} <= {"0"} and {r["rank"] for r in pace} <= {"0", "1"}
    for r in pace:
        n = r["num_microbatches"]
        span = [float(o["host_end_s"]) for o in ops if o["num_microbatches"] == n and o["rank"] == r["rank"]]
        assert 0 <= float(r["t_s"]) <= max(span) + 1e-3 and float(r["sample_s"]) > 0
        assert r["split"] == ("fit" if n == "1" else "holdout") and r["gpu_name"] and r["torch_version"]
        assert int(r["loops"]) == SAMPLE_LOOPS and 0 < float(r["duty"]) < 1
    assert not list(part.glob("pipeline_trace_*.json"))
    assert (d / "host_s26eprate2.txt").exists() and "s26eprate2 done" in log


def test_pace_sampler_samples_while_the_main_thread_works():
    """The thread samples at its interval while the main thread runs Python, and stops when the block ends.
    The main thread works until three samples are in (at most 5 s): a fixed 50 ms of work got two samples on a
    machine under load (s29ci, load ~10 on two cores), and the test judged the machine, not the sampler."""
    with PaceSampler(interval_s=1e-3) as s:
        t = time.perf_counter()
        while len(s.samples) < 3 and time.perf_counter() - t < 5.0:
            sum(range(1000))
    got = list(s.samples)
    time.sleep(0.005)
    assert len(s.samples) == len(got) >= 3
    assert all(t0 >= t - 0.01 and 0 < w < 0.05 for t0, w in got)


def test_s26eprate2_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s26eprate2", tmp_path)
    assert "0 GPUs, needs 2: nothing run" in log and not (d / "bench-small-5l640").exists()


def _shapes(script: Path) -> dict:
    cases = re.search(r'^CASES="([^"]+)"', script.read_text(), re.M)[1].split()
    return {name: (model, int(n), int(seq), int(seqs))
            for name, spec in (c.split("=") for c in cases) for model, n, seq, seqs in [spec.split(":")]}


def test_s26eprate2_parts_are_new_shapes_with_host_bound_models_and_a_control():
    shapes = _shapes(SCRIPT)
    assert shapes == {"bench-small-5l640": ("bench-small", 5, 640, 4), "bench-small-8l448": ("bench-small", 8, 448, 4),
                      "bench-small-12l256": ("bench-small", 12, 256, 4),
                      "bench-small-4l1k28": ("bench-small", 4, 1280, 2), "mixtral-2l1k5": ("mixtral-slice", 2, 1536, 2)}
    # every (model, layers, seq) of the committed EP2 steps on both pairs (tests/real/test_real_campaign_s26eprate.py's
    # list, s24bwd3's and both s25ep deliveries' shapes) and round 1's parts
    recorded = {("bench-small", 4, 2048), ("bench-small", 4, 4096), ("bench-small", 4, 1024), ("bench-small", 5, 1024),
                ("bench-small", 6, 2048), ("bench-small", 8, 512), ("mixtral-mla-slice", 2, 4096),
                ("mixtral-slice", 2, 4096), ("qwen2moe-mla-slice", 4, 2048), ("qwen2moe-mla-slice", 4, 4096),
                ("qwen2moe-mla-slice", 4, 1024), ("qwen3moe-mla-slice", 4, 4096), ("qwen3moe-slice", 4, 4096),
                ("qwen3moe-slice", 4, 1024), ("v2-lite-slice", 4, 2048), ("v2-lite-slice", 8, 4096),
                ("bench-small", 3, 2048), ("bench-small", 7, 512), ("qwen2moe-mla-slice", 3, 512),
                ("v2-lite-slice", 2, 2048), ("bench-small", 6, 1024), ("bench-small", 9, 512),
                ("qwen3moe-slice", 3, 512), ("mixtral-slice", 2, 2048)}
    recorded |= {s[:3] for s in _shapes(REPO / "real/campaigns/s26eprate.sh").values()}
    assert not {s[:3] for s in shapes.values()} & recorded
