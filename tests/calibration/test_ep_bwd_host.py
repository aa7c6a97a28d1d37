"""calibration.pipeline.ADOPT_EP_BWD_HOST (s23bwd2, docs/notes/s23bwd2_rule.md): an EP stage's backward
takes each token all-to-all's backward node at its measured host call and, where its host dict has no
measured backward rate, the rate measured on a fitting two-GPU run; both settings."""

import numpy as np
import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import ep_phases, prereg
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import EpBwdTokensCall, gpu_spec
from calibration.records_io import glob_csv, read_csv
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

HOST = {"fwd": 25e-6, "ep_tokens_a2a": 194e-6}


@pytest.fixture(scope="module")
def profile():
    return load_fitted_profile("h100", rec.load_records("h100"), PROFILES_DIR)[0]


@pytest.fixture
def switch(monkeypatch):
    def set_to(on: bool):
        monkeypatch.setattr(pipe, "ADOPT_EP_BWD_HOST", on)
    return set_to


def _stage(profile, ep: int, host: dict):
    spec = get_model("bench-small")
    return pipe.stage_ops(spec, range(spec.num_layers), True, True, 1, 1024, "bf16", gpu_spec("h100"), profile,
                          ep=ep, host=host)


def _bwd_a2a(ops) -> list:
    return [o for o in ops.b if isinstance(o, EpBwdTokensCall)]


def test_off_the_backward_keeps_its_rates_and_its_all_to_all_nodes_are_plain_launches(profile, switch):
    switch(False)
    ops = _stage(profile, 2, HOST)
    calls = _bwd_a2a(ops)
    assert len(calls) == 2 * 3                      # combine's and dispatch's backward, 3 MoE layers
    assert pipe.ep_bwd_host({**HOST, "bwd": 20e-6}, "h100", 2) == (20e-6, None, {})
    # no measured "bwd": the profile's autograd host seconds, the node one of them
    assert all(h != pipe.EP_BWD_A2A_CALL_S for h, _ in calls)


def test_on_an_ep_backward_takes_the_node_term_and_the_carried_rate(profile, switch):
    switch(False)
    off = _stage(profile, 2, HOST)
    switch(True)
    on = _stage(profile, 2, HOST)
    assert [h for h, _ in _bwd_a2a(on)] == [pipe.EP_BWD_A2A_CALL_S] * 6
    plain = [h for o in on.b + on.w for h in [o[0]] if h is not None and not isinstance(o, EpBwdTokensCall)]
    assert plain and set(plain) == {pipe.EP_BWD_HOST_S["h100"]}
    assert [g for _, g in on.b] == [g for _, g in off.b]            # GPU time untouched
    assert on.f == off.f                                            # the forward untouched
    host_s = lambda ops: sum(h or 0.0 for h, _ in ops.b + ops.w)
    assert host_s(on) > host_s(off)


def test_on_a_measured_backward_rate_is_kept_and_a_non_ep_stage_is_untouched(profile, switch):
    switch(True)
    assert pipe.ep_bwd_host({**HOST, "bwd": 21e-6}, "h100", 2) == (
        21e-6, pipe.EP_BWD_HOST_S["h100"], {pipe.EP_BWD_A2A_TERM: pipe.EP_BWD_A2A_CALL_S})
    assert pipe.ep_bwd_host(HOST, "h200", 2)[:2] == (None, None)   # no fitting run of that GPU: the profile's
    assert pipe.ep_bwd_host(HOST, "h100", 1) == (None, None, {})
    on = _stage(profile, 1, HOST)
    switch(False)
    assert _stage(profile, 1, HOST) == on


def test_the_node_term_is_the_fitting_marks_median():
    """EP_BWD_A2A_CALL_S: the median over every (fitting configuration, node) median of real/ep.py's backward
    marks in h100x2/s23ephost_*/fit/*/marks_host."""
    tables = [ep_phases.backward_a2a_calls(read_csv(f))
              for folder in sorted((rec.MEASUREMENTS_DIR / "h100x2").glob("s23ephost_*/fit/*/marks_host"))
              for f in glob_csv(folder, "ep_host_marks*")]
    calls = pd.concat(tables)["call_s"]
    assert len(calls) == 24
    assert np.isclose(pipe.EP_BWD_A2A_CALL_S, calls.median(), atol=0.5e-6)


def test_a2_a_backward_rate_is_solved_with_the_nodes_at_their_term(profile, switch):
    """A2: a folder's backward rate solved from an EP backward, the nodes at EP_BWD_A2A_CALL_S, gives back the
    rate its launches were issued at (the nodes' host not spread over the launches a second time)."""
    switch(True)
    b = _stage(profile, 2, HOST).b
    rate_s, terms = 30e-6, pipe.ep_bwd_host({}, "h100", 2)[2]
    launches = sum(1 for h, _ in b if h is not None)
    interval_s = (launches - 6) * rate_s + 6 * pipe.EP_BWD_A2A_CALL_S
    lead_s = interval_s    # the GPU never waits on the host: the interval is the issue alone
    assert np.isclose(pipe.solved_host_rate_s(b, lead_s, interval_s, 0.0, terms), rate_s, rtol=1e-3)
    assert pipe.solved_host_rate_s(b, lead_s, interval_s, 0.0, None) > rate_s   # off: the nodes spread in


H200X2 = rec.MEASUREMENTS_DIR / "h200x2"
# the rule's fresh runs, both 2xH200 substitutes (the rule designates 2xH100): session 23's (01:24 UTC) and a second
# host's (session 24, 02:37 UTC; the lead's rerun of s23bwd2.sh at aae9ea0)
FRESH_RUNS = ("s23bwd2_20261128_0124", "s23bwd2_20261128_0237")
# the second host's run a minute earlier (02:36 UTC), of which only bench-small-2k came back: a same-host repeat
REPEAT_RUN = "s23bwd2_20261128_0236"


@pytest.fixture(scope="module")
def fresh_inputs():
    """The committed h200x2 folder's pricing inputs, computed once."""
    return {"h200": prereg.two_gpu_inputs("h200")}


def _fresh_errors(fresh_inputs, on: bool, run: str = FRESH_RUNS[0]) -> pd.DataFrame:
    """The fresh EP2 steps (split holdout) priced as the rule's `committed` (prereg.predict_ep at the run's routing)."""
    old, pipe.ADOPT_EP_BWD_HOST = pipe.ADOPT_EP_BWD_HOST, on
    try:
        out = []
        for part in sorted(p for p in (H200X2 / run).iterdir() if p.is_dir()):
            steps = read_csv(part / "pipeline_step.csv")
            steps = steps[(steps["split"] == "holdout") & (steps["bench"] == "ep_step")]
            rows = [{"gpu": "h200", **r} for r in steps.to_dict("records")]
            pred = prereg.predict_ep(rows, routing=read_csv(part / "pipeline_routing.csv"), inputs=fresh_inputs)
            out.append(pd.DataFrame({"model": steps["model"].to_numpy(), "part": part.name,
                                     "n": steps["num_microbatches"].to_numpy(),
                                     "measured_s": steps["time_s"].to_numpy(),
                                     "err": pred["predicted_s"].to_numpy() / steps["time_s"].to_numpy() - 1}))
        return pd.concat(out, ignore_index=True)
    finally:
        pipe.ADOPT_EP_BWD_HOST = old


@pytest.mark.parametrize("run", FRESH_RUNS)
def test_on_the_fresh_bench_small_steps_move_toward_the_records(fresh_inputs, run):
    """F3 (reported on the 2xH200 substitutes): the all-to-all node term, the only part that applies on H200 (the
    h200x2 folder measures its own backward rate), lowers the fresh bench-small rows' median |error| (first host
    14.98 -> 10.74%, second 11.34 -> 8.78%)."""
    off, on = _fresh_errors(fresh_inputs, False, run), _fresh_errors(fresh_inputs, True, run)
    assert len(off) == 9
    small = off["model"] == "bench-small"
    assert on.loc[small, "err"].abs().median() < off.loc[small, "err"].abs().median()
    assert (on.loc[~small, "err"] == off.loc[~small, "err"]).all()     # the GPU-bound control does not move


@pytest.mark.parametrize("run", [
    pytest.param(FRESH_RUNS[0], marks=pytest.mark.xfail(strict=True, reason=(
        "s23bwd2 fresh EP2 steps, first 2xH200 host (switch off as on main): median 4.06%, P90 20.45% (bench-small "
        "2 x 1,024 -20.2 to -20.8%); with ADOPT_EP_BWD_HOST 4.90 / 16.43%, bench-small 6 layers n 1 +5.3%: issue "
        "13's ep_step target (5% / 10%) missed"))),
    pytest.param(FRESH_RUNS[1], marks=pytest.mark.xfail(strict=True, reason=(
        "s23bwd2 fresh EP2 steps, second 2xH200 host (switch off as on main): median 5.66%, P90 20.60% (bench-small "
        "2 x 1,024 -17.0 to -21.5%); with ADOPT_EP_BWD_HOST 2.85 / 16.58%, bench-small 6 layers n 2 +4.7%: issue "
        "13's ep_step target (5% / 10%) missed")))])
def test_the_fresh_steps_meet_issue13_target(fresh_inputs, run):
    err = _fresh_errors(fresh_inputs, pipe.ADOPT_EP_BWD_HOST, run)["err"].abs()
    assert err.median() <= 0.05 and np.percentile(err, 90) <= 0.10, err.to_list()


def test_the_second_hosts_repeat_agrees_and_the_miss_is_not_run_noise(fresh_inputs):
    """The second host's bench-small-2k, run twice a minute apart (REPEAT_RUN, FRESH_RUNS[1]): each step within 5%
    of the other (measured: +2.1, -3.5, +0.5%), and both runs under-predicted by more than 10% (switch off: the
    repeat -22.0 / -18.7 / -17.4%, -20.4 / -21.5 / -17.0%), as on the first host: the miss is the host's, not noise."""
    rep = _fresh_errors(fresh_inputs, False, REPEAT_RUN)
    main = _fresh_errors(fresh_inputs, False, FRESH_RUNS[1])
    main = main[main["part"] == "bench-small-2k"]
    assert list(rep["n"]) == list(main["n"]) == [1, 2, 4]
    assert np.all(np.abs(rep["measured_s"].to_numpy() / main["measured_s"].to_numpy() - 1) < 0.05)
    assert (rep["err"] < -0.10).all() and (main["err"] < -0.10).all()
