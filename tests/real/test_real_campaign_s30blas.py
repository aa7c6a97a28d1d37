"""real/campaigns/s30blas.sh (diagnosis probe, fitting records only): plan ep2-repeat in two fresh EP2 processes, as
is and with cuBLASLt's heuristics cache off. On CPU (S30BLAS_TINY=1, tiny-ep2-repeat on two gloo ranks) both
conditions run the same stream twice with the host probe and the per-iteration timing; without GPUs it runs nothing."""

import csv
import os
import subprocess
from pathlib import Path

from tests.campaigns import FORKED_PY, dry_run

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s30blas_without_two_gpus_runs_nothing(tmp_path):
    env = {**os.environ, "PY": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s30blas.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=60)
    log = (tmp_path / "s30blas" / "s30blas.log").read_text()
    assert "skipped: 0 GPU(s), needs 2" in log and "plan ep2-repeat, conditions default nocache" in log
    assert "s30blas end" in log and (tmp_path / "s30blas" / "host.txt").exists()


def test_s30blas_cpu_dry_run_runs_both_conditions(tmp_path):
    d, log = dry_run("s30blas", tmp_path, timeout_s=400, scale=3)
    assert "default exit 0" in log and "nocache exit 0" in log and "CUBLASLT_HEURISTICS_CACHE_CAPACITY=0" in log, log
    for cond in ("default", "nocache"):
        load = _read(d / cond / "serve_load.csv")
        assert [r["run_id"] for r in load] == ["tinyep2rep-poisson-r20-1", "tinyep2rep-poisson-r20-2"]
        assert {r["split"] for r in load} == {"fit"} and {r["ep_size"] for r in load} == {"2"}
        assert all(r["torch_version"] and float(r["probe_before_launch_s"]) > 0 for r in load)
        its = _read(d / cond / "serve_iterations.csv")
        assert {r["rank"] for r in its} == {"0", "1"} and all(r["host_s"] not in ("", "nan") for r in its)
