"""real/campaigns/s26start.sh (docs/notes/s26start_rule.md): set H's fresh held-out load parts (plans gpu1-s26h-*).
Without a GPU it runs nothing; the plans are configurations no record holds. Its CPU dry run runs the same
`real.serve --plan tiny-new` invocation as round 1's (tests/real/test_real_campaign_s25v3pre.py covers it)."""

import os
import subprocess
from pathlib import Path

from calibration import prereg_serve as ps
from real.serve.plans import GPU1, PLANS, S26H_IN, S26H_MODELS, S26H_OUT, S26H_WARM_TOKENS
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s26start.sh"


def test_s26start_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s26start" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s26start end" in log
    assert "plans gpu1-s26h-qwen2moe gpu1-s26h-v2lite gpu1-s26h-v3s1l" in log
    assert (tmp_path / "s26start" / "host.txt").exists()


def test_s26start_cpu_mode_runs_the_round_one_dry_run_plan():
    text = SCRIPT.read_text()
    assert 'PLANS="tiny-new"' in text and "-m real.serve --out" in text and "--timing --host-probe" in text
    assert "timeout -k 5" in text


def test_s26h_plans_are_fresh_configurations_in_the_s21srvnew_engine():
    others = {name: plan for name, plan in PLANS.items() if not name.startswith("gpu1-s26h-")}
    seen_seeds = {r.seed for plan in others.values() for r in plan.runs}
    seen_lengths = {(plan.model, r.input_len) for plan in others.values() for r in plan.runs}
    seen_loads = {(plan.model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency)
                  for plan in others.values() for r in plan.runs}
    assert set(S26H_MODELS) == {"qwen2moe-mla-slice", "v2-lite-slice", "v3-slice-1l"}
    for model, short in S26H_MODELS.items():
        plan = PLANS[f"gpu1-s26h-{short}"]
        assert plan.model == model and plan.warmup == GPU1.warmup
        assert (plan.page_size, plan.num_pages, plan.token_budget, plan.max_running, plan.max_context) == \
            (ps.ENGINE["page_size"], ps.ENGINE["num_pages"], ps.ENGINE["token_budget"], ps.ENGINE["max_running"],
             ps.ENGINE["max_context"])
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S26H_IN, S26H_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S26H_WARM_TOKENS, 0]
        assert S26H_WARM_TOKENS >= 960 + 64 and plan.max_context >= 960 + 100
        assert not {r.seed for r in plan.runs} & seen_seeds
        assert (model, S26H_IN) not in seen_lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in seen_loads
