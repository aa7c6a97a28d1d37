"""real/serve/hostprobe.py (the s9srv campaign's probe of real/serve's EP2 decode time) on CPU: one
process in-process (solo), the campaign script's one-GPU path, and two gloo ranks expert-parallel."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from real.serve import hostprobe

REPO = Path(__file__).resolve().parents[2]
TINY = ["--device", "cpu", "--model", "tiny", "--rows", "2", "--context", "16", "--max-context", "96",
        "--page-size", "4", "--num-pages", "256"]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cpu_probe_and_proc_stat_read_something():
    assert 0 < hostprobe.cpu_probe() < 1.0
    steal, busy = hostprobe.proc_stat()
    assert (steal, busy) == (-1, -1) or (steal >= 0 and busy > 0)


def test_solo_probe_records_every_iteration_and_the_profiled_ops(tmp_path, monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert hostprobe.main(["--out", str(tmp_path), "--mode", "solo", "--seconds", "0.3", *TINY]) == 0
    rows = _read(tmp_path / "hostprobe_solo_r0.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(len(rows))) and len(rows) >= 2
    assert int(rows[0]["prefill_tokens"]) > 0                     # the prompts first, then decode rows
    assert any(int(r["decode_seqs"]) == 2 and int(r["prefill_tokens"]) == 0 for r in rows)
    for r in rows:
        assert float(r["duration_s"]) >= float(r["host_s"]) > 0 and float(r["cpu_probe_s"]) > 0
        assert r["dispatch_s"] == "nan"                           # no expert parallelism: no dispatch
        assert r["split"] == "fit" and r["torch_version"] and r["timestamp_utc"]
    assert rows[0]["steal_jiffies"] != "" and rows[1]["steal_jiffies"] == ""   # every STAT_EVERY iterations
    kern = _read(tmp_path / "hostprobe_kernels_solo_r0.csv")
    assert len(kern) == 1 and float(kern[0]["aten_ops_per_iteration"]) > 10   # CPU: ops, no kernels


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as e:
        hostprobe.main(["--out", "x", "--context", "5000"])
    assert e.value.code == 2


def test_s9srv_campaign_script_cpu_one_device(tmp_path):
    """real/campaigns/s9srv.sh on a machine without two GPUs: the solo part only."""
    env = {**os.environ, "PYTHON": sys.executable, "S9_DEVICE": "cpu", "S9_MODEL": "tiny", "S9_SOLO_S": "0.3",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("S9_FORCE_EP2", None)
    subprocess.run(["bash", str(REPO / "real/campaigns/s9srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=240)
    d = tmp_path / "s9srv"
    log = (d / "log.txt").read_text()
    assert "solo exit 0" in log and "ep skipped" in log and "s9srv end" in log
    assert _read(d / "solo" / "hostprobe_solo_r0.csv") and (d / "host.txt").exists()


def test_ep_probe_two_gloo_ranks_time_the_dispatch(tmp_path):
    """The EP path under torchrun: both ranks step together, each iteration's MoE dispatch timed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "-m", "real.serve.hostprobe", "--out", str(tmp_path), "--mode", "ep", "--seconds", "0.3", *TINY],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=240)
    r0, r1 = _read(tmp_path / "hostprobe_ep_r0.csv"), _read(tmp_path / "hostprobe_ep_r1.csv")
    assert len(r0) == len(r1) >= 2                                # lockstep: the same iterations
    for r in r0 + r1:
        pre, inside, post = float(r["pre_dispatch_s"]), float(r["dispatch_s"]), float(r["post_dispatch_s"])
        assert pre > 0 and inside > 0 and post > 0 and pre + inside + post <= float(r["host_s"]) * 1.0001
        assert float(r["exchange_s"]) > 0 and r["mode"] == "ep"
    assert _read(tmp_path / "hostprobe_kernels_ep_r1.csv")
