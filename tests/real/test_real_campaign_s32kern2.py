"""real/campaigns/s32kern2.sh (docs/notes/s32kern2.md): traced closed loops of the two plans whose loop checks s32kern's
C-k lost (set J's v2-lite-slice, set I's v3-slice-1l) and set N's mixtral (cheap first launches), fitting / diagnostic records only. Without a GPU it runs nothing;
its CPU dry run traces the tiny plan."""

import csv
import re
from pathlib import Path

from real.serve.plans import PLANS
from tests.campaigns import dry_run, without_gpus

SCRIPT = Path(__file__).resolve().parents[2] / "real" / "campaigns" / "s32kern2.sh"


def test_s32kern2_without_a_gpu_runs_nothing(tmp_path):
    d, log = without_gpus("s32kern2", tmp_path)
    assert "skipped: no GPU" in log and "s32kern2 end" in log and (d / "host.txt").exists()
    assert "parts trace:gpu1-s27j-v2lite trace:gpu1-s26i-v3s1l timed:gpu1-s27j-v2lite trace:gpu1-s32n-mixtral" in log


def test_s32kern2_parts_are_the_lost_loops_plans():
    parts = re.search(r'PARTS="(trace:gpu1-[^"]+)"', SCRIPT.read_text()).group(1).split()
    plans = {p.split(":")[1] for p in parts}
    assert {PLANS[p].model for p in plans} == {"v2-lite-slice", "v3-slice-1l", "mixtral-mla-slice"}
    assert {r.concurrency for p in plans for r in PLANS[p].runs if r.arrival == "closed"} == {13, 14, 18}


def test_s32kern2_cpu_dry_run_traces_the_tiny_plan(tmp_path):
    d, log = dry_run("s32kern2", tmp_path, timeout_s=240, scale=2)
    assert "trace tiny-new exit 0" in log and "s32kern2 end" in log, log[-2000:]
    with (d / "trace" / "tiny" / "serve_kernels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["phase"] for r in rows} == {"warmup", "warm_pass", "run"}
    assert all(r["gpu_name"] and r["torch_version"] for r in rows)
