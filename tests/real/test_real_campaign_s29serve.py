"""real/campaigns/s29serve.sh (docs/notes/s29serve_rule.md): set O's fresh held-out parts (plans gpu1-s29o-*), recorded
without --timing. Without a GPU it runs nothing; the set-O plans are configurations no record holds, with a warm pass
under the prompts (the closed loop's t=0 prompt, after the idle before the run, lands above it and under the budget) and
Poisson rates low enough that most prompt steps follow an idle of IDLE_WAKE_AFTER_S or more (what the candidate prices)."""

import csv
import os
import subprocess
from pathlib import Path

from real.serve.plans import PLANS, S29O_IN, S29O_MODELS, S29O_OUT, S29O_PLANS, S29O_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.engine import IDLE_WAKE_AFTER_S
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s29serve.sh"


def test_s29serve_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s29serve" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s29serve end" in log
    assert "parts " + " ".join(f"set:gpu1-s29o-{s}" for s in S29O_MODELS.values()) in log
    assert (tmp_path / "s29serve" / "host.txt").exists()


def test_s29serve_cpu_dry_run_records_a_tiny_run_with_its_host(tmp_path):
    """S29SERVE_TINY=1: the tiny model's tiny-new plan through the same command (~6 CPU-s): rows with the GPU name,
    torch version and the host probe."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S29SERVE_TINY": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=200)
    log = (tmp_path / "s29serve" / "log.txt").read_text()
    assert "set tiny-new exit 0" in log and "s29serve end" in log, log[-2000:]
    with (tmp_path / "s29serve" / "tiny" / "serve_load.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["gpu_name"] and r["torch_version"] and r["probe_before_launch_s"] for r in rows)


def test_s29serve_parts_without_timing_bounded_with_a_tiny_mode():
    text = SCRIPT.read_text()
    assert 'PARTS="set:tiny-new"' in text and "-m real.serve --out" in text and "--host-probe --timing" not in text
    assert "--host-probe" in text and "timeout -k 5" in text and "S29SERVE_TINY" in text and "nvidia-smi -q -d CLOCK" in text


def test_s29o_plans_are_fresh_their_first_prompt_above_the_pass_and_poisson_steps_after_idle():
    seeds, lengths, loads = _seen("gpu1-s29o-")
    lo, hi = (int(x) for x in S29O_IN.split(":")[1].split("-"))
    assert S29O_OUT.startswith("uniform:") and S29O_WARM_TOKENS < lo + (hi - lo) // 8
    for model, short in S29O_MODELS.items():
        plan = PLANS[f"gpu1-s29o-{short}"]
        _engine(plan)
        assert plan is S29O_PLANS[f"gpu1-s29o-{short}"] and plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S29O_IN, S29O_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S29O_WARM_TOKENS, 0, 0]
        first = plan.runs[0]
        assert first.arrival == "closed" and first.concurrency * hi < plan.token_budget
        # Poisson: the mean gap between arrivals is several times the idle that makes a step post-idle
        assert all(1.0 / r.rate_per_s >= 2 * IDLE_WAKE_AFTER_S for r in plan.runs if r.arrival == "poisson")
        assert not {r.seed for r in plan.runs} & seeds and (model, S29O_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
