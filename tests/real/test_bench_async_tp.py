"""Section async_tp (real/bench/async_tp.py, campaign real/campaigns/s9tt.sh) on two gloo ranks with
tiny shapes: every op of every case written with its schema and environment; the fused
symmetric-memory ops, which need CUDA, written as 'unavailable' with the reason, the section going on."""

import csv
import json
import os
import socket

import pytest
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
    assert main(["--out", out, "--quick", "--only", "async_tp,async_tp_405b"]) == 0


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """Sections async_tp and async_tp_405b, once, on two gloo ranks."""
    out = tmp_path_factory.mktemp("async_tp")
    mp.spawn(_rank, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def test_async_tp_section_on_two_gloo_ranks(two_rank_run):
    tmp_path = two_rank_run
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and env["async_tp_symm_mem"].startswith("RuntimeError")
    with (tmp_path / "async_tp.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["async_tp"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    all_rows = list(csv.DictReader((tmp_path / "async_tp.csv").open()))
    rows = [r for r in all_rows if not r["shape_tag"].startswith("tiny405")]   # async_tp_405b's: the test below
    expected = [(tag, op) for tag, kind, *_ in QUICK_CASES
                for op in ("mm", "collective", "sequential", "fused") + (("reduce",) if kind == "reduce_scatter" else ())
                + ("p2p_copy", "mm_beside_copy")]
    assert [(r["shape_tag"], r["op"]) for r in rows] == expected
    for r in rows:
        assert r["split"] == async_tp_split(r["shape_tag"]) and r["world_size"] == "2" and r["num_gpus"] == "0"
        if r["op"] in ("fused", "p2p_copy", "mm_beside_copy"):   # symmetric memory: CUDA only
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


def test_async_tp_405b_section_runs_the_chunk_shaped_cases(two_rank_run):
    """Campaign s10atp's multi-GPU part (run with async_tp on the two gloo ranks above): the 405B
    cases' shards are one TP8 chunk (4,096 rows), so M grows with the ranks; all held out."""
    from real.bench.async_tp import cases_405b
    assert [m for _, _, m, _, _ in cases_405b(4, False)] == [16384] * 4
    assert {m // 2 for _, _, m, _, _ in cases_405b(2, False)} == {4096}
    assert all(async_tp_split(tag) == "holdout" for tag, *_ in cases_405b(4, False))
    rows = [r for r in csv.DictReader((two_rank_run / "async_tp.csv").open()) if r["shape_tag"].startswith("tiny405")]
    assert sorted({r["shape_tag"] for r in rows}) == sorted(tag for tag, *_ in cases_405b(2, True))
    assert {r["op"] for r in rows if r["status"] == "ok"} == {"mm", "collective", "sequential", "reduce"}
    assert all(r["status"] == "unavailable" for r in rows if r["op"] in ("fused", "p2p_copy", "mm_beside_copy"))


def test_atp_parts_section_writes_reductions_and_chunk_gemms(tmp_path):
    """Campaign s10atp's one-GPU part on CPU: the partial-sum reductions at every W and layout, and
    each linear whole and as its chunk GEMMs, in both precisions; only the 70B reductions fit."""
    from real.bench.async_tp import REDUCE_WORLDS, atp_parts_split
    assert main(["--out", str(tmp_path), "--quick", "--only", "atp_parts"]) == 0
    with (tmp_path / "atp_parts.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["atp_parts"] + STAT_COLS + ENV_COLS
    rows = list(csv.DictReader((tmp_path / "atp_parts.csv").open()))
    reduce = [(r["world_size"], r["layout"]) for r in rows if r["op"] == "reduce"]
    assert reduce == [(str(w), lay) for w in REDUCE_WORLDS for lay in ("flat", "seq_sharded")]
    gemms = [(r["shape_tag"], r["precision"], r["op"], r["chunks"]) for r in rows if r["op"] != "reduce"]
    assert gemms == [(tag, p, op, "1" if op == "full" else "8") for tag in ("tiny/wq", "tiny/wo")
                     for p in ("bf16", "fp8-tensor") for op in ("full", "chunks_one_stream", "chunks_two_streams")]
    assert all(float(r["time_s"]) > 0 for r in rows)
    assert atp_parts_split("reduce", "llama3.1-70b", 2, "flat") == "fit"
    assert atp_parts_split("reduce", "llama3.1-405b", 2, "flat") == "holdout"
    assert atp_parts_split("reduce", "llama3.1-70b", 8, "seq_sharded") == "fit"
    assert atp_parts_split("full", "llama3.1-405b/w1", 0, "") == "holdout"


def test_the_timed_reductions_compute_what_the_fused_op_returns():
    """The flat reduction sums the W row chunks; the sequence-sharded one, over rows ordered [s, b],
    returns [b, s/W, N] with out[b, i] = sum over w of the row of sequence position w s/W + i, sequence b."""
    import torch
    from real.bench.async_tp import SEQS_PER_MICROBATCH, reduce_partials
    torch.manual_seed(0)
    w, b, s, n = 2, SEQS_PER_MICROBATCH, 8, 3
    stacked = torch.randn(s * b, n)
    flat = reduce_partials(stacked, w, "flat")
    assert torch.allclose(flat, stacked[: s * b // w] + stacked[s * b // w:])
    seq = reduce_partials(stacked, w, "seq_sharded")
    assert seq.shape == (b, s // w, n)
    rows = stacked.view(s, b, n)   # rows [s, b]
    expected = torch.stack([sum(rows[k * (s // w) + i, j] for k in range(w)) for j in range(b) for i in range(s // w)])
    assert torch.allclose(seq.reshape(-1, n), expected)
