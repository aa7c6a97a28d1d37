"""Section tp_beside (real/bench/tp_beside.py, campaign real/campaigns/s11tpo.sh) on two gloo ranks
with tiny shapes: every op of every case written with its schema and environment, the collectives
repeated at least twice beside the GEMM, every row held out."""

import csv
import json
import os
import socket

import torch.multiprocessing as mp

from real.bench.cli import main
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from real.bench.sections import MULTI_GPU_SECTIONS, OPT_IN_SECTIONS
from real.bench.tp_beside import CASES, QUICK_CASES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NCCL_MAX_NCHANNELS="16")
    assert main(["--out", out, "--quick", "--only", "tp_beside"]) == 0


def test_tp_beside_section_on_two_gloo_ranks(tmp_path):
    assert "tp_beside" in OPT_IN_SECTIONS and "tp_beside" in MULTI_GPU_SECTIONS
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and env["nccl_channels"] == "16"
    with (tmp_path / "tp_beside.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["tp_beside"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    rows = list(csv.DictReader((tmp_path / "tp_beside.csv").open()))
    assert [(r["shape_tag"], r["op"]) for r in rows] == [
        (tag, op) for tag, *_ in QUICK_CASES for op in ("mm", "collective", "mm_beside", "collective_beside")]
    for r in rows:
        assert r["status"] == "ok" and r["split"] == "holdout" and r["world_size"] == "2" and r["nccl_channels"] == "16"
        assert float(r["time_s"]) > 0 and float(r["time_p90_s"]) >= float(r["time_p10_s"])
        assert int(r["collective_repeats"]) == 1 if r["op"] in ("mm", "collective") else int(r["collective_repeats"]) >= 2
    # the GPU cases: Megatron's GPT 177B TP8 linears at 2,048 tokens, each collective's buffer divisible by 2 ranks
    assert all(cm % 2 == 0 and cm <= 2048 for *_, cm, cn in CASES)
