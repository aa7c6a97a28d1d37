"""real/campaigns/s33loop.sh (docs/notes/s33loop.md): set T, diagnostic / fitting records (judges nothing): set J's engine
and nearly its length mix for the two over-priced loops' models and bench-small, four runs a process (Poisson, closed, Poisson,
closed) with --timing and --host-probe. Without a GPU it runs nothing; its CPU dry run runs the tiny plan."""

import csv
import re
from pathlib import Path

from real.serve.plans import PLANS, S33T_PLANS
from tests.campaigns import dry_run, without_gpus

SCRIPT = Path(__file__).resolve().parents[2] / "real" / "campaigns" / "s33loop.sh"


def test_s33loop_without_a_gpu_runs_nothing(tmp_path):
    d, log = without_gpus("s33loop", tmp_path)
    assert "skipped: no GPU" in log and "s33loop end" in log and (d / "host.txt").exists()
    assert "parts gpu1-s33t-v2lite gpu1-s33t-v3s1l gpu1-s33t-bench" in log


def test_s33loop_parts_alternate_poisson_and_closed_on_fresh_seeds():
    parts = re.search(r'PARTS="(gpu1-s33t-[^"]+)"', SCRIPT.read_text()).group(1).split()
    assert set(parts) == set(S33T_PLANS)
    assert {PLANS[p].model for p in parts} == {"v2-lite-slice", "v3-slice-1l", "bench-small"}
    for p in parts:
        runs = PLANS[p].runs
        assert [r.arrival for r in runs] == ["poisson", "closed", "poisson", "closed"]
        assert [r.warm_shapes for r in runs] == [704, 0, 0, 0] and {r.split for r in runs} == {"fit"}
    seeds = [r.seed for p in parts for r in PLANS[p].runs]
    other = {r.seed for k, p in PLANS.items() if k not in S33T_PLANS for r in p.runs}
    assert sorted(seeds) == list(range(421, 433)) and not set(seeds) & other


def test_s33loop_cpu_dry_run_times_and_probes_the_tiny_plan(tmp_path):
    d, log = dry_run("s33loop", tmp_path, timeout_s=240, scale=2)
    assert "tiny-new exit 0" in log and "s33loop end" in log, log[-2000:]
    with (d / "tiny" / "serve_load.csv").open(newline="") as f:
        load = list(csv.DictReader(f))
    with (d / "tiny" / "serve_iterations.csv").open(newline="") as f:
        its = list(csv.DictReader(f))
    assert load and all(r["probe_before_launch_s"] and r["gpu_name"] and r["torch_version"] for r in load)
    assert any(r["host_s"] not in ("", "nan") for r in its)
