"""real/campaigns/s23closed.sh (docs/notes/s23closed_rule.md, third candidate): s21srvnew.sh's parts with fresh seeds,
into OUTDIR/s23closed/<model>/; its GPU plans hold the runs calibration.serve_score_heads.FRESH replays."""

import os
import subprocess
from pathlib import Path

from calibration import prereg_serve as ps
from calibration import serve_score_heads as ssh
from real.serve.plans import GPU1, PLANS, S21_MODELS, s21_short
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def test_s23closed_campaign_without_a_gpu_runs_nothing_into_its_own_folder(tmp_path):
    """The parts are s21srvnew.sh's (its CPU dry run is tests/real/test_real_campaign_s21srvnew.py): here the
    routing, and the exit 0 doing nothing without a GPU; each plan's records go to the model's folder."""
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s23closed.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=60)
    log = (tmp_path / "s23closed" / "log.txt").read_text()
    assert "s23closed start" in log and "gpu1-s23c-qwen3moe gpu1-s23c-qwen2moe gpu1-s23c-mixtral" in log
    assert "skipped: no GPU" in log and "s23closed end" in log
    assert "model=${model#gpu1-s23c-}" in (REPO / "real/campaigns/s21srvnew.sh").read_text()


def test_s23_plans_are_the_fresh_runs():
    for model in S21_MODELS:
        plan = PLANS[f"gpu1-s23c-{s21_short(model)}"]
        assert plan.model == model and plan.warmup == GPU1.warmup
        got = [(r.name, r.arrival, r.input_len, r.output_len, r.rate_per_s, r.concurrency, r.load_s, r.seed,
                r.warm_shapes, r.split) for r in plan.runs]
        want = [(ps.run_id(model, r, ssh.FRESH.prefix), r.arrival, r.input_len, r.output_len, r.rate_per_s,
                 r.concurrency, r.load_s, r.seed, ps.WARM_TOKENS if k == 0 else 0, "holdout")
                for k, r in enumerate(ssh.FRESH.runs)]
        assert got == want
    # seeds no earlier records set used (s21srvnew 41-43, s21srvnew2 51-53, s22ttft 61-63)
    used = {r.seed for reg in ps.REGISTRATIONS.values() for r in reg.runs}
    assert not used & {r.seed for r in ssh.FRESH.runs}
