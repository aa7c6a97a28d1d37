"""calibration/prereg_serve.py: the registered runs' requests are the load generator's, a closed loop's count
is its replay's own, the probe grid is read in log p, and the comparison judges each figure by issue 15's target."""

import math

import numpy as np
import pandas as pd
import pytest

from calibration import prereg_serve as ps
from calibration.serve_load_validation import FIGURES, TARGETS
from twin.serving import timing


def test_requests_are_the_load_generators():
    from real.serve.loadgen import PoissonArrivals, make_request, parse_lengths
    for run in ps.RUNS:
        inp, out = parse_lengths(run.input_len), parse_lengths(run.output_len)
        for rid in (0, 1, 7, 63):
            req = make_request(rid, 0.0, inp, out, 1000, run.seed)
            assert ps.lengths(run, rid) == (req.input_len, req.output_len)
        if run.arrival == "poisson":
            pending = PoissonArrivals(run.rate_per_s, run.load_s, inp, out, 1000, run.seed).pending[::-1]
            assert ps.poisson_arrivals_s(run) == [r.arrival_s for r in pending]
            assert [ps.lengths(run, i) for i in range(len(pending))] == [(r.input_len, r.output_len) for r in pending]


def test_engine_graph_buckets_are_the_engines():
    from real.serve.graphs import default_batch_buckets, default_page_buckets
    e = ps.ENGINE
    assert e["graph_batch_buckets"] == " ".join(map(str, default_batch_buckets(e["max_running"])))
    pages = -(-e["max_context"] // e["page_size"])
    assert e["graph_page_buckets"] == " ".join(map(str, default_page_buckets(pages)))
    # the warmed sizes cover one prompt beside a full graph batch of decode rows
    assert ps.WARM_TOKENS == int(ps.MIX_IN.split("-")[1]) + e["max_running"]


def test_closed_loop_count_is_concurrency_plus_finishes_before_load_end():
    run = ps.RUNS[2]
    sc = ps.scenario_for(ps.run_row("h100", ps.MODELS[2], run, 0.0), engine=ps.engine_table("h100"))
    n = ps.closed_loop_count(sc, run, start=run.concurrency)   # from a short list: doubles until enough
    isl, osl = zip(*(ps.lengths(run, i) for i in range(n)))
    per = ps._replay(sc, None, list(isl), list(osl))
    finish = np.asarray(per["finish_s"])
    assert n == run.concurrency + int(np.sum(finish < run.load_s))   # the replay of n issues exactly n
    assert np.isfinite(finish).all() and finish.max() > run.load_s


def test_probe_grid_is_interpolated_in_log_p_and_flags_outside():
    grid = pd.DataFrame({"host_launch_s": [0.0, 5e-6, 10e-6, 20e-6], **{k: [9.0, 1.0, 2.0, 4.0] for k in FIGURES}})
    mid, inside = ps.at_probe(grid, math.sqrt(5e-6 * 10e-6))   # halfway in log p
    assert inside and mid["ttft_p50_s"] == pytest.approx(1.5)
    low, inside = ps.at_probe(grid, 2e-6)
    assert not inside and low["tpot_p99_s"] == 1.0   # the end point, never the no-input row


def _records(gpu, run_id, probe_s, scale):
    return pd.DataFrame([{"gpu": gpu, "model": ps.MODELS[0], "run_id": run_id, "probe_s": probe_s, "gpu_name": "x",
                          **{k: scale[k] for k in FIGURES}}])


def test_compare_judges_each_variant_against_its_target():
    rid = ps.run_id(ps.MODELS[0], ps.RUNS[0])
    preds = pd.DataFrame([{"gpu": "h100", "model": ps.MODELS[0], "run_id": rid, "host_launch_s": p,
                           **{k: v for k in FIGURES}} for p, v in ((0.0, 1.0), (5e-6, 1.0), (10e-6, 1.2))])
    # measured 1.0 everywhere, probe 10 us: host_input predicts 1.2 (+20%), no_input 1.0
    rows = ps.compare(preds, _records("h100", rid, 10e-6, {k: 1.0 for k in FIGURES}))
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"no_input", "host_input"}
    assert all(by["no_input"][f"{k}_within_target"] for k in FIGURES)
    assert by["host_input"]["ttft_p50_s_rel_error"] == pytest.approx(0.2)
    assert [by["host_input"][f"{k}_within_target"] for k in FIGURES] == [0.2 <= TARGETS[k] for k in FIGURES]
    s = ps.summarize(rows)
    assert s["h100 no_input"]["checks_met"] == 5 and s["h100 host_input"]["checks"] == 5
    # a run without a probe has no host-input prediction
    assert {r["variant"] for r in ps.compare(preds, _records("h100", rid, 0.0, {k: 1.0 for k in FIGURES}))} == {"no_input"}


def test_write_refuses_to_rewrite(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x\n")
    with pytest.raises(SystemExit, match="never rewritten"):
        ps.write(path, allow_dirty=True, rows=[])


def test_validate_section_is_empty_without_predictions(tmp_path):
    s = ps.validate_section(tmp_path, tmp_path / "none.csv")
    assert s["rows"] == [] and s["predictions_commit"] is None
    assert ps.format_section(s)[0].endswith("no records yet")


def test_format_section_prints_the_verdict_lines_and_each_host_input_run():
    rid = ps.run_id(ps.MODELS[0], ps.RUNS[0])
    preds = pd.DataFrame([{"gpu": "h100", "model": ps.MODELS[0], "run_id": rid, "host_launch_s": p,
                           **{k: 1.0 for k in FIGURES}} for p in (0.0, 5e-6, 10e-6)])
    rows = ps.compare(preds, _records("h100", rid, 8e-6, {k: 1.25 for k in FIGURES}))   # every figure -20%: P50s and throughput missed, P99s met
    lines = ps.format_section({"predictions_commit": "abcdef0123", "rows": rows, "summary": ps.summarize(rows),
                               "diagnostic_summary": {}})
    assert lines[0].startswith("Pre-registered serve load runs") and "abcdef0" in lines[0]
    assert any(line.startswith("  prereg h100 host_input: 2/5 checks within target, median |err| 20.0%") for line in lines)
    assert any(rid in line and "(p 8.0 us)" in line and "-20.0%!" in line for line in lines)


def _rule_rows(errors: dict) -> list[dict]:
    """compare()-like host-input rows: {(twin, gpu): error of every figure}."""
    return [{"twin": twin, "gpu": gpu, "variant": "host_input",
             **{f"{k}_rel_error": e for k in FIGURES}, **{f"{k}_within_target": abs(e) <= TARGETS[k] for k in FIGURES}}
            for (twin, gpu), e in errors.items()]


def test_layer_rule_adopts_only_more_checks_a_lower_median_and_no_gpu_worse():
    better = ps.layer_rule(_rule_rows({("current", "h100"): 0.3, ("current", "h200"): 0.02,
                                       ("layer_scaled", "h100"): 0.02, ("layer_scaled", "h200"): 0.02}))
    assert better["adopt"] and better["layer_scaled"]["checks_met"] == 10 and better["current"]["checks_met"] == 5
    # more checks pooled but one GPU loses some: not adopted
    mixed = ps.layer_rule(_rule_rows({("current", "h100"): 0.3, ("current", "h200"): 0.02,
                                      ("layer_scaled", "h100"): 0.02, ("layer_scaled", "h200"): 0.08}))
    assert mixed["layer_scaled"]["checks_met"] > mixed["current"]["checks_met"] and not mixed["adopt"]
    assert not ps.layer_rule([])["adopt"]   # no records: nothing adopted


def test_the_s22ttft_rule_judges_warm_covers_against_the_committed_twin():
    rows = _rule_rows({("layer_scaled", "h100"): 0.3, ("layer_scaled", "h200"): 0.02,
                       ("warm_covers", "h100"): 0.02, ("warm_covers", "h200"): 0.02})
    verdict = ps.rule_verdict(rows, *ps.S22.rule)
    assert verdict["adopt"] and (verdict["base"], verdict["candidate"]) == ("layer_scaled", "warm_covers")
    assert not ps.rule_verdict(rows, "warm_covers", "layer_scaled")["adopt"]
    shown = [{**rows[0], "run_id": "x", "probe_s": 8e-6}]
    lines = ps.format_section({"predictions_commit": "abcdef0123", "rows": shown, "summary": {}, "diagnostic_summary": {},
                               "layer_rule": verdict})
    assert any(line.startswith("  warm_covers_rule (GPUs h100, h200): layer_scaled 5/10 checks") for line in lines)


def test_format_section_prints_the_layer_rule_verdict_where_registered():
    verdict = {"current": {"checks": 45, "checks_met": 22, "median_abs_rel_error": 0.1106, "by_gpu": {"h100": 22}},
               "layer_scaled": {"checks": 45, "checks_met": 23, "median_abs_rel_error": 0.1106, "by_gpu": {"h100": 23}},
               "adopt": False}
    section = {"predictions_commit": "abcdef0123", "rows": [], "summary": {}, "diagnostic_summary": {}}
    rows = [{"variant": "host_input", "twin": "current", "gpu": "h100", "run_id": "x", "probe_s": 8e-6,
             **{f"{k}_rel_error": 0.0 for k in FIGURES}, **{f"{k}_within_target": True for k in FIGURES}}]
    lines = ps.format_section({**section, "rows": rows, "layer_rule": verdict})
    assert "  layer_rule (GPUs h100): current 22/45 checks, median |err| 11.06%; layer_scaled 23/45, 11.06%: not adopted" in lines
    assert not any(line.startswith("  layer_rule") for line in ps.format_section({**section, "rows": rows}))


def test_the_twin_in_force_is_the_registered_setting_the_switch_selects(monkeypatch):
    rows = [{"twin": "current"}, {"twin": "layer_scaled"}]
    monkeypatch.setattr(timing, "ADOPT_LAYER_SCALED_ENGINE", True)
    assert ps.in_force_twin(rows) == "layer_scaled" and ps.in_force_twin([{"twin": "current"}, {}]) == "current"
    monkeypatch.setattr(timing, "ADOPT_LAYER_SCALED_ENGINE", False)
    assert ps.in_force_twin(rows) == "current"
