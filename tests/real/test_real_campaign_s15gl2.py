"""real/bench/memory.py section memory_alone and real/campaigns/s15gl2.sh (issues 13, 14: the memory
kernels whose terms the layers share, timed alone at fitting-split shapes): the CPU dry run writes
every op at every token count with its environment columns, and calibration/split.py puts those rows
in the fitting split while the held-out `memory` rows of the same ops stay held out."""

import csv
import os
import subprocess
from pathlib import Path

from calibration.split import is_held_out
from real.bench import memory
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]
OPS = {"swiglu", "silu_strided", "mul_strided", "fp8_quant_1x128", "fp8_quant_rowwise", "index_gather",
       "index_copy", "index_put_acc"}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_alone_token_counts_are_none_of_the_memory_rows_counts():
    held_memory_tokens = {1024, 4096, 16384, 65536}   # bench_memory's tokens_list (memory.csv)
    assert not set(memory.ALONE_TOKENS) & held_memory_tokens


def test_split_fits_memory_alone_rows_and_keeps_memory_rows_held_out():
    for op in ("swiglu", "fp8_quant_1x128"):
        assert not is_held_out({"bench": "memory_alone", "op": op, "tokens": 8192, "width": 4096})
        assert is_held_out({"bench": "memory_alone", "op": op, "tokens": 16384, "width": 4096})
        assert is_held_out({"bench": "memory", "op": op, "tokens": 4096, "width": 4096})


def test_campaign_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "S15GL2_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(ROOT / "real/campaigns/s15gl2.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "s15gl2"
    log = (out / "log.txt").read_text()
    assert "part memory_alone exit 0" in log and "s15gl2 done" in log
    rows = _rows(out / "memory_alone.csv")
    assert list(rows[0]) == SHAPE_COLS["memory_alone"] + STAT_COLS + ENV_COLS
    assert {(r["op"], int(r["tokens"])) for r in rows} == {(op, t) for op in OPS for t in (32, 128)}
    for r in rows:
        assert r["bench"] == "memory_alone" and r["split"] == "fit"
        assert float(r["time_s"]) > 0 and float(r["bytes_moved"]) > 0
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
    assert (out / "env.json").is_file()
