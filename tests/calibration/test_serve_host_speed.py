"""The host's measured speed as a serving-twin input (calibration/serve_host_speed.py, twin.serving.timing
host_scale; docs/notes/s13srv_rule.md): the exponent and references recovered from (probe, scale)
pairs, a run's scale read from its iterations, the record's probe as the scenario's input, and the
twin scaling only the host terms."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibration import memo
from calibration import records as rec
from calibration.records_io import read_csv
from calibration.serve_host_speed import fit_exponent, run_scales, tables_with
from calibration.serve_load_validation import record_host_launch_s, scenario_for
from twin.core.specs import serve_engines
from twin.serving import timing
from twin.serving.timing import HOST_SCALED_TERMS, T_SWITCHES, IterationCosts, host_scale, scaled_engine


def _scales(beta, p_ref, ps):
    return pd.DataFrame([{"run_id": f"{t}-{i}", "table": t, "p": p, "s": (p / p_ref[t]) ** beta}
                         for t, pl in ps.items() for i, p in enumerate(pl)])


def test_fit_exponent_recovers_beta_and_each_tables_reference():
    p_ref = {"a": 10e-6, "b": 14e-6, "c": 8e-6}
    # a and b span the dose (1.5x); c ran at one speed only: its reference under the others' beta
    df = _scales(0.8, p_ref, {"a": [10e-6, 15e-6, 11e-6], "b": [12e-6, 18e-6], "c": [9e-6, 9.1e-6]})
    fit = fit_exponent(df)
    assert fit["beta"] == pytest.approx(0.8) and fit["tables"] == ["a", "b"]
    assert fit["p_ref"] == pytest.approx(p_ref)


def test_fit_exponent_without_a_dose_gives_nothing():
    df = _scales(1.0, {"a": 1e-5}, {"a": [1e-5, 1.05e-5]})
    assert fit_exponent(df) == {}


def _fixture(tmp_path, factor):
    """One committed h200 fit run and a second copy of it (later, durations x factor), probes beside."""
    src = Path(rec.MEASUREMENTS_DIR) / "h200"
    load = read_csv(src / "serve_load.csv", dtype=str).fillna("")
    run = load[load.run_id == "g1-closed-c16-long"].iloc[0].to_dict()
    slow = {**run, "run_id": "slow", "timestamp_utc": "2026-11-26T03:23:30Z", "co_runner_nice": "3"}
    rows = [{**run, "probe_before_launch_s": "1e-05", "probe_after_launch_s": "1e-05"},
            {**slow, "probe_before_launch_s": "1.5e-05", "probe_after_launch_s": "1.5e-05"}]
    pd.DataFrame(rows).to_csv(tmp_path / "serve_load.csv", index=False)
    for fam in ("serve_iterations", "serve_requests"):
        d = read_csv(src / f"{fam}.csv", dtype=str).fillna("")   # committed plain or gzipped
        d = d[d.run_id == run["run_id"]]
        copy = d.assign(run_id="slow")
        if fam == "serve_iterations":
            copy["duration_s"] = (copy.duration_s.astype(float) * factor).astype(str)
        pd.concat([d, copy]).to_csv(tmp_path / f"{fam}.csv", index=False)
    return tmp_path


def test_run_scales_reads_a_slower_run_as_a_larger_host_factor(tmp_path):
    s = run_scales(_fixture(tmp_path, 1.3)).set_index("run_id")
    assert s.loc["g1-closed-c16-long", "table"] == "real-serve-h200-ep1"
    assert s.loc["slow", "dosed"] and not s.loc["g1-closed-c16-long", "dosed"]
    assert s.loc["slow", "p"] == pytest.approx(1.5e-5)
    assert 0.5 < s.loc["g1-closed-c16-long", "s"] < 2.0          # a committed fit run: near its table's host terms
    assert s.loc["slow", "s"] > s.loc["g1-closed-c16-long", "s"] + 0.3


def test_record_probe_is_the_scenarios_host_input_and_absent_means_the_fit_host():
    assert record_host_launch_s({}) == 0.0
    assert record_host_launch_s({"probe_before_launch_s": "1e-05", "probe_after_launch_s": "3e-05"}) == pytest.approx(2e-5)
    assert record_host_launch_s({"probe_before_launch_s": "", "probe_after_launch_s": "3e-05"}) == pytest.approx(3e-5)
    load = read_csv(Path(rec.MEASUREMENTS_DIR) / "h200" / "serve_load.csv", dtype=str).fillna("")
    run = load.iloc[0].to_dict()
    assert scenario_for(run).serve.host_launch_s == 0.0
    assert scenario_for({**run, "probe_before_launch_s": "2e-05", "probe_after_launch_s": "2e-05"}).serve.host_launch_s == 2e-5


def test_host_scale_multiplies_only_the_host_terms():
    e = {"host_probe_launch_s": 1e-5, "host_probe_exponent": 0.5, "iteration_s": 1e-3, "score_s_per_pair": 1e-9,
         "loop_s": 1e-5, "gather_s_per_row_token": 1e-9}
    assert host_scale(e, 4e-5) == pytest.approx(2.0) and host_scale(e, 0.0) == 1.0
    assert host_scale({**e, "host_probe_launch_s": 0.0}, 4e-5) == 1.0       # no reference: no input
    s = scaled_engine(e, 4e-5)
    assert s["iteration_s"] == pytest.approx(2e-3) and s["loop_s"] == pytest.approx(2e-5)
    assert s["score_s_per_pair"] == e["score_s_per_pair"] and s["gather_s_per_row_token"] == e["gather_s_per_row_token"]
    assert {"iteration_s", "eager_iteration_s", "prompt_iteration_s", "new_bin_s", "wake_s"} <= set(HOST_SCALED_TERMS)


def test_iteration_costs_follow_the_host_input_with_a_reference(monkeypatch):
    """The additive host terms (the tables as before candidate T: its switches off, docs/notes/s26start2_rule.md)
    double with the host, the kernels not."""
    for n in T_SWITCHES:
        monkeypatch.setattr(timing, n, False)
    load = read_csv(Path(rec.MEASUREMENTS_DIR) / "h200" / "serve_load.csv", dtype=str).fillna("")
    sc = scenario_for(load.iloc[0].to_dict(), spread=False)
    name = sc.serve.engine_costs
    saved = dict(serve_engines()[name])
    with tables_with({name: {"host_probe_launch_s": 1e-5, "host_probe_exponent": 1.0}}):
        fit_host = IterationCosts(sc.model, sc.gpu, sc.serve)
        slow = IterationCosts(sc.model, sc.gpu, dataclasses.replace(sc.serve, host_launch_s=2e-5))
        same = IterationCosts(sc.model, sc.gpu, dataclasses.replace(sc.serve, host_launch_s=1e-5))
        t0, _ = fit_host.iteration_s(0, 0.0, 300, 300, chunks=1, pairs=300 * 300)
        t1, _ = slow.iteration_s(0, 0.0, 300, 300, chunks=1, pairs=300 * 300)
        assert same.iteration_s(0, 0.0, 300, 300, chunks=1, pairs=300 * 300)[0] == pytest.approx(t0)
        e = fit_host.engine
        host = e["iteration_s"] + e["loop_s"] + e["eager_iteration_s"] + e["prompt_iteration_s"] + e["chunk_s"]
        assert t1 - t0 == pytest.approx(host, rel=1e-9)   # the host terms doubled, the kernels not
    assert serve_engines()[name] == saved   # tables_with restores the loaded tables


def test_a_prompt_reference_scales_the_prompt_path_apart():
    # s14srv2 (docs/notes/s14srv2_rule.md): a table carrying host_probe_prompt_launch_s scales the
    # prompt path's terms by it, the per-iteration terms by host_probe_launch_s; 0 = one reference
    from twin.serving.timing import PROMPT_SCALED_TERMS
    e = {"host_probe_launch_s": 1e-5, "host_probe_exponent": 1.0, "host_probe_prompt_launch_s": 0.5e-5,
         "iteration_s": 1e-3, "chunk_s": 1e-4, "new_bin_s": 2e-3, "loop_s": 1e-5, "score_s_per_pair": 1e-9}
    s = scaled_engine(e, 2e-5)
    assert s["iteration_s"] == pytest.approx(2e-3) and s["loop_s"] == pytest.approx(2e-5)
    assert s["chunk_s"] == pytest.approx(4e-4) and s["new_bin_s"] == pytest.approx(8e-3)
    assert s["score_s_per_pair"] == e["score_s_per_pair"]
    one = scaled_engine({**e, "host_probe_prompt_launch_s": 0.0}, 2e-5)
    assert one["chunk_s"] == pytest.approx(2e-4) and one["iteration_s"] == pytest.approx(2e-3)
    assert set(PROMPT_SCALED_TERMS) < set(HOST_SCALED_TERMS) and "iteration_s" not in PROMPT_SCALED_TERMS


def test_ep_levels_read_the_as_came_runs_of_an_ep_folder_only():
    from calibration.serve_engine_fit import ep_levels, probe_folders
    folders = probe_folders()
    assert ep_levels(folders["h200"], 1.0) == {}                      # one-GPU tables keep one reference
    got = ep_levels(folders["h100x2"], 1.0)["real-serve-h100-ep2"]
    assert got["host_probe_launch_s"] > 0 and got["host_probe_prompt_launch_s"] > 0
    # a larger exponent puts the same measured factors at a reference nearer the runs' probes
    assert ep_levels(folders["h100x2"], 2.0)["real-serve-h100-ep2"]["host_probe_launch_s"] != pytest.approx(got["host_probe_launch_s"])


# The references' variants below each read the committed records' scales (serve_engine_fit.all_scales) and
# EP levels (ep_levels); within one test no switch those read changes, so each is computed once there
# (calibration.memo.sharing: a kept result per argument values) instead of once a variant (~3 s of CPU each)


def test_the_tables_carry_the_ep_levels_only_where_adopted():
    from calibration import serve_engine_fit as sef
    with memo.sharing():
        refs = sef.references()
        ep = refs["real-serve-h100-ep2"]
        if sef.ADOPT_EP_LEVELS:
            assert ep == pytest.approx(sef.ep_level_references()["real-serve-h100-ep2"])
        else:
            assert ep == pytest.approx(sef.candidate_references()["real-serve-h100-ep2"])
            assert serve_engines()["real-serve-h100-ep2"].get("host_probe_prompt_launch_s", 0.0) == 0.0


def test_as_came_references_take_an_ep_tables_level_from_its_undosed_runs():
    # s14srv2's second candidate: beta from every run; an EP table's level from its as-came runs alone
    from calibration.serve_engine_fit import as_came_references
    beta, p_ref = 1.0, {"t-ep1": 10e-6, "t-ep2": 12e-6}
    df = _scales(beta, p_ref, {"t-ep1": [10e-6, 15e-6, 11e-6], "t-ep2": [12e-6, 18e-6, 13e-6]})
    df["dosed"] = [False, True, False, False, True, False]
    same = as_came_references(df)
    assert same["t-ep2"]["host_probe_launch_s"] == pytest.approx(12e-6)     # on the line: nothing moves
    # the EP table's dosed run 1.3x over the line: fit_exponent's level moves, the as-came one does not
    df.loc[4, "s"] *= 1.3
    got, fit = as_came_references(df), fit_exponent(df)
    assert fit["p_ref"]["t-ep2"] < 0.99 * 12e-6
    assert got["t-ep2"]["host_probe_launch_s"] > fit["p_ref"]["t-ep2"] * 1.01
    assert got["t-ep2"]["host_probe_exponent"] == pytest.approx(fit["beta"])
    c = [np.log(df.s[i]) - fit["beta"] * np.log(df.p[i]) for i in (3, 5)]
    assert got["t-ep2"]["host_probe_launch_s"] == pytest.approx(np.exp(-np.mean(c) / fit["beta"]))
    assert got["t-ep1"]["host_probe_launch_s"] == pytest.approx(fit["p_ref"]["t-ep1"])   # one GPU: unchanged


def test_spread_bins_follow_the_host_factor_only_where_adopted(monkeypatch):
    # s14srv2's third candidate (twin.serving.timing.ADOPT_SPREAD_AT_FIT_HOST): under the host input an
    # iteration draws its ratio from the bin of its prediction on the table's fit host
    import twin.serving.timing as tm
    load = read_csv(Path(rec.MEASUREMENTS_DIR) / "h100x2" / "serve_load.csv", dtype=str).fillna("")
    sc = scenario_for(load.iloc[0].to_dict())
    name = sc.serve.engine_costs
    table = serve_engines()[name]["spread"]
    slow = dataclasses.replace(sc.serve, host_launch_s=2e-5)
    with tables_with({name: {"host_probe_launch_s": 1e-5, "host_probe_exponent": 1.0}}):
        for adopted in (False, True):
            monkeypatch.setattr(tm, "ADOPT_SPREAD_AT_FIT_HOST", adopted)
            at_fit = IterationCosts(sc.model, sc.gpu, sc.serve).spread
            at_slow = IterationCosts(sc.model, sc.gpu, slow).spread
            assert at_fit.edges_s == pytest.approx(table["edges_s"])
            want = [2.0 * e for e in table["edges_s"]] if adopted else table["edges_s"]
            assert at_slow.edges_s == pytest.approx(want)
            # a decode iteration predicted 1.5x the first edge: its fit-host bin under the adopted rule
            pred = 1.5 * table["edges_s"][0]
            row = 0 if adopted else 1
            assert at_slow.ratio(False, pred, 0.5) == pytest.approx(tm.IterationSpread.from_table(table).ratio(
                False, table["edges_s"][row] * 0.99, 0.5))


def test_spread_mean_ratio_is_the_area_under_the_quantiles():
    from twin.serving.timing import IterationSpread
    sp = IterationSpread([0.01], [0.0, 0.5, 1.0], decode=[[0.8, 1.0, 1.2], [1.0, 1.1, 1.5]],
                         prompt=[[1.0, 1.0, 1.0], [0.5, 1.0, 1.5]])
    assert sp.mean_ratio(False, 0.005) == pytest.approx(1.0)
    assert sp.mean_ratio(False, 0.02) == pytest.approx(0.5 * (1.05 + 1.3))
    # the mean of many draws agrees (ratio is the inverse CDF the twin samples)
    u = (np.arange(20000) + 0.5) / 20000
    assert np.mean([sp.ratio(True, 0.02, x) for x in u]) == pytest.approx(sp.mean_ratio(True, 0.02), rel=1e-4)


def test_spread_aware_factor_recovers_a_run_replayed_with_its_fit_host_bins():
    # s14srv3: a run whose iterations are the twin's means under ADOPT_SPREAD_AT_FIT_HOST (mu of the bin
    # at (g + s h) / s) gives back its s; the plain least squares does not where mu is not 1
    from calibration.serve_engine_fit import spread_aware_factor
    from twin.serving.timing import IterationSpread
    sp = IterationSpread([0.004, 0.008], [0.0, 1.0], decode=[[0.9, 1.0], [0.95, 1.0], [1.1, 1.3]],
                         prompt=[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    rng = np.random.default_rng(0)
    h, g = rng.uniform(0.002, 0.006, 200), rng.uniform(0.0005, 0.002, 200)
    prompt = np.zeros(200, bool)
    for s_true in (1.0, 1.8, 2.6):
        mu = np.array([sp.mean_ratio(False, (gi + s_true * hi) / s_true) for gi, hi in zip(g, h)])
        m = mu * (g + s_true * h)
        assert spread_aware_factor(h, g, m, prompt, sp) == pytest.approx(s_true, rel=1e-6)
        plain = float(h @ (m - g) / (h @ h))
        assert abs(plain / s_true - 1) > 0.01


def test_run_scales_are_spread_aware_only_under_the_switch(monkeypatch):
    # s14srv3: the host-speed fit follows twin.serving.timing.ADOPT_SPREAD_AT_FIT_HOST; the tables carry
    # the references of the switch's setting
    import twin.serving.timing as tm
    from calibration import serve_engine_fit as sef
    d = sef.probe_folders()["h100x2"]
    plain, aware = sef.run_scales(d, spread_at_fit_host=False), sef.run_scales(d, spread_at_fit_host=True)
    assert list(plain.run_id) == list(aware.run_id)
    assert (plain.s != aware.s).any() and np.allclose(plain.s, aware.s, rtol=0.1)
    for adopted, want in ((False, plain), (True, aware)):
        monkeypatch.setattr(tm, "ADOPT_SPREAD_AT_FIT_HOST", adopted)
        assert np.allclose(sef.run_scales(d).s, want.s)


def test_decode_level_references_move_the_ep_decode_path_only():
    # s20srv3 (docs/notes/s20srv3_rule.md): an EP table's per-iteration reference from ep_levels' decode
    # path, its prompt path kept at the current reference; one-GPU tables unchanged
    from calibration import serve_engine_fit as sef
    with memo.sharing():
        cur, got = sef.candidate_references(), sef.decode_level_references()
        beta = cur["real-serve-h100-ep2"]["host_probe_exponent"]
        decs = {t: sef.ep_levels(sef.probe_folders()[t.removeprefix("real-serve-").replace("-ep2", "x2")], beta)[t]
                for t in ("real-serve-h100-ep2", "real-serve-h200-ep2")}
    for t, dec in decs.items():
        assert got[t]["host_probe_launch_s"] == pytest.approx(dec["host_probe_launch_s"])
        assert got[t]["host_probe_prompt_launch_s"] == pytest.approx(cur[t]["host_probe_launch_s"])
        assert got[t]["host_probe_launch_s"] != pytest.approx(cur[t]["host_probe_launch_s"], rel=0.02)
    for t in ("real-serve-h100-ep1", "real-serve-h200-ep1"):
        assert got[t]["host_probe_launch_s"] == pytest.approx(cur[t]["host_probe_launch_s"])
        assert got[t]["host_probe_prompt_launch_s"] == 0.0


def test_the_tables_carry_the_decode_level_only_where_adopted(monkeypatch):
    """The tables were fitted before s30pace's ADOPT_SERVE_BOARD_PACE and not refitted under it
    (docs/notes/s30pace.md "Left"): the references are recomputed with the kernel physics they were fitted
    against, as test_serve_host_speed_targets.test_the_adopted_tables_carry_their_fit_hosts_probe does."""
    from calibration import serve_engine_fit as sef
    from twin.serving import iteration
    monkeypatch.setattr(iteration, "ADOPT_SERVE_BOARD_PACE", False)
    adopted = sef.ADOPT_EP_DECODE_LEVEL
    # ADOPT_EP_DECODE_LEVEL picks among the variants in references(); all_scales and ep_levels do not read it
    with memo.sharing():
        for on in (False, True):
            monkeypatch.setattr(sef, "ADOPT_EP_DECODE_LEVEL", on)
            want = sef.decode_level_references() if on else sef.candidate_references()
            assert sef.references()["real-serve-h100-ep2"] == pytest.approx(want["real-serve-h100-ep2"])
        monkeypatch.setattr(sef, "ADOPT_EP_DECODE_LEVEL", adopted)
        want = (sef.decode_level_references if adopted else sef.candidate_references)()
    loaded = serve_engines()["real-serve-h100-ep2"]
    assert loaded["host_probe_launch_s"] == pytest.approx(want["real-serve-h100-ep2"]["host_probe_launch_s"], rel=1e-4)
