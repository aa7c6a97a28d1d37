"""real/campaigns/s25v3pre.sh (docs/notes/s25v3pre_rule.md): the fresh kernel part (real/serve/prefillprof.py at
compositions no kernel record holds) and the fresh held-out load parts (plans gpu1-s25v-*), on CPU with the tiny
model; without a GPU, nothing; the plans are configurations no record holds."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from calibration import prereg_serve as ps
from real.serve.plans import GPU1, PLANS, S25V_IN, S25V_MODELS, S25V_OUT, S25V_WARM_TOKENS
from real.serve.prefillprof import parse_compositions
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s25v3pre_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s25v3pre.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=60)
    log = (tmp_path / "s25v3pre" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s25v3pre end" in log
    assert "plans gpu1-s25v-v3s2l gpu1-s25v-qwen3moe" in log and "compositions 1x1280,1x2048,2x960,3x640" in log


def test_s25v3pre_campaign_cpu_dry_run_records_every_part(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S25V_DEVICE": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s25v3pre.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s25v3pre"
    log = (d / "log.txt").read_text()
    assert "prefillprof exit 0" in log and "tiny-new exit 0" in log and "s25v3pre end" in log
    steps = _read(d / "prefill" / "prefill_steps.csv")
    assert steps and all(r["model"] == "tiny" and r["torch_version"] and r["gpu_name"] for r in steps)
    load = _read(d / "tiny" / "serve_load.csv")
    assert load and all(float(r["probe_before_launch_s"]) > 0 for r in load)


def test_compositions_parse_and_bad_ones_are_named():
    assert parse_compositions("1x1280,3x640") == ((1, 1280, 0), (3, 640, 0))
    assert parse_compositions("") == ()
    with pytest.raises(SystemExit, match="'2y9'"):
        parse_compositions("2y9")


def test_s25v_plans_are_fresh_configurations_in_the_s21srvnew_engine():
    seen_seeds = {r.seed for name, plan in PLANS.items() if not name.startswith("gpu1-s25v-") for r in plan.runs}
    seen_lengths = {(plan.model, r.input_len) for name, plan in PLANS.items() if not name.startswith("gpu1-s25v-")
                    for r in plan.runs}
    for model, short in S25V_MODELS.items():
        plan = PLANS[f"gpu1-s25v-{short}"]
        assert plan.model == model and plan.warmup == GPU1.warmup
        assert (plan.page_size, plan.num_pages, plan.token_budget, plan.max_running, plan.max_context) == \
            (ps.ENGINE["page_size"], ps.ENGINE["num_pages"], ps.ENGINE["token_budget"], ps.ENGINE["max_running"],
             ps.ENGINE["max_context"])
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S25V_IN, S25V_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S25V_WARM_TOKENS, 0, 0]
        assert S25V_WARM_TOKENS >= 1280 + 64 and plan.max_context >= 1280 + 96
        assert not {r.seed for r in plan.runs} & seen_seeds
        assert (model, S25V_IN) not in seen_lengths
