"""Complete slices timed as Perfetto reads them (twin.core.chrome_trace): ts and dur on whole
nanoseconds, back-to-back slices meeting exactly, and the importer's overlap rule."""

import pytest

from twin.core.chrome_trace import complete_slice, nested_cleanly, perfetto_drops, slice_ns


def test_back_to_back_slices_meet_on_the_same_nanosecond():
    start_s, mid_s, end_s = 5.101380514788434, 5.150924023497628, 5.195873129976501
    # ts and dur rounded apart (twin trace until s21walk): the first slice ends 1 ns after the second
    # begins, and Perfetto drops the second
    def rounded_apart(name, t0, t1):
        return {"ph": "X", "name": name, "pid": 0, "tid": 0, "ts": round(t0 * 1e6, 3), "dur": round((t1 - t0) * 1e6, 3)}
    assert [d[1] for d in perfetto_drops([rounded_apart("a", start_s, mid_s), rounded_apart("b", mid_s, end_s)])] == ["b"]
    a = complete_slice("a", 0, 0, start_s, mid_s)
    b = complete_slice("b", 0, 0, mid_s, end_s)
    assert slice_ns(a) == (5_101_380_515, 5_150_924_023) and slice_ns(b) == (5_150_924_023, 5_195_873_130)
    assert perfetto_drops([a, b]) == []


def test_perfetto_drops_a_slice_that_crosses_the_end_of_the_one_before():
    outer = {"ph": "X", "name": "outer", "pid": 0, "tid": 0, "ts": 0.0, "dur": 10.0}
    inner = {"ph": "X", "name": "inner", "pid": 0, "tid": 0, "ts": 2.0, "dur": 3.0}      # nested: kept
    cross = {"ph": "X", "name": "cross", "pid": 0, "tid": 0, "ts": 9.999, "dur": 1.0}    # 1 ns inside, ends after
    other = {"ph": "X", "name": "other", "pid": 0, "tid": 1, "ts": 5.0, "dur": 10.0}     # another thread
    drops = perfetto_drops([outer, inner, cross, other])
    assert [(d[0], d[1], d[2], d[3]) for d in drops] == [((0, 0), "cross", 9999, 10999)]


def test_nested_cleanly_moves_a_1_ns_overlap_and_leaves_a_real_one():
    a = {"ph": "X", "name": "a", "pid": 0, "tid": 0, "ts": 0.0, "dur": 10.0}
    b = {"ph": "X", "name": "b", "pid": 0, "tid": 0, "ts": 9.999, "dur": 5.0}      # 1 ns: rounding
    c = {"ph": "X", "name": "c", "pid": 0, "tid": 1, "ts": 0.0, "dur": 10.0}
    d = {"ph": "X", "name": "d", "pid": 0, "tid": 1, "ts": 9.0, "dur": 5.0}        # 1 µs: a real overlap
    events = nested_cleanly([a, b, c, d])
    assert (b["ts"], b["dur"]) == (10.0, pytest.approx(4.999))   # same end, starts where a ends
    assert (d["ts"], d["dur"]) == (9.0, 5.0)
    assert [x[1] for x in perfetto_drops(events)] == ["d"]
