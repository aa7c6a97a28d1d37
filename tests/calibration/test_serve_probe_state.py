"""calibration/serve_probe_state.py: what the host probe beside an EP2 load run tells (docs/notes/s20srv3.md),
on made-up numbers, and the findings the note rests on, on the committed probe folders' fit runs."""

import functools

import numpy as np
import pandas as pd
import pytest

from calibration import serve_probe_state as ps


def test_level_is_measured_over_physics_plus_the_scaled_host_terms():
    dec = pd.DataFrame({"measured_s": [0.006, 0.0062, 0.0058], "physics_s": [0.001] * 3, "host_s": [0.0025] * 3})
    assert ps._level(dec, 2.0) == pytest.approx(1.0)
    assert ps._level(dec, 1.0) == pytest.approx(0.006 / 0.0035)


def test_formulations_recover_a_per_launch_host():
    # decode iterations whose host part is exactly c x p: launch_x_p has no error, a constant misses by p's spread
    c, host = 1.0e5, 0.004   # host factor c p: 1.0-1.8
    lv = pd.DataFrame({"folder": "f", "run_id": list("abcd"), "table": "real-serve-h100-ep2",
                       "fit_host": [True, True, True, False], "dosed": [False, False, True, False],
                       "p_s": [10e-6, 12e-6, 18e-6, 14e-6], "physics_s": 0.001, "host_s": host})
    lv["measured_s"] = lv.physics_s + c * lv.p_s * lv.host_s
    fo = ps.formulations(lv)
    assert fo.launch_x_p.abs().max() == pytest.approx(0.0, abs=1e-12)
    assert fo.launch_x_p_ref_s.iloc[0] == pytest.approx(1 / c)
    assert fo.constant.abs().max() > 0.1    # the dosed run (1.5x the as-came probes) is missed without the probe


@functools.cache
def _levels() -> pd.DataFrame:
    return ps.all_levels()


def test_the_probe_folders_are_the_ep2_fit_hosts_and_the_never_fitted_ones():
    folders = ps.ep_probe_folders()
    assert {"h100x2/s13srv", "h200x2/s13srv"} <= {n for n, (_, fit) in folders.items() if fit}
    assert any(n.startswith("h100x2/s14srv_newhost") for n, (_, fit) in folders.items() if not fit)
    assert set(_levels().folder) == set(folders)


def test_within_a_host_the_probe_tracks_the_as_came_runs_decode_level():
    # docs/notes/s20srv3.md: at the run's probe the as-came runs' decode levels sit within a few % of their
    # host's mean level, although windows inside one run swing far more (0.84-1.65 of the table on 2xH100)
    lv = _levels()
    came = lv[~lv.dosed]
    dev = np.log(came.level) - np.log(came.level).groupby(came.folder).transform("mean")
    assert dev.abs().mean() < 0.05
    assert (np.log(came.window_max / came.window_min) > 2 * dev.abs().mean()).all()


def test_the_current_2xh100_reference_over_predicts_the_as_came_decode_level():
    # the s14srv2 intercept (dosed runs and prompt-carrying iterations) against the as-came decode iterations
    fo = ps.formulations(_levels())
    h100 = fo[(fo.table == "real-serve-h100-ep2") & ~fo.dosed]
    assert (h100.current > 0.04).all()
    assert h100.launch_x_p.abs().mean() < h100.current.abs().mean()


def test_the_slowest_ranks_launch_probe_follows_the_as_came_host_factor_and_not_the_dosed_one():
    # docs/notes/s20srv3.md: as the host came, the twin's input (slowest rank's launch mean) halves the
    # within-host spread of the runs' decode host factor; under the dose (which lapses mid-run on 2xH200)
    # no reading before / after a run follows it
    tr = ps.probe_tracking(_levels()).set_index(["dosed", "probe"])
    came, none = tr.loc[(False, "p_s")], tr.loc[(False, "none")]
    assert came["corr"] > 0.7 and came["resid"] < 0.6 * none["resid"]
    assert tr.loc[(False, "p_py_s"), "resid"] > came["resid"]
    assert tr.loc[(True, "p_s"), "corr"] < 0.5
