"""Published serving figures: the H200 curve and where it crosses a figure; DeepSeek's conditions."""

from pathlib import Path

import pytest

from twin.core.scenario import SERVING, load_scenario
from twin.serving.published import CurvePoint, crossings, h200_curve

ROOT = Path(__file__).resolve().parents[3]


def _pt(c, tok, tpot):
    return CurvePoint(1024, 1024, c, tok, tpot, 0.1, 0)


def test_crossing_is_interpolated_between_simulated_points():
    # 3,000 at 100 and 5,000 at 200: 3,872 is 43.6% of the way, concurrency 143.6, TPOT 40 + 0.436 x 10 ms
    rows = crossings((_pt(100, 3000.0, 0.040), _pt(200, 5000.0, 0.050)))
    assert rows[0]["reaches"] and rows[0]["concurrency"] == pytest.approx(143.6)
    assert rows[0]["tpot_s"] == pytest.approx(0.04436)
    never = crossings((_pt(100, 1000.0, 0.040), _pt(200, 2000.0, 0.050)))
    assert not never[0]["reaches"] and never[0]["max_tokens_per_s_per_node"] == 2000.0


def test_h200_curve_rises_with_concurrency():
    pts = h200_curve(concurrency=(1, 16), lengths=((1024, 64),), waves=2)
    assert [p.concurrency for p in pts] == [1, 16]
    assert pts[1].output_tokens_per_s_per_node > 4 * pts[0].output_tokens_per_s_per_node
    assert pts[1].tpot_p50_s > pts[0].tpot_p50_s


def test_deepseek_scenarios_state_the_published_conditions():
    pre = load_scenario(ROOT / "scenarios" / "r1_serve_h800_prefill.toml", kind=SERVING)
    dec = load_scenario(ROOT / "scenarios" / "r1_serve_h800_decode.toml", kind=SERVING)
    # prefill EP32 on 4 nodes, decode EP144 on 18 nodes, 32 redundant experts, DP attention
    assert (pre.serve.prefill_gpus, pre.serve.prefill_instances, pre.serve.redundant_experts) == (32, 1, 32)
    assert (dec.serve.ep, dec.cluster.num_gpus, dec.serve.redundant_experts) == (144, 144, 32)
    assert pre.traffic.prefix_hit_frac == 0.563
    # mean KV length per output token ISL + OSL / 2 = 4,989 (to a token), 20-22 tokens/s per user
    assert dec.serve.input_len + dec.serve.output_len / 2 == pytest.approx(4989, abs=1)
    assert 1 / 22 <= dec.traffic.target_tpot_s <= 1 / 20


def test_decode_at_the_published_load_runs_littles_law_concurrency():
    """14.8k output tokens/s per node x 18 nodes over 21 tokens/s per user = 12,686 requests in
    flight (88 per GPU): the decode scenario runs there, with no TPOT target, and reports the
    per-user speed (1 / TPOT P50) against 21."""
    from twin.serving.published import deepseek_decode_at_published_load, published_decode_concurrency
    assert published_decode_concurrency(21.0) == 12_686
    assert published_decode_concurrency(20.0) > published_decode_concurrency(22.0)
    row = deepseek_decode_at_published_load(ROOT)
    assert row["concurrency"] == 12_686 and row["claimed"] == 21.0
    assert row["predicted"] == pytest.approx(1.0 / row["tpot_p50_s"])
    assert row["rel_error"] == pytest.approx(row["predicted"] / 21.0 - 1.0)
    # fewer requests than the fully loaded unit (~116 per GPU at 21 tokens/s): faster steps
    full = load_scenario(ROOT / "scenarios" / "r1_serve_h800_decode.toml", kind=SERVING)
    assert row["concurrency"] < 144 * 116 and full.traffic.target_tpot_s > row["tpot_p50_s"]


COMPUTE_GROUPS = ("attention_core", "attention_gemm", "shared_experts", "routed_experts", "elementwise", "tensor_parallel")


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_profile_groups_are_the_iteration_models_layer_at_the_profiles_conditions(phase):
    """The twin at DeepSeek's profile conditions (decode EP128, 128 requests per GPU; prefill EP32,
    16K tokens per GPU, the all-to-all on 24 SMs), one micro-batch of a MoE layer by kernel group:
    the groups add up to the layer the iteration model schedules (decode: 2 x max(compute,
    all-to-all); prefill: the same, plus any bubble the two streams leave)."""
    from twin.serving.published import deepseek_profile_groups
    row = deepseek_profile_groups(ROOT, phase)
    g = row["groups_us"]
    compute, a2a = sum(g[k] for k in COMPUTE_GROUPS), g["dispatch"] + g["combine"]
    assert g["attention_core"] > 0 and g["routed_experts"] > 0 and g["shared_experts"] > 0 and g["dispatch"] > 0
    assert g["combine"] > g["dispatch"]            # BF16 combine, FP8 dispatch
    if phase == "decode":
        assert "EP128, 128 requests per GPU" in row["conditions"] and "a2a SMs none" in row["conditions"]
        assert g["span_per_layer"] == pytest.approx(2 * max(compute, a2a))
        assert row["tokens_per_s_per_node"] == pytest.approx(8 * 128 / row["iteration_s"])
    else:
        assert "16,384 tokens per GPU" in row["conditions"] and "a2a SMs 24" in row["conditions"]
        assert 2 * max(compute, a2a) <= g["span_per_layer"] * (1 + 1e-9) <= 2 * (compute + a2a)
        assert row["tokens_per_s_per_node"] == pytest.approx(8 * 16384 / row["iteration_s"])
    with pytest.raises(ValueError, match="allowed"):
        deepseek_profile_groups(ROOT, "train")


# ---------------------------------------------------------------------------------------------
# Issue 15's target: DeepSeek's published figures under their published conditions within 15%,
# never fitted. Rows not met are strict xfails carrying the measured error: reported, never
# loosened, and the test fails the day one passes (then move it to MET).
PUBLISHED_TOLERANCE = 0.15
NOT_MET = {
    # fully loaded prefill unit (closed loop) against the 24 h average of the service, which counts the
    # unit's idle time and real routing; its average load is not published (no TTFT figure)
    "r1_serve_h800_prefill": "+70.6%: 125.7k against 73.7k input tokens/s per node (fully loaded unit, "
                             "balanced routing, every prompt 4,384 tokens, the all-to-all on 24 SMs; the daily load "
                             "is not published)",
    # the decode unit at the largest batch giving 21 tokens/s per user: the twin's step is 13% faster
    # at the published load (below), so the same speed holds ~116 requests per GPU instead of 88
    "r1_serve_h800_decode": "+33.4%: 19.7k against 14.8k output tokens/s per node (fully loaded at 21 tokens/s "
                            "per user; at the published load the per-user speed is +12.9%)",
}


@pytest.fixture(scope="module")
def production_rows():
    from twin.serving.published import deepseek_production
    return {r["scenario"]: r for r in deepseek_production(ROOT)}


@pytest.mark.parametrize("scenario", [
    pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=f"not met: {NOT_MET[name]} (issue 15 open)")]
                 if name in NOT_MET else [])
    for name in ("r1_serve_h800_prefill", "r1_serve_h800_decode", "r1_serve_h800_decode at the published load",
                 "r1_serve_h800_prefill at DeepSeek's profile conditions")])
def test_deepseek_published_figures_within_15_percent(production_rows, scenario):
    """Each DeepSeek figure under its published conditions: the production prefill and decode units,
    the decode unit at the load the published figures imply (per-user speed against 21 tokens/s) and
    the prefill unit at the conditions of DeepSeek's own prefill profile (62,713 input tokens/s per
    node, EP32, 4K prompts, 16K tokens per GPU, no cache hits)."""
    row = production_rows[scenario]
    assert row["rel_error"] == pytest.approx(row["predicted"] / row["claimed"] - 1.0)
    assert abs(row["rel_error"]) <= PUBLISHED_TOLERANCE, f"{scenario}: {row['rel_error']:+.1%}"
