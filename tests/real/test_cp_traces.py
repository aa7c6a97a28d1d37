"""real/bench/cp_traces.py (s13cp): the trace rows' parsing on a hand-made Chrome trace, the host
marks of real/cp.py's exchanges, and the s13cp campaign as a CPU dry run on two gloo ranks."""

import csv
import gzip
import json
import os
import subprocess
from pathlib import Path

import torch

from real.bench.cp_traces import KERNEL_COLS, MARK_COLS, REP_COLS, activity_rows, mark_rows, trace_cases
from real.bench.parallel_blocks import block_split
from real.collectives import CommTimer

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _trace():
    """Two `cp_rep` ranges; a kernel launched in each (one through a driver call, on another
    stream), a wait call in the second, and a kernel launched outside both (left out)."""
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "cp_rep", "ts": 100.0, "dur": 50.0, "tid": 7},
        {"ph": "X", "cat": "user_annotation", "name": "cp_rep", "ts": 200.0, "dur": 50.0, "tid": 7},
        {"ph": "X", "cat": "cpu_op", "name": "aten::_scaled_dot_product_cudnn_attention", "ts": 101.0, "dur": 9.0,
         "tid": 7, "args": {"External id": 11}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 105.0, "dur": 3.0, "tid": 7,
         "args": {"External id": 11, "correlation": 1}},
        {"ph": "X", "cat": "kernel", "name": "cudnn_generated_fort_native_sdpa_sm90", "ts": 120.0, "dur": 20.0,
         "args": {"External id": 11, "correlation": 1, "stream": 7}},
        {"ph": "X", "cat": "cpu_op", "name": "nccl:send", "ts": 201.0, "dur": 9.0, "tid": 9,
         "args": {"External id": 12}},
        {"ph": "X", "cat": "cuda_driver", "name": "cuLaunchKernelEx", "ts": 203.0, "dur": 2.0, "tid": 9,
         "args": {"External id": 12, "correlation": 2}},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_SendRecv", "ts": 204.0, "dur": 30.0,
         "args": {"correlation": 2, "stream": 21}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamWaitEvent", "ts": 210.0, "dur": 1.0, "tid": 7,
         "args": {"correlation": 3}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 300.0, "dur": 3.0, "tid": 7,
         "args": {"correlation": 4}},
        {"ph": "X", "cat": "kernel", "name": "elementwise_kernel", "ts": 305.0, "dur": 3.0,
         "args": {"correlation": 4, "stream": 7}},
    ]
    return {"traceEvents": ev}


def test_activity_rows_place_each_activity_in_its_rep_with_its_launch_and_op():
    rows = sorted(activity_rows(_trace()), key=lambda r: (r["rep"], r["launch_us"]))
    assert [(r["rep"], r["event"], r["category"]) for r in rows] == [
        (0, "kernel", "attention"), (1, "kernel", "nccl"), (1, "wait_event", "wait_event")]
    attn, nccl, wait = rows
    assert (attn["start_us"], attn["end_us"], attn["launch_us"], attn["launch_end_us"]) == (20.0, 40.0, 5.0, 8.0)
    assert attn["op"] == "aten::_scaled_dot_product_cudnn_attention" and attn["stream"] == 7
    assert (nccl["start_us"], nccl["launch_us"], nccl["stream"], nccl["op"], nccl["launch_tid"]) == (4.0, 3.0, 21,
                                                                                                      "nccl:send", 9)
    assert wait["launch_us"] == 10.0 and wait["start_us"] != wait["start_us"]  # NaN: a host call only


def test_mark_rows_take_the_rep_that_started_before_each_mark():
    marks = [("rep", "start", 1_000, 1), ("p2p_post", "start", 1_500, 1), ("p2p_wait", "end", 2_600, 2),
             ("rep", "start", 500, 1)]
    rows = mark_rows(marks, [1_000, 2_000])
    assert [(r["rep"], r["kind"], r["t_us"]) for r in rows] == [(0, "rep", 0.0), (0, "p2p_post", 0.5),
                                                               (1, "p2p_wait", 0.6)]


def test_comm_timer_host_marks_are_off_by_default_and_bracket_spans():
    off = CommTimer(torch.device("cpu"))
    with off.span("all_gather"):
        pass
    with off.host_span("p2p_post"):
        pass
    assert off.host_marks is None and [s[0] for s in off.spans] == ["all_gather"]
    marks = []
    on = CommTimer(torch.device("cpu"), host_marks=marks)
    with on.host_span("p2p_post"):
        pass
    with on.span("p2p_wait"):
        pass
    assert [(k, p) for k, p, _, _ in marks] == [("p2p_post", "start"), ("p2p_post", "end"),
                                                ("p2p_wait", "start"), ("p2p_wait", "end")]
    assert [s[0] for s in on.spans] == ["p2p_wait"]  # a host span leaves no device span
    assert all(b[2] >= a[2] for a, b in zip(marks, marks[1:]))


def test_trace_cases_are_every_cp_configuration_fitting_first():
    cases = trace_cases(False)
    splits = [block_split("cp_block", b, m, s) for b, m, _, s in cases]
    assert len(cases) == 14 and splits == sorted(splits)  # "fit" < "holdout"
    assert splits.count("holdout") == 4
    assert {b for b, *_ in cases} == {"attention", "mla"}


def test_s13cp_campaign_cpu_dry_run(tmp_path):
    """real/campaigns/s13cp.sh with tiny shapes on two gloo ranks: the CP rows as the cp_blocks
    section writes them, then each CP configuration's reps, marks (a P2P post and wait per
    exchange of the ring, the collectives of the all-gather form) and (gzipped, empty off a GPU)
    kernel rows, per rank, every row with its environment."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S13CP_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s13cp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=600)
    d = tmp_path / "s13cp"
    for part, section in (("cp", "cp_blocks"), ("traces", "cp_traces")):
        part_env = json.loads((d / f"env_{part}.json").read_text())
        assert part_env["failures"] == [] and part_env["sections"] == section
    rows = list(csv.DictReader((d / "parallel_blocks_cp.csv").open()))
    assert [(r["block"], r["cp"], r["cp_kind"]) for r in rows] == [
        ("attention", "2", "allgather"), ("attention", "2", "ring"), ("attention", "1", ""),
        ("mla", "2", "allgather"), ("mla", "2", "ring"), ("mla", "1", "")]
    for rank in (0, 1):
        with gzip.open(d / f"cp_trace_kernels_rank{rank}.csv.gz", "rt") as f:
            assert next(csv.reader(f)) == KERNEL_COLS
        reps = list(csv.DictReader((d / f"cp_trace_reps_rank{rank}.csv").open()))
        assert next(csv.reader((d / f"cp_trace_reps_rank{rank}.csv").open())) == REP_COLS
        assert len(reps) == 4 * 5 and all(float(r["host_s"]) > 0 and r["rank"] == str(rank) for r in reps)
        assert all(set(json.loads(r["comm_detail"])) == ({"p2p_wait"} if r["cp_kind"] == "ring" else
                                                        {"all_gather", "reduce_scatter"}) for r in reps)
        marks = list(csv.DictReader((d / f"cp_trace_marks_rank{rank}.csv").open()))
        assert next(csv.reader((d / f"cp_trace_marks_rank{rank}.csv").open())) == MARK_COLS
        for kind, want in (("ring", {"p2p_post": 4, "p2p_wait": 4}), ("allgather", {"all_gather": 2,
                                                                                   "reduce_scatter": 2})):
            for block in ("attention", "mla"):
                for prof in ("0", "1"):
                    got = [m for m in marks if (m["cp_kind"], m["block"], m["profiled"], m["rep"]) ==
                           (kind, block, prof, "0") and m["phase"] == "start" and m["kind"] != "rep"]
                    counts = {k: sum(1 for m in got if m["kind"] == k) for k in want}
                    assert counts == want, (kind, block, prof, counts)
        assert all(r["gpu_name"] and r["num_gpus"] == "0" for r in marks)
