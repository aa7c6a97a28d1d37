"""Schedule programs: structure, reference ordering, dataflow layout, input validation."""

import pytest

from twin.core.errors import ScenarioError
from twin.core.schedules import SCHEDULE_NAMES, PipeOp, build_schedule

CASES = [("1f1b", pp, n) for pp in (1, 2, 4, 8) for n in (1, 3, pp, 2 * pp + 1)] \
    + [("zb1p", pp, n) for pp in (1, 2, 4, 8) for n in (1, 3, pp, 2 * pp + 1)] \
    + [("dualpipe", pp, n) for pp in (2, 4, 8) for n in (2 * pp, 2 * pp + 2, 4 * pp)] \
    + [("dualpipev", pp, n) for pp in (1, 2, 4, 8) for n in (2 * pp, 2 * pp + 1, 4 * pp)]


def prog(schedule, rank):
    return " ".join(map(str, schedule.programs[rank]))


@pytest.mark.parametrize("name,pp,n", CASES)
def test_every_forward_and_backward_once_and_w_after_b(name, pp, n):
    s = build_schedule(name, pp, n)
    expected = {(m, c) for m in range(n) for c in s.chunks_of(m)}
    for rank, program in enumerate(s.programs):
        fwd = [op.forward_part for op in program if op.forward_part]
        bwd = [op.backward_part for op in program if op.backward_part]
        assert sorted(fwd) == sorted(expected) and len(fwd) == len(expected)
        assert sorted(bwd) == sorted(expected) and len(bwd) == len(expected)
        seen_f, pending_w = set(), set()
        for op in program:
            if op.forward_part:
                seen_f.add(op.forward_part)
            if op.backward_part:
                assert op.backward_part in seen_f, f"rank {rank}: backward before forward in {op}"
            if op.kind == "B" or (op.kind == "FB" and op.b_split):
                pending_w.add(op.backward_part)
            if op.kind == "W":
                pending_w.remove((op.microbatch, op.chunk))  # KeyError: W without an earlier B
        assert not pending_w, f"rank {rank}: B without W: {pending_w}"


def test_1f1b_program_by_hand():
    # PP=3, 4 micro-batches. Rank r warms up with 2-r forwards, then F/BW pairs, then cooldown.
    s = build_schedule("1f1b", 3, 4)
    assert prog(s, 0) == "F0.0 F1.0 F2.0 BW0.0 F3.0 BW1.0 BW2.0 BW3.0"
    assert prog(s, 1) == "F0.0 F1.0 BW0.0 F2.0 BW1.0 F3.0 BW2.0 BW3.0"
    assert prog(s, 2) == "F0.0 BW0.0 F1.0 BW1.0 F2.0 BW2.0 F3.0 BW3.0"


def test_zb1p_program_by_hand():
    # ZB-H1, PP=3, 4 micro-batches: rank r has 2-r warm-up F, r (F, B) pairs that defer W,
    # then F B W until forwards run out, B W, and finally the r deferred W.
    s = build_schedule("zb1p", 3, 4)
    assert prog(s, 0) == "F0.0 F1.0 F2.0 B0.0 W0.0 F3.0 B1.0 W1.0 B2.0 W2.0 B3.0 W3.0"
    assert prog(s, 1) == "F0.0 F1.0 B0.0 F2.0 B1.0 W0.0 F3.0 B2.0 W1.0 B3.0 W2.0 W3.0"
    assert prog(s, 2) == "F0.0 B0.0 F1.0 B1.0 F2.0 B2.0 W0.0 F3.0 B3.0 W1.0 W2.0 W3.0"


def test_dualpipev_program_follows_reference_phases():
    # PP=2 ranks (4 stages), 4 micro-batches; rank 0 traced through the reference's step():
    # 1 nF0: 2 | 2 nF0F1: 1 | 3 nB1W1F1: 1 | 4 nF0B1F1B0: 1 | 5 nB1F1B0: 1 | 6 nB1B0: 1
    # (rank 0 is even: its B0 of step 6 is zero-bubble) | 7 nWB0: 1 | 8 nW: 1
    s = build_schedule("dualpipev", 2, 4)
    assert prog(s, 0) == ("F0.0 F1.0 | F2.0 F0.1 | B0.1 W0.1 F1.1 | F3.0&BW1.1 F2.1&BW0.0 | "
                          "BW2.1 F3.1&BW1.0 | BW3.1 B2.0 | W2.0 B3.0 | W3.0").replace("| ", "")
    # rank 1 (the turn): step 1 empty, step 2 twice, step 4's first pair is not overlapped,
    # step 6 (odd rank) turns zero-bubble on at i = 1 before B1.
    assert prog(s, 1) == ("F0.0 F0.1 F1.0 F1.1 | F2.0 BW0.1 F2.1&BW0.0 | F3.0&BW1.1 F3.1&BW1.0 | "
                          "BW2.1 BW2.0 B3.1 B3.0 | W3.1 W3.0").replace("| ", "")


def test_dualpipe_is_mirror_symmetric():
    s = build_schedule("dualpipe", 8, 20)
    half = 10

    def mirror(op: PipeOp) -> PipeOp:
        flip = lambda m: m + half if m < half else m - half  # noqa: E731
        if op.kind == "FB":
            return PipeOp("FB", flip(op.microbatch), 1 - op.chunk, flip(op.b_microbatch),
                          1 - op.b_chunk, op.b_split)
        return PipeOp(op.kind, flip(op.microbatch), 1 - op.chunk)

    for rank in range(8):
        assert tuple(map(mirror, s.programs[rank])) == s.programs[7 - rank]
    # the middle ranks issue their first main-step pair as two separate ops
    assert " F4.0 BW10.1 F14.1&BW0.0 " in prog(s, 3)


def test_dataflow_layout():
    s = build_schedule("dualpipe", 4, 8)
    assert s.num_model_stages == 4 and s.num_chunks == 2
    assert [s.stage_of(r, 1) for r in range(4)] == [3, 2, 1, 0]
    assert s.forward_upstream(0, 0) is None and s.forward_upstream(1, 0) == (0, 0)
    assert s.forward_upstream(3, 1) is None and s.forward_upstream(2, 1) == (3, 1)
    assert s.backward_upstream(3, 0) is None and s.backward_upstream(0, 1) is None
    assert s.backward_upstream(1, 1) == (0, 1)

    v = build_schedule("dualpipev", 4, 8)
    assert v.num_model_stages == 8
    assert [v.stage_of(r, 1) for r in range(4)] == [7, 6, 5, 4]
    assert v.forward_upstream(3, 1) == (3, 0)  # the V turns on the last rank
    assert v.backward_upstream(3, 0) == (3, 1)
    assert v.backward_upstream(0, 1) is None and v.forward_upstream(0, 0) is None

    one = build_schedule("1f1b", 4, 4)
    assert one.backward_upstream(2, 0) == (3, 0) and one.backward_upstream(3, 0) is None


@pytest.mark.parametrize("name,pp,n,field,allowed", [
    ("gpipe", 4, 8, r"plan\.schedule", "one of 1f1b"),
    ("1f1b", 0, 8, r"plan\.pp", ">= 1"),
    ("1f1b", 4, 0, r"plan\.num_microbatches", ">= 1"),
    ("zb1p", 4, 2.5, r"plan\.num_microbatches", "integer"),
    ("dualpipe", 3, 12, r"plan\.pp", "even"),
    ("dualpipe", 4, 6, r"plan\.num_microbatches", ">= 2\\*pp = 8"),
    ("dualpipe", 4, 9, r"plan\.num_microbatches", "even"),
    ("dualpipev", 4, 7, r"plan\.num_microbatches", ">= 2\\*pp = 8"),
])
def test_invalid_inputs_name_the_field(name, pp, n, field, allowed):
    with pytest.raises(ScenarioError, match=field + r": got .*allowed: .*" + allowed):
        build_schedule(name, pp, n)


def test_schedule_names():
    assert SCHEDULE_NAMES == ("1f1b", "zb1p", "dualpipe", "dualpipev", "interleaved-1f1b")
