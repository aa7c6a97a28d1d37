"""real/campaigns/s30serve.sh (docs/notes/s30serve_rule.md): per model the first-met probe (real/serve/firstmet.py,
fitting records) and set P's fresh held-out load runs (plans gpu1-s30p-*), recorded without --timing. Without a GPU it
runs nothing; the set-P plans are configurations no record holds, their warm pass under the prompts (most prompt steps a
size between the pass and the budget), the Poisson runs first in each process."""

import csv
import os
import subprocess
from pathlib import Path

from real.serve.plans import PLANS, S30P_IN, S30P_MODELS, S30P_OUT, S30P_PLANS, S30P_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.engine import IDLE_WAKE_AFTER_S
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s30serve.sh"


def test_s30serve_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s30serve" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s30serve end" in log
    assert "parts " + " ".join(f"probe:gpu1-s30p-{s} set:gpu1-s30p-{s}" for s in S30P_MODELS.values()) in log
    assert (tmp_path / "s30serve" / "host.txt").exists()


def test_s30serve_cpu_dry_run_records_the_probe_and_a_tiny_run(tmp_path):
    """S30SERVE_TINY=1: the probe (4 fresh sizes, a warm pass of 8) and the tiny-new plan through the same commands
    (~8 CPU-s): probe rows of every kind and gap class with the environment, load rows with the host probe."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S30SERVE_TINY": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=200)
    d = tmp_path / "s30serve"
    log = (d / "log.txt").read_text()
    assert "probe tiny-new exit 0" in log and "set tiny-new exit 0" in log and "s30serve end" in log, log[-2000:]
    with (d / "probe" / "tiny" / "firstmet_steps.csv").open(newline="") as f:
        steps = list(csv.DictReader(f))
    kinds = {(r["kind"], r["gap_class"]) for r in steps}
    assert {("first", "idle"), ("repeat", "idle"), ("met", "idle"), ("first", "busy"), ("repeat", "busy"),
            ("met", "busy"), ("lead", "busy"), ("first-prof", "busy")} <= kinds
    assert all(r["gpu_name"] and r["torch_version"] and float(r["duration_s"]) > 0 for r in steps)
    firsts = [int(r["size"]) for r in steps if r["kind"] == "first"]
    assert len(firsts) == len(set(firsts)) == 4 and all(8 < n <= 28 for n in firsts)
    assert "aten::" in (d / "probe" / "tiny" / "profile.txt").read_text()
    with (d / "tiny" / "serve_load.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["gpu_name"] and r["torch_version"] and r["probe_before_launch_s"] for r in rows)


def test_s30serve_parts_without_timing_bounded_with_a_tiny_mode():
    text = SCRIPT.read_text()
    assert 'PARTS="probe:tiny-new set:tiny-new"' in text and "-m real.serve --out" in text
    assert "--host-probe --timing" not in text and "--host-probe\n" in text
    assert "-m real.serve.firstmet" in text and "--host-probe" in text and text.count("timeout -k 5") == 2
    assert "S30SERVE_TINY" in text and "nvidia-smi -q -d CLOCK" in text


def test_s30p_plans_are_fresh_their_prompts_above_the_pass_and_poisson_first():
    seeds, lengths, loads = _seen("gpu1-s30p-")
    lo, hi = (int(x) for x in S30P_IN.split(":")[1].split("-"))
    assert S30P_OUT.startswith("uniform:") and S30P_WARM_TOKENS < lo
    for model, short in S30P_MODELS.items():
        plan = PLANS[f"gpu1-s30p-{short}"]
        _engine(plan)
        assert plan is S30P_PLANS[f"gpu1-s30p-{short}"] and plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S30P_IN, S30P_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S30P_WARM_TOKENS, 0, 0]
        assert [r.arrival for r in plan.runs] == ["poisson", "poisson", "closed"]
        assert hi + plan.runs[2].concurrency < plan.token_budget   # a prompt with every decode row: under the budget
        assert all(1.0 / r.rate_per_s >= 2 * IDLE_WAKE_AFTER_S for r in plan.runs if r.arrival == "poisson")
        assert not {r.seed for r in plan.runs} & seeds and (model, S30P_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
