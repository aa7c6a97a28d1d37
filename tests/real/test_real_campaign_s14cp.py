"""real/campaigns/s14cp.sh (issue 14: per-rank traces of the TP2 blocks at fitting sizes on a second
GPU kind): its CPU dry run (tiny shapes, two gloo ranks) writes both ranks' traces and the one-GPU
references, the environment beside them, and logs the part's exit status."""

import json
import os
import subprocess
import sys
from pathlib import Path
from tests.campaigns import dry_run

REPO = Path(__file__).resolve().parents[2]


def test_s14cp_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s14cp", tmp_path, 300)
    assert "s14cp part tp_traces rc=0" in log, log[-2000:]
    assert "s14cp done" in log
    traces = d / "traces"
    assert len(list(traces.glob("trace_tp_*_rank0.json.gz"))) == 2   # the quick cases: MLA SP, MoE
    assert len(list(traces.glob("trace_tp_*_rank1.json.gz"))) == 2
    assert len(list(traces.glob("trace_tp_*_tp1.json.gz"))) == 2      # the one-GPU references
    env_json = json.loads((d / "env_tp_traces.json").read_text())
    assert env_json.get("torch_version") or env_json.get("torch")
    assert not (d / "part_tp_traces").exists()


def test_s14cp_stops_cleanly_without_two_gpus(tmp_path):
    env = {**os.environ, "PY": sys.executable, "PATH": str(tmp_path / "bin") + os.pathsep + os.environ["PATH"]}
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "nvidia-smi"   # a host with one GPU
    fake.write_text("#!/bin/sh\n[ \"$1\" = \"-L\" ] && echo 'GPU 0: fake'\nexit 0\n")
    fake.chmod(0o755)
    subprocess.run(["bash", str(REPO / "real/campaigns/s14cp.sh"), str(tmp_path / "out")], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=60)
    log = (tmp_path / "out" / "s14cp" / "s14cp.log").read_text()
    assert "needs 2: nothing run" in log and not list((tmp_path / "out" / "s14cp" / "traces").glob("*"))
