"""calibration.serve_stall_causes: the rule's stall definition, its attribution order and the host verdict
(docs/notes/s24stall_rule.md), on hand-made records."""

import csv
import re
from pathlib import Path

import pytest

from calibration import serve_stall_causes as sc

ITER_COLS = ["run_id", "rank", "iteration", "start_s", "duration_s", "prefill_tokens", "graph_batch"]
STALL_COLS = ["run_id", "rank", "iteration", "span_s", "thread_cpu_s", "run_delay_s", "nvcsw", "nivcsw", "minflt",
              "majflt", "cpu_steal_s", "gc_count", "gc_s", "gc_max_gen", "cuda_segment_allocs", "cuda_segment_frees",
              "cuda_alloc_retries"]
QUIET = dict(thread_cpu_s=0.005, run_delay_s=0.0, nvcsw=0, nivcsw=0, minflt=2, majflt=0, cpu_steal_s=0.0, gc_count=0,
             gc_s=0.0, gc_max_gen=-1, cuda_segment_allocs=0, cuda_segment_frees=0, cuda_alloc_retries=0)


def _write(path: Path, cols, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in cols} for r in rows)


def _part(d: Path, name: str, stalls: list[dict]) -> Path:
    """A part of 40 eager iterations of 5 ms (one prefill bin) and 20 graph ones; `stalls` replace iterations 1, 3, ...
    with a 25 ms one carrying the given counters."""
    p = d / name
    p.mkdir(parents=True)
    iters, counters, t = [], [], 0.0
    for i in range(60):
        eager = i < 40
        dur, row = 0.005, dict(QUIET)
        k = (i - 1) // 2
        if eager and i % 2 == 1 and k < len(stalls):
            dur, row = 0.025, {**QUIET, "thread_cpu_s": 0.025, **stalls[k]}
        iters.append({"run_id": "r", "rank": 0, "iteration": i, "start_s": t, "duration_s": dur,
                      "prefill_tokens": 300 if eager else 0, "graph_batch": 0 if eager else 8})
        t += dur + 1e-4
        counters.append({"run_id": "r", "rank": 0, "iteration": i, "span_s": dur + 1e-4, **row})
    _write(p / "serve_iterations.csv", ITER_COLS, iters)
    _write(p / "serve_stalls.csv", STALL_COLS, counters)
    return p


@pytest.mark.parametrize("counters, cls", [
    ({"gc_s": 0.015, "gc_max_gen": 2, "run_delay_s": 0.02}, "gc"),                      # GC first, even if also delayed
    ({"run_delay_s": 0.012}, "preempted"),
    ({"run_delay_s": 0.004, "cpu_steal_s": 0.01}, "preempted"),                        # steal counts beside run delay
    ({"thread_cpu_s": 0.008, "nvcsw": 3}, "off_cpu"),
    ({"cuda_segment_allocs": 1}, "cuda_alloc"),
    ({"majflt": 1}, "faults"),
    ({"minflt": 500}, "faults"),
    ({}, "on_cpu"),
])
def test_each_stall_goes_to_the_first_class_that_holds(tmp_path, counters, cls):
    s = sc.part_stalls(_part(tmp_path, "qwen3moe", [counters]))
    assert len(s) == 1 and s["excess_s"].iloc[0] == pytest.approx(0.02) and s["cls"].iloc[0] == cls


def test_a_graph_iteration_or_an_excess_under_8_ms_is_no_stall(tmp_path):
    p = _part(tmp_path, "qwen3moe", [{}])
    rows = list(csv.DictReader(open(p / "serve_iterations.csv")))
    rows[1]["duration_s"] = "0.0129"      # 7.9 ms over the 5 ms median
    rows[50]["duration_s"] = "0.05"       # a graph replay
    _write(p / "serve_iterations.csv", ITER_COLS, rows)
    assert sc.part_stalls(p).empty


def test_host_verdict_finds_gc_and_the_freeze_that_removes_it(tmp_path):
    gc_stall = {"gc_s": 0.02, "gc_max_gen": 2}
    _part(tmp_path, "qwen3moe", [gc_stall] * 4)
    _part(tmp_path, "qwen2moe", [gc_stall] * 3 + [{"run_delay_s": 0.02}])
    _part(tmp_path, "qwen3moe_gcfreeze", [])
    v = sc.host_verdict(tmp_path)
    assert v["stalling"] and v["stalls"] == 8 and v["classes"] == {"gc": 7, "preempted": 1}
    assert v["cause"] == "gc" and v["freeze_removes"] is True


def test_host_verdict_no_cause_under_80_percent_and_no_stalling_host_under_5(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _part(a, "qwen3moe", [{"run_delay_s": 0.02}] * 3)
    _part(a, "qwen2moe", [{}] * 3)
    _part(a, "qwen3moe_gcfreeze", [{}] * 3)
    v = sc.host_verdict(a)
    assert v["stalling"] and v["cause"] is None and v["freeze_removes"] is False
    _part(b, "qwen3moe", [{}] * 2)
    _part(b, "qwen2moe", [{}] * 2)
    v = sc.host_verdict(b)
    assert not v["stalling"] and v["cause"] is None and v["freeze_removes"] is None


def test_cli_bad_input_exits_2(tmp_path, capsys):
    """No set, a missing one, a folder with no part (s25walk: argparse's refusals, and an empty set no longer
    passes as a verdict)."""
    for argv in ([], [str(tmp_path / "nope")], [str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            sc.main(argv)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: SET_DIR: got nothing; allowed: SET_DIR" in err   # one line (s27walk round 3's OneLineParser)
    assert re.search(r"SET_DIR: got '.*nope'; allowed: an existing folder", err)
    assert re.search(r"error: SET_DIR: got .*; allowed: a set whose parts hold serve_stalls.csv.*no part with", err)


def test_vm_wide_lines_up_a_beside_meter_gap_with_the_stall_it_falls_in(tmp_path):
    p = _part(tmp_path, "qwen2moe", [{}, {}])  # stalls at iterations 1 (t 0.0051-0.0301) and 3 (t 0.0403-0.0653)
    _write(p / "serve_load.csv", ["run_id", "run_t0_monotonic_s"], [{"run_id": "r", "run_t0_monotonic_s": 100.0}])
    gaps = [{"cpu": 14, "t_monotonic_s": 100.010, "gap_s": 0.004, "thread_cpu_s": 0.004},   # inside stall 1
            {"cpu": 14, "t_monotonic_s": 100.034, "gap_s": 0.001, "thread_cpu_s": 0.0},     # under 2 ms: ignored
            {"cpu": 14, "t_monotonic_s": 101.0, "gap_s": 0.003, "thread_cpu_s": 0.003}]     # after the run
    _write(tmp_path / "qwen2moe.gaps.csv", ["cpu", "t_monotonic_s", "gap_s", "thread_cpu_s"], gaps)
    (row,) = sc.vm_wide(tmp_path)
    assert row["part"] == "qwen2moe" and row["meter_gaps"] == 3 and row["meter_gaps_2ms"] == 2
    assert row["stalls"] == 2 and row["stalls_vm_wide"] == 1
    assert row["meter_thread_cpu_in_gaps_s"] == pytest.approx(0.007) and 0 < row["stall_chance"] < 0.1
