"""real/campaigns/s18fp8.sh and real/bench/fp8_grad_check.py (session s18fp8): the compiled
tensorwise Float8 linears' gradients against eager, as a CPU dry run."""

import csv
import json
import os
import subprocess
from pathlib import Path

from real.bench import fp8_grad_check
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _campaign(tmp_path, gpus: int, cases: str):
    env = {**os.environ, "PYTHON": FORKED_PY, "S18FP8_QUICK": "1", "S18FP8_QUICK_GPUS": str(gpus),
           "S18FP8_CASES": cases, "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s18fp8.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return tmp_path / "s18fp8"


def test_s18fp8_campaign_cpu_dry_run(tmp_path):
    """One row per case named, every column of the check, the gradients compiled (aot_eager off a
    GPU) equal to eager for s18tt's implementation and the fix."""
    out = _campaign(tmp_path, 1, "linear/s18tt,linear/custom_op")
    with (out / "fp8_grad_check.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["impl"], r["backend"]) for r in rows] == [("linear", "s18tt", "aot_eager"),
                                                                    ("linear", "custom_op", "aot_eager")]
    for r in rows:
        assert r["error"] == "" and r["grads_ok"] == "True" and float(r["max_weight_rel_error"]) < 1e-6
        assert set(json.loads(r["rel_errors_json"])) == {"x", "weight"}
        assert 0 < float(r["eager_vs_bf16_max_rel_error"]) < 0.2   # FP8 rounding, not zero gradients
        assert float(r["compiled_step_s"]) > 0 and r["torch_version"] and r["gpu_name"] and r["timestamp_utc"]
    assert "s18fp8 done" in (out / "log.txt").read_text()


def test_s18fp8_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0, "")
    assert "nothing to run" in (out / "log.txt").read_text()
    assert not (out / "fp8_grad_check.csv").exists()


def test_campaign_order_reproduces_then_checks_the_fix_on_both_blocks():
    order = fp8_grad_check.cases(quick=False)
    assert order[:3] == [("tiny", "s18tt"), ("tiny", "custom_op"), ("mid", "custom_op")]
    assert set(order) == {(c, i) for c in ("tiny", "mid", "linear") for i in fp8_grad_check.IMPLS}
    assert all(c != "mid" for c, _ in fp8_grad_check.cases(quick=True))
