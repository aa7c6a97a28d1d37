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
