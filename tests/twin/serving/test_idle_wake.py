"""Candidate I (twin.serving.engine.ADOPT_IDLE_WAKE, docs/notes/s29serve_rule.md): after an idle of IDLE_WAKE_AFTER_S
or more (a replay's first iteration included) a size the warm pass met only between warm_shapes and the budget pays the
first-met terms when first met, and a prompt step pays the table's idle_prompt_s; mid-stream neither. Off: nothing."""

import dataclasses
from unittest import mock

import pytest

from calibration.serve_load_validation import scenario_for, warm_pass_pairs
from twin.serving import engine
from twin.serving.simulate import simulate
from twin.serving.timing import engine_costs
from twin.serving.workload import from_records

TABLE = "real-serve-h200-ep1"
# a set-O-like run: one GPU, the s21srvnew engine's budget 2048, warmed to 256 flat tokens
ROW = {"run_id": "t", "model": "bench-small", "gpu_name": "NVIDIA H200", "num_gpus": 1, "ep_size": 1,
       "attention_parallel": "dp", "precision": "bf16", "cuda_graphs": "1", "pin": "core", "arrival": "poisson",
       "rate_per_s": 3.0, "concurrency": 0, "warm_shapes": 256, "page_size": 64, "num_pages": 4096,
       "token_budget": 2048, "max_running": 64, "graph_batch_buckets": "1 2 4 8 16 24 32 48 64",
       "graph_page_buckets": "1 2 4 8 16 32 33"}
# t=0 a 400-token prompt (above the pass, after the idle before the run), at 0.3 s the same size after an idle, at
# 0.302 s a 500-token prompt beside one decode row (first met mid-stream)
ARRIVAL, ISL, OSL = [0.0, 0.3, 0.302], [400, 400, 500], [3, 3, 3]


def _prompt_steps_ms(on: bool, sizes=None) -> list[float]:
    with mock.patch.object(engine, "ADOPT_IDLE_WAKE", on):
        sc = scenario_for(ROW, spread=False, engine=TABLE)
        sc = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, trace_iterations=10 ** 4))
        before = frozenset(warm_pass_pairs(ROW)) if sizes is None else sizes
        res = simulate(sc, requests=from_records(ARRIVAL, ISL, OSL, sc.traffic), run_batch_sizes=before)
    return [t[3] * 1e3 for t in res.trace if t[5] > 0]


def test_after_idle_a_size_between_pass_and_budget_pays_first_met_and_the_wake_term_mid_stream_neither():
    off, on = _prompt_steps_ms(False), _prompt_steps_ms(True)
    e = engine_costs(TABLE)
    wake_ms = e["idle_prompt_s"] * 1e3
    assert wake_ms > 0.1
    assert on[0] - off[0] > wake_ms + e["new_bin_s"] * 1e3 * 0.5      # first met after idle: the first-met terms too
    assert on[1] - off[1] == pytest.approx(wake_ms, abs=1e-6)          # met already: the wake term alone
    assert on[2] == pytest.approx(off[2], abs=1e-9)                    # mid-stream, first met: no charge


def test_off_the_busy_entries_count_as_met():
    """With the switch off a run_batch_sizes entry (group, size, 'busy') is a size run before, as a pair."""
    pairs = frozenset((0, n) for n in range(1, 2049))
    marked = frozenset({(0, n) for n in range(1, 257)} | {(0, 2048)} | {(0, n, engine.BUSY_MET) for n in range(257, 2048)})
    assert _prompt_steps_ms(False, marked) == _prompt_steps_ms(False, pairs)


def test_a_scenario_without_an_engine_table_is_unmoved():
    """twin serve's scenarios (the DeepSeek published figures among them) carry no real.serve table: I moves nothing."""
    row = {**ROW}
    figs = []
    for on in (False, True):
        with mock.patch.object(engine, "ADOPT_IDLE_WAKE", on):
            sc = scenario_for(row, engine_costs=False)
            figs.append(simulate(sc, requests=from_records(ARRIVAL, ISL, OSL, sc.traffic)).per_request()["first_token_s"])
    assert list(figs[0]) == list(figs[1])
