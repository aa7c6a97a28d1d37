"""real/campaigns/s28serve.sh (docs/notes/s28serve_rule.md): set M's fresh held-out parts (plans gpu1-s28m-*), judged,
recorded without --timing, and two of them again with --timing (evidence). Without a GPU it runs nothing; the set-M
plans are configurations no record holds."""

import os
import subprocess
from pathlib import Path

from calibration import serve_floor_rejudge as sti
from real.serve.plans import PLANS, S28M_IN, S28M_MODELS, S28M_OUT, S28M_PLANS, S28M_WARM_TOKENS
from tests.campaigns import FORKED_PY
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s28serve.sh"


def test_s28serve_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s28serve" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s28serve end" in log
    assert ("parts set:gpu1-s28m-bench timing:gpu1-s28m-bench set:gpu1-s28m-v2lite timing:gpu1-s28m-v2lite "
            "set:gpu1-s28m-v3s1l set:gpu1-s28m-mixtral") in log
    assert (tmp_path / "s28serve" / "host.txt").exists()


def test_s28serve_untimed_parts_without_timing_the_timed_with_it_bounded():
    text = SCRIPT.read_text()
    assert 'PARTS="set:tiny-new timing:tiny-new"' in text and "-m real.serve --out" in text
    assert 'dest="$DIR/timing/$model"; extra="--timing"' in text and 'dest="$DIR/$model"; extra=""' in text
    assert "--host-probe $extra" in text and "timeout -k 5" in text


def test_s28m_plans_are_fresh_configurations_and_the_judge_reads_them():
    seeds, lengths, loads = _seen("gpu1-s28m-")
    assert tuple(S28M_MODELS) == sti.FRESH_MODELS and set(sti.TIMED_MODELS) <= set(S28M_MODELS)
    assert 2 * len(S28M_PLANS) == sti.FRESH_RUNS
    text = SCRIPT.read_text()
    assert all(f"timing:gpu1-s28m-{S28M_MODELS[m]}" in text for m in sti.TIMED_MODELS)
    for model, short in S28M_MODELS.items():
        plan = PLANS[f"gpu1-s28m-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S28M_IN, S28M_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S28M_WARM_TOKENS, 0] and S28M_WARM_TOKENS >= 592 + 216
        assert not {r.seed for r in plan.runs} & seeds and (model, S28M_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
