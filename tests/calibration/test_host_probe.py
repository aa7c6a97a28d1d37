"""calibration.host_probe: the host's speed at a record's own moment (its bracketing probe blocks)
as the input of its prediction, calibrated on the fitting host rows only."""

import dataclasses

import pandas as pd
import pytest

from calibration import host_probe as hp
from calibration.predict import gpu_spec, predict_s
from twin.costs.profile import fitted_profile

RATES = {"fwd": 25e-6, "bwd": 30e-6, "infer": 20e-6}          # the layer's host s a kernel at speed 1
PROBES = {"fwd": 11e-6, "bwd": 16e-6, "infer": 10e-6}         # the probe's s an op at speed 1
RECORDS = [("v2-lite-slice", 4, 1024, "bf16"), ("v2-lite-slice", 1, 4096, "fp8-blockwise")]


def _paired(speeds: list[list[float]]) -> pd.DataFrame:
    """TEST FIXTURE (not measurements): rounds of mla_paired rows whose host runs at `speeds` (one
    per probe block: the round's first block, then one before each record, then the closing one);
    each record's time is the twin's own prediction at the mean speed of its two bracketing blocks."""
    prof, spec = fitted_profile("h100"), gpu_spec("h100")
    rows, pair = [], 0
    for rnd, sp in enumerate(speeds):
        blocks = list(range(pair, pair + len(sp)))
        for b, s in zip(blocks, sp):
            for rate, (op, phase) in hp.RATE_PROBES.items():
                rows.append({"bench": "host_class", "round": rnd, "pair": b, "op": op, "phase": phase, "n_ops": 64,
                             "host_s": 64 * PROBES[rate] * s, "split": "fit"})
        for phase in ("fwd", "infer", "bwd"):
            kernels = 46 if phase == "bwd" else 30
            rows.append({"bench": "host_dispatch", "round": rnd, "pair": blocks[0], "config": "mla_layer v3-slice-1l b1 s1024",
                         "phase": phase, "model": "v3-slice-1l", "batch": 1, "seq_len": 1024, "precision": "bf16",
                         "split": "fit", "profiled": "phase", "kernels": kernels,
                         "host_s": kernels * RATES[phase] * (sp[0] + sp[1]) / 2})
        for i, (m, b, s, label) in enumerate(RECORDS):
            speed = (sp[i + 1] + sp[i + 2]) / 2
            prof_s = dataclasses.replace(prof, eager={**prof.eager, "host_s": {k: v * speed for k, v in RATES.items()}})
            for bench in ("mla_layer_fwd", "mla_layer_bwd"):
                r = {"bench": bench, "round": rnd, "pair": blocks[i + 1], "model": m, "batch": b, "seq_len": s,
                     "precision": label, "split": "holdout", "timing": "per_rep_events"}
                r["time_s"] = predict_s(pd.Series(r), spec, prof_s)
                rows.append(r)
        pair += len(sp)
    df = pd.DataFrame(rows)
    return df.assign(tokens=df["batch"] * df["seq_len"])


def test_probe_scales_are_the_fitting_rows_over_their_probes():
    paired = _paired([[1.0, 1.0, 1.5, 1.0], [2.0, 2.0, 1.0, 1.2]])
    k = hp.probe_scales(paired, "h100", fitted_profile("h100"))
    for rate in hp.RATE_PROBES:
        assert k[rate] == pytest.approx(RATES[rate] / PROBES[rate], rel=1e-9)
    # a record's rates: k x the mean of its block and the next (same round); the closing block alone
    rates = hp.record_rates(paired, "h100", fitted_profile("h100"))
    assert rates[1]["bwd"] == pytest.approx(RATES["bwd"] * 1.25)
    assert rates[5]["fwd"] == pytest.approx(RATES["fwd"] * 1.5)


def test_paired_probes_predict_a_host_that_drifts_where_one_rate_cannot():
    paired = _paired([[1.0, 1.0, 1.6, 1.0], [1.8, 1.8, 0.8, 1.3], [1.0, 1.2, 1.2, 1.0]])
    prof = fitted_profile("h100")
    got = hp.evaluate(paired, "h100", prof)
    assert got["paired"]["every_round"]["num_cases"] == 12
    assert got["paired"]["every_round"]["p90_abs_rel_error"] < 1e-6
    # one rate for the whole run (the fitting rows' median) misses the drifting rounds
    assert got["run"]["every_round"]["p90_abs_rel_error"] > 0.05
    # the median round of each record (as committed records are chosen): one case per record
    assert got["paired"]["median_round"]["num_cases"] == 4


def test_unknown_inputs_are_refused():
    with pytest.raises(ValueError, match="inputs 'x'"):
        hp.predict_records(_paired([[1.0, 1.0, 1.0, 1.0]]), "h100", fitted_profile("h100"), "x")


def test_s8mla_rounds_read_as_one_probe_block_a_round(tmp_path):
    """An s8mla run's raw rounds (host_class, host_dispatch, attention per round<i>/) become
    mla_paired rows whose probe block is the round's first."""
    fixture = _paired([[1.0, 1.0, 1.0, 1.0], [1.5, 1.5, 1.5, 1.5]])
    family = {"host_class": "host_class", "host_dispatch": "host_dispatch", "mla_layer_fwd": "attention",
              "mla_layer_bwd": "attention"}
    for rnd, g in fixture.groupby("round"):
        d = tmp_path / f"round{rnd}"
        d.mkdir()
        g = g.drop(columns=["round", "pair", "tokens"])
        for name in ("host_class", "host_dispatch", "attention"):
            g[g["bench"].map(family) == name].to_csv(d / f"{name}.csv", index=False)
    paired = hp.paired_from_rounds(tmp_path)
    assert set(paired["pair"]) == {0, 1} and (paired["pair"] == paired["round"]).all()
    assert (paired["bench"].str.startswith("mla_layer")).sum() == 8
    # the records ran at their round's probe speed (the fixture's bracket of equal blocks)
    got = hp.evaluate(paired, "h100", fitted_profile("h100"))
    assert got["paired"]["every_round"]["p90_abs_rel_error"] < 1e-6
    with pytest.raises(FileNotFoundError, match="round<i>"):
        hp.paired_from_rounds(tmp_path / "none")


def test_committed_paired_records_are_adopted_only_where_the_probes_follow_the_fitting_rows(tmp_path):
    prof = fitted_profile("h100")
    (tmp_path / "h100").mkdir()
    assert hp.committed_paired(tmp_path, "h100", prof) is None
    paired = _paired([[1.0, 1.0, 1.6, 1.0], [1.8, 1.8, 0.8, 1.3], [1.0, 1.2, 1.2, 1.0]])
    paired.drop(columns=["tokens"]).assign(num_heads=16).to_csv(tmp_path / "h100" / hp.PAIRED_FILE, index=False)
    got = hp.committed_paired(tmp_path, "h100", prof)
    assert got["adopted"] and all(v == pytest.approx(1.0) for v in got["tracking"].values())
    assert len(got["cases"]) == 4 and all(c["held_out"] and c["kind"] == "mla_layer" for c in got["cases"])
    assert max(abs(c["rel_error"]) for c in got["cases"]) < 1e-6
    # the fitting host rows at one speed while the probes beside them drift: the probes do not
    # stand for the host's speed, and the file stays a diagnostic
    fit = paired["bench"] == "host_dispatch"
    paired.loc[fit, "host_s"] = paired.loc[fit, "kernels"] * paired.loc[fit, "phase"].map(RATES)
    paired.drop(columns=["tokens"]).assign(num_heads=16).to_csv(tmp_path / "h100" / hp.PAIRED_FILE, index=False)
    got = hp.committed_paired(tmp_path, "h100", prof)
    assert not got["adopted"] and max(got["tracking"].values()) > hp.TRACK_SPREAD
