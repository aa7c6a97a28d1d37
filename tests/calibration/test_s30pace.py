"""ADOPT_SERVE_BOARD_PACE (docs/notes/s30pace_rule.md): a serving instance of N > 1 GPUs on the default profile runs
its GEMM and attention curves at the slowest of its boards, the training step's factor (twin.costs.board_pace); the
committed judgement (calibration/s30pace_judgement.json, `python -m calibration.s30pace_judge`) and the switch agree,
and one published row recomputed live holds the judgement's figure."""

from pathlib import Path

import pytest

import calibration.s30pace_judge as judge
from calibration.records_io import read_json
from twin.core.serve_specs import ServeSpec
from twin.core.specs import get_gpu
from twin.costs import board_pace
from twin.serving import iteration

JUDGEMENT = Path(judge.__file__).resolve().parent / "s30pace_judgement.json"


@pytest.fixture(scope="module")
def judged():
    return read_json(JUDGEMENT)


def test_the_instance_gpus_set_the_pace_and_one_gpu_or_a_passed_profile_is_untouched(monkeypatch):
    gpu = get_gpu("h200")
    monkeypatch.setattr(iteration, "ADOPT_SERVE_BOARD_PACE", False)
    off = iteration.serving_profile(gpu, ServeSpec(ep=8, tp=8, dp_attention=False))
    monkeypatch.setattr(iteration, "ADOPT_SERVE_BOARD_PACE", True)
    monkeypatch.setattr(board_pace, "BOARD_HELD_RATE_CV", 0.01)
    on = iteration.serving_profile(gpu, ServeSpec(ep=8, tp=8, dp_attention=False))
    # z(8) = 1.4236 (order-statistics tables): the curves' e_max over 1 + 0.01 x 1.4236
    assert on.gemm["bf16"].e_max == pytest.approx(off.gemm["bf16"].e_max / 1.014236, rel=1e-5)
    assert on.attention["fwd"].e_max == pytest.approx(off.attention["fwd"].e_max / 1.014236, rel=1e-5)
    assert on.memory_eff == off.memory_eff                                    # HBM is not what the cap moves
    assert iteration.serving_profile(gpu, ServeSpec(ep=1)).gemm["bf16"].e_max == off.gemm["bf16"].e_max
    assert iteration.serving_profile(gpu, ServeSpec(ep=8, tp=8, dp_attention=False), off) == off   # its own board


def test_the_judgement_and_the_switch_agree(judged):
    assert judged["rule"] == "docs/notes/s30pace_rule.md"
    assert set(judged["guards"]) == {"G0", "G1", "G2", "G3", "G4"}
    assert judged["adopt"] is all(judged["guards"].values())
    assert iteration.ADOPT_SERVE_BOARD_PACE is judged["adopt"]
    s = judged["sets"]
    assert s["G0"] == (not s["one_gpu_moved"])
    assert s["G1"] == (not [k for k in s["lost"] if k.startswith("committed_holdout|")])
    assert s["G2"] == (not [k for k in s["lost"] if not k.startswith("committed_holdout|")])
    assert judged["guards"]["G3"] == (not judged["published"]["left_band"])


def test_a_published_row_recomputed_live_holds_the_judgements_figure(judged):
    # DeepSeek's decode profile (EP128, one decode step: ~0.2 s) under the setting in force
    from twin.serving.published import deepseek_decode_profile
    row = deepseek_decode_profile()
    label = "on" if iteration.ADOPT_SERVE_BOARD_PACE else "off"
    assert row["predicted"] == pytest.approx(judged["published"][label][row["scenario"]]["predicted"], rel=1e-9)
