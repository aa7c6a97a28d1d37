"""real/campaigns/s24stall.sh on CPU (plan tiny-new, short probes) and real/serve/stalltrace.py's counters: every
iteration of every run gets one counters row, the per-run host rows name every CPU and the engine's threads, the
--gc-freeze part freezes its heap, and the hiccup meter sees the time a busy loop loses."""

import csv
import gc
import json
import os
import subprocess
import time
from pathlib import Path

import sys

import pytest

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s24stall_campaign_cpu_dry_run_records_every_iterations_counters(tmp_path):
    # this interpreter, not tests/torchrun_forked_python: that one freezes its inherited heap, the very thing compared
    env = {**os.environ, "PYTHON": sys.executable, "S24_DEVICE": "cpu", "S24_PLANS": "tiny-new", "S24_PART_S": "60",
           "S24_PAUSE_S": "0.05", "S24_HICCUP_S": "0.05", "S24_HICCUP_END_S": "0.1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24stall.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=180)
    d = tmp_path / "s24stall"
    log = (d / "log.txt").read_text()
    assert "tiny-new (tiny-new ) exit 0" in log and "tiny-new_gcfreeze (tiny-new --gc-freeze) exit 0" in log
    hic = _read(d / "hiccups.csv")
    assert len(hic) == 5 and all(float(r["window_s"]) >= 0.05 and int(r["reads"]) > 0 for r in hic)
    # the gap meter ran beside the frozen part on another CPU: its gaps carry CLOCK_MONOTONIC times inside the runs'
    gaps = _read(d / "tiny-new_gcfreeze.gaps.csv")
    assert "tiny-new_gcfreeze gap meter on CPU" in log and not (d / "tiny-new.gaps.csv").exists()
    t0s = [float(r["run_t0_monotonic_s"]) for r in _read(d / "tiny-new_gcfreeze" / "serve_load.csv")]
    assert all(float(g["gap_s"]) >= 0.5e-3 and float(g["thread_cpu_s"]) >= 0 for g in gaps)
    assert not gaps or min(float(g["t_monotonic_s"]) for g in gaps) < max(t0s) + 60
    for part, frozen in (("tiny-new", 0), ("tiny-new_gcfreeze", 1)):
        load = _read(d / part / "serve_load.csv")
        assert len(load) == 2 and all(int(r["gc_frozen"]) == frozen and r["torch_version"] for r in load)
        for r in load:  # every pause carries its chain's counters, in the order of its sizes
            n = int(r["pause_count"])
            for key in ("pause_thread_cpu_s", "pause_run_delay_s", "pause_nivcsw", "pause_nvcsw"):
                assert len([x for x in r[key].split(";") if x]) == n
        env = json.loads((d / part / "env.json").read_text())
        assert env["gc_full_collect_s"] > 0 and env["gc_tracked_before_full"]["2"] >= 0
        iters, stalls = _read(d / part / "serve_iterations.csv"), _read(d / part / "serve_stalls.csv")
        # one counters row per iteration, keyed alike, each spanning at least its iteration
        assert [(r["run_id"], r["iteration"]) for r in stalls] == [(r["run_id"], r["iteration"]) for r in iters]
        for s, it in zip(stalls, iters):
            assert float(s["span_s"]) >= float(it["duration_s"]) > 0
            assert 0 <= float(s["thread_cpu_s"]) <= float(s["span_s"]) + 0.01 and int(s["cpu"]) >= 0
            # getrusage's user + kernel split of the same thread time (its own clock: within a tick of it)
            assert abs(float(s["thread_user_s"]) + float(s["thread_sys_s"]) - float(s["thread_cpu_s"])) < 0.02
        host = _read(d / part / "serve_hostrun.csv")
        scopes = {r["scope"] for r in host}
        assert {"cpu", "thread", "gc_tracked", "gc_frozen"} <= scopes
        assert len([r for r in host if r["scope"] == "cpu" and r["run_id"] == load[0]["run_id"]]) == os.cpu_count()
        tracked = {int(r["key"]): int(r["value"]) for r in host if r["scope"] == "gc_tracked"
                   and r["run_id"] == load[0]["run_id"]}
        # frozen: the old generation is empty at the run's start; as it comes it holds the engine's heap
        frozen_count = [int(r["value"]) for r in host if r["scope"] == "gc_frozen"][0]
        assert (tracked[2] < 1000 and frozen_count > 10_000) if frozen else (tracked[2] > 10_000 and frozen_count == 0)


def test_counters_row_per_iteration_and_gc_collections_land_in_their_iteration():
    import torch

    from real.serve.stalltrace import HostCounters
    h = HostCounters(torch.device("cpu"))
    try:
        h.mark(0)
        gc.collect(2)  # in iteration 0
        h.mark(1)
        h.mark(1)  # an empty schedule: no row, the snapshot replaced
        sum(i * i for i in range(200_000))
        h.mark(2)
        h.close_run()
        assert [r["iteration"] for r in h.rows] == [0, 1, 2]
        assert h.rows[0]["gc_count"] >= 1 and h.rows[0]["gc_max_gen"] == 2 and h.rows[0]["gc_gen2_s"] > 0
        assert h.rows[1]["gc_count"] == 0 and h.rows[1]["thread_cpu_s"] > 0
        h.reset()
        assert h.rows == [] and h.gc.events == []
    finally:
        h.close()
    assert h.gc not in gc.callbacks


def test_proc_parsers():
    from real.serve.stalltrace import CLK_TCK, _task_stat, parse_schedstat, read_proc_stat_cpu
    stat = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 10 0 5 100 0 3 4 20 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\nintr 5 1 2\n"
    assert read_proc_stat_cpu(stat, 0) == (20 / CLK_TCK, 3 / CLK_TCK, 4 / CLK_TCK)
    assert read_proc_stat_cpu(stat, 7) == (0.0, 0.0, 0.0)
    assert parse_schedstat("2000000000 5000000 42\n") == (2.0, 0.005, 42)
    line = "123 (pt main (x)) S " + " ".join(["0"] * 10) + f" {3 * CLK_TCK} {CLK_TCK} " + " ".join(["0"] * 23) + " 7 0"
    assert _task_stat(line) == ("pt main (x)", 4.0, 7)
    assert _task_stat("") == ("", 0.0, -1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_hiccup_meter_counts_the_time_a_busy_loop_loses():
    import threading

    from real.serve.stalltrace import hiccups
    cpu = min(os.sched_getaffinity(0))
    out = {}
    t = threading.Thread(target=lambda: out.update(hiccups(cpu, 0.2)))
    t.start()
    # while the meter runs, this thread takes the GIL for stretches it must record as gaps
    stop = time.perf_counter() + 0.15
    while time.perf_counter() < stop:
        time.sleep(0.01)
        sum(i for i in range(300_000))
    t.join()
    assert out["window_s"] >= 0.2 and out["reads"] > 1000
    sizes = [float(x) for x in out["sizes_s"].split(";") if x]
    assert len(sizes) == out["hiccups"] >= 1 and abs(sum(sizes) - out["hiccup_s"]) < 1e-6 * len(sizes)
    assert abs(out["max_hiccup_s"] - max(sizes)) < 1e-6 and max(sizes) >= 0.5e-3
