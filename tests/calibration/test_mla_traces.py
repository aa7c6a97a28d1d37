"""The s10mla Chrome traces of MLA layer calls taken apart (calibration.mla_traces), and the call-edge
host rule they were used to test (calibration.layer_gaps ADOPT_CALL_EDGES, predict.Eager.call_edges)."""

import dataclasses
import json
import lzma
import shutil

import pandas as pd
import pytest

from calibration import layer_gaps as lg
from calibration import mla_traces as mt
from calibration import records as rec
from calibration.records_io import read_csv, resolve_csv, resolve_trace
from calibration.fit import PROFILES_DIR
from twin.costs.profile import profile_from_json


def _launch(ts, dur, corr, name="cuLaunchKernelEx"):
    return {"ph": "X", "cat": "cuda_driver", "name": name, "ts": ts, "dur": dur, "tid": 1, "args": {"correlation": corr}}


def _kernel(ts, dur, corr, name):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "tid": 7, "args": {"correlation": corr}}


def _record(ts):
    return {"ph": "X", "cat": "cuda_runtime", "name": "cudaEventRecordWithFlags", "ts": ts, "dur": 2.0, "tid": 1,
            "args": {"correlation": 0}}


# one call: start event at 1000 us; a first launch the profiler stalls 300 us (typical launch 5 us),
# a GEMM, then an attention kernel launched after 100 us of host, the end event 50 us after it
SYNTHETIC = [
    _record(1000.0),
    {"ph": "X", "cat": "cpu_op", "name": "autograd::engine::evaluate_function: MmBackward0", "ts": 1010.0,
     "dur": 400.0, "tid": 1},
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 1015.0, "dur": 390.0, "tid": 1},
    _launch(1020.0, 300.0, 1),                       # stalled: 295 us of it is the profiler's
    _kernel(1325.0, 40.0, 1, "nvjet_sm90_tst_256x128_NTT"),
    _launch(1330.0, 5.0, 2),
    _kernel(1336.0, 10.0, 2, "void at::native::elementwise_kernel<128, 4>"),
    _launch(1440.0, 5.0, 3),
    _kernel(1446.0, 200.0, 3, "cudnn_generated_fort_native_sdpa_sm90_flash_bprop"),
    _record(1495.0),
]


def test_a_call_is_read_with_the_profilers_stall_taken_out():
    call = mt.parse_call(SYNTHETIC, "trace_m_b1_s64_bwd.json")
    assert (call.model, call.batch, call.seq_len, call.phase) == ("m", 1, 64, "bwd")
    assert call.stall_us == pytest.approx(295.0)
    # host instants from the start event, the stall taken out after it
    assert call.launches_us == pytest.approx([25.0, 40.0, 150.0])
    assert call.end_us == pytest.approx(200.0)
    assert call.host_edges_us() == pytest.approx((25.0, 50.0))
    assert [k.node for k in call.kernels] == ["MmBackward0", "MmBackward0", ""]
    assert call.kernels[0].op == "aten::mm"
    assert call.by_class() == pytest.approx({"gemm": 40.0, "memory": 10.0, "attention": 200.0})
    assert call.kernel_us == pytest.approx(250.0)


def test_a_replay_places_each_kernel_after_its_launch_at_the_hosts_speed():
    call = mt.parse_call(SYNTHETIC, "trace_m_b1_s64_bwd.json")
    r = mt.replay(call, 1.0)
    # GEMM at 25-65, elementwise at 65-75 (launched at 40), attention at 150-350
    assert r["start_idle_us"] == pytest.approx(25.0) and r["mid_idle_us"] == pytest.approx(75.0)
    assert r["time_us"] == pytest.approx(350.0) and r["end_idle_us"] == pytest.approx(0.0)
    assert r["gaps"][0][1:3] == ("", "")
    half = mt.replay(call, 0.5)   # a host twice as fast: the attention waits on its GEMM's chain less
    assert half["start_idle_us"] == pytest.approx(12.5) and half["time_us"] == pytest.approx(275.0)
    # an end event after the last kernel: the GPU idles to it
    slow_end = mt.parse_call(SYNTHETIC[:-1] + [_record(1900.0)], "")
    assert mt.replay(slow_end, 1.0)["end_idle_us"] == pytest.approx(605.0 - 350.0)


def test_a_trace_without_both_event_records_is_refused():
    with pytest.raises(ValueError, match="event records"):
        mt.parse_call(SYNTHETIC[:-1], "t")


def test_committed_traces_load_packed_and_their_fitting_calls_replay_to_the_records():
    calls = {c.name: c for c in mt.load_calls("h100")}
    # committed as .json.xz, named as the campaign wrote them (mla_timeline.csv's trace column)
    assert len(calls) == 8 and all(n.endswith("_fwd.json") or n.endswith("_bwd.json") for n in calls)
    assert sum(mt.held_out(c) for c in calls.values()) == 4     # the V2-Lite calls are the held-out shapes
    host = mt.unprofiled_host_s("h100")
    df, hd = rec.load_records("h100"), read_csv(rec.MEASUREMENTS_DIR / "h100" / "host_dispatch.csv")
    for c in calls.values():
        assert c.kernels and sum(c.by_class().values()) == pytest.approx(c.kernel_us)
        scale = mt.scale_of(c, host)
        assert 0.2 < scale < 0.6            # the profiler slows the host 1.7-5x
        if not mt.held_out(c):
            # the host's shape at the unprofiled speed reproduces the fitting split's measured calls
            meas, _ = mt.measured_time_s(c, df, hd)
            assert mt.replay(c, scale)["time_us"] == pytest.approx(meas * 1e6, rel=0.05)


def test_call_edges_come_from_the_fitting_traces_only(tmp_path):
    root = tmp_path / "m"
    (root / "h100").mkdir(parents=True)
    shutil.copy(resolve_csv(rec.MEASUREMENTS_DIR / "h100" / "host_dispatch.csv"), root / "h100")
    shutil.copytree(rec.MEASUREMENTS_DIR / "h100" / mt.TRACE_DIR, root / "h100" / mt.TRACE_DIR)
    rates = {"fwd": 25e-6, "bwd": 25e-6}
    edges = mt.call_edges("h100", rates, root)
    assert set(edges) == {"fwd", "bwd"} and edges["bwd"]["start"] > edges["fwd"]["start"] > 1.0
    # a held-out trace changed: the edges do not move; a fitting one: they do
    folder = root / "h100" / mt.TRACE_DIR
    resolve_trace(folder / "trace_v2-lite-slice_b1_s4096_bwd.json").unlink()
    assert mt.call_edges("h100", rates, root) == edges
    resolve_trace(folder / "trace_v3-slice-1l_b1_s4096_bwd.json").unlink()
    assert mt.call_edges("h100", rates, root)["bwd"] != edges["bwd"]
    # a slower host per kernel: the same host time is fewer kernels' worth
    assert mt.call_edges("h100", {"fwd": 50e-6}, root)["fwd"]["start"] == pytest.approx(edges["fwd"]["start"] / 2)


def _edges_profile(gpu="h100"):
    prof = profile_from_json(json.loads((PROFILES_DIR / f"{gpu}.json").read_text()))
    return dataclasses.replace(prof, eager={**prof.eager, "call_edges": {"fwd": {"start": 4.0, "end": 2.0},
                                                                        "bwd": {"start": 7.0, "end": 3.0}}})


def test_call_edges_move_a_calls_host_time_to_its_edges_and_keep_its_total():
    from calibration.predict import FixedHost, gpu_spec, mla_layer_ops
    from twin.core.specs import get_model
    prof = _edges_profile()
    spec, g = get_model("v2-lite-slice"), gpu_spec("h100")
    f0, b0 = mla_layer_ops(spec, 4, 4096, "bf16", g, prof)
    f, b = mla_layer_ops(spec, 4, 4096, "bf16", g, prof)
    assert b.call_edges("bwd") and f.call_edges("fwd")
    rate = prof.eager["host_s"]["bwd"]
    assert sum(h for h, _ in b.ops if h) == pytest.approx(sum(h for h, _ in b0.ops if h))
    assert isinstance(b.ops[-1], FixedHost) and b.ops[-1] == pytest.approx((3.0 * rate, 0.0))
    keep = 1 - 10.0 * rate / sum(h for h, _ in b0.ops if h)
    assert b.ops[0][0] == pytest.approx(b0.ops[0][0] * keep + 7.0 * rate)
    assert b.ops[5][0] == pytest.approx(b0.ops[5][0] * keep)
    assert [gs for _, gs in b.ops[:-1]] == [gs for _, gs in b0.ops]
    # a GPU-bound call begun on an idle GPU: its first kernel waits for the start edge
    from calibration.predict import timed_window_s
    assert timed_window_s([], b.ops, reps=1) > timed_window_s([], b0.ops, reps=1)
    # without the term, or with edges beyond the call's host, nothing changes
    committed = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    plain, _ = mla_layer_ops(spec, 1, 1024, "bf16", g, committed)
    ops = list(plain.ops)
    assert not plain.call_edges("fwd") and plain.ops == ops
    huge = dataclasses.replace(prof, eager={**prof.eager, "call_edges": {"fwd": {"start": 1e3, "end": 0.0}}})
    big, _ = mla_layer_ops(spec, 1, 1024, "bf16", g, huge)
    ops = list(big.ops)
    assert not big.call_edges("fwd") and big.ops == ops


def test_the_committed_profiles_leave_the_call_edge_rule_out():
    """s11mla tested the rule on the held-out records and did not adopt it (ADOPT_CALL_EDGES): the
    committed profiles hold no call edges and a layer record's prediction is the even spread's."""
    assert lg.ADOPT_CALL_EDGES is False
    for gpu in ("h100", "h200"):
        prof = profile_from_json(json.loads((PROFILES_DIR / f"{gpu}.json").read_text()))
        assert "call_edges" not in prof.eager
    edges, source = lg.trace_call_edges("h200")
    assert source == "h100/s10mla_traces" and edges["bwd"]["start"] > edges["bwd"]["end"] > 0


def test_the_timeline_summary_reads_the_committed_packed_traces():
    from calibration import mla_timeline
    rows = mla_timeline.summarize_folder(rec.MEASUREMENTS_DIR / "h100" / mt.TRACE_DIR)
    assert len(rows) == 8 and all(r["longest_launched_s"] is not None for r in rows)
    with lzma.open(rec.MEASUREMENTS_DIR / "h100" / mt.TRACE_DIR / "trace_v3-slice-1l_b1_s1024_bwd.json.xz", "rt") as f:
        assert "traceEvents" in json.load(f)


def test_the_loops_engine_start_replaces_the_traces_backward_start(tmp_path):
    """With a record loop's run (mla_loop.csv), the backward's start edge is the loop's engine start
    (fitting BF16 GPU rows only) plus the traces' first node's way to its first launch."""
    root = tmp_path / "m"
    (root / "h100").mkdir(parents=True)
    for name in ("host_dispatch.csv", "kernels.csv", "attention.csv"):
        shutil.copy(resolve_csv(rec.MEASUREMENTS_DIR / "h100" / name), root / "h100")
    shutil.copytree(rec.MEASUREMENTS_DIR / "h100" / mt.TRACE_DIR, root / "h100" / mt.TRACE_DIR)
    assert lg.loop_engine_start_s("h100", root) is None and lg.loop_call_edges("h100", root) == ({}, "")
    pd.DataFrame([
        # model, phase, precision, split, device, engine_start_s
        ("v3-slice-1l", "bwd", "bf16", "fit", "cuda", 60e-6),
        ("v3-slice-1l", "bwd", "bf16", "fit", "cuda", 80e-6),
        ("v3-slice-1l", "bwd", "fp8-blockwise", "fit", "cuda", 900e-6),     # FP8: not this rule's
        ("v2-lite-slice", "bwd", "bf16", "holdout", "cuda", 5e-3),          # held out: never used
        ("tiny", "bwd", "bf16", "fit", "cpu", 1.0),                          # a CPU dry run: never used
        ("v3-slice-1l", "fwd", "bf16", "fit", "cuda", float("nan"))],
        columns=["model", "phase", "precision", "split", "device", "engine_start_s"]).to_csv(root / "h100" / lg.LOOP_FILE,
                                                                                          index=False)
    assert lg.loop_engine_start_s("h100", root) == pytest.approx(70e-6)
    traced, _ = lg.trace_call_edges("h100", root)
    edges, source = lg.loop_call_edges("h100", root)
    node = mt.first_node_s("h100", "bwd", root)
    assert 10e-6 < node < 150e-6
    rate = lg.measured_host_s("h100", root, lg.radix_sort_kernels("h100", root), lg._committed_profile("h100"))["bwd"]
    assert edges["bwd"]["start"] == pytest.approx((70e-6 + node) / rate)
    assert edges["bwd"]["end"] == traced["bwd"]["end"] and edges["fwd"] == traced["fwd"]
    assert source.endswith("h100/mla_loop.csv")


def test_the_decomposition_sets_each_traced_call_beside_the_twin(capsys):
    prof = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    rows = {d["call"]: d for d in mt.decomposition("h100", prof)}
    d = rows["trace_v3-slice-1l_b1_s4096_bwd.json"]   # the name the campaign wrote (committed .json.xz)
    assert not d["held_out"] and d["measured_source"] == "record"
    # the twin's kernel prediction of the GPU-bound V3-slice backward within 5% of the traced kernels
    assert d["twin_kernel_us"] == pytest.approx(d["kernel_us"], rel=0.05)
    assert set(d["by_class_us"]) >= {"gemm", "attention", "memory"}
    assert mt.main(["--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "call edges" in out and out.count("unprofiled replay") == 8


def test_in_the_records_loop_only_the_host_bound_backwards_wait_for_the_engines_start():
    """h100/mla_loop.csv (s11mla): inside a record's own loop the GPU waits at a backward's start for
    the autograd engine's start where the setup forward ends host-bound (V2-Lite), and not where
    the GPU still runs the forward (V3-slice); the engine's start is a fixed host cost of a call."""
    loop = read_csv(rec.MEASUREMENTS_DIR / "h100" / lg.LOOP_FILE)
    bwd = loop[loop["phase"] == "bwd"]
    assert (bwd["engine_start_s"].between(50e-6, 500e-6)).all()
    v3, v2 = bwd[bwd["model"] == "v3-slice-1l"], bwd[bwd["model"] == "v2-lite-slice"]
    assert (v3["start_wait_s"] < 10e-6).all() and (v3["split"] == "fit").all()
    assert (v2["start_wait_s"] > 100e-6).all() and (v2["split"] == "holdout").all()
    edges, source = lg.loop_call_edges("h100")
    assert source.endswith("h100/mla_loop.csv") and edges["bwd"]["start"] > lg.trace_call_edges("h100")[0]["bwd"]["start"]
