"""The i14real campaign's entry points (`python -m real.bench --only nccl,parallel_blocks` under
torchrun) on two gloo ranks with tiny shapes: every row written, with its schema; and the i14cp
campaign script (all-gather CP rows, then ring CP rows in a process of their own) as a CPU dry run."""

import csv
import json
import os
import subprocess
from pathlib import Path

import torch.multiprocessing as mp

from real.bench.cli import main
from real.bench.nccl import OPS, bus_factor, nccl_split
from real.bench.parallel_blocks import block_split
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.ports import free_port
from tests.campaigns import FORKED_PY


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert main(["--out", out, "--quick", "--only", "nccl,parallel_blocks"]) == 0


def test_quick_campaign_sections_on_two_gloo_ranks(tmp_path):
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
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
    got = {(r["bench"], r["block"], r["tp"], r["cp"], r["cp_kind"], r["sequence_parallel"]) for r in rows}
    assert got == {("tp_block", b, tp, "1", "", sp) for b in ("mla", "moe")
                   for tp, sp in (("2", "True"), ("2", "False"), ("1", "False"))} | {
        ("cp_block", b, "1", cp, kind, "False") for b in ("attention", "mla")
        for cp, kind in (("2", "allgather"), ("2", "ring"), ("1", ""))}
    _check_block_rows(rows)


CP_COMM_KINDS = {"ring": {"p2p_wait"}, "allgather": {"all_gather", "reduce_scatter"}}


def _check_block_rows(rows):
    for r in rows:
        assert 0 < float(r["time_p10_s"]) <= float(r["time_s"]) <= float(r["time_p90_s"])
        assert r["split"] == block_split(r["bench"], r["block"], r["model"], int(r["tokens"]))
        parallel = int(r["tp"]) * int(r["cp"]) > 1
        assert (r["comm_time_s"] != "") == parallel  # collectives timed on the 2-rank rows only
        if parallel:
            kinds = set(json.loads(r["comm_detail"]))
            want = (CP_COMM_KINDS[r["cp_kind"]] if r["bench"] == "cp_block" else
                    {"all_gather", "reduce_scatter"} if r["sequence_parallel"] == "True" else {"all_reduce"})
            assert kinds == want, r
            assert 0 < float(r["comm_time_s"]) < float(r["time_p90_s"])


REPO = Path(__file__).resolve().parents[2]


def test_i14cp_campaign_cpu_dry_run_writes_allgather_rows_then_ring_rows(tmp_path):
    """real/campaigns/i14cp.sh with tiny shapes on two gloo ranks: the all-gather part (with the
    one-GPU references) and the ring part run as two torchrun processes, their rows merged into
    parallel_blocks_cp.csv, all-gather rows first, every row with its environment columns."""
    env = {**os.environ, "PYTHON": FORKED_PY, "I14CP_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/i14cp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=600)
    d = tmp_path / "i14cp"
    for part in ("allgather", "ring"):
        part_env = json.loads((d / f"env_{part}.json").read_text())
        assert part_env["failures"] == [] and part_env["sections"] == f"cp_{part}"
        check = part_env[f"cp_check_{part}"]  # BF16 CP attention against FP32 SDPA
        assert set(check) == {"out", "dq", "dk", "dv", "ref_max_abs"} and check["ref_max_abs"] > 0
        assert max(check[t] for t in ("out", "dq", "dk", "dv")) < 0.05 * max(1.0, check["ref_max_abs"])
    with (d / "parallel_blocks_cp.csv").open() as f:
        header = next(csv.reader(f))
    assert header == SHAPE_COLS["parallel_blocks"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    rows = list(csv.DictReader((d / "parallel_blocks_cp.csv").open()))
    assert [(r["block"], r["cp"], r["cp_kind"]) for r in rows] == [
        ("attention", "2", "allgather"), ("attention", "1", ""), ("mla", "2", "allgather"), ("mla", "1", ""),
        ("attention", "2", "ring"), ("mla", "2", "ring")]
    assert all(r["bench"] == "cp_block" and r["num_gpus"] == "0" and "nccl_version" in r for r in rows)
    _check_block_rows(rows)


def test_s7cp_campaign_cpu_dry_run_writes_tp_rows_then_cp_rows_with_host_times(tmp_path):
    """real/campaigns/s7cp.sh with tiny shapes on two gloo ranks: the TP part (TP2 with and
    without SP and the one-GPU references) and the CP part (all-gather and ring, with the
    references), each a torchrun process of its own; every row carries its environment, the
    split of `block_split` and the slowest rank's host issue time, at most its measured time on
    a CPU (where the host does the work)."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S7CP_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s7cp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=600)
    d = tmp_path / "s7cp"
    assert not (d / "parallel_blocks_cp_efficient.csv").exists()  # the cuDNN-path fallback not needed
    for part, section in (("tp", "tp_blocks"), ("cp", "cp_blocks")):
        part_env = json.loads((d / f"env_{part}.json").read_text())
        assert part_env["failures"] == [] and part_env["sections"] == section
    check = json.loads((d / "env_cp.json").read_text())
    for kind in ("allgather", "ring"):
        errs = check[f"cp_check_{kind}"]
        assert max(errs[t] for t in ("out", "dq", "dk", "dv")) < 0.05 * max(1.0, errs["ref_max_abs"])
    rows = {}
    for part in ("tp", "cp"):
        with (d / f"parallel_blocks_{part}.csv").open() as f:
            assert next(csv.reader(f)) == SHAPE_COLS["parallel_blocks"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
        rows[part] = list(csv.DictReader((d / f"parallel_blocks_{part}.csv").open()))
        _check_block_rows(rows[part])
        for r in rows[part]:
            assert 0 < float(r["host_time_s"]) <= float(r["time_p90_s"]) * 1.05, r
    assert {(r["block"], r["tp"], r["sequence_parallel"]) for r in rows["tp"]} == {
        (b, tp, sp) for b in ("mla", "moe") for tp, sp in (("2", "True"), ("2", "False"), ("1", "False"))}
    assert [(r["block"], r["cp"], r["cp_kind"]) for r in rows["cp"]] == [
        ("attention", "2", "allgather"), ("attention", "2", "ring"), ("attention", "1", ""),
        ("mla", "2", "allgather"), ("mla", "2", "ring"), ("mla", "1", "")]
    assert all(r["bench"] == "tp_block" for r in rows["tp"]) and all(r["bench"] == "cp_block" for r in rows["cp"])
    with (d / "collective_host.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["collective_host"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    host = list(csv.DictReader((d / "collective_host.csv").open()))
    assert [r["op"] for r in host] == ["kernel", "all_gather", "reduce_scatter", "all_reduce"]
    assert all(0 < float(r["time_p10_s"]) <= float(r["time_s"]) <= float(r["time_p90_s"]) for r in host)
    assert all(r["split"] == "fit" and r["num_gpus"] == "0" for r in host)
    traces = sorted(p.name for p in (d / "traces").iterdir())  # both ranks' profiler traces
    assert traces == sorted(f"trace_tp_{b}_{sp}_rank{r}.json.gz" for b, sp in (("mla", "sp"), ("mla", "nosp"),
                                                                               ("moe", "nosp")) for r in (0, 1))
