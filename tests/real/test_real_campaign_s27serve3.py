"""real/campaigns/s27serve3.sh (docs/notes/s27serve3_rule.md): set L's fresh held-out parts (plans gpu1-s27l-*), judged,
recorded without --timing, and the idle-gap probe (real/serve/idleprobe.py, evidence). Without a GPU it runs nothing;
the set-L plans are configurations no record holds."""

import os
import subprocess
from pathlib import Path

from calibration import serve_graph_floor_h200 as sgh
from real.serve.plans import PLANS, S27K_MODELS, S27L_IN, S27L_OUT, S27L_PLANS, S27L_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s27serve3.sh"


def test_s27serve3_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s27serve3" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s27serve3 end" in log
    assert ("parts set:gpu1-s27l-bench set:gpu1-s27l-v2lite set:gpu1-s27l-v3s1l set:gpu1-s27l-mixtral "
            "probe:bench-small probe:v3-slice-1l") in log
    assert (tmp_path / "s27serve3" / "host.txt").exists()


def test_s27serve3_parts_run_without_timing_and_bounded():
    text = SCRIPT.read_text()
    assert 'PARTS="set:tiny-new probe:bench-small"' in text and "-m real.serve --out" in text
    assert "--timing" not in text and "--host-probe" in text and text.count("timeout -k 5") == 2
    assert "-m real.serve.idleprobe" in text


def test_s27l_plans_are_fresh_configurations():
    seeds, lengths, loads = _seen("gpu1-s27l-")
    assert tuple(S27K_MODELS) == sgh.FRESH_MODELS and 2 * len(S27L_PLANS) == sgh.FRESH_RUNS
    for model, short in S27K_MODELS.items():
        plan = PLANS[f"gpu1-s27l-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S27L_IN, S27L_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S27L_WARM_TOKENS, 0] and S27L_WARM_TOKENS >= 720 + 72
        assert not {r.seed for r in plan.runs} & seeds and (model, S27L_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
