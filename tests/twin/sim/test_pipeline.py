"""SimPy pipeline engine: exact event logs, stream arbitration, dependencies, Chrome trace."""

import json
import random

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.sim.ideal import IdealCosts
from twin.sim.pipeline import Task, arbitrate_streams, is_weight_task, simulate_pipeline, to_chrome_trace
from twin.core.schedules import build_schedule


class P2PCosts(IdealCosts):
    """Ideal op times plus a constant transfer time."""

    def __init__(self, f_s, b_s, w_s, fb_s, p2p):
        super().__init__(f_s, b_s, w_s, fb_s)
        object.__setattr__(self, "p2p", p2p)

    def p2p_s(self, src_rank, dst_rank, kind):
        return self.p2p


def log(result):
    return [(e.rank, e.kind, e.microbatch, e.start_s, e.end_s) for e in result.events]


def test_1f1b_pp2_two_microbatches_exact_log():
    # F=1, B=2 (BW). Rank 0: F0 [0,1], F1 [1,2]; rank 1 gets F0 at 1: F0 [1,2], BW0 [2,4]
    # (last stage: needs only its own F), F1 [4,5], BW1 [5,7]. Rank 0's BW0 needs rank 1's
    # BW0 (done at 4): [4,6]; BW1 needs rank 1's BW1 (7): [7,9]. Makespan 9; each rank is busy
    # 6, idle 3 = (PP-1)(F+B).
    s = build_schedule("1f1b", 2, 2)
    r = simulate_pipeline(s, IdealCosts(1.0, 2.0, 1.0, 3.0), streams=("compute",))
    assert log(r) == [
        (0, "F", 0, 0.0, 1.0),
        (0, "F", 1, 1.0, 2.0), (1, "F", 0, 1.0, 2.0),
        (1, "BW", 0, 2.0, 4.0),
        (0, "BW", 0, 4.0, 6.0), (1, "F", 1, 4.0, 5.0),
        (1, "BW", 1, 5.0, 7.0),
        (0, "BW", 1, 7.0, 9.0),
    ]
    assert r.makespan_s == 9.0 and r.busy_s == (6.0, 6.0) and r.idle_s == (3.0, 3.0)
    assert r.bubble_s == 3.0 and r.peak_inflight_activations == (2, 1)


def test_p2p_delays_inputs():
    # Same case with 0.5 s transfers: rank 1's F0 starts at 1.5, BW0 [2.5,4.5], F1 (arrived
    # at 2.5) [4.5,5.5], BW1 [5.5,7.5]; rank 0's BW0 at 4.5+0.5=5 [5,7], BW1 at 8 [8,10].
    s = build_schedule("1f1b", 2, 2)
    r = simulate_pipeline(s, P2PCosts(1.0, 2.0, 1.0, 3.0, 0.5), streams=("compute",))
    assert log(r) == [
        (0, "F", 0, 0.0, 1.0),
        (0, "F", 1, 1.0, 2.0),
        (1, "F", 0, 1.5, 2.5),
        (1, "BW", 0, 2.5, 4.5),
        (1, "F", 1, 4.5, 5.5),
        (0, "BW", 0, 5.0, 7.0),
        (1, "BW", 1, 5.5, 7.5),
        (0, "BW", 1, 8.0, 10.0),
    ]


def test_zb1p_pp2_exact_log():
    # F=1, B=2 split into B (input) = 1 and W = 1. Rank 0: F0 [0,1] F1 [1,2], then B0 waits
    # for rank 1's B0; rank 1 (r=1 defers one W): F0 [1,2] B0 [2,3] F1 [3,4] B1 [4,5] W0 [5,6]
    # W1 [6,7]. Rank 0: B0 [3,4] W0 [4,5] B1 [5,6] W1 [6,7]. Makespan 7, idle 1 = (PP-1)(F+B-2W).
    s = build_schedule("zb1p", 2, 2)
    r = simulate_pipeline(s, IdealCosts(1.0, 2.0, 1.0, 3.0), streams=("compute",))
    assert log(r) == [
        (0, "F", 0, 0.0, 1.0),
        (0, "F", 1, 1.0, 2.0), (1, "F", 0, 1.0, 2.0),
        (1, "B", 0, 2.0, 3.0),
        (0, "B", 0, 3.0, 4.0), (1, "F", 1, 3.0, 4.0),
        (0, "W", 0, 4.0, 5.0), (1, "B", 1, 4.0, 5.0),
        (0, "B", 1, 5.0, 6.0), (1, "W", 0, 5.0, 6.0),
        (0, "W", 1, 6.0, 7.0), (1, "W", 1, 6.0, 7.0),
    ]
    assert r.bubble_s == 1.0


def test_overlapped_chains_share_streams():
    # chain 0: a (compute 1) then b (comm 2); chain 1: c (comm 1) then d (compute 1).
    # t=0: a on compute, c on comm. t=1: both request; b gets comm [1,3], d compute [1,2].
    a, b = Task("compute", 1.0, "a"), Task("comm", 2.0, "b")
    c, d = Task("comm", 1.0, "c"), Task("compute", 1.0, "d")
    duration, placed = arbitrate_streams([(a, b), (c, d)])
    assert duration == 3.0
    assert [(t.name, s, e) for t, s, e in placed] == [
        ("a", 0.0, 1.0), ("c", 0.0, 1.0), ("b", 1.0, 3.0), ("d", 1.0, 2.0)]
    # contention: both chains start on compute; chain 1 waits for chain 0's task
    duration, placed = arbitrate_streams([(a,), (Task("compute", 2.0, "e"),)])
    assert duration == 3.0 and [(t.name, s, e) for t, s, e in placed] == [
        ("a", 0.0, 1.0), ("e", 1.0, 3.0)]


def simpy_reference(chains):
    """Chains as SimPy processes on capacity-1 PriorityResources: the semantics arbitrate_streams
    models. With several chains a weight-gradient task is its own process (it does not hold up
    its chain), requesting after its chain's next task and at a lower priority."""
    env = simpy.Environment()
    res = {s: simpy.PriorityResource(env, capacity=1) for s in ("compute", "comm")}
    out = []
    defer = len(chains) > 1

    def hold(task, priority):
        with res[task.stream].request(priority=priority) as req:
            yield req
            start = env.now
            yield env.timeout(task.duration_s)
            out.append((task.name, start, env.now))

    def side(task):
        yield env.timeout(0)  # the chain's own next request goes first
        yield from hold(task, 1)

    def run(chain):
        for task in chain:
            if defer and is_weight_task(task):
                env.process(side(task))
            else:
                yield from hold(task, 0)

    for chain in chains:
        env.process(run(chain))
    env.run()
    return env.now, sorted(out)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_arbitration_matches_simpy_resources(seed):
    rng = random.Random(seed)
    names = ("x", "x", "mlp_bwd_weight")  # one task in three a weight gradient
    chains = [[Task(rng.choice(("compute", "comm")), rng.uniform(0.1, 2.0), f"c{i}t{k}_{rng.choice(names)}")
               for k in range(rng.randint(1, 6))] for i in range(rng.randint(1, 3))]
    duration, placed = arbitrate_streams(chains)
    ref_duration, ref = simpy_reference(chains)
    assert abs(duration - ref_duration) < 1e-9
    got = sorted((t.name, s, e) for t, s, e in placed)
    for (n1, s1, e1), (n2, s2, e2) in zip(got, ref):
        assert n1 == n2 and abs(s1 - s2) < 1e-9 and abs(e1 - e2) < 1e-9


def test_weight_gradients_fill_the_wait_for_communication():
    # backward chain: input grad (1), its weight grad (2), then a dispatch (comm 2), then more input
    # grad (1). The weight grad runs while the dispatch is in flight, not before it.
    b_in, b_w = Task("compute", 1.0, "mlp_bwd_input"), Task("compute", 2.0, "mlp_bwd_weight")
    disp, b_in2 = Task("comm", 2.0, "dispatch_bwd"), Task("compute", 1.0, "attn_bwd_input")
    idle = Task("comm", 0.5, "combine")
    duration, placed = arbitrate_streams([(idle,), (b_in, b_w, disp, b_in2)])
    at = {t.name: (s, e) for t, s, e in placed}
    assert at["dispatch_bwd"] == (1.0, 3.0) and at["mlp_bwd_weight"] == (1.0, 3.0)
    assert at["attn_bwd_input"] == (3.0, 4.0) and duration == 4.0
    # a single chain keeps its order: the weight grad before the dispatch
    duration, placed = arbitrate_streams([(b_in, b_w, disp, b_in2)])
    assert duration == 6.0


class TwoChains(IdealCosts):
    """Ideal op times, an F&B pair as two chains on two streams (its parts named)."""

    def chains(self, rank, op):
        if op.kind != "FB":
            return super().chains(rank, op)
        return ((Task("compute", 1.0, "attn_fwd", part="F"), Task("comm", 0.5, "dispatch", part="F")),
                (Task("comm", 0.5, "combine_bwd", part="B"), Task("compute", 2.0, "mlp_bwd", part="B")))


def test_fb_tasks_are_attributed_to_their_part():
    s = build_schedule("dualpipev", 1, 2)
    r = simulate_pipeline(s, TwoChains(1.0, 2.0, 1.0, 3.0))
    fb = [e for e in r.events if e.kind == "FB"]
    op = next(op for op in s.programs[0] if op.kind == "FB")
    assert {(e.name, e.microbatch, e.chunk) for e in fb} == {
        ("attn_fwd", op.microbatch, op.chunk), ("dispatch", op.microbatch, op.chunk),
        ("combine_bwd", op.b_microbatch, op.b_chunk), ("mlp_bwd", op.b_microbatch, op.b_chunk)}
    # attn_fwd [0,1] on compute, combine_bwd [0,0.5] on comm; mlp_bwd wants compute at 0.5
    # but waits for attn_fwd: [1,3]; dispatch [1,1.5] on comm. The pair takes 3, not 4.
    fb_span = max(e.end_s for e in fb) - min(e.start_s for e in fb)
    assert fb_span == 3.0
    assert r.busy_s[0] == sum(e.end_s - e.start_s for e in r.events if e.stream == "compute")


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["1f1b", "zb1p", "dualpipe", "dualpipev"]),
    half_pp=st.integers(1, 3),
    extra=st.integers(0, 6),
    f=st.integers(1, 4), b=st.integers(2, 6), w=st.integers(0, 2), fb=st.integers(0, 4),
    p2p=st.sampled_from([0.0, 0.25]),
)
def test_dependencies_respected(name, half_pp, extra, f, b, w, fb, p2p):
    pp = 2 * half_pp if name == "dualpipe" else half_pp + (name != "dualpipev")
    n = {"dualpipe": 2 * pp + 2 * extra, "dualpipev": 2 * pp + extra}.get(name, 1 + extra)
    w = min(w, b - 1)
    fb_s = max(f, b) + fb * 0.25
    s = build_schedule(name, pp, n)
    r = simulate_pipeline(s, P2PCosts(float(f), float(b), float(w), fb_s, p2p), streams=("compute",))

    f_end, b_end, op_times = {}, {}, {}
    for rank in range(pp):
        evs = [e for e in r.events if e.rank == rank]
        ops = s.programs[rank]  # zero-length W ops still produce events
        assert len(evs) == len(ops)
        evs.sort(key=lambda e: (e.start_s, e.end_s))
        prev_end = 0.0
        for op, e in zip(ops, evs):  # program order = time order, one task per op
            assert e.kind == op.kind and e.start_s >= prev_end - 1e-12
            prev_end = e.end_s
            op_times[rank, op] = (e.start_s, e.end_s)
            if op.forward_part:
                f_end[(rank,) + op.forward_part] = e.end_s
            if op.backward_part:
                b_end[(rank,) + op.backward_part] = e.end_s
    for (rank, op), (start, end) in op_times.items():
        if op.forward_part:
            mb, chunk = op.forward_part
            up = s.forward_upstream(rank, chunk)
            if up:
                delay = p2p if up[0] != rank else 0.0
                assert start >= f_end[up[0], mb, up[1]] + delay - 1e-9
        if op.backward_part:
            mb, chunk = op.backward_part
            up = s.backward_upstream(rank, chunk)
            if up:
                delay = p2p if up[0] != rank else 0.0
                assert start >= b_end[up[0], mb, up[1]] + delay - 1e-9
            else:
                assert start >= f_end[rank, mb, chunk] - 1e-9
        if op.kind == "W":
            assert start >= b_end[rank, op.microbatch, op.chunk] - 1e-9


def test_peak_inflight_activations():
    costs = IdealCosts(1.0, 2.0, 1.0, 3.0)
    one = simulate_pipeline(build_schedule("1f1b", 4, 8), costs)
    zb = simulate_pipeline(build_schedule("zb1p", 4, 8), costs)
    dual = simulate_pipeline(build_schedule("dualpipe", 4, 8), costs)
    v = simulate_pipeline(build_schedule("dualpipev", 4, 8), costs)
    assert one.peak_inflight_activations == (4, 3, 2, 1)  # PP on the first rank
    assert zb.peak_inflight_activations == (4, 3, 2, 1)
    assert dual.peak_inflight_activations == (5, 5, 5, 5)  # PP + 1 (README)
    assert v.peak_inflight_activations == (9, 9, 9, 9)  # 2PP stages + 1 (README: PP + 1)


def test_chrome_trace_shape():
    r = simulate_pipeline(build_schedule("1f1b", 2, 2), IdealCosts(1e-3, 2e-3, 1e-3, 3e-3))
    trace = to_chrome_trace(r, pid_names={1: "PP stage 1"})
    json.dumps(trace)
    meta = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = {(e["pid"], e["args"]["name"]) for e in meta if e["name"] == "process_name"}
    assert names == {(0, "GPU 0"), (1, "PP stage 1")}
    threads = {(e["pid"], e["tid"], e["args"]["name"]) for e in meta if e["name"] == "thread_name"}
    assert threads == {(p, 0, "compute") for p in (0, 1)} | {(p, 1, "comm") for p in (0, 1)}
    assert len(spans) == len(r.events) == 8
    first = spans[0]
    assert first["pid"] == 0 and first["tid"] == 0 and first["ts"] == 0.0
    assert abs(first["dur"] - 1000.0) < 1e-9  # 1 ms in µs
    last = max(spans, key=lambda e: e["ts"])
    assert abs(last["ts"] - 7000.0) < 1e-6 and abs(last["dur"] - 2000.0) < 1e-6
    assert {"kind", "microbatch", "chunk"} <= set(first["args"])


def test_unknown_stream_is_a_bug_report():
    import pytest

    class Bad(IdealCosts):
        def chains(self, rank, op):
            return ((Task("nvlink", 1.0, "x"),),)

    with pytest.raises(ValueError, match="stream 'nvlink'"):
        simulate_pipeline(build_schedule("1f1b", 2, 2), Bad(1.0, 2.0, 1.0, 3.0))


def test_event_log_is_built_on_read_and_its_lanes_cover_the_same_time():
    """simulate_pipeline keeps one record per op; the events it builds on first read are the
    per-task log (ordered by start, rank), and `lanes` (the Gantt's bars) cover, per rank, stream
    and op kind, exactly the time the events cover."""
    s = build_schedule("dualpipe", 4, 8)
    r = simulate_pipeline(s, TwoChains(1.0, 2.0, 1.0, 3.0))
    n = len(r.events)   # counted from the op records, before any event is built
    events = list(r.events)
    assert len(events) == n > 0
    assert events == sorted(events, key=lambda e: (e.start_s, e.rank))
    assert r.events == events and r.events[0] == events[0]
    covered = {}
    for e in events:
        covered.setdefault((e.rank, e.stream, e.kind), []).append((e.start_s, e.end_s))

    def union(spans):
        total, reach = 0.0, float("-inf")
        for a, b in sorted(spans):
            a = max(a, reach)
            if b > a:
                total, reach = total + b - a, b
        return total
    lanes = r.events.lanes()
    assert set(lanes) == set(covered)
    for key, spans in lanes.items():
        assert sum(b - a for a, b in spans) == pytest.approx(union(covered[key]), rel=1e-12)
    assert simulate_pipeline(s, TwoChains(1.0, 2.0, 1.0, 3.0), record_events=False).events == []
