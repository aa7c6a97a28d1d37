"""real/campaigns/s25v3pre2.sh (docs/notes/s25v3pre2_rule.md): set G's fresh held-out load parts (plans gpu1-s25w-*).
Without a GPU it runs nothing; the plans are configurations no record holds. Its CPU dry run runs the same
`real.serve --plan tiny-new` invocation as round 1's (tests/real/test_real_campaign_s25v3pre.py covers it)."""

import os
import subprocess
from pathlib import Path

from calibration import prereg_serve as ps
from real.serve.plans import GPU1, PLANS, S25W_IN, S25W_MODELS, S25W_OUT, S25W_WARM_TOKENS
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s25v3pre2.sh"


def test_s25v3pre2_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s25v3pre2" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s25v3pre2 end" in log
    assert "plans gpu1-s25w-v3s2l gpu1-s25w-qwen3moe gpu1-s25w-mixtral" in log
    assert (tmp_path / "s25v3pre2" / "host.txt").exists()


def test_s25v3pre2_cpu_mode_runs_the_round_one_dry_run_plan():
    text = SCRIPT.read_text()
    assert 'PLANS="tiny-new"' in text and "-m real.serve --out" in text and "--timing --host-probe" in text
    assert "timeout -k 5" in text


def test_s25w_plans_are_fresh_configurations_in_the_s21srvnew_engine():
    others = {name: plan for name, plan in PLANS.items() if not name.startswith("gpu1-s25w-")}
    seen_seeds = {r.seed for plan in others.values() for r in plan.runs}
    seen_lengths = {(plan.model, r.input_len) for plan in others.values() for r in plan.runs}
    seen_loads = {(plan.model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency)
                  for plan in others.values() for r in plan.runs}
    assert set(S25W_MODELS) == {"v3-slice-2l", "qwen3moe-mla-slice", "mixtral-mla-slice"}
    for model, short in S25W_MODELS.items():
        plan = PLANS[f"gpu1-s25w-{short}"]
        assert plan.model == model and plan.warmup == GPU1.warmup
        assert (plan.page_size, plan.num_pages, plan.token_budget, plan.max_running, plan.max_context) == \
            (ps.ENGINE["page_size"], ps.ENGINE["num_pages"], ps.ENGINE["token_budget"], ps.ENGINE["max_running"],
             ps.ENGINE["max_context"])
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S25W_IN, S25W_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S25W_WARM_TOKENS, 0]
        assert S25W_WARM_TOKENS >= 1088 + 64 and plan.max_context >= 1088 + 120
        assert not {r.seed for r in plan.runs} & seen_seeds
        assert (model, S25W_IN) not in seen_lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in seen_loads
