"""The published-serving report folder (reports/serve_published.py): DeepSeek's rows and its own
profiles' kernel groups; the H200 curve is stubbed (its simulations are covered in tests/twin/serving)."""

import functools
import json

from reports import serve_published as sp
from twin.serving import published
from twin.serving.published import CurvePoint


def test_report_shows_the_day_averages_and_deepseeks_profiles_group_by_group(tmp_path, monkeypatch):
    """DeepSeek's rows are 24 h averages over the published day (its node counts in the prose); the
    readings the rule names but does not adopt (sub-hour intervals, MTP on) get their own table; the
    profiles come group by group."""
    pts = (CurvePoint(1024, 1024, 16, 3000.0, 0.04, 0.2, 0), CurvePoint(1024, 1024, 64, 5000.0, 0.05, 0.3, 0))
    monkeypatch.setattr(sp, "h200_curve", lambda: pts)
    # the day rows (deepseek_production) and the sensitivity rows both simulate decode_speed_curve(),
    # the same deterministic runs (a third of the build's time): simulated once here
    monkeypatch.setattr(published, "decode_speed_curve", functools.cache(published.decode_speed_curve))
    # the prefill curve over load at two loads (each simulates the unit twice; the mechanics are in
    # tests/twin/serving/test_prefill_components.py)
    monkeypatch.setattr(sp, "deepseek_prefill_over_load", functools.partial(published.deepseek_prefill_over_load, (0.6, 1.0)))
    sp.build(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "DeepSeek's own prefill and decode profiles, kernel group by group" in md
    assert "decode: EP128, 128 requests per GPU" in md and "prefill: EP32, 16,384 tokens per GPU" in md
    assert "| attention core |" in md and "| span per layer |" in md and "| tokens/s per node |" in md
    result = json.loads((tmp_path / "result.json").read_text())
    assert [r["phase"] for r in result["deepseek_profiles"]] == ["decode", "prefill"]
    assert "131.25 decode and 95.50 prefill nodes on average" in md and "## Readings not adopted" in md
    assert [r["scenario"] for r in result["deepseek"]][:2] == ["r1_serve_h800_prefill", "r1_serve_h800_decode"]
    assert result["deepseek"][-1]["scenario"] == "r1_serve_h800_decode at DeepSeek's profile conditions"
    assert "18,598 output tokens/s per node" in md
    assert {r["reading"] for r in result["deepseek_readings_not_adopted"]} == {
        "sub-hour intervals", "MTP on (1 drafted token, 85% accepted)"}

    # the day prefill taken apart (docs/notes/s23deep_rule.md part 2): components and the curve over load
    assert "## The day prefill taken apart" in md and "| moe attention core |" in md and "| prefix expand |" in md
    curve = result["deepseek_prefill_over_load"]
    assert curve["points"][-1]["busiest_hour_load_frac"] == 1.0
    assert curve["points"][-1]["predicted"] == result["deepseek"][0]["predicted"]   # the headline row is the curve at 1.0
    assert set(result["deepseek_prefill_components"]) == {"day", "profile"}
