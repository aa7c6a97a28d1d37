"""The step's Chrome trace: DeepSeek's annotation names, the DP/optimizer tail, flow arrows across
ranks, no zero-length slices, a time window, gzip."""

from __future__ import annotations

import gzip
import json
import subprocess
import re
import sys

import pytest

import twin
from twin.cli.main import main
from twin.core.chrome_trace import perfetto_drops
from twin.training.trace import TRACE_NAMES, step_trace

DEEPSEEK_ANNOTATIONS = {"attn(F)", "attn(B)", "attn(W)", "mlp(F)", "mlp(B)", "mlp(W)",
                        "dispatch(F)", "dispatch(B)", "combine(F)", "combine(B)"}


@pytest.fixture(scope="module")
def small():
    sc = twin.load_scenario(overrides=["workload.global_batch_seqs=4096"])   # 32 micro-batches per pipeline
    return sc, twin.simulate_step(sc)


def test_layer_slices_carry_deepseeks_names_and_the_step_tail(small):
    sc, res = small
    trace = step_trace(sc, res, granularity="layer")
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = {e["name"] for e in slices}
    assert DEEPSEEK_ANNOTATIONS <= names
    assert {"reduce_scatter(DP)", "optimizer"} <= names
    assert names <= set(TRACE_NAMES.values())
    assert all(e["dur"] > 0 for e in slices)                  # no zero-length slices
    # the optimizer ends the step on every rank
    opt = [e for e in slices if e["name"] == "optimizer"]
    assert len(opt) == sc.plan.pp
    assert max(e["ts"] + e["dur"] for e in opt) == pytest.approx(res.step_time_s * 1e6, rel=1e-6)


def test_the_trace_names_the_model_it_simulated_beside_the_scenario(small):
    """s25walk: a tiny model's trace said only `deepseek-v3-pretrain` (the scenario's name, kept under --set)."""
    sc, res = small
    other = step_trace(sc, res)["otherData"]
    assert other["scenario"] == sc.name and other["model"] == sc.model.name


@pytest.mark.parametrize("granularity", ["op", "layer"])
def test_slices_on_one_thread_never_overlap(small, granularity):
    sc, res = small
    threads: dict = {}
    for e in step_trace(sc, res, granularity=granularity)["traceEvents"]:
        if e["ph"] == "X":
            threads.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in threads.values():
        spans.sort()
        assert all(b[0] >= a[1] - 1e-6 for a, b in zip(spans, spans[1:]))   # float sums only, not 1 ns


@pytest.mark.parametrize("granularity", ["op", "layer"])
def test_perfetto_keeps_every_slice(small, granularity):
    """Perfetto rounds ts and dur to whole ns each and drops a slice that starts inside the one before
    it and ends after it: ts and dur rounded apart made back-to-back slices overlap by 1 ns, and
    Perfetto dropped them (156 op slices and 6,744 layer slices of a V3 step, until s21walk)."""
    sc, res = small
    events = step_trace(sc, res, granularity=granularity)["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert perfetto_drops(events) == []
    # every slice starts and ends on a whole nanosecond, so Perfetto's rounding moves nothing
    assert all(e["ts"] * 1000 == pytest.approx(round(e["ts"] * 1000), abs=1e-6) for e in slices)
    assert all(e["dur"] * 1000 == pytest.approx(round(e["dur"] * 1000), abs=1e-6) for e in slices)


def test_op_slices_span_each_op_of_the_schedule(small):
    sc, res = small
    slices = [e for e in step_trace(sc, res)["traceEvents"] if e["ph"] == "X" and e["tid"] == 0]
    ops = {(rank, label) for rank, label, _, _ in res.pipeline.op_spans}
    assert {(e["pid"], e["name"]) for e in slices if e["name"] != "optimizer"} == ops


def test_flow_arrows_join_dependent_slices_across_ranks(small):
    sc, res = small
    events = step_trace(sc, res)["traceEvents"]
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts and starts.keys() == ends.keys()
    for i, s in starts.items():
        f = ends[i]
        assert s["pid"] != f["pid"] and s["ts"] <= f["ts"]      # a send lands later on another rank
    # the first rank's forwards feed rank 1: at least one arrow per micro-batch in each direction
    assert sum(1 for i, s in starts.items() if s["pid"] == 0 and ends[i]["pid"] == 1) >= 16


def test_window_keeps_overlapping_slices_only(small):
    sc, res = small
    mid = res.step_time_s / 2
    trace = step_trace(sc, res, (mid, mid + 0.05), granularity="layer")
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    whole = step_trace(sc, res, granularity="layer")["traceEvents"]
    assert slices and len(slices) < len([e for e in whole if e["ph"] == "X"]) / 5
    assert all(e["ts"] < (mid + 0.05) * 1e6 and e["ts"] + e["dur"] > mid * 1e6 for e in slices)


def test_trace_cli_writes_gzip_and_rejects_a_bad_window(tmp_path):
    out = tmp_path / "step.json.gz"
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "trace", "--out", str(out),
                           "--set", "workload.global_batch_seqs=4096"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(gzip.decompress(out.read_bytes()))["traceEvents"]
    resolved = tmp_path / "step.scenario.resolved.toml"   # the same resolved scenario as every report folder
    assert twin.load_scenario(resolved) == twin.load_scenario(overrides=["workload.global_batch_seqs=4096"])
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "trace", "--out", str(out), "--window", "5:1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --window")


def test_trace_cli_refuses_a_window_past_the_steps_end(tmp_path, capsys):
    """A window starting after the step wrote a trace of metadata alone and exit 0 (until s19ux)."""
    out = tmp_path / "late.json"
    code = main(["trace", "--out", str(out), "--quiet", "--set", "workload.global_batch_seqs=4096",
                 "--window", "1000:2000"])
    assert code == 2 and not out.exists()
    assert re.fullmatch(r"error: --window: got '1000:2000'; allowed: START before the step's end \([\d.]+ s\)\n", capsys.readouterr().err)


@pytest.mark.parametrize("granularity", ["op", "layer"])
def test_every_event_has_the_trace_event_format_fields(small, granularity):
    """name, ph, pid and tid on every event (process_name and process_sort_index had no tid until
    s19ux2), ts in microseconds on every timed one, dur >= 0 on complete events, and each pid and
    (pid, tid) that carries a slice named by a metadata event."""
    sc, res = small
    events = step_trace(sc, res, granularity=granularity)["traceEvents"]
    assert [e for e in events if not {"name", "ph", "pid", "tid"} <= set(e)] == []
    timed = [e for e in events if e["ph"] != "M"]
    assert all(isinstance(e["ts"], (int, float)) and e["ts"] >= 0 for e in timed)
    assert all(e["dur"] >= 0 for e in timed if e["ph"] == "X")
    assert max(e["ts"] + e.get("dur", 0) for e in timed) == pytest.approx(res.step_time_s * 1e6, rel=1e-6)   # µs
    named = {(e["pid"], e["tid"]) for e in events if e["name"] == "thread_name"}
    assert {e["pid"] for e in events if e["name"] == "process_name"} >= {e["pid"] for e in timed}
    assert named >= {(e["pid"], e["tid"]) for e in timed if e["ph"] == "X"}


def test_trace_bytes_gzip_exactly_when_the_name_ends_in_gz():
    """`twin trace --out` and `twin serve --trace`: T.JSON.GZ was written as plain JSON until s19ux2."""
    from pathlib import Path

    from twin.cli.main import trace_bytes
    trace = {"traceEvents": [{"ph": "X", "name": "a", "pid": 0, "tid": 0, "ts": 0.0, "dur": 1.0}]}
    for name in ("t.json.gz", "T.JSON.GZ", "t.gz"):
        assert json.loads(gzip.decompress(trace_bytes(trace, Path(name)))) == trace
    assert json.loads(trace_bytes(trace, Path("t.json"))) == trace
