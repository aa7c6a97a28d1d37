"""Megatron's interleaved 1F1B: programs, the (PP-1)(F+B)/V bubble, refusals."""

import json
import math

import pytest

from twin.cli.main import main
from twin.core.errors import ScenarioError
from twin.core.schedules import build_schedule, num_stages
from twin.sim.ideal import ideal_schedule


def prog(schedule, rank):
    return " ".join(map(str, schedule.programs[rank]))


def test_program_by_hand():
    # PP=2, V=2, N=2. Rank r warms up with (PP-r-1)*2 + (V-1)*PP forwards: rank 0 all 4, rank 1 two.
    # The k-th forward is chunk (k mod 4) // 2 of micro-batch k mod 2 (groups of PP micro-batches per
    # chunk); the k-th backward the same micro-batch in chunk 1 - (k mod 4) // 2.
    s = build_schedule("interleaved-1f1b", 2, 2, virtual_stages=2)
    assert prog(s, 0) == "F0.0 F1.0 F0.1 F1.1 BW0.1 BW1.1 BW0.0 BW1.0"
    assert prog(s, 1) == "F0.0 F1.0 F0.1 BW0.1 F1.1 BW1.1 BW0.0 BW1.0"
    # stages: rank r holds r and r + PP; rank 1's chunk 0 feeds rank 0's chunk 1
    assert [s.stage_of(r, c) for r in (0, 1) for c in (0, 1)] == [0, 2, 1, 3]
    assert s.forward_upstream(0, 1) == (1, 0) and s.backward_upstream(1, 0) == (0, 1)
    assert s.num_model_stages == num_stages("interleaved-1f1b", 2, 2) == 4


@pytest.mark.parametrize("pp, v, m", [(16, 8, 32), (16, 8, 16), (4, 2, 8), (4, 3, 12)])
def test_warm_up_is_torch_s_interleaved_1f1b(pp, v, m):
    # torch.distributed.pipelining ScheduleInterleaved1F1B (schedules.py get_rank_warmup_ops): rank r
    # runs min((V - 1) N + 2 (PP - 1 - r), M V) warm-up forwards, N = M / max(1, M // PP), then its
    # first steady step's forward before the first backward (Llama 3's layout: PP 16, V 8, M 32 / 16)
    s = build_schedule("interleaved-1f1b", pp, m, virtual_stages=v)
    n = m // max(1, m // pp)
    for rank, program in enumerate(s.programs):
        warm_up = min((v - 1) * n + 2 * (pp - 1 - rank), m * v)
        forwards_first = next((i for i, op in enumerate(program) if op.kind != "F"), len(program))
        assert forwards_first == min(warm_up + 1, m * v), (rank, forwards_first, warm_up)


@pytest.mark.parametrize("pp", (2, 4, 8))
@pytest.mark.parametrize("v", (2, 3, 4))
@pytest.mark.parametrize("groups", (1, 2, 4))
def test_bubble_equals_pp_minus_one_f_plus_b_over_v(pp, v, groups):
    # F, B: a whole stage's forward and backward, each of its V chunks taking 1/V of them
    F, B = 1.0, 2.0
    out = ideal_schedule("interleaved-1f1b", pp, groups * pp, F, B, 1.0, virtual_stages=v)
    assert math.isclose(out["bubble_s"], (pp - 1) * (F + B) / v, rel_tol=1e-12)
    assert out["formula_bubble_s"] == (pp - 1) * (F + B) / v and "note" not in out


def test_bubble_formula_holds_for_other_op_times_and_beats_1f1b():
    out = ideal_schedule("interleaved-1f1b", 4, 16, 1.0, 3.0, 0.5, virtual_stages=2)
    assert math.isclose(out["bubble_s"], 3 * 4.0 / 2, rel_tol=1e-12)
    plain = ideal_schedule("1f1b", 4, 16, 1.0, 3.0, 0.5)
    assert out["bubble_s"] == pytest.approx(plain["bubble_s"] / 2)


def test_refusals_name_the_field():
    with pytest.raises(ScenarioError, match="plan.virtual_stages.*1 for schedule '1f1b'"):
        build_schedule("1f1b", 4, 8, virtual_stages=2)
    with pytest.raises(ScenarioError, match="plan.virtual_stages.*>= 2"):
        build_schedule("interleaved-1f1b", 4, 8, virtual_stages=1)
    with pytest.raises(ScenarioError, match="plan.num_microbatches.*multiple of pp = 4"):
        build_schedule("interleaved-1f1b", 4, 6, virtual_stages=2)


def test_cli(capsys):
    rc = main(["schedule", "interleaved-1f1b", "--pp", "4", "--virtual-stages", "2", "--microbatches", "8",
               "--f", "2", "--b", "4", "--json", "-"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["virtual_stages"] == 2 and out["bubble_s"] == pytest.approx(9.0)   # 3 x 6 / 2
    assert main(["schedule", "dualpipe", "--pp", "4", "--virtual-stages", "2", "--microbatches", "8"]) == 2
    assert "--virtual-stages" in capsys.readouterr().err
