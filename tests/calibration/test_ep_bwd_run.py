"""calibration.ep_bwd_run and pipeline.ADOPT_EP_BWD_RUN_HOST (s24bwd3, docs/notes/s24bwd3_rule.md): the EP
backward's host rate read from the run's own fitting EP2 step (the slower rank's, level ops only) and given to
the EP backward of that run's held-out steps; both settings."""

import numpy as np
import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import ep_bwd_run, prereg
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import EpBwdTokensCall, gpu_spec
from calibration.records_io import read_csv
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

HOST = {"fwd": 25e-6, "bwd": 21e-6, "ep_tokens_a2a": 194e-6}


@pytest.fixture(scope="module")
def profile():
    return load_fitted_profile("h100", rec.load_records("h100"), PROFILES_DIR)[0]


def _bw_counts(profile) -> tuple[int, int]:
    """(launches, all-to-all nodes) of bench-small's (4 layers, 1 x 1,024) whole-model B + W lists at ep 2."""
    spec = get_model("bench-small")
    so = pipe.stage_ops(spec, range(spec.num_layers), True, True, 1, 1024, "bf16", gpu_spec("h100"), profile, 2)
    launches = sum(h is not None for h, _ in so.b + so.w)
    return launches, sum(isinstance(o, EpBwdTokensCall) for o in so.b)


def _bw_op(rank: int, host_s: float, lead_s: float = 0.0, lag_s: float = 0.0, split: str = "fit") -> dict:
    return {"model": "bench-small", "micro_batch_seqs": 1, "seq_len": 1024, "precision": "bf16", "pp": 1, "ep": 2,
            "num_microbatches": 1, "split": split, "kind": "BW", "rank": rank, "host_start_s": 1.0,
            "host_end_s": 1.0 + host_s, "start_s": 1.0 + lead_s, "end_s": 1.0 + host_s + lag_s}


def test_fit_rates_are_the_level_ops_issue_less_the_nodes_the_slower_rank_the_input(profile):
    launches, nodes = _bw_counts(profile)
    assert nodes == 6                                  # combine's and dispatch's backward, 3 MoE layers
    node_s = nodes * pipe.EP_BWD_A2A_CALL_S
    rank0 = [node_s + (launches - nodes) * r for r in (20e-6, 22e-6, 24e-6)]      # median 22 us a launch
    rank1 = [node_s + (launches - nodes) * 30e-6]
    ops = pd.DataFrame([_bw_op(0, h) for h in rank0] + [_bw_op(1, h) for h in rank1]
                       + [_bw_op(1, 1.0, lead_s=8e-3),                 # GPU-bound (host 8 ms ahead): not level
                          _bw_op(1, 1.0, lag_s=30e-3),                 # GPU ended 30 ms after its host: not level
                          _bw_op(0, 1.0, split="holdout")])            # a held-out op: never read
    rates = ep_bwd_run.fit_bwd_rates(ops, 4, "h100", profile)
    assert rates.keys() == {0, 1}
    assert np.isclose(rates[0], 22e-6) and np.isclose(rates[1], 30e-6)
    assert ep_bwd_run.fit_bwd_rates(ops[ops["start_s"] > 1.005], 4, "h100", profile) == {}


def test_on_the_fitting_record_the_host_bound_model_gives_an_input_and_the_gpu_bound_none(profile):
    """h100x2/s23bwd_20261128_0110 (s23bwd's EP2 fitting steps at 1 micro-batch): bench-small's ranks 24.3 / 32.2 us
    a launch (the rule's derivation); qwen3moe-slice's backwards lead their GPU by 8-10 ms: no input."""
    run = rec.MEASUREMENTS_DIR / "h100x2" / "s23bwd_20261128_0110"
    small = read_csv(run / "bench-small" / "pipeline_host.csv")
    rates = ep_bwd_run.fit_bwd_rates(small[small["num_microbatches"] == 1], 4, "h100", profile)
    assert {r: round(v * 1e6, 1) for r, v in rates.items()} == {0: 24.3, 1: 32.2}
    qwen = read_csv(run / "qwen3moe-slice" / "pipeline_host.csv")
    assert ep_bwd_run.fit_bwd_rates(qwen, 4, "h100", profile) == {}


def test_the_switch_gives_an_ep_backward_the_run_rate_and_the_node_term(monkeypatch):
    run = {**HOST, pipe.EP_BWD_RUN_KEY: 33e-6}
    monkeypatch.setattr(pipe, "ADOPT_EP_BWD_RUN_HOST", False)
    assert pipe.ep_bwd_host(run, "h100", 2) == (21e-6, None, {})
    monkeypatch.setattr(pipe, "ADOPT_EP_BWD_RUN_HOST", True)
    assert pipe.ep_bwd_host(run, "h100", 2) == (33e-6, 33e-6, {pipe.EP_BWD_A2A_TERM: pipe.EP_BWD_A2A_CALL_S})
    assert pipe.ep_bwd_host(run, "h100", 1) == (21e-6, None, {})          # no EP: untouched
    assert pipe.ep_bwd_host(HOST, "h100", 2) == (21e-6, None, {})         # no run input: as off


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_no_committed_host_dict_carries_the_run_input(gpu):
    """G1: the committed <gpu>x2 folder's rates (every committed EP figure's pricing) never hold the key, so the
    switch cannot move a committed figure."""
    host = prereg.two_gpu_inputs(gpu)[2]
    assert host and pipe.EP_BWD_RUN_KEY not in host


# the first delivery of real/campaigns/s24bwd3.sh (at e3622c4a): asked 2xH100, served by 2xH200 (not the designated
# card: reported, no verdict)
RUN = rec.MEASUREMENTS_DIR / "h200x2" / "s24bwd3_20261128_0302"


@pytest.fixture(scope="module")
def h200_inputs():
    return prereg.two_gpu_inputs("h200")


def _run_table(h200_inputs, on: bool, routed_counts: bool = True) -> pd.DataFrame:
    old = pipe.ADOPT_EP_BWD_RUN_HOST, ep_bwd_run.ADOPT_ROUTED_FIT_COUNTS
    pipe.ADOPT_EP_BWD_RUN_HOST, ep_bwd_run.ADOPT_ROUTED_FIT_COUNTS = on, routed_counts
    try:
        return ep_bwd_run.run_table(RUN, "h200", h200_inputs)
    finally:
        pipe.ADOPT_EP_BWD_RUN_HOST, ep_bwd_run.ADOPT_ROUTED_FIT_COUNTS = old


# the first version's 8l input was 36.2 us before s24sort's (B) (docs/notes/s24sort_rule.md): its balanced backward
# (4,096 rows) had lost index_put_'s radix kernels to torch's argsort threshold, 23 a MoE layer; with them kept
# the balanced and routed backward lists agree and both versions give 30.8
@pytest.mark.parametrize("routed_counts, expected_us", [(True, {"bench-small-5l": 27.8, "bench-small-8l": 30.8}),
                                                         (False, {"bench-small-5l": 27.8, "bench-small-8l": 30.8})])
def test_the_run_gives_its_host_bound_parts_an_input_and_the_control_none(h200_inputs, routed_counts, expected_us):
    """The run's inputs (A1: the fitting step's launches on its routed op lists; first version: balanced lists),
    the GPU-bound control (qwen3moe-slice, its backward ~8 ms behind its host) none."""
    t = _run_table(h200_inputs, True, routed_counts)
    got = t.groupby("part")["run_bwd_host_s"].first()
    assert {p: round(v * 1e6, 1) for p, v in got.dropna().items()} == expected_us
    assert np.isnan(got["qwen3moe-1k"])


@pytest.mark.parametrize("routed_counts", [True, False])
def test_r3_r4_on_the_2xh200_delivery_bench_small_moves_toward_the_records_the_control_stays(h200_inputs, routed_counts):
    """R3 (bench-small median |error| 18.19% off -> 5.76% under A1 and the first version alike, with s24sort's
    per-sort paths; before them 16.95% -> 8.04% / 9.28%) and R4 (the control, no input, exactly as off): reported
    on the 2xH200 substitute."""
    off, on = _run_table(h200_inputs, False, routed_counts), _run_table(h200_inputs, True, routed_counts)
    assert len(off) == 9 and (off["rel_error_committed"] == off["rel_error_run"]).all()   # off: the run key inert
    small = off["model"] == "bench-small"
    assert on.loc[small, "rel_error_run"].abs().median() < off.loc[small, "rel_error_committed"].abs().median()
    assert (on.loc[~small, "rel_error_run"] == off.loc[~small, "rel_error_committed"]).all()


@pytest.mark.parametrize("routed_counts", [
    pytest.param(True, marks=pytest.mark.xfail(strict=True, reason=(
        "s24bwd3 2xH200 delivery, A1 (switch on), with s24sort's per-sort paths: median 4.52%, P90 7.28%, "
        "bench-small-8l n 3 +6.7%: R2 (no row over +3%) missed; off 14.08 / 21.46% (before s24sort: on 4.52 / "
        "10.69%, 8l n 3 +12.1%; off 8.79 / 19.58%)"))),
    pytest.param(False, marks=pytest.mark.xfail(strict=True, reason=(
        "s24bwd3 2xH200 delivery, first version (switch on), with s24sort's per-sort paths: as A1 (4.52 / 7.28%, "
        "8l n 3 +6.7%): R2 missed (before s24sort: 6.46 / 19.47%, 8l n 3 +20.9%)")))])
def test_r1_r2_the_fresh_steps_meet_issue13_target_without_over_prediction(h200_inputs, routed_counts):
    err = _run_table(h200_inputs, True, routed_counts)["rel_error_run"]
    a = err.abs()
    assert a.median() <= 0.05 and np.percentile(a, 90) <= 0.10 and err.max() <= 0.03, err.to_list()
