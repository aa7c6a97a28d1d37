import csv
import dataclasses
import json
import re
import tomllib

import numpy as np
import pytest

import reports.page as page_mod
from reports.page import COMMON_FILES
from reports.replay_report import PLOTS, build_page, merge_spans, merge_spans_array, write_report
from twin.core.scenario import from_dict, load_scenario


def test_verdict_is_one_sentence_against_the_published_total(replayed):
    sc, result, _ = replayed
    total = next(c for c in result["claims"] if c["id"] == "train.cost.total_gpu_hours")
    verdict = build_page(result, sc).verdict
    side = "below" if total["rel_error"] < 0 else "above"
    # e.g. "The twin puts DeepSeek-V3's training at 2.48M H800 GPU-hours ($4.97M), 10.9% below DeepSeek's published 2.788M."
    assert re.fullmatch(r"The twin puts DeepSeek-V3's training at \d\.\d\dM H800 GPU-hours \(\$\d\.\d\dM\), "
                        rf"\d+\.\d% {side} DeepSeek's published 2\.788M\.", verdict), verdict
    assert f"{abs(total['rel_error']) * 100:.1f}% {side}" in verdict


def test_claims_read_by_their_statement_with_errors(replayed):
    sc, result, _ = replayed
    md = build_page(result, sc).markdown()
    for c in result["claims"]:
        assert f"| {c['statement']} |" in md and f"| {c['id']} |" not in md   # rows labelled for people
    pre = next(c for c in result["claims"] if c["id"] == "train.cost.pretrain_gpu_hours")
    assert f"{pre['rel_error'] * 100:+.1f}%" in md
    assert "| error |" in md and "What drives the gap" in md and "Assumptions" in md and "PUE" in md


def test_numbers_are_human(replayed):
    sc, result, _ = replayed
    md = build_page(result, sc).markdown()
    assert "| pretrain | 14.8T |" in md                      # not 14,800.0B
    assert "14 minutes" in md or "minutes" in md              # a short stage in minutes, not 0.0106 days
    assert not re.search(r"\b0\.0\d+ days", md)
    assert "$2 per H800 GPU-hour" in md


def test_another_gpu_shows_published_figures_as_context_only(replayed_h200):
    sc, result, _ = replayed_h200
    assert result["claims_describe_run"] is False
    p = build_page(result, sc)
    md = p.markdown()
    assert "error" not in " ".join(h for kind, b in p.blocks if kind == "table" for h in b[0])
    assert "describe deepseek-v3 on H800; this run is deepseek-v3 on H200" in md and "without an error" in md
    assert "2.664M GPU-hours" in md                           # still shown, as context
    assert "What drives the gap" not in md and "## Notes" in md
    assert p.verdict.startswith("The twin puts this deepseek-v3 run") and "published" not in p.verdict


def test_the_report_follows_the_result_on_what_is_compared(replayed):
    sc, result, _ = replayed
    assert result["claims_describe_run"] is True
    as_context = build_page({**result, "claims_describe_run": False}, sc).markdown()
    assert "| error |" in build_page(result, sc).markdown() and "| error |" not in as_context


def test_html_is_self_contained_without_backticks_or_test_hooks(replayed):
    sc, result, _ = replayed
    html = build_page(result, sc).html()
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert "src=\"http" not in html and "href=\"http" not in html and "<script" not in html
    assert "`" not in html and "<code>twin validate</code>" in html
    assert re.search(r"<title>Training-run replay: deepseek-v3-pretrain</title>", html)


def test_writes_the_common_files_and_its_csv(tmp_path, replayed):
    sc, result, typed = replayed
    out = write_report(typed, sc, tmp_path / "r")
    names = {p.name for p in out.iterdir()}
    assert names == set(COMMON_FILES) | set(PLOTS) | {"results.csv"}
    assert json.loads((out / "result.json").read_text())["total_gpu_hours"] == pytest.approx(result["total_gpu_hours"])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["stage"] for r in rows] == [s["name"] for s in result["stages"]]
    assert load_scenario(out / "scenario.resolved.toml") == sc


def test_resolved_scenario_round_trips():
    sc = load_scenario(overrides=["cluster.num_gpus=4096", "energy.carbon_kg_per_kwh=0.4"])
    assert from_dict(tomllib.loads(page_mod.to_toml(sc.to_dict()))) == sc


def test_interrupted_write_keeps_the_earlier_report(tmp_path, replayed, monkeypatch):
    sc, result, typed = replayed
    out = tmp_path / "r"
    write_report(typed, sc, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise KeyboardInterrupt("interrupted mid-write")
    monkeypatch.setattr(page_mod, "to_toml", boom)  # the last file: the plots, CSV, pages and JSON are staged by then
    changed = dataclasses.replace(typed, scenario_name="SHOULD-NOT-APPEAR")
    with pytest.raises(KeyboardInterrupt):
        write_report(changed, sc, out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_atomic_write_text_keeps_old_file_on_error(tmp_path, monkeypatch):
    import os

    from twin.core import atomic
    p = tmp_path / "x.json"
    atomic.write_text(p, "old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic.write_text(p, "new")
    monkeypatch.undo()
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_gantt_joins_spans_closer_than_a_column():
    # (start, width): 0-1 and 1.05-2 are 0.05 apart (< 0.1: one bar); 2.5-3 is 0.5 after: its own bar
    assert merge_spans([(1.05, 0.95), (0.0, 1.0), (2.5, 0.5)], 0.1) == [(0.0, 2.0), (2.5, 0.5)]
    # a span inside the previous one keeps the previous end
    assert merge_spans([(0.0, 3.0), (1.0, 0.5)], 0.1) == [(0.0, 3.0)]


def test_the_gantts_array_merge_draws_the_same_bars_as_merge_spans():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        starts, widths = rng.uniform(0, 10, n), rng.uniform(0, 1, n)
        gap = float(rng.choice([0.0, 0.05, 0.3]))
        expected = merge_spans(list(zip(starts.tolist(), widths.tolist())), gap)
        got = merge_spans_array(starts, widths, gap)
        assert len(got) == len(expected)
        assert np.allclose(np.array(got), np.array(expected), rtol=0, atol=1e-12)


def test_a_gantt_drawn_ahead_is_used_only_for_the_same_step(monkeypatch):
    """prepare() draws the first stage's Gantt before the replay ends: byte for byte what the
    report would draw for that very step, kept under a key no other step shares."""
    import reports.replay_report as rr
    from twin.training.replay.stages import stage_scenario
    from twin.training.step import simulate_step
    sc = load_scenario()
    step = simulate_step(stage_scenario(sc, sc.run.stages[0]), record_events=True)
    monkeypatch.setattr(rr, "_EARLY_GANTT", {})
    rr.prepare(sc)
    assert list(rr._EARLY_GANTT) == [rr._gantt_key(step)]
    assert rr._EARLY_GANTT[rr._gantt_key(step)] == page_mod.png(rr.plot_gantt(step), crop=False)
    other = simulate_step(stage_scenario(load_scenario(overrides=["cluster.num_gpus=4096"]), sc.run.stages[0]),
                          record_events=True)
    assert rr._gantt_key(other) not in rr._EARLY_GANTT


def test_a_whole_run_figure_is_not_compared_with_a_run_of_other_stages():
    """V3's total GPU-hours add up pre-training, context extension and post-training; a run of
    other stages on the same model and GPU (R1-Zero's RL) has no counterpart, while its own
    group's figure is compared."""
    from twin.core.specs import training_claims
    from twin.training.replay.costs import compare_claims

    sc = load_scenario(None)
    group = {"gpu_hours": 64_000.0, "cost_usd": 128_000.0, "feasible": True}
    rl_only = {"complete": True, "total_gpu_hours": 64_000.0, "total_cost_usd": 128_000.0, "groups": {"r1_zero": group}}
    rows = {r["id"]: r for r in compare_claims(rl_only, sc)}
    assert rows["train.cost.total_gpu_hours"]["predicted"] is None and rows["train.cost.total_gpu_hours"]["rel_error"] is None
    assert rows["train.cost.r1_zero_gpu_hours"]["rel_error"] == pytest.approx(64_000 / 101_000 - 1)
    whole = {**rl_only, "groups": {g: group for g in ("pretrain", "context_extension", "post_training")}}
    rows = {r["id"]: r for r in compare_claims(whole, sc)}
    total = next(c for c in training_claims() if c["id"] == "train.cost.total_gpu_hours")
    assert rows["train.cost.total_gpu_hours"]["rel_error"] == pytest.approx(64_000 / total["value"] - 1)
