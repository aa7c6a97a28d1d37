"""real/pipeline/probe.py (the s7pipe campaign): each op's host issue marks beside its stream
marks, and kernels attributed to the op whose host interval launched them; the entry point run
on two gloo ranks, as real/campaigns/s7pipe.sh runs it under torchrun on two GPUs."""

import csv
from types import SimpleNamespace

import pytest
import torch.multiprocessing as mp

from real.pipeline.probe import kernels_by_op, parse_configs
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


def test_configs_parse_and_refuse_what_they_are_not():
    assert parse_configs("pp2:zb1p:4,ep2:1f1b:1") == [(2, 1, "zb1p", 4), (1, 2, "1f1b", 1)]
    with pytest.raises(SystemExit):
        parse_configs("pp2:zb1p")


def _probe_worker(rank, world, port, out):
    import os

    from real.pipeline.probe import main

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    assert main(["--out", str(out), "--tiny", "--configs", "pp2:zb1p:4", "--warmup", "0", "--reps", "1"]) == 0


def test_probe_writes_host_and_stream_marks_of_every_op(tmp_path):
    from real.bench.records import PIPELINE_HOST_COLS, PIPELINE_OP_KERNELS_COLS

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
