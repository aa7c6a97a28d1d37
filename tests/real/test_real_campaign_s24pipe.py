"""real/campaigns/s24pipe.sh (docs/notes/s24pipe_rule.md): the fresh eager-host part (real/serve/eagerhost.py on a
model no fit saw) and the fresh held-out load parts (plans gpu1-s24p-*), on CPU with the tiny model; and without a
GPU, nothing."""

import csv
import os
import subprocess
from pathlib import Path

from calibration import prereg_serve as ps
from real.serve.plans import GPU1, PLANS, S21_IN, S21_OUT, S24P_MODELS, S24_MODELS
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s24pipe_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24pipe.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=60)
    log = (tmp_path / "s24pipe" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s24pipe end" in log
    assert "gpu1-s24p-bench gpu1-s24p-mixtral" in log and "eager models bench-small" in log


def test_s24pipe_campaign_cpu_dry_run_records_every_part(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S24P_DEVICE": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24pipe.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s24pipe"
    log = (d / "log.txt").read_text()
    assert "eager exit 0" in log and "tiny-new exit 0" in log and "s24pipe end" in log
    rows = _read(d / "eager" / "eager_host.csv")
    assert rows and all(r["model"] == "tiny" and r["torch_version"] and r["gpu_name"] for r in rows)
    assert all(float(r["duration_s"]) >= float(r["host_s"]) > 0 for r in rows)
    load = _read(d / "tiny" / "serve_load.csv")
    assert load and all(float(r["probe_before_launch_s"]) > 0 for r in load)


def test_s24p_plans_are_fresh_configurations_in_the_s21srvnew_engine_and_mix():
    seen_seeds = {r.seed for name, plan in PLANS.items() if not name.startswith("gpu1-s24p-") for r in plan.runs}
    for model, short in S24P_MODELS.items():
        plan = PLANS[f"gpu1-s24p-{short}"]
        assert plan.model == model and plan.warmup == GPU1.warmup
        assert (plan.page_size, plan.num_pages, plan.token_budget, plan.max_running, plan.max_context) == \
            (ps.ENGINE["page_size"], ps.ENGINE["num_pages"], ps.ENGINE["token_budget"], ps.ENGINE["max_running"],
             ps.ENGINE["max_context"])
        assert all(r.name.startswith(f"n24p-{short}-") for r in plan.runs)
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S21_IN, S21_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [ps.WARM_TOKENS, 0, 0]
        assert not {r.seed for r in plan.runs} & seen_seeds
    # bench-small: no load record holds it; mixtral-mla-slice: at a rate and concurrencies none of its records had
    assert "bench-small" not in set(ps.MODELS) | set(S24_MODELS) | {"v3-slice-2l"}
    mixtral_seen = {(r.arrival, r.rate_per_s, r.concurrency) for name, plan in PLANS.items()
                    if plan.model == "mixtral-mla-slice" and not name.startswith("gpu1-s24p-") for r in plan.runs}
    assert not {(r.arrival, r.rate_per_s, r.concurrency) for r in PLANS["gpu1-s24p-mixtral"].runs} & mixtral_seen
