"""The i14real campaign's entry points (`python -m real.bench --only nccl,parallel_blocks` under
torchrun) on two gloo ranks with tiny shapes: every row written, with its schema."""

import csv
import json
import os
import socket

import torch.multiprocessing as mp

from real.bench.cli import main
from real.bench.nccl import OPS, bus_factor, nccl_split
from real.bench.parallel_blocks import block_split
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert main(["--out", out, "--quick", "--only", "nccl,parallel_blocks"]) == 0


def test_quick_campaign_sections_on_two_gloo_ranks(tmp_path):
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and env["num_gpus"] == 0 and env["world_size"] == 2

    with (tmp_path / "nccl.csv").open() as f:
        header, rows = next(csv.reader(f)), list(csv.DictReader((tmp_path / "nccl.csv").open()))
    assert header == SHAPE_COLS["nccl"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    assert {r["op"] for r in rows} == set(OPS) and len(rows) == 3 * len(OPS)
    for r in rows:
        t, p10, p90 = float(r["time_s"]), float(r["time_p10_s"]), float(r["time_p90_s"])
        assert 0 < p10 <= t <= p90
        algbw = float(r["algbw_bytes_per_s"])
        assert abs(algbw - int(r["message_bytes"]) / t) < 1e-4 * algbw
        assert abs(float(r["busbw_bytes_per_s"]) - algbw * bus_factor(r["op"], 2)) < 1e-4 * algbw
        assert r["split"] == nccl_split(int(r["message_bytes"]))
    assert {r["split"] for r in rows} == {"fit", "holdout"}

    with (tmp_path / "parallel_blocks.csv").open() as f:
        header = next(csv.reader(f))
    assert header == SHAPE_COLS["parallel_blocks"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    rows = list(csv.DictReader((tmp_path / "parallel_blocks.csv").open()))
    got = {(r["bench"], r["block"], r["tp"], r["cp"], r["sequence_parallel"]) for r in rows}
    assert got == {("tp_block", b, tp, "1", sp) for b in ("mla", "moe")
                   for tp, sp in (("2", "True"), ("2", "False"), ("1", "False"))} | {
        ("cp_block", b, "1", cp, "False") for b in ("attention", "mla") for cp in ("2", "1")}
    for r in rows:
        assert 0 < float(r["time_p10_s"]) <= float(r["time_s"]) <= float(r["time_p90_s"])
        assert r["split"] == block_split(r["bench"], r["block"], r["model"], int(r["tokens"]))
        parallel = int(r["tp"]) * int(r["cp"]) > 1
        assert (r["comm_time_s"] != "") == parallel  # collectives timed on the 2-rank rows only
        if parallel:
            kinds = set(json.loads(r["comm_detail"]))
            want = ({"p2p_wait"} if r["bench"] == "cp_block" else
                    {"all_gather", "reduce_scatter"} if r["sequence_parallel"] == "True" else {"all_reduce"})
            assert kinds == want, r
            assert 0 < float(r["comm_time_s"]) < float(r["time_p90_s"])
