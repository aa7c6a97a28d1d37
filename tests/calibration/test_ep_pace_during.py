"""calibration.ep_pace_during (s26eprate round 2, docs/notes/s26eprate2_rule.md): the companion's samples are kept by
the op host interval they lie in, the fitting ratio is pooled over ranks, a held-out configuration takes the slower
rank's pace, and the switch is off with no committed host dict carrying the keys."""

import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import ep_pace_during as epd


def _ops(rows):
    return pd.DataFrame(rows, columns=["num_microbatches", "rep", "rank", "op_index", "kind", "host_start_s",
                                       "host_end_s"])


def _samples(rows):
    return pd.DataFrame(rows, columns=["num_microbatches", "rep", "rank", "t_s", "sample_s", "duty"])


OPS = _ops([(1, 0, 0, 0, "F", 0.000, 0.010), (1, 0, 0, 1, "BW", 0.010, 0.030),
            (1, 0, 1, 0, "F", 0.000, 0.012), (1, 0, 1, 1, "BW", 0.012, 0.030),
            (2, 0, 0, 0, "F", 0.000, 0.010), (2, 0, 0, 1, "F", 0.010, 0.020), (2, 0, 0, 2, "BW", 0.020, 0.060),
            (2, 0, 1, 0, "F", 0.000, 0.010), (2, 0, 1, 1, "F", 0.010, 0.020), (2, 0, 1, 2, "BW", 0.020, 0.060)])
SAMPLES = _samples([(1, 0, 0, 0.002, 10e-6, .01), (1, 0, 0, 0.004, 12e-6, .01), (1, 0, 0, 0.020, 30e-6, .01),
                    (1, 0, 1, 0.005, 20e-6, .01), (1, 0, 1, 0.025, 40e-6, .01), (1, 0, 1, 0.050, 99e-6, .01),
                    (2, 0, 0, 0.001, 11e-6, .01), (2, 0, 0, 0.015, 13e-6, .01), (2, 0, 0, 0.030, 50e-6, .01),
                    (2, 0, 1, 0.001, 30e-6, .01), (2, 0, 1, 0.040, 60e-6, .01), (2, 1, 1, 0.001, 77e-6, .01)])


def test_samples_are_kept_by_the_op_interval_of_their_step_and_rank():
    got = epd.samples_in(SAMPLES, OPS[OPS["kind"] == "F"])
    # rank 1's sample at 0.050 s lies after its last op; (2, rep 1) has no op rows: both dropped
    assert sorted(got["sample_s"].round(9)) == sorted([10e-6, 12e-6, 20e-6, 11e-6, 13e-6, 30e-6])
    fit = epd.fit_op_pace(SAMPLES, OPS, "F").set_index("rank")["pace_s"]
    assert fit[0] == pytest.approx(11e-6) and fit[1] == pytest.approx(20e-6)
    held = epd.held_pace(SAMPLES, OPS)[2]
    assert held["fwd"] == pytest.approx({0: 12e-6, 1: 30e-6})
    assert held["bwd"] == pytest.approx({0: 50e-6, 1: 60e-6})
    assert held["step"][1] == pytest.approx(60e-6)   # every sample of the held-out steps of rank 1


def test_the_ratio_is_pooled_over_ranks_and_the_slower_rank_sets_the_rate():
    fit = pd.DataFrame({"rank": [0, 1, 0], "rep": [0, 0, 1], "rate_s": [20e-6, 44e-6, 26e-6],
                        "pace_s": [10e-6, 20e-6, 10e-6]})
    fit["ratio"] = fit["rate_s"] / fit["pace_s"]   # 2.0, 2.2, 2.6: median 2.2
    assert epd.pooled_rate_s(fit, {0: 12e-6, 1: 15e-6}) == pytest.approx(2.2 * 15e-6)
    assert epd.pooled_rate_s(fit.iloc[:0], {0: 12e-6}) is None and epd.pooled_rate_s(fit, {}) is None


def test_the_switch_is_off_and_reads_the_round_one_keys(monkeypatch):
    assert pipe.ADOPT_EP_PACE_DURING is False
    host = {"fwd": 25e-6, "bwd": 21e-6, pipe.EP_BWD_PROBE_KEY: 33e-6}
    monkeypatch.setattr(pipe, "ADOPT_EP_PROBE_HOST", False)
    assert pipe.ep_bwd_host(host, "h200", 2) == (21e-6, None, {})
    monkeypatch.setattr(pipe, "ADOPT_EP_PACE_DURING", True)
    assert pipe.ep_bwd_host(host, "h200", 2) == (33e-6, 33e-6, {pipe.EP_BWD_A2A_TERM: pipe.EP_BWD_A2A_CALL_S})
    assert pipe.ep_bwd_host(host, "h200", 1) == (21e-6, None, {})   # no EP: untouched
