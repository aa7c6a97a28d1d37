"""The AccumulateGrad path placed op by op (docs/notes/s17pair2_rule.md): the first backward of each
copy (rank, chunk) takes the first path (no .grad yet: stolen / cloned), every later one the add path;
with the switch off every backward of a stage pays the stage's average."""

import json

import pytest

from calibration import pipeline as pipe
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from twin.core.schedules import build_schedule
from twin.costs.profile import profile_from_json


@pytest.mark.parametrize("name", ["1f1b", "zb1p", "dualpipe", "dualpipev"])
@pytest.mark.parametrize("n", [4, 8])
def test_each_copy_has_one_first_input_and_one_first_weight_grad(name, n):
    schedule = build_schedule(name, 2, n)
    flags = pipe.first_backward_parts(schedule)
    for rank, program in enumerate(schedule.programs):
        chunks = {op.chunk for op in program} | {op.b_chunk for op in program if op.b_chunk is not None}
        firsts_b = [k for k in range(len(program)) if flags.get((rank, k), (None, None))[0]]
        firsts_w = [k for k in range(len(program)) if flags.get((rank, k), (None, None))[1]]
        assert len(firsts_b) == len(firsts_w) == len(chunks)
        # a copy's first weight-grad part never comes before its first input-grad part
        for c in chunks:
            kb = min(k for k in firsts_b if program[k].backward_part[1] == c)
            kw = min(k for k in firsts_w
                     if (program[k].chunk if program[k].kind in ("W", "BW") else program[k].b_chunk) == c)
            assert kb <= kw


def test_dualpipev_first_backwards_at_n4():
    """PP2, n4, rank 0: chunk 1's first backward is B0.1 and its first W is W0.1 (ops 4 and 5); chunk
    0's first is the backward of F2.1&BW0.0 (op 8), after F3.0&BW1.1 (op 7: chunk 1's second)."""
    schedule = build_schedule("dualpipev", 2, 4)
    program = schedule.programs[0]
    flags = pipe.first_backward_parts(schedule)
    assert str(program[4]) == "B0.1" and flags[0, 4] == (True, None)
    assert str(program[5]) == "W0.1" and flags[0, 5] == (None, True)
    assert str(program[7]) == "F3.0&BW1.1" and flags[0, 7] == (False, False)
    assert str(program[8]) == "F2.1&BW0.0" and flags[0, 8] == (True, True)


def _row(schedule: str) -> dict:
    return {"model": "v2-lite-slice", "schedule": schedule, "pp": 2, "ep": 1, "dp": 1, "num_microbatches": 4,
            "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "num_layers": 8}


def _spans_ms(result, rank: int) -> dict:
    return {label: (e - s) * 1e3 for r, label, s, e in result.op_spans if r == rank}


@pytest.mark.parametrize("on", [False, True])
def test_first_backward_of_a_copy_is_cheaper_only_with_the_switch(monkeypatch, on):
    """DualPipe rank 0, PP2 n4: BW2.1 (chunk 1's first backward) and BW3.1 (its second) run the same
    stage; with the switch on the first is the cheaper, off they cost the same."""
    monkeypatch.setattr(pipe, "ADOPT_FIRST_BACKWARD_PLACEMENT", on)
    profile = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    result, _, _ = pipe.simulate_row(_row("dualpipe"), gpu_spec("h200"), profile)
    spans = _spans_ms(result, 0)
    if on:
        assert spans["BW2.1"] < spans["BW3.1"] - 0.1
    else:
        assert spans["BW2.1"] == pytest.approx(spans["BW3.1"], abs=1e-6)


def test_placed_parts_with_equal_stage_ops_are_op_parts():
    """With the same stage ops as first and later, placement gives op_parts' lists (only the choice of
    list differs between the settings)."""
    schedule = build_schedule("dualpipev", 2, 4)
    ops = {s: pipe.StageOps([(1e-6, 1e-3)], [(1e-6, 2e-3)], [(1e-6, 3e-3)]) for s in range(schedule.num_model_stages)}
    placed = pipe.placed_parts(schedule, ops, ops)
    for rank, program in enumerate(schedule.programs):
        for k, op in enumerate(program):
            assert placed[rank, k] == pipe.op_parts(schedule, ops, rank, op)


def test_placement_counts_the_copies_by_itself(monkeypatch):
    """With the placement on, each (rank, chunk) has its own first backward, so DualPipe's two copies are
    counted apart whether s17pair's copy fraction is on or off: the step is the same in both."""
    monkeypatch.setattr(pipe, "ADOPT_FIRST_BACKWARD_PLACEMENT", True)
    profile = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    steps = []
    for copies in (False, True):
        monkeypatch.setattr(pipe, "ADOPT_COPY_ACCUMULATE_FRAC", copies)
        steps.append(pipe.simulate_row(_row("dualpipe"), gpu_spec("h200"), profile)[1])
    assert steps[0] == pytest.approx(steps[1], rel=1e-12)
