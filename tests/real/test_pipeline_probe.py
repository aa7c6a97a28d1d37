"""real/pipeline/probe.py (the s7pipe campaign): each op's host issue marks beside its stream
marks, and kernels attributed to the op whose host interval launched them; the entry point run
on two gloo ranks, as real/campaigns/s7pipe.sh runs it under torchrun on two GPUs."""

import csv
from types import SimpleNamespace

import pytest
import torch.multiprocessing as mp

from real.pipeline.probe import kernel_events, kernels_by_op, parse_configs
from tests.ports import free_port


def _event(name, start, end, kernels=(), device="DeviceType.CPU"):
    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), device_type=device,
                           kernels=[SimpleNamespace(name=k, duration=d) for k, d in kernels])


def test_kernels_belong_to_the_op_whose_host_range_launched_them():
    events = [_event("pp_op/0", 0, 100), _event("pp_op/1", 100, 300),
              _event("pp_op/1", 150, 160, device="DeviceType.CUDA"),      # the GPU-side mirror: ignored
              _event("aten::mm", 10, 20, [("gemm", 50.0)]),
              _event("aten::mm", 120, 130, [("gemm", 70.0)]),
              _event("autograd::engine", 200, 210, [("silu_bwd", 5.0), ("gemm", 30.0)]),  # another thread
              _event("aten::copy_", 400, 410, [("copy", 2.0)])]
    got = kernels_by_op(events)
    assert got[0] == {"gemm": [1, pytest.approx(50e-6)]}
    assert got[1]["gemm"][0] == 2 and got[1]["gemm"][1] == pytest.approx(100e-6)
    assert got[1]["silu_bwd"] == [1, pytest.approx(5e-6)]
    assert got[-1] == {"copy": [1, pytest.approx(2e-6)]}


def _gpu(name, start, end, corr, stream=7):
    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), device_type="DeviceType.CUDA",
                           linked_correlation_id=corr, device_resource_id=stream, activity_type="kernel", id=0)


def test_kernel_events_give_every_gpu_activity_its_stream_times_and_launching_op():
    """A GPU activity belongs to the op whose host range holds the start of the CPU op that
    launched it (linked by correlation id), whenever it runs on the GPU: a kernel launched in op 0
    that runs during op 1's host range stays op 0's (the forward's GPU tail)."""
    mm = SimpleNamespace(name="aten::mm", time_range=SimpleNamespace(start=10, end=20), device_type="DeviceType.CPU",
                         linked_correlation_id=0, id=11)
    a2a = SimpleNamespace(name="c10d::alltoall", time_range=SimpleNamespace(start=120, end=125),
                          device_type="DeviceType.CPU", linked_correlation_id=0, id=12)
    events = [_event("pp_op/0", 0, 100), _event("pp_op/1", 100, 300), mm, a2a,
              _event("pp_op/1", 150, 160, device="DeviceType.CUDA"),       # the GPU-side mirror: no row
              _gpu("gemm_kernel", 90, 140, corr=11, stream=7),            # launched in op 0, runs into op 1
              _gpu("ncclDevKernel_SendRecv", 130, 400, corr=12, stream=21),
              _gpu("Memcpy DtoH (Device -> Pinned)", 5, 6, corr=99, stream=7)]   # launcher not seen
    rows = kernel_events(events)
    hosts = [r for r in rows if r["event"] == "op_host"]
    assert [(r["op_index"], r["start_us"], r["end_us"]) for r in hosts] == [(0, 0, 100), (1, 100, 300)]
    by_name = {r["name"]: r for r in rows if r["event"] != "op_host"}
    assert set(by_name) == {"gemm_kernel", "ncclDevKernel_SendRecv", "Memcpy DtoH (Device -> Pinned)"}
    gemm, nccl, copy = by_name["gemm_kernel"], by_name["ncclDevKernel_SendRecv"], by_name["Memcpy DtoH (Device -> Pinned)"]
    assert (gemm["op_index"], gemm["stream"], gemm["start_us"], gemm["end_us"], gemm["launch_us"]) == (0, 7, 90, 140, 10)
    assert (nccl["op_index"], nccl["stream"], nccl["launch_us"], nccl["event"]) == (1, 21, 120, "kernel")
    assert copy["op_index"] == -1 and copy["event"] == "memcpy"


def test_configs_parse_and_refuse_what_they_are_not():
    assert parse_configs("pp2:zb1p:4,ep2:1f1b:1") == [(2, 1, "zb1p", 4), (1, 2, "1f1b", 1)]
    with pytest.raises(SystemExit):
        parse_configs("pp2:zb1p")


def _probe_worker(rank, world, port, out):
    import os

    from real.pipeline.probe import main

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert main(["--out", str(out), "--tiny", "--configs", "pp2:zb1p:4", "--warmup", "0", "--reps", "1",
                 "--kernel-events"]) == 0


def test_probe_writes_host_and_stream_marks_of_every_op(tmp_path):
    from real.bench.records import PIPELINE_HOST_COLS, PIPELINE_KERNEL_EVENTS_COLS, PIPELINE_OP_KERNELS_COLS

    mp.spawn(_probe_worker, args=(2, free_port(), tmp_path), nprocs=2, join=True)
    with open(tmp_path / "pipeline_host.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == PIPELINE_HOST_COLS
        rows = list(reader)
    assert {r["rank"] for r in rows} == {"0", "1"} and {r["split"] for r in rows} == {"fit"}
    compute = [r for r in rows if r["kind"] in ("F", "B", "W")]
    assert len(compute) == 2 * 3 * 4          # two ranks, F B W of four micro-batches
    for r in rows:                            # on CPU ops are synchronous: the host marks are the op's
        assert float(r["host_start_s"]) == pytest.approx(float(r["start_s"]))
        assert float(r["host_end_s"]) >= float(r["host_start_s"])
    with open(tmp_path / "pipeline_op_kernels.csv", newline="") as f:
        assert csv.DictReader(f).fieldnames == PIPELINE_OP_KERNELS_COLS
    with open(tmp_path / "pipeline_kernel_events.csv", newline="") as f:   # --kernel-events
        reader = csv.DictReader(f)
        assert reader.fieldnames == PIPELINE_KERNEL_EVENTS_COLS
        events = list(reader)
    hosts = [r for r in events if r["event"] == "op_host"]      # on CPU no GPU activity: the ops' host ranges
    assert {r["rank"] for r in hosts} == {"0", "1"}
    assert len([r for r in hosts if r["kind"] in ("F", "B", "W")]) == 2 * 3 * 4
    assert all(float(r["end_us"]) >= float(r["start_us"]) and r["profiler_t0_ns"] for r in hosts)


def test_linkable_events_are_the_profilers_events_on_the_same_axis_with_their_links():
    """The raw kineto view kernel_events reads (every event's correlation id and linked id, which
    torch 2.11's FunctionEvent does not keep) carries the same names and times as prof.events()."""
    import torch

    from real.pipeline.probe import linkable_events

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function("pp_op/0"):
            torch.randn(32, 32) @ torch.randn(32, 32)
    events = prof.events()
    raw = linkable_events(prof, events)
    starts = {}
    for e in raw:
        starts.setdefault(e.name, []).append(e.time_range.start)
    for e in events:      # every FunctionEvent has a raw event of its name at its start
        assert min(abs(t - e.time_range.start) for t in starts[e.name]) < 1.0
    assert all(e.linked_correlation_id == 0 and e.id > 0 for e in raw)      # CPU ops launch, nothing links to them here
    rows = kernel_events(raw)
    assert [(r["event"], r["op_index"]) for r in rows] == [("op_host", 0)]


def test_linkable_events_fall_back_to_the_function_events():
    from real.pipeline.probe import linkable_events

    events = [_event("pp_op/0", 0, 100)]
    assert linkable_events(SimpleNamespace(), events) == events


def test_linkable_events_read_what_the_torch_release_has():
    """torch 2.11's _KinetoEvent has no activity_type(): the raw view still links the kernel."""
    from real.pipeline.probe import linkable_events

    def raw(name, start_ns, dur_ns, device, corr, linked):
        return SimpleNamespace(name=lambda: name, start_ns=lambda: start_ns, duration_ns=lambda: dur_ns,
                               device_type=lambda: device, correlation_id=lambda: corr,
                               linked_correlation_id=lambda: linked)
    results = SimpleNamespace(trace_start_ns=lambda: 1_000, events=lambda: [
        raw("pp_op/3", 1_000, 100_000, "DeviceType.CPU", 1, 0),
        raw("aten::mm", 11_000, 10_000, "DeviceType.CPU", 2, 0),
        raw("gemm_kernel", 50_000, 40_000, "DeviceType.CUDA", 900, 2)])
    events = linkable_events(SimpleNamespace(profiler=SimpleNamespace(kineto_results=results)), [])
    rows = kernel_events(events)
    gemm = next(r for r in rows if r["name"] == "gemm_kernel")
    assert (gemm["op_index"], gemm["launch_us"], gemm["start_us"], gemm["end_us"], gemm["stream"]) == (3, 10.0, 49.0, 89.0, -1)
