"""The day prefill taken apart (docs/notes/s23deep_rule.md part 2): deepseek_prefill_components adds up to the
iteration the request simulation prices, and deepseek_prefill_over_load is the day row scaled by the busiest
hour's load, with the simulation's TTFT at each load. Reporting only: no figure moves."""

import dataclasses

import pytest

from twin.core.scenario import SERVING, load_scenario, packaged_scenario
from twin.serving.published import (DEEPSEEK_PREFILL_SCENARIO, DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE,
                                    DEEPSEEK_PROFILE_PREFILL_CONDITIONS, deepseek_prefill_components,
                                    deepseek_prefill_over_load)
from twin.serving.iteration import prefill_forward, prefix_expand_s
from twin.serving.timing import IterationCosts


@pytest.fixture(scope="module")
def day():
    return deepseek_prefill_components()


def test_components_add_up_to_the_priced_iteration(day):
    c = day["conditions"]
    # 4,384-token prompts, floor(0.563 x 4,384) = 2,468 cached, 1,916 computed; span n + 2c = 6,852
    assert (c["cached_tokens"], c["computed_tokens"], c["attention_span_tokens"]) == (2468, 1916, 6852)
    parts = day["components_s"]
    assert sum(parts.values()) == pytest.approx(day["total_s"], rel=1e-12)
    assert day["total_s"] == pytest.approx(day["forward_s"] + parts["prefix_expand"], rel=1e-12)
    assert parts["all_to_all_exposed"] >= 0.0 and day["all_to_all_hidden_s"] <= day["all_to_all_s"]
    # exactly the cost functions the iteration prices with (prefill_forward at the span, prefix_expand_s) ...
    sc = load_scenario(packaged_scenario(DEEPSEEK_PREFILL_SCENARIO), kind=SERVING)
    s = sc.serve
    exact = (prefill_forward(sc.model, sc.gpu, dataclasses.replace(s, input_len=c["attention_span_tokens"]))["forward_s"]
             + prefix_expand_s(sc.model, sc.gpu, s, round(c["prompts_per_gpu"] * c["cached_tokens"])))
    assert day["total_s"] == pytest.approx(exact, rel=1e-12)
    # ... and the request simulation's iteration at the same work (instance totals over EP32) on its grids: spans
    # are interpolated linearly between grid points 2x apart (4,096 and 8,192 here), +1.2% at 6,852
    costs = IterationCosts(sc.model, sc.gpu, sc.serve)
    ep = sc.serve.ep
    priced = (costs.prefill_s(c["computed_tokens_per_gpu"] * ep, c["attention_span_tokens"])
              + costs.prefix_s(c["prompts_per_gpu"] * c["cached_tokens"] * ep))
    assert day["total_s"] == pytest.approx(priced, rel=0.02)
    # per token: node-microseconds per input token (hits counted) x input tokens per node per second = 1e6
    per_input = sum(day["node_us_per_input_token"].values())
    assert per_input * day["input_tokens_per_s_per_node"] == pytest.approx(1e6, rel=1e-9)


def test_profile_conditions_have_no_prefix_and_shorter_attention(day):
    prof = deepseek_prefill_components(DEEPSEEK_PROFILE_PREFILL_CONDITIONS)
    assert prof["conditions"]["cached_tokens"] == 0 and prof["components_s"]["prefix_expand"] == 0.0
    # same GEMMs per computed token, attention over 4,096-token prompts against the day's 6,852-token spans
    assert prof["components_s"]["moe_routed_experts"] == pytest.approx(day["components_s"]["moe_routed_experts"])
    assert prof["components_s"]["moe_attention_core"] < day["components_s"]["moe_attention_core"]
    assert prof["input_tokens_per_s_per_node"] == prof["computed_tokens_per_s_per_node"]


def test_load_curve_scales_the_day_row():
    row = {"fully_loaded_per_node": 120_000.0, "predicted": 110_000.0}   # a stand-in day row
    curve = deepseek_prefill_over_load((0.5, 1.0), day_row=row, ttft=False)
    p50, p100 = curve["points"]
    assert p100["predicted"] == 110_000.0 and p50["predicted"] == 55_000.0
    assert p50["rel_error"] == pytest.approx(55_000 / DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE - 1)
    assert curve["published_at_load_frac"] * 110_000 == pytest.approx(DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE)
    lo, hi = curve["within_15_percent_load_frac"]
    assert lo * 110_000 == pytest.approx(0.85 * DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE)
    assert hi * 110_000 == pytest.approx(1.15 * DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE)


def test_ttft_grows_with_the_load(day):
    full = 125_711.0   # the fully loaded unit's closed-loop rate (tests/golden/headline.json)
    curve = deepseek_prefill_over_load((0.5, 0.9), day_row={"fully_loaded_per_node": full, "predicted": 1.0})
    light, busy = curve["points"]
    for arrival in ("poisson", "gamma"):
        assert light[f"{arrival}_ttft_p50_s"] < busy[f"{arrival}_ttft_p50_s"]
        assert light[f"{arrival}_ttft_p50_s"] <= light[f"{arrival}_ttft_p99_s"]
    # bursty arrivals wait longer than Poisson ones at the same mean rate
    assert busy["gamma_ttft_p99_s"] > busy["poisson_ttft_p99_s"]
