"""Published serving figures: the H200 curve and where it crosses a figure; DeepSeek's conditions."""

import math
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


def test_whole_unit_splits_pin_the_published_node_schedule():
    """18-node decode and 4-node prefill units: a 30-node step is one decode + three prefill units (the
    only split), the 68-node night floor 2 + 8 (0 + 17 leaves no decode), so 278 = 9 + 29."""
    from twin.serving.published import unit_schedule, whole_unit_splits
    assert whole_unit_splits(30, 18, 4) == [(1, 3)]
    assert whole_unit_splits(68, 18, 4) == [(0, 17), (2, 8)]
    units = unit_schedule([278, 218, 188, 158, 128, 98, 68], 18, 4)
    assert units[68] == (2, 8) and units[98] == (3, 11) and units[218] == (7, 23) and units[278] == (9, 29)
    with pytest.raises(ValueError, match="not one each"):
        unit_schedule([72, 108], 18, 4)           # a 36-node step: 2 decode units or 9 prefill units


def test_published_day_gives_back_the_published_averages():
    """The node schedule read off the post's figure averages 226.75 nodes (published), split into
    131.25 decode and 95.5 prefill; the published token totals over those give the two per-node
    figures (14.81k, 73.69k); the hourly income bars sum to the published $562,027 within 1%."""
    from twin.serving.published import (DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE, DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE,
                                        day_average_per_node, deepseek_day, mean_nodes, published_per_node)
    from twin.core.specs import serving_tables
    table = serving_tables()["deepseek_day"]
    for per_hour in (True, False):
        day = deepseek_day(per_hour=per_hour)
        assert sum(i.duration_h for i in day) == pytest.approx(24.0)
        assert mean_nodes(day, "decode") == pytest.approx(131.25) and mean_nodes(day, "prefill") == pytest.approx(95.5)
        assert mean_nodes(day, "decode") + mean_nodes(day, "prefill") == pytest.approx(table["mean_nodes"])
        assert max(i.decode_nodes + i.prefill_nodes for i in day) == table["peak_nodes"]
    day = deepseek_day()
    assert len(day) == 24 and day[15].decode_nodes == pytest.approx(0.5 * 54 + 0.5 * 36)   # 03:00-04:00: 98 then 68 nodes
    decode = table["output_tokens"] / 86_400 / mean_nodes(day, "decode")
    prefill = table["input_tokens"] / 86_400 / mean_nodes(day, "prefill")
    assert decode == pytest.approx(DEEPSEEK_DECODE_TOKENS_PER_S_PER_NODE, rel=0.005)
    assert prefill == pytest.approx(DEEPSEEK_PREFILL_TOKENS_PER_S_PER_NODE, rel=0.005)
    assert day_average_per_node(day, "decode", published_per_node(day, "decode", table["output_tokens"])) == pytest.approx(decode)
    assert sum(table["hourly_income_usd"]) == pytest.approx(table["theoretical_income_usd"], rel=0.01)


def _two_hours(income=(100.0, 50.0), decode=(2.0, 1.0), prefill=(4.0, 4.0)):
    from twin.serving.published import DayInterval
    return tuple(DayInterval(float(h), 1.0, income[h], decode[h], prefill[h]) for h in range(2))


def test_day_average_counts_every_deployed_node_for_its_hours():
    # 10 tok/s on each of 2 nodes, then 40 on 1 node: (2 x 10 + 1 x 40) / 3 node-hours = 20
    from twin.serving.published import day_average_per_node, load_shape_per_node, prefill_load_at_capacity
    day = _two_hours()
    assert day_average_per_node(day, "decode", [10.0, 40.0]) == pytest.approx(20.0)
    assert list(load_shape_per_node(day, "decode")) == [50.0, 50.0]
    # prefill: 100 / 4 then 50 / 4 per node; the busiest hour at capacity 1,000, the other at half
    assert list(prefill_load_at_capacity(day, 1000.0)) == pytest.approx([1000.0, 500.0])
    with pytest.raises(ValueError, match="allowed decode, prefill"):
        load_shape_per_node(day, "train")


def test_decode_load_meets_the_speed_or_stops_at_the_memory_limit():
    """A curve of 1,000 tok/s per node at 30 tok/s per user and 2,000 (the memory limit) at 20: a day
    of even load reaches 25 tok/s at 1,500 per node (halfway); 15 tok/s is slower than the memory
    limit allows, so the busiest hour stops there (2,000) and the flag says so."""
    from twin.serving.published import SpeedCurve, decode_load_for_speed, mean_user_speed
    curve = SpeedCurve((10.0, 20.0), (1000.0, 2000.0), (30.0, 20.0))
    day = _two_hours(income=(100.0, 100.0), decode=(1.0, 1.0))
    load, capped = decode_load_for_speed(day, curve, 25.0)
    assert not capped and list(load) == pytest.approx([1500.0, 1500.0], rel=1e-9)
    assert mean_user_speed(day, load, curve) == pytest.approx(25.0)
    load, capped = decode_load_for_speed(day, curve, 15.0)
    assert capped and list(load) == pytest.approx([2000.0, 2000.0])
    # uneven day: the busier hour (100 on 1 node) at the limit, the other (50 on 1 node) at half
    load, capped = decode_load_for_speed(_two_hours(income=(100.0, 50.0), decode=(1.0, 1.0)), curve, 15.0)
    assert capped and list(load) == pytest.approx([2000.0, 1000.0])
    with pytest.raises(ValueError, match="outside the simulated"):
        curve.speed_at([500.0])


def test_rising_points_keep_the_loads_that_deliver_more_than_every_lighter_one():
    """A curve rising to 3,000 at 30 requests per GPU, dipping at 20 and falling past 30 to the memory
    limit at 50: the dip and the fall are dropped, the memory limit kept as a figure."""
    from twin.serving.published import SpeedCurve, rising_points
    curve = SpeedCurve((10.0, 20.0, 30.0, 40.0, 50.0), (2000.0, 1900.0, 3000.0, 2900.0, 2800.0), (30.0, 28.0, 25.0, 20.0, 15.0))
    kept = rising_points(curve)
    assert kept.requests_per_gpu == (10.0, 30.0) and kept.output_tokens_per_s_per_node == (2000.0, 3000.0)
    assert kept.user_tokens_per_s == (30.0, 25.0) and kept.memory_limit == 50.0 and curve.memory_limit == 50.0
    assert kept.speed_at([2500.0]) == pytest.approx([27.5])
    with pytest.raises(ValueError, match="not rising"):
        curve.speed_at([2500.0])


@pytest.mark.parametrize("peak", [True, False])
def test_decode_speed_curve_past_its_peak_under_both_settings(monkeypatch, peak):
    """The decode unit simulated (a stand-in for the simulation) with output per node that falls past
    90 requests per GPU: under ADOPT_SPEED_CURVE_PEAK the curve ends at its most output, the memory
    limit kept beside it; off, the curve keeps every load and refuses to be read."""
    from types import SimpleNamespace

    from twin.serving import published
    gpus = 144

    def fake_simulate(sc):
        b = sc.traffic.concurrency / gpus
        out = 200.0 * b if b <= 90 else 200.0 * 90 - 50.0 * (b - 90)
        return SimpleNamespace(output_tokens_per_s_per_node=out, tpot_s=SimpleNamespace(p50=0.02 + 1e-4 * b),
                               kv_capacity_tokens_per_instance=120 * gpus * (4384 + 1211))

    monkeypatch.setattr(published, "simulate", fake_simulate)
    monkeypatch.setattr(published, "ADOPT_SPEED_CURVE_PEAK", peak)
    curve = published.decode_speed_curve(requests_per_gpu=(40, 80, 90, 100))
    assert curve.memory_limit == pytest.approx(120.0)
    if peak:
        assert curve.requests_per_gpu == (40.0, 80.0, 90.0)
        assert curve.speed_at([17000.0]) == pytest.approx(0.5 / (0.02 + 1e-4 * 80) + 0.5 / (0.02 + 1e-4 * 90))   # halfway
    else:
        assert curve.requests_per_gpu == (40.0, 80.0, 90.0, 100.0, 120.0)
        with pytest.raises(ValueError, match="not rising"):
            curve.speed_at([17000.0])


def test_day_rows_compare_like_for_like(production_rows):
    """The decode row's busiest hour is at most the unit's memory limit (the curve's last point, the
    KV cache's whole requests), and where the cap binds the day's mean speed is still above 21; the
    speed row carries the published output exactly (168B over 131.25 nodes)."""
    dec = production_rows["r1_serve_h800_decode"]
    assert dec["capacity_requests_per_gpu"] <= dec["memory_limit_requests_per_gpu"]
    assert dec["busiest_requests_per_gpu"] <= dec["capacity_requests_per_gpu"] * (1 + 1e-9)
    assert dec["concurrency"] < dec["busiest_requests_per_gpu"] and dec["predicted"] < dec["fully_loaded_per_node"]
    if dec["memory_capped"]:
        assert dec["busiest_requests_per_gpu"] == pytest.approx(dec["capacity_requests_per_gpu"])
        assert dec["day_mean_user_tokens_per_s"] >= 21.0
    else:
        assert dec["day_mean_user_tokens_per_s"] == pytest.approx(21.0, rel=1e-6)
    pub = production_rows["r1_serve_h800_decode at the published load"]
    assert pub["output_tokens_per_s_per_node"] == pytest.approx(168e9 / 86_400 / 131.25)
    pre = production_rows["r1_serve_h800_prefill"]
    assert pre["predicted"] == pytest.approx(pre["fully_loaded_per_node"] / pre["busiest_to_mean_load"])


COMPUTE_GROUPS = ("attention_core", "attention_gemm", "shared_experts", "routed_experts", "elementwise", "tensor_parallel",
                  "deepep_ll_kernels")


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_profile_groups_are_the_iteration_models_layer_at_the_profiles_conditions(phase):
    """The twin at DeepSeek's profile conditions (decode EP128, 128 requests per GPU; prefill EP32,
    16K tokens per GPU, the all-to-all on 24 SMs), one micro-batch of a MoE layer by kernel group:
    the groups add up to the layer the iteration model schedules (decode: 2 x max(compute,
    all-to-all); prefill: the same, plus any bubble the two streams leave)."""
    from twin.serving.published import deepseek_profile_groups
    row = deepseek_profile_groups(phase)
    g = row["groups_us"]
    compute, a2a = sum(g.get(k, 0.0) for k in COMPUTE_GROUPS), g["dispatch"] + g["combine"]   # (no DeepEP LL kernels in prefill)
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
        deepseek_profile_groups("train")


# ---------------------------------------------------------------------------------------------
# Issue 15's target: DeepSeek's published figures under their published conditions within 15%,
# never fitted. Rows not met are strict xfails carrying the measured error: reported, never
# loosened, and the test fails the day one passes (then move it to MET).
PUBLISHED_TOLERANCE = 0.15
NOT_MET = {
    # 24 h average over the published day (docs/notes/s14srv_rule.md): the busiest hour's prefill nodes
    # fully loaded (an upper bound: no prefill latency is published), the others at the day's load shape
    "r1_serve_h800_prefill": "+54.7%: 114.0k against 73.7k input tokens/s per node (24 h average over the "
                             "published day, the busiest hour fully loaded at 124.4k; balanced routing, every "
                             "prompt 4,384 tokens, the all-to-all on 24 SMs; it meets 73.7k at a busiest-hour load "
                             "of 65%, deepseek_prefill_over_load, docs/notes/s23deep.md; +56.3% before s30pace's "
                             "slowest-board pace of the EP32 instance)",
    # Met since s22dep (DeepEP's low-latency send and receive kernels on the compute stream, measured on 2xH200,
    # docs/notes/s22dep_rule.md) with s22dg's DeepGEMM masked kernel for the routed experts (docs/notes/s22dg2_rule.md)
    # both on: the day decode per node -6.3% (13.9k against 14.8k; +18.3% before either, -9.2% with s22dep alone),
    # the per-user speed at the published output -3.9% (20.2 against 21, 20-22 published; +13.6% before), the decode
    # profile step +4.0% (19.3k against 18,598; +16.8% before). With s23deep's H100-pair rows for the H800
    # (ADOPT_DEEPEP_LL_SAME_HBM_ROWS, docs/notes/s23deep_rule.md part 1): day decode -4.3% (14.2k), per user
    # -2.6% (20.5), decode profile +5.4% (19.6k)
}


@pytest.fixture(scope="module")
def production_rows():
    from twin.serving.published import deepseek_production
    return {r["scenario"]: r for r in deepseek_production()}


@pytest.mark.parametrize("scenario", [
    pytest.param(name, marks=[pytest.mark.xfail(strict=True, reason=f"not met: {NOT_MET[name]} (issue 15 open)")]
                 if name in NOT_MET else [])
    for name in ("r1_serve_h800_prefill", "r1_serve_h800_decode", "r1_serve_h800_decode at the published load",
                 "r1_serve_h800_prefill at DeepSeek's profile conditions",
                 "r1_serve_h800_decode at DeepSeek's profile conditions")])
def test_deepseek_published_figures_within_15_percent(production_rows, scenario):
    """Each DeepSeek figure under its published conditions: the prefill and decode per-node figures as
    24 h averages over the published day (its node schedule and load shape), the per-user speed at
    the published output hour by hour, and the prefill unit at the conditions of DeepSeek's own
    prefill profile (62,713 input tokens/s per node, EP32, 4K prompts, 16K tokens per GPU, no cache
    hits) and one decode step at the conditions of its decode profile (18,598 output tokens/s per node,
    EP128, 128 requests per GPU, 4K context)."""
    row = production_rows[scenario]
    assert row["rel_error"] == pytest.approx(row["predicted"] / row["claimed"] - 1.0)
    assert abs(row["rel_error"]) <= PUBLISHED_TOLERANCE, f"{scenario}: {row['rel_error']:+.1%}"


def test_decode_profile_row_is_one_step_at_the_profiles_batch(production_rows):
    """The decode profile row: 128 requests per GPU over the step's TPOT, 8 GPUs a node; MTP on (one
    drafted token, 85% accepted) takes a longer step and makes more tokens a step."""
    row = production_rows["r1_serve_h800_decode at DeepSeek's profile conditions"]
    assert row["predicted"] == pytest.approx(128 / row["tpot_p50_s"] * 8)
    assert row["tpot_p50_s"] == pytest.approx(row["step_s"])            # MTP off: one token a step
    assert row["mtp_on_step_s"] > row["step_s"]
    assert row["mtp_on_rel_error"] == pytest.approx(row["mtp_on_predicted"] / row["claimed"] - 1.0)


def test_a_reading_without_a_figure_says_why():
    """A sensitivity reading whose published load lies beyond the unit's simulated loads gives one row saying so
    (no figure), not an exception (s22dep: the sub-hour reading's busiest interval above the unit's capacity)."""
    from twin.serving.published import _reading_rows

    def beyond():
        raise ValueError("loads 10,542-18,395 tok/s per node outside the simulated 8,388-16,638")
    (row,) = _reading_rows("sub-hour intervals", beyond)
    assert row["reading"] == "sub-hour intervals" and row["metric"].startswith("none: loads 10,542-18,395")
    assert math.isnan(row["predicted"]) and math.isnan(row["rel_error"])
    assert _reading_rows("x", lambda: [{"predicted": 1.0}]) == [{"predicted": 1.0, "reading": "x"}]
