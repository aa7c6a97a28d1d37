"""real/campaigns/s31look.sh (docs/notes/s31look_rule.md): set Q's fresh held-out load runs (plans gpu1-s31q-*, recorded
without --timing), then evidence: bench-small's plan with cuBLASLt's heuristics cache off and the first-met probe on a
model the s30serve probe never ran. Without a GPU it runs nothing; the set-Q plans are configurations no record holds,
their warm pass under the prompts, an early Poisson run, a closed loop, a late Poisson run in each process."""

import csv
import os
import subprocess
from pathlib import Path

from real.serve.plans import PLANS, S31Q_IN, S31Q_MODELS, S31Q_OUT, S31Q_PLANS, S31Q_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.engine import IDLE_WAKE_AFTER_S
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s31look.sh"


def test_s31look_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s31look" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s31look end" in log
    sets = " ".join(f"set:gpu1-s31q-{s}" for s in S31Q_MODELS.values())
    assert f"parts {sets} nocache:gpu1-s31q-bench probe:gpu1-s31q-qwen3moe" in log
    assert (tmp_path / "s31look" / "host.txt").exists()


def test_s31look_cpu_dry_run_records_a_tiny_run_its_nocache_twin_and_the_probe(tmp_path):
    """S31LOOK_TINY=1: the tiny-new plan as a set part and a nocache part, the probe at a warm pass of 8 (~10 CPU-s)."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S31LOOK_TINY": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=240)
    d = tmp_path / "s31look"
    log = (d / "log.txt").read_text()
    assert all(f"{k} tiny-new exit 0" in log for k in ("set", "nocache", "probe")) and "s31look end" in log, log[-2000:]
    for sub in ("tiny", "nocache/tiny"):
        with (d / sub / "serve_load.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and all(r["gpu_name"] and r["torch_version"] and r["probe_before_launch_s"] for r in rows)
    with (d / "probe" / "tiny" / "firstmet_steps.csv").open(newline="") as f:
        assert {r["kind"] for r in csv.DictReader(f)} >= {"first", "repeat", "met"}


def test_s31look_parts_without_timing_bounded_with_a_tiny_mode():
    text = SCRIPT.read_text()
    assert "--host-probe --timing" not in text and text.count("timeout -k 5") == 3
    assert "CUBLASLT_HEURISTICS_CACHE_CAPACITY=0" in text and "S31LOOK_TINY" in text and "nvidia-smi -q -d CLOCK" in text


def test_s31q_plans_are_fresh_their_prompts_above_the_pass_poisson_around_a_loop():
    seeds, lengths, loads = _seen(("gpu1-s31q-", "gpu1-s32c-", "gpu1-s32k-"))   # s32cold's plans came after set Q
    lo, hi = (int(x) for x in S31Q_IN.split(":")[1].split("-"))
    assert S31Q_OUT.startswith("uniform:") and S31Q_WARM_TOKENS < lo
    for model, short in S31Q_MODELS.items():
        plan = PLANS[f"gpu1-s31q-{short}"]
        _engine(plan)
        assert plan is S31Q_PLANS[f"gpu1-s31q-{short}"] and plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S31Q_IN, S31Q_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S31Q_WARM_TOKENS, 0, 0]
        assert [r.arrival for r in plan.runs] == ["poisson", "closed", "poisson"]
        assert hi + plan.runs[1].concurrency < plan.token_budget   # a prompt with every decode row: under the budget
        assert all(1.0 / r.rate_per_s >= 2 * IDLE_WAKE_AFTER_S for r in plan.runs if r.arrival == "poisson")
        assert not {r.seed for r in plan.runs} & seeds and (model, S31Q_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
