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


FRESH_RUN = rec.MEASUREMENTS_DIR / "h200x2" / "s23bwd2_20261128_0124"   # the rule's fresh run (2xH200 substitute)


@pytest.fixture(scope="module")
def fresh_inputs():
    """The committed h200x2 folder's pricing inputs, computed once."""
    return {"h200": prereg.two_gpu_inputs("h200")}


def _fresh_errors(fresh_inputs, on: bool) -> pd.DataFrame:
    """The fresh EP2 steps (split holdout) priced as the rule's `committed` (prereg.predict_ep at the run's routing)."""
    old, pipe.ADOPT_EP_BWD_HOST = pipe.ADOPT_EP_BWD_HOST, on
    try:
        out = []
        for part in sorted(p for p in FRESH_RUN.iterdir() if p.is_dir()):
            steps = read_csv(part / "pipeline_step.csv")
            steps = steps[(steps["split"] == "holdout") & (steps["bench"] == "ep_step")]
            rows = [{"gpu": "h200", **r} for r in steps.to_dict("records")]
            pred = prereg.predict_ep(rows, routing=read_csv(part / "pipeline_routing.csv"), inputs=fresh_inputs)
            out.append(pd.DataFrame({"model": steps["model"].to_numpy(),
                                     "err": pred["predicted_s"].to_numpy() / steps["time_s"].to_numpy() - 1}))
        return pd.concat(out, ignore_index=True)
    finally:
        pipe.ADOPT_EP_BWD_HOST = old


def test_on_the_fresh_bench_small_steps_move_toward_the_records(fresh_inputs):
    """F3 (reported on the 2xH200 substitute): the all-to-all node term, the only part that applies on H200 (the
    h200x2 folder measures its own backward rate), lowers the fresh bench-small rows' median |error|."""
    off, on = _fresh_errors(fresh_inputs, False), _fresh_errors(fresh_inputs, True)
    assert len(off) == 9
    small = off["model"] == "bench-small"
    assert on.loc[small, "err"].abs().median() < off.loc[small, "err"].abs().median()
    assert (on.loc[~small, "err"] == off.loc[~small, "err"]).all()     # the GPU-bound control does not move


@pytest.mark.xfail(strict=True, reason="s23bwd2 fresh EP2 steps (2xH200 substitute, switch off as on main): median "
                   "4.06%, P90 20.45% (bench-small 2 x 1,024 -20.2 to -20.8%); with ADOPT_EP_BWD_HOST 4.90 / 16.43%, "
                   "bench-small 6 layers n 1 +5.3%: issue 13's ep_step target (5% / 10%) missed")
def test_the_fresh_steps_meet_issue13_target(fresh_inputs):
    err = _fresh_errors(fresh_inputs, pipe.ADOPT_EP_BWD_HOST)["err"].abs()
    assert err.median() <= 0.05 and np.percentile(err, 90) <= 0.10, err.to_list()
