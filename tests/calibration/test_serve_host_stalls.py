"""s23srvh (docs/notes/s23srvh_rule.md): the graph-decode host term at the fit host (ADOPT_GRAPH_DECODE_HOST_UNSCALED)
and the host's measured pauses on eager iterations (ADOPT_HOST_STALLS), both settings of each; the pause probe's
columns pooled per host and given to a run's scenario."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from calibration import records as rec
from calibration import serve_host_stalls as shs
from calibration.records_io import read_csv
from calibration.serve_host_speed import before_t, tables_with
from calibration.serve_load_validation import record_host_stalls, scenario_for
from twin.serving import engine as serve_engine
from twin.serving import timing
from twin.serving.engine import HostStalls, host_stalls
from twin.serving.timing import IterationCosts

SLOW_HOST = {"probe_before_launch_s": "2e-05", "probe_after_launch_s": "2e-05"}


def _h200_run() -> dict:
    load = read_csv(Path(rec.MEASUREMENTS_DIR) / "h200" / "serve_load.csv", dtype=str).fillna("")
    return load.iloc[0].to_dict()


@pytest.fixture
def switches():
    """The two switches restored after; the tables priced as before candidate T (its switches off: these tests judge
    the additive host terms, which T's pipeline replaces on eager iterations; docs/notes/s26start2_rule.md)."""
    saved = timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS
    with before_t():
        yield
    timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS = saved


@pytest.mark.parametrize("unscaled", [False, True])
def test_graph_replays_pay_the_fit_hosts_host_terms_only_under_the_switch(switches, unscaled):
    timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED = unscaled
    sc = scenario_for(_h200_run(), spread=False)
    name = sc.serve.engine_costs
    # a reference at 10 us, exponent 1: a host probed at 20 us doubles every host term
    with tables_with({name: {"host_probe_launch_s": 1e-5, "host_probe_exponent": 1.0}}):
        fit_host = IterationCosts(sc.model, sc.gpu, dataclasses.replace(sc.serve, host_launch_s=1e-5))
        slow = IterationCosts(sc.model, sc.gpu, dataclasses.replace(sc.serve, host_launch_s=2e-5))
        # 8 decode rows at 500 tokens of context: a captured graph bucket (replayed)
        assert not slow.is_eager(8, 0, 500.0)
        g_fit, g_slow = fit_host.iteration_s(8, 500.0, 0, 0.0)[0], slow.iteration_s(8, 500.0, 0, 0.0)[0]
        e = fit_host.engine
        graph_host = e["iteration_s"] + e["loop_s"]
        assert g_slow - g_fit == pytest.approx(0.0 if unscaled else graph_host, abs=1e-12)
        assert slow.loop_of(False) == pytest.approx(e["loop_s"] * (1.0 if unscaled else 2.0))
        # a prompt iteration is eager: its host terms doubled either way
        p_fit = fit_host.iteration_s(0, 0.0, 300, 300, chunks=1, pairs=300 * 300)[0]
        p_slow = slow.iteration_s(0, 0.0, 300, 300, chunks=1, pairs=300 * 300)[0]
        eager_host = e["iteration_s"] + e["loop_s"] + e["eager_iteration_s"] + e["prompt_iteration_s"] + e["chunk_s"]
        assert p_slow - p_fit == pytest.approx(eager_host, rel=1e-9)
        assert slow.loop_of(True) == pytest.approx(2.0 * e["loop_s"])


def test_host_stalls_draw_poisson_counts_of_the_measured_sizes():
    # rate 50/s over 20 ms exposed: 1 pause expected a draw; sizes 10 and 30 ms: 20 ms a pause on average
    a, b = HostStalls(50.0, [0.01, 0.03], seed=3), HostStalls(50.0, [0.01, 0.03], seed=3)
    draws = [a.draw_s(0.02) for _ in range(4000)]
    assert draws[:50] == [b.draw_s(0.02) for _ in range(50)]          # seeded: the same draws
    assert np.mean(draws) == pytest.approx(0.02, rel=0.05)
    assert np.mean(np.asarray(draws) == 0.0) == pytest.approx(np.exp(-1.0), abs=0.03)
    assert set(np.round(draws, 6)) <= {round(0.01 * k + 0.03 * j, 6) for k in range(8) for j in range(8)}
    assert HostStalls(0.0, [0.01], seed=1).draw_s(1.0) == 0.0


@pytest.mark.parametrize("on", [False, True])
def test_host_stalls_exist_only_under_the_switch_with_a_measured_pause(switches, on):
    serve_engine.ADOPT_HOST_STALLS = on
    run = {**_h200_run(), "host_stall_rate_per_s": 2.0, "host_stall_sizes_s": "0.01;0.02"}
    sc = scenario_for(run)
    assert sc.serve.host_stall_rate_per_s == 2.0 and sc.serve.host_stall_sizes_s == (0.01, 0.02)
    assert (host_stalls(sc.serve, 0) is not None) == on
    assert host_stalls(scenario_for(_h200_run()).serve, 0) is None     # no pause given: none, whatever the switch
    assert record_host_stalls({"host_stall_rate_per_s": 2.0, "host_stall_sizes_s": ""}) == {}


def test_host_pauses_pool_a_hosts_probes():
    rows = [{"gpu": "h100", "pause_window_s": "2.0", "pause_count": "3", "pause_sizes_s": "0.01;0.02;0.03"},
            {"gpu": "h100", "pause_window_s": "2.0", "pause_count": "1", "pause_sizes_s": "0.05"},
            {"gpu": "h100", "pause_window_s": "", "pause_count": "", "pause_sizes_s": ""},     # no probe: nothing
            {"gpu": "h200", "pause_window_s": "2.0", "pause_count": "0", "pause_sizes_s": ""}]
    h = shs.host_pauses(rows[:3])
    assert h["host_stall_rate_per_s"] == pytest.approx(1.0) and h["host_stall_sizes_s"] == [0.01, 0.02, 0.03, 0.05]
    given = shs.with_host_pauses(rows)
    assert [g["host_stall_rate_per_s"] for g in given] == [1.0, 1.0, 1.0, 0.0]
    assert record_host_stalls(given[0]) == {"host_stall_rate_per_s": 1.0, "host_stall_sizes_s": [0.01, 0.02, 0.03, 0.05]}
    assert record_host_stalls(given[3]) == {}


@pytest.mark.parametrize("name", ["base", "host_stalls"])
def test_a_planned_run_with_pauses_is_predicted_later_only_with_stalls(switches, name):
    before = timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS
    r = {"gpu": "h100", "run_id": "n23-qwen2moe-poisson-r12-mid", "probe_s": 11e-6,
         "host_stall_rate_per_s": 20.0, "host_stall_sizes_s": "0.02;0.04"}
    base = shs.predict_row({**r, "host_stall_rate_per_s": 0.0}, "base")
    got = shs.predict_row(r, name)
    assert got["num_requests"] == base["num_requests"]
    if name == "base":
        assert got == base
    else:   # pauses on the eager (prompt) iterations: the first tokens come later
        assert got["ttft_p50_s"] > base["ttft_p50_s"] and got["ttft_p99_s"] > base["ttft_p99_s"]
    assert (timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS) == before   # restored
