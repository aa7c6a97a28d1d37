"""Section host_dispatch (issue 13's layer bias): the code path the campaign runs, on the CPU."""

import csv

import torch

from calibration import split as calibration_split
from real.bench import host_dispatch as hd
from real.bench.records import Recorder
from real.bench.timing import Timer
from real.telemetry import Telemetry


def test_measure_phase_counts_ops_and_times_the_call():
    x = torch.ones(8, 8)
    r = hd.measure_phase(lambda _: (x @ x).relu(), lambda: None, torch.device("cpu"), reps=2, warmup=0)
    assert r["aten_ops"] == 2                       # mm, relu
    assert r["aten_views"] == 0
    r = hd.measure_phase(lambda _: x.t().relu(), lambda: None, torch.device("cpu"), reps=1, warmup=0)
    assert r["aten_ops"] == 2 and r["aten_views"] == 1    # t is a view
    assert r["host_s"] > 0 and r["time_p10_s"] <= r["time_s"] <= r["time_p90_s"]
    assert r["kernels"] == 0                        # no GPU: no kernels


class _OneCase:
    """A deadline that lets the first case run, then ends the section."""

    def __init__(self):
        self.calls = 0

    def over(self):
        self.calls += 1
        return self.calls > 1


def test_section_writes_rows_of_the_first_case(tmp_path):
    env = {"fp8_blockwise_kernel": False, "gpu_name": "cpu"}
    rec = Recorder(tmp_path, env)
    timer = Timer(torch.device("cpu"), Telemetry(), 0.0, max_reps=1, warmup=0)
    hd.bench_host_dispatch(rec, timer, torch.device("cpu"), _OneCase(), True, env)
    rec.close()
    rows = list(csv.DictReader((tmp_path / "host_dispatch.csv").open()))
    assert [(r["phase"], r["precision"]) for r in rows] == [("fwd", "bf16"), ("infer", "bf16"), ("bwd", "bf16"),
                                                             ("fwd", "fp8-rowwise"), ("infer", "fp8-rowwise"),
                                                             ("bwd", "fp8-rowwise")]
    for r in rows:
        assert r["config"].startswith("moe_layer tiny") and r["split"] == "fit"
        assert float(r["host_s"]) > 0 and int(r["aten_ops"]) > 10 and r["gpu_name"] == "cpu"


def test_holdout_families_follow_the_calibration_split():
    assert hd.HOLDOUT_MODELS == calibration_split.HELD_OUT_MODELS
    assert hd.HOLDOUT_EXPERTS == calibration_split.HELD_OUT_MOE_EXPERTS


def test_whole_step_phases_write_their_kernels(tmp_path):
    """The GPU-only path: a profiled phase's per-kernel figures become step_kernels rows."""
    env = {"fp8_blockwise_kernel": False, "gpu_name": "cpu"}
    rec = Recorder(tmp_path, env)
    timer = Timer(torch.device("cpu"), Telemetry(), 0.0, max_reps=1, warmup=0)
    r = {"host_s": 1e-3, "time_s": 2e-3, "time_p10_s": 2e-3, "time_p90_s": 2e-3, "reps": 1, "timing": "per_rep_events",
         "kernels": 3.0, "kernel_s": 1.5e-3, "aten_ops": 9, "per_kernel": {"gemm_kernel": (2.0, 1e-3), "copy": (1.0, 5e-4)}}
    from real.fp8 import BF16
    hd._row(rec, timer, "train_step tiny b1 s8", "train_opt", BF16, "holdout", r, model="tiny", batch=1, seq_len=8,
            tokens=8, num_experts=8)
    rec.close()
    rows = list(csv.DictReader((tmp_path / "step_kernels.csv").open()))
    assert [(x["kernel"], float(x["calls"])) for x in rows] == [("gemm_kernel", 2.0), ("copy", 1.0)]
    assert all(x["config"] == "train_step tiny b1 s8 train_opt" for x in rows)
    (row,) = list(csv.DictReader((tmp_path / "host_dispatch.csv").open()))
    assert float(row["kernels"]) == 3.0 and "per_kernel" not in row
