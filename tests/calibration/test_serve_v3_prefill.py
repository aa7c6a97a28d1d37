"""calibration/serve_v3_prefill.py (s24v3pre): the twin's op list of a prompt step sums to the kernels the serving
twin prices for it, and the measured kernels group by the engine's model part."""

import csv

import pytest

from calibration import serve_eager_host as seh
from calibration.records_io import open_csv
from calibration.serve_host_speed import before_t
from calibration import serve_v3_prefill as sv


@pytest.mark.parametrize("model", ["v3-slice-2l", "qwen3moe-mla-slice"])
@pytest.mark.parametrize("prompts,tokens", [(1, 480), (4, 480), (6, 336)])
def test_twin_op_list_sums_to_the_step_kernels_the_twin_prices(model, prompts, tokens):
    """The twin's prefill forward (s24v3pre's subject): priced without T's engine prompt terms, which replace part of
    its op list (timing.T_SWITCHES off; docs/notes/s26start2_rule.md)."""
    with before_t():
        _op_list_sums_to_the_step_kernels(model, prompts, tokens)


def _op_list_sums_to_the_step_kernels(model, prompts, tokens):
    steps = sv.measured_steps(seh.rec.MEASUREMENTS_DIR)
    row = steps[(model, prompts, tokens)]["row"]
    costs = sv.costs_for(model, row, seh.probe_s(row), sv.TABLE, seh.rec.MEASUREMENTS_DIR)
    got = sv.twin_step(costs, prompts, tokens)
    # _kernels interpolates the prefill grid in tokens; the op list is evaluated at the exact shape
    assert got["ops_total_s"] == pytest.approx(got["kernels_s"], rel=0.02)
    assert {p for p, _, _ in got["ops"]} >= {"attn", "moe", "head"}


def test_region_group_drops_the_layer_index():
    assert sv.region_group("layers.1.attn.prefill_core") == "attn.prefill_core"
    assert sv.region_group("layers.0.ffn") == "ffn"
    assert sv.region_group("engine") == "engine" and sv.region_group("logits") == "logits"


def test_parts_hold_every_measured_kernel_and_every_twin_op():
    root = seh.rec.MEASUREMENTS_DIR
    kernels = sv.measured_kernels(root)
    assert ("v3-slice-2l", 4, 480) in kernels, "h100/s24v3pre/prefill_kernels.csv.xz filed"
    steps = sv.measured_steps(root)
    row = steps[("v3-slice-2l", 4, 480)]["row"]
    costs = sv.costs_for("v3-slice-2l", row, seh.probe_s(row), sv.TABLE, root)
    meas = kernels[("v3-slice-2l", 4, 480)]
    parts = sv.compare(costs, 4, 480, meas)
    tw = sv.twin_step(costs, 4, 480)
    assert sum(g for _, g, _ in parts) == pytest.approx(sum(meas.values()))
    assert sum(w for _, _, w in parts) == pytest.approx(tw["ops_total_s"] + tw["scores_s"])
    # the diagnosis: the attention core and the MoE's routing are where the twin is short on v3-slice-2l
    short = {p: g - w for p, g, w in parts}
    assert short["attention core"] > 1e-3 and short["MoE routing + elementwise"] > 1e-3


def test_measured_part_maps_the_engine_regions():
    dense = {0}
    assert sv.measured_part("layers.1.attn.prefill_core", "aten::bmm", dense) == "attention core"
    assert sv.measured_part("layers.0.ffn", "aten::mm", dense) == "dense FFN"
    assert sv.measured_part("layers.1.ffn", "aten::_grouped_mm", dense) == "MoE GEMMs"
    assert sv.measured_part("layers.1.ffn", "aten::index", dense) == "MoE routing + elementwise"
    assert sv.measured_part("layers.1.ffn.gate", "aten::mm", dense) == "MoE routing + elementwise"
    assert sv.measured_part("logits", "aten::mm", dense) == "head"
    assert sv.measured_part("engine", "aten::add", dense) == "norms, residuals, embed, engine"


def test_s24v3pre_records_are_complete_and_carry_the_environment():
    root = seh.rec.MEASUREMENTS_DIR
    for name in ("prefill_kernels.csv", "prefill_steps.csv"):
        with open_csv(root / "h100" / "s24v3pre" / name) as f:
            rows = list(csv.DictReader(f))
        assert rows and all(r["gpu_name"] == "NVIDIA H100 80GB HBM3" and r["torch_version"] and r["cuda_version"]
                            and r["nccl_version"] and float(r["sm_clock_mhz"]) > 0 for r in rows)
    with open_csv(root / "h100" / "s24v3pre" / "prefill_steps.csv") as f:
        steps = list(csv.DictReader(f))
    # 2 models x 4 compositions x (2 unprofiled + 2 profiled)
    assert len(steps) == 32 and {r["model"] for r in steps} == {"v3-slice-2l", "qwen3moe-mla-slice"}
