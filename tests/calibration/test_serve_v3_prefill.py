"""calibration/serve_v3_prefill.py (s24v3pre): the twin's op list of a prompt step sums to the kernels the serving
twin prices for it, and the measured kernels group by the engine's model part."""

import pytest

from calibration import serve_eager_host as seh
from calibration import serve_v3_prefill as sv


@pytest.mark.parametrize("model", ["v3-slice-2l", "qwen3moe-mla-slice"])
@pytest.mark.parametrize("prompts,tokens", [(1, 480), (4, 480), (6, 336)])
def test_twin_op_list_sums_to_the_step_kernels_the_twin_prices(model, prompts, tokens):
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
