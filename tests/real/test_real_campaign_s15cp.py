"""real/campaigns/s15cp.sh (issue 14: the TP2/CP2 block rows beside a host-speed probe): its CPU dry run
(tiny shapes, two gloo ranks) writes both rounds' TP and CP rows, each with the probe before and after
it, the extra fitting v2-lite-MoE-like row, the collective host rows and the environment; and on a host
with one GPU it stops cleanly, nothing run."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from real.bench.parallel_blocks import EXTRA_TP_CASES, block_split, probe_cols
from tests.campaigns import dry_run

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_s15cp_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s15cp", tmp_path, 600)
    for name in ("round1", "round2"):
        assert f"s15cp part {name} rc=0" in log, log[-2000:]
        tp, cp = _rows(d / name / "parallel_blocks.csv"), _rows(d / name / "parallel_blocks_cp.csv")
        assert {r["bench"] for r in tp} == {"tp_block"} and {r["bench"] for r in cp} == {"cp_block"}
        # the quick TP cases (MLA, MoE at 32 tokens; the extra MoE at 48): TP2 with and without SP + TP1
        assert len(tp) == 9 and sum(r["tokens"] == "48" for r in tp) == 3
        assert len(cp) == 2 * 3   # attention and MLA: all-gather, ring, reference
        for r in tp + cp:
            before, after, mean = (float(r[k]) for k in ("probe_launch_before_s", "probe_launch_after_s", "probe_launch_s"))
            assert 0 < before < 1e-2 and 0 < after < 1e-2 and math.isclose(mean, (before + after) / 2, rel_tol=1e-4)
            assert r["gpu_name"] and r["torch_version"] and "nccl_version" in r and "sm_clock_mhz" in r
            assert float(r["host_time_s"]) > 0
        host = _rows(d / name / "collective_host.csv")
        assert {r["op"] for r in host} == {"kernel", "all_gather", "reduce_scatter", "all_reduce"}
        assert all(float(r["probe_launch_s"]) > 0 for r in host)
        assert json.loads((d / name / "env.json").read_text()).get("torch_version")
        assert not (d / name / "raw").exists()
    assert "s15cp done" in log


def test_s15cp_split_and_probe_columns():
    # the extra v2-lite MoE sizes are fitting rows; the sweep's v2-lite MoE rows stay held out
    assert all(block_split("tp_block", b, m, t) == "fit" for b, m, t in EXTRA_TP_CASES)
    assert block_split("tp_block", "moe", "v2-lite-slice", 2048) == "holdout"
    assert block_split("tp_block", "moe", "v3-slice-1l", 2048) == "fit"
    assert probe_cols(math.nan, math.nan) == {}
    assert probe_cols(2e-6, 4e-6)["probe_launch_s"] == 3e-6


def test_s15cp_stops_cleanly_without_two_gpus(tmp_path):
    env = {**os.environ, "PY": sys.executable, "PATH": str(tmp_path / "bin") + os.pathsep + os.environ["PATH"]}
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "nvidia-smi"   # a host with one GPU
    fake.write_text("#!/bin/sh\n[ \"$1\" = \"-L\" ] && echo 'GPU 0: fake'\nexit 0\n")
    fake.chmod(0o755)
    subprocess.run(["bash", str(REPO / "real/campaigns/s15cp.sh"), str(tmp_path / "out")], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=60)
    log = (tmp_path / "out" / "s15cp" / "s15cp.log").read_text()
    assert "needs 2: nothing run" in log and not (tmp_path / "out" / "s15cp" / "round1").exists()


def test_s15cp2_campaign_cpu_dry_run(tmp_path):
    """real/campaigns/s15cp2.sh: three rotated rounds of every quick TP and CP row, each with its round
    and its probe; the collective host once."""
    d, log = dry_run("s15cp2", tmp_path, 600)
    assert "s15cp2 part rounds rc=0" in log, log[-2000:]
    tp, cp = _rows(d / "parallel_blocks.csv"), _rows(d / "parallel_blocks_cp.csv")
    assert len(tp) == 3 * 9 and len(cp) == 3 * 6
    assert sorted({r["round"] for r in tp + cp}) == ["0", "1", "2"]
    firsts = [next(r for r in tp if r["round"] == k)["tokens"] for k in "012"]
    assert firsts == ["32", "32", "48"]   # the cases rotated by one a round (mla 32, moe 32, moe 48)
    assert all(float(r["probe_launch_s"]) > 0 and r["torch_version"] for r in tp + cp)
    assert len(_rows(d / "collective_host.csv")) == 4
    assert "s15cp2 done" in log and not (d / "raw").exists()


def test_rotated_cases():
    from real.bench.parallel_blocks import rotated
    assert rotated([1, 2, 3], 0) == [1, 2, 3] and rotated([1, 2, 3], 4) == [2, 3, 1] and rotated([], 2) == []
