"""real/serve/hostprobe.py (the s9srv campaign's probe of real/serve's EP2 decode time) and
real/campaigns/s9srv.sh on CPU: solo engines side by side, then two gloo ranks expert-parallel."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from real.serve import hostprobe

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cpu_probe_and_proc_stat_read_something():
    assert 0 < hostprobe.cpu_probe() < 1.0
    steal, busy = hostprobe.proc_stat()
    assert (steal, busy) == (-1, -1) or (steal >= 0 and busy > 0)


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as e:
        hostprobe.main(["--out", "x", "--context", "5000"])
    assert e.value.code == 2


def test_s9srv_campaign_script_cpu_dry_run(tmp_path):
    """real/campaigns/s9srv.sh on CPU with two gloo ranks: solo engines side by side, then expert
    parallel, each probed iteration by iteration and profiled (one test: process start-ups dominate)."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S9_DEVICE": "cpu", "S9_MODEL": "tiny", "S9_SOLO_S": "0.3",
           "S9_EP_S": "1.5", "S9_FORCE_EP2": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s9srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s9srv"
    log = (d / "log.txt").read_text()
    assert "solo exit 0" in log and "ep exit 0" in log and "s9srv end" in log and (d / "host.txt").exists()
    for rank in (0, 1):
        rows = _read(d / "solo" / f"hostprobe_solo_r{rank}.csv")
        assert [int(r["iteration"]) for r in rows] == list(range(len(rows))) and len(rows) >= 2
        assert int(rows[0]["prefill_tokens"]) > 0                 # the prompts first, then decode rows
        assert any(int(r["decode_seqs"]) == 2 and int(r["prefill_tokens"]) == 0 for r in rows)
        for r in rows:
            assert float(r["duration_s"]) >= float(r["host_s"]) > 0 and float(r["cpu_probe_s"]) > 0
            assert r["dispatch_s"] == "nan" and r["exchange_s"] == "nan"   # solo: no dispatch, no exchange
            assert r["split"] == "fit" and r["torch_version"] and r["timestamp_utc"] and r["num_gpus"] == "0"
        assert rows[0]["steal_jiffies"] != "" and rows[1]["steal_jiffies"] == ""   # every STAT_EVERY iterations
        kern = _read(d / "solo" / f"hostprobe_kernels_solo_r{rank}.csv")
        assert len(kern) == 1 and float(kern[0]["aten_ops_per_iteration"]) > 10  # CPU: ops, no kernels
    r0, r1 = _read(d / "ep" / "hostprobe_ep_r0.csv"), _read(d / "ep" / "hostprobe_ep_r1.csv")
    assert len(r0) == len(r1) >= 2                                # lockstep: the same iterations
    # the mixed phase (the last third): short prompts join the decode rows, the ranks in turn
    for rows in (r0, r1):
        mixed = [r for r in rows if r["phase"] == "mixed"]
        assert mixed and rows[0]["phase"] == "decode"
        assert any(int(r["prefill_tokens"]) > 0 and int(r["decode_seqs"]) >= 2 for r in mixed)
        assert all(r["segments_allocated"] == "-1" for r in rows)     # CPU: no caching allocator
    for r in r0 + r1:
        pre, inside, post = float(r["pre_dispatch_s"]), float(r["dispatch_s"]), float(r["post_dispatch_s"])
        assert pre > 0 and inside > 0 and post > 0 and pre + inside + post <= float(r["host_s"]) * 1.0001
        assert float(r["exchange_s"]) > 0 and r["mode"] == "ep"
    assert _read(d / "ep" / "hostprobe_kernels_ep_r1.csv")
