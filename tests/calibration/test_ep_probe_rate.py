"""calibration.ep_probe_rate and pipeline.ADOPT_EP_PROBE_HOST (s26eprate, docs/notes/s26eprate_rule.md): an EP2 step's
forward and backward host rates a launch from the part's fitting step over the probe right before it, times the probe
right before each held-out step. Mechanics on a committed EP2 part (h200x2/s25ep_20261128_0549 bench-small-6l and the
GPU-bound mixtral-2l) given synthetic probe rows; the switch's scope."""

import shutil

import numpy as np
import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import ep_probe_rate as epr
from calibration import prereg
from calibration import records as rec
from calibration.records_io import read_csv

RUN = rec.MEASUREMENTS_DIR / "h200x2" / "s25ep_20261128_0549"
LAUNCH_US, PY_US = 10.0, 150.0


def _probed_copy(tmp_path, part: str, factor: dict[int, float]) -> None:
    """A copy of a committed part with one launch and one python probe a timed step and rank: LAUNCH_US / PY_US,
    times factor[n] at n micro-batches."""
    d = tmp_path / part
    shutil.copytree(RUN / part, d)
    ops = read_csv(d / "pipeline_ops.csv")
    rows = [dict(num_microbatches=r.num_microbatches, cycle=r.rep, rank=r.rank, probe=kind,
                 us_per_call=us * factor.get(int(r.num_microbatches), 1.0), split=r.split)
            for r in ops[["num_microbatches", "rep", "rank", "split"]].drop_duplicates().itertuples()
            for kind, us in (("launch", LAUNCH_US), ("python", PY_US))]
    pd.DataFrame(rows).to_csv(d / "pipeline_host_probe.csv", index=False)


@pytest.fixture(scope="module")
def inputs():
    return prereg.two_gpu_inputs("h200")


@pytest.fixture(scope="module")
def table(tmp_path_factory, inputs):
    """bench-small-6l with its probe doubled at n 3 (the held-out steps' host twice as slow by the probe), and the
    control; settings base, P, R, PL, P_py."""
    tmp = tmp_path_factory.mktemp("s26eprate")
    _probed_copy(tmp, "bench-small-6l", {3: 2.0})
    _probed_copy(tmp, "mixtral-2l", {})
    return epr.fresh_errors(tmp, "h200", names=("base", "P", "R", "PL", "P_py"), inputs=inputs)


def test_the_switch_is_off_and_no_committed_host_dict_carries_the_keys(inputs):
    """G by scope: the committed <gpu>x2 folders' host dicts (every committed EP figure's pricing) lack both keys."""
    assert pipe.ADOPT_EP_PROBE_HOST is False
    for host in (inputs[2], prereg.two_gpu_inputs("h100")[2]):
        assert host and pipe.EP_FWD_PROBE_KEY not in host and pipe.EP_BWD_PROBE_KEY not in host


def test_the_keys_act_only_with_the_switch(monkeypatch):
    host = {"fwd": 25e-6, "bwd": 21e-6, pipe.EP_BWD_PROBE_KEY: 33e-6}
    monkeypatch.setattr(pipe, "ADOPT_EP_PROBE_HOST", False)
    assert pipe.ep_bwd_host(host, "h200", 2) == (21e-6, None, {})
    monkeypatch.setattr(pipe, "ADOPT_EP_PROBE_HOST", True)
    assert pipe.ep_bwd_host(host, "h200", 2) == (33e-6, 33e-6, {pipe.EP_BWD_A2A_TERM: pipe.EP_BWD_A2A_CALL_S})
    assert pipe.ep_bwd_host(host, "h200", 1) == (21e-6, None, {})   # no EP: untouched


def test_rates_are_the_fitting_ratio_times_the_held_out_probe(table):
    """At n 2 and 4 the probe reads as at the fitting step: P's rates are R's (the fitting medians; the backward
    s25ep's A1 input for this part, 24.07 us); at n 3 the probe doubles and so do P's rates; the control none."""
    small = table[table["part"] == "bench-small-6l"].set_index("num_microbatches")
    assert round(small.loc[2, "bwd_probe_rate_s"] * 1e6, 2) == 24.07
    for col in ("fwd_probe_rate_s", "bwd_probe_rate_s"):
        assert np.isclose(small.loc[3, col], 2 * small.loc[2, col]) and np.isclose(small.loc[4, col], small.loc[2, col])
    assert np.allclose(small.loc[[2, 4], "rel_error_P"], small.loc[[2, 4], "rel_error_R"])
    assert small.loc[3, "rel_error_P"] > small.loc[3, "rel_error_R"] + 0.5   # a twice slower host, a much longer step
    # the Python probe moved by the same factor: the same rates
    assert np.allclose(small["rel_error_P_py"], small["rel_error_P"])
    control = table[table["part"] == "mixtral-2l"]
    assert control["fwd_probe_rate_s"].isna().all() and control["bwd_probe_rate_s"].isna().all()
    assert np.allclose(control["rel_error_P"], control["rel_error_base"])
    assert np.allclose(control["rel_error_PL"], control["rel_error_base"])


def test_verdict_reads_r1_to_r4_from_the_rows():
    t = pd.DataFrame({"part": ["a", "a", "a", "mixtral-3l"], "rel_error_base": [0.2, -0.2, 0.1, 0.03],
                      "rel_error_P": [0.02, -0.03, 0.04, 0.035], "rel_error_R": [0.03, -0.05, 0.1, 0.035]})
    v = epr.verdict(t)
    assert v["r1"] and v["r2"] and v["r3"] and v["r4"] and v["pass"]
    v = epr.verdict(t.assign(rel_error_P=[0.02, -0.03, 0.04, 0.06]))     # the control moved 3 points
    assert not v["r3"] and not v["pass"]
    v = epr.verdict(t.assign(rel_error_R=[0.0, 0.0, 0.0, 0.035]))        # the probe worse than no probe
    assert not v["r4"] and not v["pass"]


def test_guards_flag_a_worse_figure_only():
    off = {"by_gpu_kind": {"h200": {"ep_step": {"held_out": {"median_abs_rel_error": 0.02, "p90_abs_rel_error": 0.05}}}},
           "gpus": {"h200": {"median_abs_rel_error": 0.03, "p90_abs_rel_error": 0.08}}}
    assert epr.guards(off, off)[0]
    worse = {**off, "gpus": {"h200": {"median_abs_rel_error": 0.035, "p90_abs_rel_error": 0.08}}}
    ok, lines = epr.guards(off, worse)
    assert not ok and any("BAD h200 held-out total median" in x for x in lines)
    assert epr.guards(worse, off)[0]                                     # better: holds
