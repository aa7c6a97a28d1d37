"""real/campaigns/s28serve2.sh (docs/notes/s28serve2_rule.md): set N's fresh held-out parts (plans gpu1-s28n-*), recorded
without --timing. Without a GPU it runs nothing; the set-N plans are configurations no record holds, and their first
run's t=0 closed-loop iteration lands (on average) above its warm pass and under the token budget (what the candidate prices)."""

import os
import subprocess
from pathlib import Path

from real.serve.plans import PLANS, S28N_IN, S28N_MODELS, S28N_OUT, S28N_PLANS, S28N_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s28serve2.sh"


def test_s28serve2_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s28serve2" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s28serve2 end" in log
    assert "parts set:gpu1-s28n-bench set:gpu1-s28n-v2lite" in log
    assert (tmp_path / "s28serve2" / "host.txt").exists()


def test_s28serve2_parts_without_timing_bounded_with_a_tiny_mode():
    text = SCRIPT.read_text()
    assert 'PARTS="set:tiny-new"' in text and "-m real.serve --out" in text and "--host-probe --timing" not in text and "extra=" not in text
    assert "--host-probe" in text and "timeout -k 5" in text and "S28SERVE2_TINY" in text


def test_s28n_plans_are_fresh_configurations_their_first_iteration_between_pass_and_budget():
    seeds, lengths, loads = _seen("gpu1-s28n-")
    lo, hi = (int(x) for x in S28N_IN.split(":")[1].split("-"))
    assert S28N_OUT.startswith("uniform:")
    for model, short in S28N_MODELS.items():
        plan = PLANS[f"gpu1-s28n-{short}"]
        _engine(plan)
        assert plan is S28N_PLANS[f"gpu1-s28n-{short}"] and plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S28N_IN, S28N_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S28N_WARM_TOKENS, 0, 0]
        first = plan.runs[0]
        assert first.arrival == "closed" and S28N_WARM_TOKENS < first.concurrency * (lo + hi) / 2 and first.concurrency * hi < plan.token_budget
        assert not {r.seed for r in plan.runs} & seeds and (model, S28N_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
