"""The idle engine's late wake-up (twin.serving.timing wake_s, twin.serving.engine): real/serve
sleeps until the next arrival, so an idle instance starts its iteration wake_s after the arrival;
a busy one is untouched."""

import numpy as np
import pytest

from calibration.serve_load_validation import scenario_for
from twin.core.specs import serve_engines
from twin.serving import timing
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

RUN = {"run_id": "r", "split": "fit", "arrival": "poisson", "rate_per_s": "1", "concurrency": "0",
       "model": "v3-slice-2l", "precision": "bf16", "num_gpus": "1", "ep_size": "1", "attention_parallel": "dp",
       "page_size": "64", "num_pages": "4096", "token_budget": "2048", "max_running": "64",
       "cuda_graphs": "1", "graph_batch_buckets": "1 2 4 8 16 32 64", "graph_page_buckets": "1 2 4 8 16 33",
       "gpu_name": "NVIDIA H200"}
ENGINE = "real-serve-h200-ep1"


def _with_terms(monkeypatch, **terms):
    """The committed h200 table with `terms` replaced (and no spread: deterministic times)."""
    table = {k: dict(v) for k, v in serve_engines().items()}
    table[ENGINE].update(terms)
    table[ENGINE].pop("spread", None)
    monkeypatch.setattr(timing, "serve_engines", lambda: table)


def _first_token_s(arrival_s, input_len=300, output_len=4):
    sc = scenario_for(RUN, spread=False)
    n = len(arrival_s)
    reqs = from_records(np.asarray(arrival_s, float), np.full(n, input_len), np.full(n, output_len), sc.traffic)
    return simulate(sc, requests=reqs).per_request()["first_token_s"]


def test_an_idle_engine_starts_wake_s_after_the_arrival(monkeypatch):
    _with_terms(monkeypatch, wake_s=0.0)
    base = _first_token_s([1.0, 1.001])
    _with_terms(monkeypatch, wake_s=0.0005)
    late = _first_token_s([1.0, 1.001])
    # request 0 wakes the idle engine: its prompt starts 0.5 ms later; request 1 arrives while
    # request 0's prompt runs (a busy engine, no sleep) and joins the next iteration, which the
    # late start shifts by the same 0.5 ms
    assert late[0] == pytest.approx(base[0] + 0.0005, abs=1e-12)
    assert late[1] == pytest.approx(base[1] + 0.0005, abs=1e-12)


def test_the_committed_tables_carry_a_measured_wake_up():
    """The fit's wake_s: a fraction of a millisecond on one GPU (timer slack), about the 1 ms poll
    of the EP ranks' loop under EP."""
    t = serve_engines()
    assert 0.0 < t["real-serve-h200-ep1"]["wake_s"] < 0.001
    assert 0.0 < t["real-serve-h200-ep2"]["wake_s"] < 0.003
