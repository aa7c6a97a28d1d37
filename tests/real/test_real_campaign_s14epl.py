"""real/bench/ep_kernels.py and real/campaigns/s14epl.sh (issue 13: the EP2 layer's kernels against
the twin's kernel classes): the NCCL-overlap arithmetic, and the campaign's CPU dry run on two gloo
ranks (tiny shapes) writing the fitting-split ep rows, both ranks' kernel rows and the grouped GEMMs
alone, every row with its environment columns."""

import csv

import pytest

from real.bench.ep_kernels import kernel_table, overlap_s
from real.bench.records import SHAPE_COLS
from tests.campaigns import dry_run


def test_overlap_counts_each_covered_second_once():
    assert overlap_s(0.0, 10.0, []) == 0.0
    assert overlap_s(0.0, 10.0, [(2.0, 4.0), (3.0, 5.0), (9.0, 12.0)]) == 4.0   # 2-5 and 9-10
    assert overlap_s(5.0, 6.0, [(0.0, 1.0), (7.0, 8.0)]) == 0.0


class _Ev:
    def __init__(self, name, start_us, end_us):
        self.name, self.device_type = name, type("D", (), {"name": "CUDA"})()
        self.time_range = type("R", (), {"start": start_us, "end": end_us})()


def test_kernel_table_per_repetition_with_the_nccl_overlap():
    events = [_Ev("gemm", 0, 100), _Ev("ncclDevKernel_AllToAll", 50, 150), _Ev("gemm", 200, 300)]
    t = kernel_table(events, on_gpu=True, reps=2)
    assert t["gemm"] == pytest.approx([1.0, 100e-6, 25e-6])   # 2 calls, 200 us, 50 us beside NCCL, per rep
    assert t["ncclDevKernel_AllToAll"][2] == 0.0        # an NCCL kernel is not beside itself


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_s14epl_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s14epl", tmp_path, 400)
    assert "s14epl part ep_kernels rc=0" in log, log[-2000:]
    _, ep_rows = _rows(d / "ep" / "ep.csv")
    assert {r["bench"] for r in ep_rows} == {"ep_dispatch", "moe_layer_ep_fwd", "moe_layer_ep_bwd"}
    assert {r["split"] for r in ep_rows} == {"fit"} and {r["skew"] for r in ep_rows} == {"0", "1"}
    header, kern = _rows(d / "ep" / "ep_kernels.csv")
    assert header[:len(SHAPE_COLS["ep_kernels"])] == SHAPE_COLS["ep_kernels"]
    assert {r["rank"] for r in kern} == {"0", "1"}
    assert {r["bench"] for r in kern} == {"moe_layer_ep_fwd", "moe_layer_ep_bwd"}
    assert all(float(r["time_s"]) >= float(r["nccl_overlap_s"] or 0) for r in kern)
    _, grouped = _rows(d / "ep" / "ep_grouped.csv")
    assert {(r["bench"], r["rank"]) for r in grouped} >= {("grouped_alone_w13", "0"), ("grouped_alone_w2", "1")}
    for r in ep_rows + kern + grouped:
        assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["num_gpus"] != ""
