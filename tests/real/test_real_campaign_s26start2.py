"""real/campaigns/s26start2.sh (docs/notes/s26start2_rule.md): the fitting load parts (plans gpu1-s26f-*) and set I's
fresh held-out parts (plans gpu1-s26i-*) of one delivery. Without a GPU it runs nothing; the set-I plans are
configurations no record holds; the fitting plans are named fitting (split "fit") in advance."""

import os
import subprocess
from pathlib import Path

from calibration import prereg_serve as ps
from calibration import serve_load_host as slh
from real.serve.plans import (GPU1, PLANS, S26F_IN, S26F_MODELS, S26F_OUT, S26F_WARM_TOKENS, S26I_IN, S26I_MODELS,
                              S26I_OUT, S26I_WARM_TOKENS)
from tests.campaigns import FORKED_PY
from twin.serving.pipeline import eager_ops

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s26start2.sh"


def test_s26start2_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    log = (tmp_path / "s26start2" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s26start2 end" in log
    assert ("parts fit:gpu1-s26f-qwen3moe fit:gpu1-s26f-qwen2moe fit:gpu1-s26f-mixtral fit:gpu1-s26f-v3s2l "
            "set:gpu1-s26i-v2lite set:gpu1-s26i-v3s1l set:gpu1-s26i-bench") in log
    assert (tmp_path / "s26start2" / "host.txt").exists()


def test_s26start2_tiny_mode_runs_the_round_one_dry_run_plan_into_both_folders():
    text = SCRIPT.read_text()
    assert 'PARTS="fit:tiny-new set:tiny-new"' in text and "-m real.serve --out" in text
    assert '--timing --host-probe' in text and "timeout -k 5" in text and 'dest="$DIR/fit/$model"' in text


def _seen(exclude):
    others = [plan for name, plan in PLANS.items() if not name.startswith(exclude)]
    return ({r.seed for p in others for r in p.runs}, {(p.model, r.input_len) for p in others for r in p.runs},
            {(p.model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) for p in others for r in p.runs})


def _engine(plan):
    assert plan.warmup == GPU1.warmup
    assert (plan.page_size, plan.num_pages, plan.token_budget, plan.max_running, plan.max_context) == \
        (ps.ENGINE["page_size"], ps.ENGINE["num_pages"], ps.ENGINE["token_budget"], ps.ENGINE["max_running"],
         ps.ENGINE["max_context"])


def test_s26f_plans_are_the_fit_models_named_fitting():
    assert tuple(S26F_MODELS) == slh.FIT_MODELS and 2 * len(S26F_MODELS) == slh.FIT_RUNS
    for model, short in S26F_MODELS.items():
        plan = PLANS[f"gpu1-s26f-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "fit" and r.pin == "core" and (r.input_len, r.output_len) == (S26F_IN, S26F_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S26F_WARM_TOKENS, 0] and S26F_WARM_TOKENS >= 1152 + 64


def test_s26i_plans_are_fresh_configurations_outside_the_fit():
    seeds, lengths, loads = _seen("gpu1-s26i-")
    assert tuple(S26I_MODELS) == slh.FRESH_MODELS and not set(S26I_MODELS) & set(S26F_MODELS)
    for model, short in S26I_MODELS.items():
        plan = PLANS[f"gpu1-s26i-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S26I_IN, S26I_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S26I_WARM_TOKENS, 0] and S26I_WARM_TOKENS >= 480 + 64
        assert not {r.seed for r in plan.runs} & seeds and (model, S26I_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads
