"""calibration.ep_postsync and the post-sync host ratio (s23ephost, issue 13): which launches of an EP
forward take the ratio (calibration.predict.with_host_terms: from dispatch's receive-splits .tolist()
to combine's all-to-all call), and that ADOPT_EP_POSTSYNC_HOST off leaves every op as it was."""

import numpy as np
import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import ep_postsync, prereg
from calibration import records as rec
from calibration.predict import EP_POSTSYNC_TERM, EP_PRESYNC_TERM, EpCountsCall, EpRecvSync, EpSendSync, EpTokensCall, with_host_terms


def _layer(tag: float) -> list:
    """One EP MoE layer's forward as whole_step._dispatch / _combine lay it out, each launch's GPU
    seconds `tag` + its place (so a test can tell the ops apart): 2 launches, the counts call, the
    send sync, the receive sync, a gather, dispatch's token call, 3 local launches, combine's token
    call, 1 launch after it."""
    ops = [(10e-6, tag + 1), (10e-6, tag + 2), EpCountsCall((10e-6, tag + 3)), EpSendSync((None, 0.0)),
           EpRecvSync((None, 0.0)), (10e-6, tag + 4), EpTokensCall((10e-6, tag + 5))]
    ops += [(10e-6, tag + 6 + j) for j in range(3)]
    ops += [EpTokensCall((10e-6, tag + 9)), (10e-6, tag + 10)]
    return ops


TERMS = {"ep_counts_a2a": 150e-6, "ep_tokens_a2a": 180e-6, "ep_send_sync": 50e-6, "ep_recv_sync": 20e-6}


def test_the_ratio_takes_the_launches_between_the_receive_sync_and_combines_call():
    ops = _layer(0.0) + _layer(100.0)
    plain = with_host_terms(ops, 30e-6, TERMS)
    scaled = with_host_terms(ops, 30e-6, {**TERMS, EP_POSTSYNC_TERM: 2.0})
    assert len(plain) == len(scaled)
    changed = [(a, b) for a, b in zip(plain, scaled) if a != b]
    # per layer the gather and the three local launches (4), never the calls, syncs or the launches
    # before the counts call or after combine's call
    assert len(changed) == 2 * 4
    assert all(b[0] == pytest.approx(2.0 * a[0]) and a[0] == pytest.approx(30e-6) and a[1] == b[1]
               for a, b in changed)
    assert sorted(round(a[1] % 100) for a, _ in changed) == [4, 4, 6, 6, 7, 7, 8, 8]
    # the calls keep their measured terms, typed as before (ep_host.twin_groups reads them)
    calls = [op for op in scaled if isinstance(op, EpTokensCall)]
    assert [op[0] for op in calls] == [180e-6] * 4


def test_no_ratio_and_a_ratio_of_one_change_nothing():
    ops = _layer(0.0)
    assert with_host_terms(ops, 30e-6, TERMS) == with_host_terms(ops, 30e-6, {**TERMS, EP_POSTSYNC_TERM: 1.0})
    assert with_host_terms(ops, None, None) is ops


def test_the_switches_give_the_terms_only_when_on(monkeypatch):
    monkeypatch.setattr(pipe, "EP_POSTSYNC_RATIO", {"h100": 0.5, "h200": 0.7})
    monkeypatch.setattr(pipe, "EP_REST_RATIO", {"h100": 1.5})
    monkeypatch.setattr(pipe, "ADOPT_EP_POSTSYNC_HOST", False)
    monkeypatch.setattr(pipe, "ADOPT_EP_REST_HOST", True)
    assert pipe.postsync_terms("h100") == {}                       # B only with A
    monkeypatch.setattr(pipe, "ADOPT_EP_POSTSYNC_HOST", True)
    assert pipe.postsync_terms("h100") == {EP_POSTSYNC_TERM: 0.5, EP_PRESYNC_TERM: 1.5}
    assert pipe.postsync_terms("h200") == {EP_POSTSYNC_TERM: 0.7, EP_PRESYNC_TERM: 1.5}   # no H200 rest ratio: H100's
    assert pipe.postsync_terms("h800")[EP_POSTSYNC_TERM] == pytest.approx(0.6)   # a GPU without a run: the median
    monkeypatch.setattr(pipe, "ADOPT_EP_REST_HOST", False)
    assert pipe.postsync_terms("h100") == {EP_POSTSYNC_TERM: 0.5}


def test_the_rest_ratio_takes_every_other_launch_of_an_ep_forward_only():
    ops = _layer(0.0) + _layer(100.0)
    terms = {**TERMS, EP_POSTSYNC_TERM: 0.5, EP_PRESYNC_TERM: 2.0}
    plain, scaled = with_host_terms(ops, 30e-6, TERMS), with_host_terms(ops, 30e-6, terms)
    factors = sorted(round(b[0] / a[0], 6) for a, b in zip(plain, scaled) if a[0] is not None and a != b)
    assert factors == [0.5] * 8 + [2.0] * 6          # per layer 4 post-sync launches, 3 others
    dense = [(10e-6, 1.0), (10e-6, 2.0)]             # a forward without EP ops: untouched
    assert with_host_terms(dense, 30e-6, terms) == with_host_terms(dense, 30e-6, TERMS)


def test_a_forward_rate_solved_with_the_ratio_reproduces_its_interval():
    """calibration.pipeline.solved_host_rate_s (the 4-GPU folders solve their EP forwards' rate with the
    carried terms in place) inverts the issue model with the post-sync launches at ratio x the rate."""
    ops = [op if op[0] is None else type(op)((op[0], 20e-6)) for op in _layer(0.0) + _layer(100.0)]   # short kernels
    terms = {**TERMS, EP_POSTSYNC_TERM: 1.7}
    rate = 35e-6
    _, host_end = pipe.issue(with_host_terms(ops, rate, terms), 0.0)
    assert pipe.solved_host_rate_s(ops, 0.0, host_end, 0.0, terms) == pytest.approx(rate, rel=1e-6)
    # the same interval read without the ratio solves to a faster rate per launch
    assert pipe.solved_host_rate_s(ops, 0.0, host_end, 0.0, TERMS) > rate


def test_the_ratios_are_the_fitting_marks_of_the_committed_run():
    """EP_POSTSYNC_RATIO / EP_REST_RATIO are calibration.ep_postsync's pooled ratios of the committed 2xH100
    run's fit folders (docs/notes/s23ephost_rule.md part 2): the post-sync stretch the host issues in about
    0.57 of the twin's seconds, the rest of the forward in about 1.66; no held-out row enters them."""
    (gpu, run), = [r for r in ep_postsync.runs() if r[1].name == ep_postsync.FIT_RUN]
    table = ep_postsync.fit_table(run, gpu)
    assert len(table) == 6 and (table["post_ratio"] < 1).all() and (table["rest_ratio"] > 1).all()
    pooled = ep_postsync.pooled_ratios(table)
    assert pipe.EP_POSTSYNC_RATIO == {"h100": pytest.approx(pooled["post"], abs=5e-4)}
    assert pipe.EP_REST_RATIO == {"h100": pytest.approx(pooled["rest"], abs=5e-4)}


def test_both_settings_on_an_ep2_step(monkeypatch):
    """qwen3moe-mla-slice's EP2 step (1 micro-batch, 2xH100 host folder), as s20epnew's rows are priced:
    A (post-sync launches at 0.568 of their host seconds) shortens its host-paced forward; B (the rest of
    the forward at 1.658) lengthens it again; both off is the committed path (the switches are off: the
    rule's outcome, docs/notes/s23ephost_rule.md)."""
    assert not pipe.ADOPT_EP_POSTSYNC_HOST and not pipe.ADOPT_EP_REST_HOST
    row = {"gpu": "h100", "bench": "ep_step", "model": "qwen3moe-mla-slice", "schedule": "1f1b", "pp": 1, "ep": 2,
           "dp": 2, "num_gpus": 2, "num_microbatches": 1, "micro_batch_seqs": 1, "seq_len": 4096,
           "precision": "bf16", "num_layers": 4}

    def predicted(a: bool, b: bool) -> float:
        monkeypatch.setattr(pipe, "ADOPT_EP_POSTSYNC_HOST", a)
        monkeypatch.setattr(pipe, "ADOPT_EP_REST_HOST", b)
        return float(prereg.predict_ep([row])["predicted_s"].iloc[0])

    off, a, ab = predicted(False, False), predicted(True, False), predicted(True, True)
    assert a < off and a < ab
    assert off == pytest.approx(predicted(False, True))      # B needs A


@pytest.fixture(scope="module")
def own_rate_rows():
    """The 9 fresh EP2 steps of the committed s23ephost2 run (h100x2/s23ephost2_20261128_0055) priced at each
    folder's own PP2 rate and at the committed folder's (docs/notes/s23ephost2_rule.md)."""
    run = rec.MEASUREMENTS_DIR / "h100x2" / "s23ephost2_20261128_0055"
    return pd.concat([ep_postsync.own_rate_live(run / m, "h100") for m, _ in ep_postsync.OWN_RATE_MODELS],
                     ignore_index=True)


def test_the_fresh_steps_at_their_own_runs_rate_are_no_worse(own_rate_rows):
    """S2 and S3 of the rule: at the run's own rate no worse than at the committed folder's (median and P90),
    and no row over-predicted by more than 5%."""
    df = own_rate_rows
    assert len(df) == 9
    own, committed = df["rel_error_own"].abs(), df["rel_error_committed"].abs()
    assert own.median() <= committed.median() and np.percentile(own, 90) <= np.percentile(committed, 90)
    assert df["rel_error_own"].max() <= 0.05


@pytest.mark.xfail(strict=True, reason="s23ephost2 (2xH100, fresh EP2 steps at two sequences of 2,048): at the run's "
                   "own PP2 rate median 6.58%, P90 17.76%, every row under-predicted (bench-small -21.4 / -15.9 / "
                   "-16.8%): issue 13's ep_step target (5% / 10%) missed")
def test_the_fresh_steps_at_their_own_runs_rate_meet_issue13_target(own_rate_rows):
    own = own_rate_rows["rel_error_own"].abs()
    assert own.median() <= 0.05 and np.percentile(own, 90) <= 0.10, own.to_list()
