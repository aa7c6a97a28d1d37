"""real/bench/cp_block.py (section cp_block) and real/campaigns/s17cp.sh (issue 14, torchtitan's 8B
CP rows): one checkpointed Llama block at 32K positions a rank under PyTorch's CP. On CPU the CP1
path runs for real, the multi-rank path on two gloo ranks with PyTorch's CP API stood in for (it
runs only CUDA SDPA kernels), and the campaign as a dry run."""

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from real.bench import cp_block, torch_cp
from real.bench.cli import main
from tests.ports import free_port
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_block_flops_counts_linears_and_attention():
    """Full AC: the linears 8 x params x s (forward, recomputation, two backward GEMMs each);
    attention 4.5 x 2 s^2 H K. Tiny block: params 64 x (2x4 + 2x2) x 16 + 3 x 64 x 128 = 36,864."""
    s = 64
    assert cp_block.block_flops(s, quick=True) == 8.0 * 36864 * s + 4.5 * 2.0 * s * s * 4 * 16


def test_block_recomputes_its_forward_under_full_ac():
    """ptd_checkpoint_wrapper as torchtitan's apply_ac: the backward re-runs the block's forward
    (two SDPA forwards per step), eager here; and the gradients reach x and every parameter."""
    calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*a, **k):
        calls.append(1)
        return real_sdpa(*a, **k)
    fwd, bwd, block = cp_block.block_fns(16, torch.device("cpu"), quick=True, compiled=False)
    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        bwd(fwd())
    finally:
        torch.nn.functional.scaled_dot_product_attention = real_sdpa
    assert len(calls) == 2


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), REAL_BENCH_TRACE_DIR=out, REAL_BENCH_CP_BLOCK_COMPILE="0")
    from torch.distributed.device_mesh import init_device_mesh
    from tests.real.test_torch_cp_scaling import _no_cp
    # PyTorch's CP runs only CUDA kernels: a context that leaves SDPA local stands in
    torch_cp.CP_API.update(unavailable=lambda dev: "", api=lambda: (init_device_mesh, _no_cp, lambda m: None))
    assert main(["--out", out, "--quick", "--only", "cp_block"]) == 0


def test_section_on_two_gloo_ranks(tmp_path):
    """W = 2: S = 2 x the per-rank length, one row (bench cp_block, eager here), split fit; every
    rank's timeline and memory gathered to rank 0; a trace per rank."""
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and env["world_size"] == 2 and env["cp_block_compiled"] is False
    assert [m["rank"] for m in env["cp_block_memory"]] == [0, 1]
    rows = _rows(tmp_path / "torch_cp.csv")
    assert len(rows) == 1
    r = rows[0]
    assert (r["bench"], r["cp"], r["rotate_method"], r["split"]) == ("cp_block", "2", "allgather", "fit")
    assert r["seq_len"] == str(2 * cp_block.QUICK_LOCAL_LEN) and r["local_len"] == str(cp_block.QUICK_LOCAL_LEN)
    assert float(r["time_s"]) > 0 and float(r["flops"]) == pytest.approx(cp_block.block_flops(cp_block.QUICK_LOCAL_LEN, True), rel=1e-5)
    assert {t["rank"] for t in _rows(tmp_path / "torch_cp_timeline.csv")} == {"0", "1"}
    assert len(list(tmp_path.glob("trace_cp_block_S128_rank*.json.gz"))) == 2


def _campaign(tmp_path, ranks: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S17CP_QUICK": "1", "S17CP_QUICK_RANKS": str(ranks),
           "S17CP_EAGER": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s17cp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return tmp_path / "s17cp"


def test_s17cp_campaign_cpu_dry_run(tmp_path):
    """Two gloo ranks: the CP2 part records that PyTorch's CP needs CUDA, no CP4 part, CP1's row
    with the environment (versions, timestamp), each part's files renamed by its CP degree."""
    out = _campaign(tmp_path, 2)
    assert "CUDA" in json.loads((out / "env_cp2.json").read_text())["torch_cp_skipped"]
    assert not (out / "env_cp4.json").exists()
    rows = _rows(out / "torch_cp_cp1.csv")
    assert [(r["bench"], r["cp"]) for r in rows] == [("cp_block", "1")]
    assert float(rows[0]["time_s"]) > 0 and rows[0]["torch_version"] and rows[0]["timestamp_utc"]
    assert json.loads((out / "env_cp1.json").read_text())["cp_block_memory"][0]["rank"] == 0


def test_s17cp_campaign_needs_two_gpus(tmp_path):
    """One GPU: the campaign exits 0 having run nothing."""
    out = _campaign(tmp_path, 1)
    assert "nothing to run" in (out / "log.txt").read_text()
    assert not list(out.glob("*.csv"))
