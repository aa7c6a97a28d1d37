"""ADOPT_SLOWEST_BOARD_PACE (docs/notes/s29mlm_rule.md): the expected slowest of N boards, and the step's default
profile paced by it while a profile passed in (a calibration record's own board) is left alone."""

import math

import pytest

from twin.core.scenario import from_dict
from twin.costs import board_pace
from twin.training import step


def test_expected_max_of_standard_normals_matches_the_order_statistics_tables():
    # E[max of n] for n = 1, 2 (1/sqrt(pi)), 10 and 100 (Harter 1961): 0, 0.5642, 1.5388, 2.5076
    assert board_pace.expected_max_std_normal(1) == pytest.approx(0.0, abs=1e-6)
    assert board_pace.expected_max_std_normal(2) == pytest.approx(1.0 / math.sqrt(math.pi), abs=1e-4)
    assert board_pace.expected_max_std_normal(10) == pytest.approx(1.5388, abs=1e-4)
    assert board_pace.expected_max_std_normal(100) == pytest.approx(2.5076, abs=1e-4)
    with pytest.raises(ValueError):
        board_pace.expected_max_std_normal(0)


def test_slowest_board_factor_is_one_plus_cv_times_z():
    assert board_pace.slowest_board_factor(1, 0.01) == 1.0                # one board waits for nobody
    assert board_pace.slowest_board_factor(48, 0.01) == pytest.approx(1.0 + 0.01 * 2.2331, abs=1e-5)
    assert board_pace.slowest_board_factor(6144, 0.0) == 1.0


def _scenario(num_gpus):
    return from_dict({"name": "t", "model": {"name": "megatron-gpt-1.7b"}, "cluster": {"gpu": "h100", "num_gpus": num_gpus},
                      "plan": {"tp": 1, "pp": 1, "ep": 1, "zero_stage": 1, "micro_batch_seqs": 1, "comm_sms": 0,
                               "schedule": "1f1b"},
                      "workload": {"seq_len": 4096, "global_batch_seqs": num_gpus}}, "t")


def test_only_the_default_profile_is_paced_and_only_its_compute(monkeypatch):
    sc = _scenario(48)
    monkeypatch.setattr(step, "ADOPT_SLOWEST_BOARD_PACE", False)
    off = step.plan_profile(sc)
    monkeypatch.setattr(step, "ADOPT_SLOWEST_BOARD_PACE", True)
    monkeypatch.setattr(board_pace, "BOARD_HELD_RATE_CV", 0.01)
    on = step.plan_profile(sc)
    f = 1.0 / board_pace.slowest_board_factor(48)
    assert on.gemm["bf16"].e_max == pytest.approx(off.gemm["bf16"].e_max * f, rel=1e-12)
    assert on.attention["fwd"].e_max == pytest.approx(off.attention["fwd"].e_max * f, rel=1e-12)
    assert on.memory_eff == off.memory_eff                          # HBM is not what the cap moves
    assert step.plan_profile(sc, off) == off                        # a profile passed in is its own board's
    assert step.plan_profile(_scenario(1)).gemm["bf16"].e_max == off.gemm["bf16"].e_max   # one GPU: nothing
