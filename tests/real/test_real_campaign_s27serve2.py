"""real/campaigns/s27serve2.sh (docs/notes/s27serve2_rule.md): set K's fresh held-out parts (plans gpu1-s27k-*), judged,
recorded without --timing. Without a GPU it runs nothing; the set-K plans are configurations no record holds."""

import os
import subprocess
from pathlib import Path

from calibration import serve_graph_floor as sgf
from real.serve.plans import PLANS, S27K_IN, S27K_MODELS, S27K_OUT, S27K_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s27serve2.sh"


def test_s27serve2_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s27serve2" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s27serve2 end" in log
    assert "parts set:gpu1-s27k-bench set:gpu1-s27k-v2lite set:gpu1-s27k-v3s1l set:gpu1-s27k-mixtral" in log
    assert (tmp_path / "s27serve2" / "host.txt").exists()


def test_s27serve2_parts_run_without_timing():
    text = SCRIPT.read_text()
    assert 'PARTS="set:tiny-new"' in text and "-m real.serve --out" in text and "--timing" not in text
    assert '--host-probe' in text and "timeout -k 5" in text


def test_s27k_plans_are_fresh_configurations():
    seeds, lengths, loads = _seen("gpu1-s27k-")
    assert tuple(S27K_MODELS) == sgf.FRESH_MODELS and 2 * len(S27K_MODELS) == sgf.FRESH_RUNS
    for model, short in S27K_MODELS.items():
        plan = PLANS[f"gpu1-s27k-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S27K_IN, S27K_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S27K_WARM_TOKENS, 0] and S27K_WARM_TOKENS >= 768 + 64
        assert not {r.seed for r in plan.runs} & seeds and (model, S27K_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
