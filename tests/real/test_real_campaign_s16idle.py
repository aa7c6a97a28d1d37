"""real/campaigns/s16idle.sh (issue 13: the records that judge each pipeline rank's idle,
docs/notes/s16idle_rule.md): on a 2-GPU host its two PP2 rounds (here two gloo ranks, the tiny
model, DualPipe and DualPipeV at 4 micro-batches), each configuration on exactly its timed steps with
the host's marks, the second round in the reverse order, every row with the GPU's name and timestamp
and the run's versions in its env file; on a 4-GPU host it hands over to s15rank.sh unchanged; and
the clean stop on a host with fewer than two GPUs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.campaigns import FORKED_PY, REPO, dry_run


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _with_fake_gpus(tmp_path: Path, count: int) -> dict:
    """An environment whose nvidia-smi lists `count` GPUs and runs nothing else."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "nvidia-smi"
    lines = "; ".join(f"echo 'GPU {i}: fake'" for i in range(count)) or "true"
    fake.write_text(f"#!/bin/sh\nif [ \"$1\" = \"-L\" ]; then {lines}; fi\nexit 0\n")
    fake.chmod(0o755)
    return {**os.environ, "PY": sys.executable, "PATH": str(tmp_path / "bin") + os.pathsep + os.environ["PATH"]}


def test_s16idle_stops_cleanly_with_one_gpu(tmp_path):
    env = _with_fake_gpus(tmp_path, 1)
    subprocess.run(["bash", str(REPO / "real/campaigns/s16idle.sh"), str(tmp_path / "out")], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=60)
    log = (tmp_path / "out" / "s16idle" / "s16idle.log").read_text()
    assert "needs 2: nothing run" in log and "part" not in log
    assert not (tmp_path / "out" / "s16idle" / "round_a").exists()


def test_s16idle_hands_a_four_gpu_host_to_s15rank(tmp_path):
    # no part asked of s15rank.sh: only its hand-over and log (its own rounds are tested in
    # tests/real/test_real_campaign_s15rank.py)
    env = {**_with_fake_gpus(tmp_path, 4), "S15RANK_PARTS": "none"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s16idle.sh"), str(tmp_path / "out")], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=60)
    log = (tmp_path / "out" / "s15rank" / "s15rank.log").read_text()
    assert "s15rank: 4 GPUs" in log and "s15rank done" in log
    assert not (tmp_path / "out" / "s16idle").exists()


def test_s16idle_campaign_cpu_dry_run(tmp_path):
    # one round (the second, in the reverse order) keeps the dry run short: torchrun's start is most
    # of it; round_a is the same command on the other order
    d, log = dry_run("s16idle", tmp_path, 600, scale=4, S16IDLE_PARTS="round_b")
    assert "s16idle part round_b rc=0" in log, log[-2000:]
    assert "part round_a" not in log and not (d / "round_a" / "pipeline_step.csv").exists()
    folder = d / "round_b"
    steps = _rows(folder / "pipeline_step.csv")
    assert [row["schedule"] for row in steps] == ["dualpipev", "dualpipe"]
    assert all(row["reps"] == "3" and row["num_gpus"] == "2" and row["pp"] == "2" and row["split"] == "fit"
               and row["gpu_name"] and row["timestamp_utc"] and row["torch_version"]
               and {"sm_clock_mhz", "cuda_version", "nccl_version"} <= set(row) for row in steps)
    ops = _rows(folder / "pipeline_ops.csv")
    assert {int(o["rep"]) for o in ops} == {0, 1, 2} and {o["rank"] for o in ops} == {"0", "1"}
    assert all(o["host_start_s"] for o in ops)
    env = json.loads((folder / "env_pipeline_pp2.json").read_text())
    assert env["torch_version"] and env["config"]["reps_min"] == 3 and env["config"]["whole_reps"]
    assert "s16idle done" in log


def test_s16idle_sixteen_micro_batch_set_cpu_dry_run(tmp_path):
    """S16IDLE_SET=16 (rule addendum A): the same round at 16 micro-batches into OUTDIR/s16idle16/,
    every row in the fitting split; on a 4-GPU host nothing (the set is for 2-GPU hosts)."""
    env = {**os.environ, "PY": FORKED_PY, "S16IDLE_TINY": "1", "S16IDLE_TIMEOUT_SCALE": "4",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "S16IDLE_PARTS": "round_a", "S16IDLE_SET": "16"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s16idle.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=600)
    d = tmp_path / "s16idle16"
    log = (d / "s16idle16.log").read_text()
    assert "s16idle16 part round_a rc=0" in log and "s16idle16 done" in log, log[-2000:]
    assert not (tmp_path / "s16idle").exists()
    steps = _rows(d / "round_a" / "pipeline_step.csv")
    assert [(r["schedule"], r["num_microbatches"], r["split"], r["reps"]) for r in steps] == [
        ("dualpipe", "16", "fit", "3"), ("dualpipev", "16", "fit", "3")]
    four = tmp_path / "four"
    subprocess.run(["bash", str(REPO / "real/campaigns/s16idle.sh"), str(four)], cwd=REPO,
                   env={**env, "S16IDLE_GPUS": "4"}, check=True, capture_output=True, timeout=60)
    assert "nothing run" in (four / "s16idle16" / "s16idle16.log").read_text() and not (four / "s15rank").exists()
