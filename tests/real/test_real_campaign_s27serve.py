"""real/campaigns/s27serve.sh (docs/notes/s27serve_rule.md): set J's fresh held-out parts (plans gpu1-s27j-*), judged
without --timing, and the same plans again with --timing into a diagnostic folder. Without a GPU it runs nothing; the
set-J plans are configurations no record holds."""

import os
import subprocess
from pathlib import Path

from calibration import serve_graph_ops as sgo
from real.serve.plans import PLANS, S26F_MODELS, S27J_IN, S27J_MODELS, S27J_OUT, S27J_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s27serve.sh"


def test_s27serve_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s27serve" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s27serve end" in log
    assert ("parts set:gpu1-s27j-bench set:gpu1-s27j-v2lite set:gpu1-s27j-v3s1l "
            "timing:gpu1-s27j-bench timing:gpu1-s27j-v2lite timing:gpu1-s27j-v3s1l") in log
    assert (tmp_path / "s27serve" / "host.txt").exists()


def test_s27serve_judged_parts_run_without_timing_and_the_diagnostic_with_it():
    text = SCRIPT.read_text()
    assert 'PARTS="set:tiny-new timing:tiny-new"' in text and "-m real.serve --out" in text
    assert 'dest="$DIR/timing/$model"; extra="--timing"' in text and 'dest="$DIR/$model"; extra=""' in text
    assert "--host-probe $extra" in text and "timeout -k 5" in text


def test_s27j_plans_are_fresh_configurations():
    seeds, lengths, loads = _seen("gpu1-s27j-")
    assert tuple(S27J_MODELS) == sgo.FRESH_MODELS and not set(S27J_MODELS) & set(S26F_MODELS)
    assert 2 * len(S27J_MODELS) == sgo.FRESH_RUNS
    for model, short in S27J_MODELS.items():
        plan = PLANS[f"gpu1-s27j-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S27J_IN, S27J_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S27J_WARM_TOKENS, 0] and S27J_WARM_TOKENS >= 640 + 64
        assert not {r.seed for r in plan.runs} & seeds and (model, S27J_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
