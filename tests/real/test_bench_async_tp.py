"""Section async_tp (real/bench/async_tp.py, campaign real/campaigns/s9tt.sh) on two gloo ranks with
tiny shapes: every op of every case written with its schema and environment; the fused
symmetric-memory ops, which need CUDA, written as 'unavailable' with the reason, the section going on."""

import csv
import json
import os
import socket

import torch.multiprocessing as mp

from real.bench.async_tp import QUICK_CASES, async_tp_split
from real.bench.cli import main
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert main(["--out", out, "--quick", "--only", "async_tp"]) == 0


def test_async_tp_section_on_two_gloo_ranks(tmp_path):
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and env["async_tp_symm_mem"].startswith("RuntimeError")
    with (tmp_path / "async_tp.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["async_tp"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    rows = list(csv.DictReader((tmp_path / "async_tp.csv").open()))
    expected = [(tag, op) for tag, kind, *_ in QUICK_CASES
                for op in ("mm", "collective", "sequential", "fused") + (("reduce",) if kind == "reduce_scatter" else ())]
    assert [(r["shape_tag"], r["op"]) for r in rows] == expected
    for r in rows:
        assert r["split"] == async_tp_split(r["shape_tag"]) and r["world_size"] == "2" and r["num_gpus"] == "0"
        if r["op"] == "fused":
            assert r["status"] == "unavailable" and "CUDA" in r["detail"] and r["time_s"] == ""
        else:
            assert r["status"] == "ok" and float(r["time_s"]) > 0 and float(r["time_p90_s"]) >= float(r["time_p10_s"])
    assert async_tp_split("llama3.1-405b/w1") == "holdout" and async_tp_split("llama3.1-70b/w1") == "fit"


def test_tt_linears_section_writes_the_three_gemms_of_each_linear_in_both_precisions(tmp_path):
    from real.bench.gemm import tt_linear_problems
    assert main(["--out", str(tmp_path), "--quick", "--only", "tt_linears"]) == 0
    rows = list(csv.DictReader((tmp_path / "gemm.csv").open()))
    assert len(rows) == 2 * 3 * 2 and {r["bench"] for r in rows} == {"tt_linear"}
    # the forward x W^T, the input gradient dy W, the weight gradient over the tokens (op_time_s's forms)
    assert tt_linear_problems(256, 16, 128) == [("fwd", 256, 16, 128), ("bwd_input", 256, 128, 16), ("bwd_weight", 128, 16, 256)]
    wk = [(r["shape_tag"], r["precision"], r["m"], r["n"], r["k"]) for r in rows if "/wk/" in r["shape_tag"]]
    assert wk == [(f"tt_linear/tiny/wk/{ph}", p, str(m), str(n), str(k)) for ph, m, n, k in tt_linear_problems(256, 16, 128)
                  for p in ("bf16", "fp8-tensor")]
    assert all(float(r["time_s"]) > 0 for r in rows)
