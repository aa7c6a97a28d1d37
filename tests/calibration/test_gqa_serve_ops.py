"""The twin's real/-path prefill and decode op lists of a GQA model (calibration.whole_step
prefill_ops / decode_ops pick GQA by spec.attention): the cache it writes is real/'s GQACache, the
decode core streams the cached K and V on the memory curve, and the MLA lists are unchanged (the
s20new2 predictions, written before this code, reproduce exactly)."""

import pandas as pd
import pytest
import torch

from calibration import prereg
from calibration.predict import BF16_BYTES, gpu_spec
from calibration.whole_step import cache_values_per_token, decode_ops, predict_model_row, prefill_ops
from real.configs import get_spec
from real.model import build_model
from twin.costs import compute
from twin.costs.profile import fitted_profile


@pytest.fixture(scope="module")
def h100():
    return gpu_spec("h100"), fitted_profile("h100")


@pytest.mark.parametrize("name", ["tiny-gqa", "qwen3moe-slice", "mixtral-slice", "tiny", "mixtral-mla-slice"])
def test_cache_values_per_token_are_real_caches(name):
    """The values a layer's cache holds per token (the bytes prefill and decode write) are those of
    the caches real/'s Transformer.new_caches allocates."""
    with torch.device("meta"):
        model = build_model(get_spec(name), "meta", max_seq_len=8)
    B, L = 3, 8
    caches = model.new_caches(B, L, device="meta")
    per_layer = [sum(t.numel() for t in vars(c).values()) for c in caches]
    assert per_layer == [B * L * cache_values_per_token(get_spec(name))] * len(caches)


def test_gqa_decode_core_streams_the_cache(h100):
    """Between cache lengths 1040 and 1055 only one op a layer changes, the SDPA core, and it is
    the memory curve's time for the cached K and V of every kv head (plus query and output)."""
    gpu, profile = h100
    spec, B = get_spec("qwen3moe-slice"), 8
    H, V, A = spec.num_heads, spec.num_kv_heads, spec.head_dim
    short, long_ = decode_ops(spec, B, 1040, gpu, profile).ops, decode_ops(spec, B, 1055, gpu, profile).ops
    assert len(short) == len(long_)
    changed = [g for (_, g), (_, g0) in zip(long_, short) if g != g0]
    core_s = compute.memory_time_s((2 * B * V * 1055 * A + 2 * B * H * A) * BF16_BYTES, gpu, profile)
    assert changed == [core_s] * spec.num_layers


def test_gqa_decode_qk_norm_adds_two_memory_ops_a_layer(h100):
    gpu, profile = h100
    spec = get_spec("qwen3moe-slice")
    without = spec.__class__(**{**spec.__dict__, "qk_norm": False})
    assert spec.qk_norm
    assert len(decode_ops(spec, 4, 1030, gpu, profile).ops) == len(decode_ops(without, 4, 1030, gpu, profile).ops) + 2 * spec.num_layers


@pytest.mark.parametrize("name", ["mixtral-slice", "qwen3moe-slice"])
def test_gqa_serve_rows_predict(name, h100):
    """A prefill and a decode model.csv row of a GQA slice get a prediction; a longer prompt costs more."""
    gpu, profile = h100
    row = {"model": name, "batch": 4, "prompt_len": 1024, "gen_len": 32}
    p1 = predict_model_row({**row, "bench": "prefill", "gen_len": 0}, gpu, profile)
    p2 = predict_model_row({**row, "bench": "prefill", "gen_len": 0, "prompt_len": 2048}, gpu, profile)
    d = predict_model_row({**row, "bench": "decode"}, gpu, profile)
    assert 0 < p1 < p2 and 0 < d < p1
    assert prefill_ops(get_spec(name), 4, 1024, gpu, profile).component_s


def test_mla_serve_predictions_unchanged():
    """The s20new2 predictions (MLA prefill and decode, written by the code before s20gqa2's GQA lists)
    reproduce to the last digit under this code."""
    reg = prereg.S20NEW2
    committed = prereg.load_predictions(reg=reg)
    now = prereg.predict(prereg.case_rows(reg))
    merged = committed.merge(now, on=reg.key, suffixes=("_committed", "_now"))
    assert len(merged) == len(committed) == 42
    pd.testing.assert_series_equal(merged["predicted_s_committed"], merged["predicted_s_now"], check_names=False,
                                   rtol=1e-12)
