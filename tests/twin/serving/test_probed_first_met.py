"""Candidate P (twin.serving.engine.ADOPT_PROBED_FIRST_MET, docs/notes/s30serve_rule.md): a replay handed a FirstMetProbe
pays its busy_s on the first eager iteration of one of its sizes mid-stream, idle_s when that iteration follows an idle
of IDLE_WAKE_AFTER_S or more, and post_idle_prompt_s on a prompt step after an idle; a size an earlier run of the
process ran pays nothing; off (or without a probe record) nothing moves. Synthetic charges (7, 11, 0.5 ms) keep the
arithmetic visible."""

import dataclasses
import json
from unittest import mock

import pytest

from calibration import serve_load_validation as slv
from twin.serving import engine
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

TABLE = "real-serve-h200-ep1"
ROW = {"run_id": "t", "model": "bench-small", "gpu_name": "NVIDIA H200", "num_gpus": 1, "ep_size": 1,
       "attention_parallel": "dp", "precision": "bf16", "cuda_graphs": "1", "pin": "core", "arrival": "poisson",
       "rate_per_s": 3.0, "concurrency": 0, "warm_shapes": 256, "page_size": 64, "num_pages": 4096,
       "token_budget": 2048, "max_running": 64, "graph_batch_buckets": "1 2 4 8 16 24 32 48 64",
       "graph_page_buckets": "1 2 4 8 16 32 33"}
# t=0 a 400-token prompt (above the pass, after the idle before the run: idle_s + post_idle), at 0.3 s the same size
# after an idle (met: post_idle alone), at 0.302 s a 500-token prompt beside one decode row (first met mid-stream:
# busy_s), at 0.6 s a 200-token prompt after an idle (in the pass: post_idle alone)
ARRIVAL, ISL, OSL = [0.0, 0.3, 0.302, 0.6], [400, 400, 500, 200], [3, 3, 3, 3]
CHARGES = {"busy_s": 0.007, "idle_s": 0.011, "post_idle_prompt_s": 0.0005}


def _steps_ms(on: bool, fit_path, extra=frozenset()) -> list[tuple[int, int, float]]:
    with mock.patch.object(engine, "ADOPT_PROBED_FIRST_MET", on), mock.patch.object(slv, "FIRST_MET_FIT", fit_path):
        sc = slv.scenario_for(ROW, spread=False, engine=TABLE)
        sc = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, trace_iterations=10 ** 4))
        before = frozenset(slv.warm_pass_pairs(ROW)) | extra
        res = simulate(sc, requests=from_records(ARRIVAL, ISL, OSL, sc.traffic), run_batch_sizes=before)
    return [(t[4], t[5], t[3] * 1e3) for t in res.trace if t[5] > 0]


@pytest.fixture
def fit_path(tmp_path):
    p = tmp_path / "fit.json"
    p.write_text(json.dumps({"charges": {"h200": {"bench-small": CHARGES}}}))
    slv._FIRST_MET_CACHE.pop(p, None)
    return p


def test_first_met_after_idle_pays_idle_s_mid_stream_busy_s_met_sizes_the_post_idle_term(fit_path):
    off, on = _steps_ms(False, fit_path), _steps_ms(True, fit_path)
    assert [s[:2] for s in off] == [s[:2] for s in on] == [(0, 400), (0, 400), (1, 500), (0, 200)]
    d = [b[2] - a[2] for a, b in zip(off, on)]
    assert d == pytest.approx([11.5, 0.5, 7.0, 0.5], abs=1e-6)


def test_a_size_an_earlier_run_ran_pays_no_first_met_charge(fit_path):
    off = _steps_ms(False, fit_path)
    on = _steps_ms(True, fit_path, extra=frozenset({(0, 400), (0, 501)}))
    d = [b[2] - a[2] for a, b in zip(off, on)]
    assert d == pytest.approx([0.5, 0.5, 0.0, 0.5], abs=1e-6)


def test_off_or_without_a_probe_record_nothing_moves(fit_path, tmp_path):
    base = _steps_ms(False, fit_path)
    assert _steps_ms(False, fit_path) == base
    assert _steps_ms(True, tmp_path / "missing.json") == base   # no probe for the card and model: in force
    with mock.patch.object(engine, "ADOPT_PROBED_FIRST_MET", True), mock.patch.object(slv, "FIRST_MET_FIT", fit_path):
        assert any(isinstance(x, engine.FirstMetProbe) for x in slv.warm_pass_pairs(ROW))
        assert not any(isinstance(x, engine.FirstMetProbe) for x in slv.warm_pass_pairs({**ROW, "warm_shapes": 0}))
        assert slv.first_met_charges("NVIDIA H100 80GB HBM3", "bench-small", fit_path) is None
