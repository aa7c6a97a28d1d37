"""real/campaigns/s24eager.sh (docs/notes/s24eager_rule.md): the fitting part (real/serve/eagerhost.py: the engine's
eager iteration host time per model, the probe around each model's rounds, the operators counted) and the fresh
load parts (plans gpu1-s24-*: models no load record held), on CPU with the tiny model; and without a GPU, nothing."""

import csv
import os
import subprocess
from pathlib import Path

from calibration import prereg_serve as ps
from calibration import serve_eager_host as seh
from real.serve.eagerhost import COMPOSITIONS, FIT_MODELS, TINY_COMPOSITIONS
from real.serve.plans import GPU1, PLANS, S21_IN, S21_OUT, S24_MODELS
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s24eager_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24eager.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=60)
    log = (tmp_path / "s24eager" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s24eager end" in log
    assert "gpu1-s24-v2lite gpu1-s24-v3s1l" in log and ",".join(FIT_MODELS) in log


def test_s24eager_campaign_cpu_dry_run_records_both_parts(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S24_DEVICE": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24eager.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s24eager"
    log = (d / "log.txt").read_text()
    assert "fit exit 0" in log and "tiny-new exit 0" in log and "s24eager end" in log
    rows = _read(d / "fit" / "eager_host.csv")
    measured = {(int(r["prompts"]), int(r["tokens"]), int(r["decode_rows"])) for r in rows
                if not r["composition"].startswith("setup-")}
    assert measured == set(TINY_COMPOSITIONS)
    for r in rows:
        assert r["model"] == "tiny" and r["torch_version"] and r["gpu_name"] and r["timestamp_utc"]
        assert float(r["host_s"]) > 0 and float(r["duration_s"]) >= float(r["host_s"])
        assert float(r["probe_before_launch_s"]) > 0 and float(r["probe_after_launch_s"]) > 0
        assert int(r["chunks"]) == int(r["prompts"])
        if not r["composition"].startswith("setup-"):
            assert int(r["ops"]) > 0
    # the setup iteration of the composition with decode rows: its rows' prompts, one chunk each
    assert any(r["composition"] == "setup-2" for r in rows)
    load = _read(d / "tiny" / "serve_load.csv")
    assert load and all(float(r["probe_before_launch_s"]) > 0 for r in load)


def test_s24_plans_are_fresh_models_in_the_s21srvnew_engine_and_mix():
    for model, short in S24_MODELS.items():
        plan = PLANS[f"gpu1-s24-{short}"]
        assert plan.model == model and plan.warmup == GPU1.warmup
        assert (plan.page_size, plan.num_pages, plan.token_budget, plan.max_running, plan.max_context) == \
            (ps.ENGINE["page_size"], ps.ENGINE["num_pages"], ps.ENGINE["token_budget"], ps.ENGINE["max_running"],
             ps.ENGINE["max_context"])
        assert [r.name for r in plan.runs] == [f"n24-{short}-poisson-r20-mid", f"n24-{short}-closed-c16-mid",
                                               f"n24-{short}-closed-c24-mid"]
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S21_IN, S21_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [ps.WARM_TOKENS, 0, 0]
    assert tuple(S24_MODELS) == seh.FRESH_MODELS
    # no load record holds these models; the fitting models are the serve-fit ones
    assert not set(S24_MODELS) & (set(ps.MODELS) | {"v3-slice-2l"})
    assert set(FIT_MODELS) == set(ps.MODELS) | {"v3-slice-2l"}
    # every composition fits the engine's budget and running limit
    assert all(p * n + d <= GPU1.token_budget and p + d <= GPU1.max_running for p, n, d in COMPOSITIONS)
