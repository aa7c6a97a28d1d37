"""real/campaigns/s21srvnew.sh on CPU (plan tiny-new): every run's row carries the host probe, the pinning,
the flat sizes warmed before the first run and the environment; the GPU plans hold the runs the
pre-registration (calibration/prereg_serve.py) predicted."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s21srvnew_campaign_cpu_dry_run_records_probed_warmed_runs(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S21_DEVICE": "cpu", "S21_PLANS": "tiny-new", "S21_PART_S": "60",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s21srvnew.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    d = tmp_path / "s21srvnew"
    log = (d / "log.txt").read_text()
    assert "tiny-new exit 0" in log and "s21srvnew end" in log
    load = _read(d / "tiny-new" / "serve_load.csv")
    assert [r["run_id"] for r in load] == ["n21-tiny-poisson-r20-tiny", "n21-tiny-closed-c2-tiny"]
    for r in load:
        assert r["split"] == "holdout" and r["pin"] == "core" and r["warm_shapes"] == "32"   # the first run warmed
        assert r["timestamp_utc"] and r["torch_version"] and r["gpu_name"] and r["cpu_model"]
        for when in ("before", "after"):
            assert float(r[f"probe_{when}_launch_s"]) > 0
        assert int(r["num_completed"]) == int(r["num_requests"]) > 0
    reqs = _read(d / "tiny-new" / "serve_requests.csv")
    assert {q["run_id"] for q in reqs} == {r["run_id"] for r in load}
    assert _read(d / "tiny-new" / "serve_iterations.csv")


@pytest.mark.parametrize("plan_prefix,reg_name", [("gpu1-new-", "s21srvnew"), ("gpu1-new2-", "s21srvnew2"),
                                                   ("gpu1-s22-", "s22ttft")])
def test_new_model_plans_are_the_registered_runs(plan_prefix, reg_name):
    from calibration import prereg_serve as ps
    from real.serve.plans import GPU1, PLANS, S21_MODELS, s21_short
    reg = ps.REGISTRATIONS[reg_name]
    assert S21_MODELS == ps.MODELS
    for model in S21_MODELS:
        plan = PLANS[f"{plan_prefix}{s21_short(model)}"]
        assert plan.model == model
        assert (plan.page_size, plan.num_pages, plan.token_budget, plan.max_running, plan.max_context) == \
            (ps.ENGINE["page_size"], ps.ENGINE["num_pages"], ps.ENGINE["token_budget"], ps.ENGINE["max_running"],
             ps.ENGINE["max_context"])
        assert plan.warmup == GPU1.warmup
        got = [(r.name, r.arrival, r.input_len, r.output_len, r.rate_per_s, r.concurrency, r.load_s, r.seed,
                r.warm_shapes, r.split) for r in plan.runs]
        want = [(ps.run_id(model, r, reg.prefix), r.arrival, r.input_len, r.output_len, r.rate_per_s, r.concurrency,
                 r.load_s, r.seed, ps.WARM_TOKENS if k == 0 else 0, "holdout") for k, r in enumerate(reg.runs)]
        assert got == want
