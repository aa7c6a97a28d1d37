"""The twin's real/-path op list of a GQA block (calibration.predict _gqa_ops, attention_layer_ops)
against real/model.py's GQA module: the projections it prices are the module's weights, the core is
the profile's attention curve at the block's shape, and whole_step counts the model's parameter
tensors as real/ builds them."""

import math

import pytest
import torch

from calibration.predict import Eager, attention_layer_ops, gpu_spec, gqa_layer_ops, mla_layer_ops
from calibration.whole_step import _param_tensors, train_step_ops
from real.configs import get_spec
from real.model import GQA, build_model
from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import fitted_profile


@pytest.fixture(scope="module")
def h100():
    return gpu_spec("h100"), fitted_profile("h100")


@pytest.mark.parametrize("name", ["tiny-gqa", "mixtral-slice", "qwen3moe-slice", "mixtral-mla-slice", "v3-slice-1l"])
def test_param_tensors_match_real_model(name):
    """MasterAdamW upcasts each gradient tensor alone: the twin's tensor count is real/'s."""
    with torch.device("meta"):
        model = build_model(get_spec(name), "meta", max_seq_len=8)
    assert _param_tensors(get_spec(name)) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["mixtral-slice", "qwen3moe-slice"])
def test_gqa_gemms_are_the_modules_projections(name, h100):
    """Forward GEMM seconds = the four projections at real/'s weight shapes (N, K) over T tokens;
    backward = dX and dW of each; the attention seconds = the profile's curve at (B, S, H, A)."""
    gpu, profile = h100
    spec = get_spec(name)
    with torch.device("meta"):
        attn = GQA(spec)
    B, S = 2, 1024
    T = B * S
    f, b = gqa_layer_ops(spec, B, S, "bf16", gpu, profile)
    shapes = [tuple(w.shape) for w in (attn.wq_XD, attn.wk_ZD, attn.wv_ZD, attn.wo_DX)]
    fwd = sum(compute.gemm_time_s(T, n, k, "bf16", gpu, profile) for n, k in shapes)
    bwd = sum(compute.gemm_time_s(T, k, n, "bf16", gpu, profile) + compute.gemm_time_s(n, k, T, "bf16", gpu, profile)
              for n, k in shapes)
    assert math.isclose(f.component_s["gemm"], fwd, rel_tol=1e-12)
    assert math.isclose(b.component_s["gemm"], bwd, rel_tol=1e-12)
    core = Op("attn_core", OpKind.ATTENTION, "attn", batch=B, seq_len=S, heads=spec.num_heads, qk_dim=spec.head_dim,
              v_dim=spec.head_dim, causal=True, precision="bf16")
    assert math.isclose(f.component_s["attention"], compute.attention_time_s(core, "fwd", gpu, profile), rel_tol=1e-12)
    assert math.isclose(b.component_s["attention"], compute.attention_time_s(core, "bwd", gpu, profile), rel_tol=1e-12)


def test_attention_layer_ops_dispatches_on_the_spec(h100):
    gpu, profile = h100

    def total(pair):
        return sum(g for e in pair for _, g in e.ops)

    mla, gqa = get_spec("mixtral-mla-slice"), get_spec("mixtral-slice")
    assert total(attention_layer_ops(mla, 1, 512, "bf16", gpu, profile)) == total(mla_layer_ops(mla, 1, 512, "bf16", gpu, profile))
    assert total(attention_layer_ops(gqa, 1, 512, "bf16", gpu, profile)) == total(gqa_layer_ops(gqa, 1, 512, "bf16", gpu, profile))


def test_qk_norm_and_repeat_kv_cost_memory_only(h100):
    """QK norm adds memory ops (forward and backward) and no GEMM or attention time; without
    repeats (V = H) repeat_kv's copies go."""
    gpu, profile = h100
    spec = get_spec("qwen3moe-slice")
    with_norm = gqa_layer_ops(spec, 1, 2048, "bf16", gpu, profile)
    without = gqa_layer_ops(spec.__class__(**{**spec.__dict__, "qk_norm": False}), 1, 2048, "bf16", gpu, profile)
    mha = gqa_layer_ops(spec.__class__(**{**spec.__dict__, "num_kv_heads": spec.num_heads}), 1, 2048, "bf16", gpu,
                        profile)
    for a, b in zip(with_norm, without):
        assert a.component_s["memory"] > b.component_s["memory"]
        assert a.component_s["gemm"] == b.component_s["gemm"] and a.component_s["attention"] == b.component_s["attention"]
        assert len(a.ops) == len(b.ops) + (2 if a is with_norm[0] else 4)
    assert len(mha[0].ops) == len(with_norm[0].ops) - 2


def test_gqa_train_step_predicts(h100):
    gpu, profile = h100
    step = train_step_ops(get_spec("mixtral-slice"), 1, 4096, "bf16", gpu, profile)
    assert isinstance(step, Eager) and step.component_s["attention"] > 0
