"""SimPy engine: runs a pipeline `Schedule` with op costs and reports the timeline.

Model
-----
* Every rank runs its program strictly in order, like the reference's one thread per rank.
  An op starts when the rank's previous op has finished and its inputs have arrived:
    F      the forward upstream's F of the same (micro-batch, chunk), plus p2p_s(..., "F");
    B, BW  the backward upstream's B/BW of the same (micro-batch, chunk), plus p2p_s(..., "B");
           at the last stage its own F (the loss), with no transfer;
    W      its own B (earlier in the same program);
    FB     both parts' inputs.
  Transfers between chunks on the same rank (DualPipeV's turn) cost nothing.
* An op's cost is a set of concurrent chains (`OpCosts.chains`); tasks within a chain run in
  sequence, each holding one of the rank's streams (capacity 1, first come first served by
  request time, like a `simpy.PriorityResource(capacity=1)`), except that in an overlapped pair weight-gradient
  tasks do not hold up their chain and take a stream only when nothing else is ready
  (`arbitrate_streams`). The op ends when all its tasks end. Two chains sharing the compute and
  comm streams is how DualPipe's overlapped forward+backward hides communication behind
  computation.
* p2p transfers are pure delays: they hold no stream (a cost model may hold a backward's send on
  its rank first: the optional `send_hold_s`).

Streams are arbitrated per op, not with SimPy resource events: a rank runs one op at a time, so
only that op's chains ever compete for the rank's streams, and their timeline is a function of
the chains alone (`arbitrate_streams`, memoised per chains object). SimPy runs what couples
ranks: program order and dataflow. This keeps a DeepSeek-V3-size step (16 ranks, ~100k tasks)
well under a second; tests check the arbitration against real `simpy.Resource`s.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import simpy

from twin.core.chrome_trace import complete_slice, nested_cleanly
from twin.core.gc_pause import gc_paused
from twin.core.intervals import covered_length
from twin.core.schedules import PipeOp, Schedule


@dataclass(frozen=True)
class Task:
    """One piece of work on one stream."""

    stream: str  # e.g. "compute", "comm"
    duration_s: float
    name: str  # e.g. "attn_fwd", "dispatch", "mlp_bwd_input"
    part: str | None = None  # FB ops only: "F" or "B", which half of the pair this task serves


class OpCosts(Protocol):
    def chains(self, rank: int, op: PipeOp) -> Sequence[Sequence[Task]]:
        """Concurrent chains of tasks; tasks in a chain run in sequence, each holding its stream."""
        ...

    def p2p_s(self, src_rank: int, dst_rank: int, kind: str) -> float:
        """Activation ("F") or gradient ("B") transfer time between two ranks: a pure delay."""
        ...

    # Optional: send_hold_s(src_rank, producer_key) -> seconds a backward's output (producer_key =
    # (src_rank, micro-batch, chunk)) waits on its rank before its transfer starts (s15p2p: a send
    # queued just before the last stage's W starts after that W's first kernel); absent means 0.


class Event(NamedTuple):
    """One task's interval on one stream of one rank. For FB ops, (microbatch, chunk) is the
    part the task serves (its `Task.part`, default the forward part)."""

    rank: int
    stream: str
    name: str
    kind: str  # the op kind: F, B, W, BW, FB
    microbatch: int
    chunk: int
    start_s: float
    end_s: float


class EventLog(Sequence):
    """The per-task event log of a simulated step, ordered by (start_s, rank), built from the ops'
    timelines when first read: a step keeps one record per op (~4k for DeepSeek-V3) instead of
    one Event per task (~10^5), and `lanes` draws a Gantt chart without building them."""

    def __init__(self, ops: list[tuple], placed_by: list[tuple]):
        self._ops = ops               # (rank, op start s, timeline index, PipeOp) per op run
        self._placed_by = placed_by   # per timeline: (duration, ..., placed tasks, ...) as simulate_pipeline keeps them
        self._events: list[Event] | None = None

    def _built(self) -> list[Event]:
        if self._events is None:
            raw = []
            for rank, t0, key, op in self._ops:
                kind, mb, chunk = op.kind, op.microbatch, op.chunk
                b_mb, b_chunk = op.backward_part or (mb, chunk)
                for stream, name, is_b, start, end in self._placed_by[key][2]:
                    if is_b:
                        raw.append((rank, stream, name, kind, b_mb, b_chunk, t0 + start, t0 + end))
                    else:
                        raw.append((rank, stream, name, kind, mb, chunk, t0 + start, t0 + end))
            raw.sort(key=_event_order)
            make = tuple.__new__
            self._events = [make(Event, fields) for fields in raw]
        return self._events

    def __len__(self) -> int:
        return len(self._events) if self._events is not None else sum(len(self._placed_by[key][2]) for _, _, key, _ in self._ops)

    def __getitem__(self, index):
        return self._built()[index]

    def __iter__(self):
        return iter(self._built())

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"EventLog({len(self)} events)"

    def __reduce__(self):
        return (EventLog, (self._ops, self._placed_by))   # crosses processes as its op records

    def lanes(self) -> dict[tuple[int, str, str], list[tuple[float, float]]]:
        """(rank, stream, op kind) -> (start_s, end_s) intervals of the tasks drawn there, tasks that
        touch joined into one interval (the same picture as the events, ~30x fewer bars)."""
        per_timeline: dict[int, dict[str, list[tuple[float, float]]]] = {}
        out: dict[tuple[int, str, str], list[tuple[float, float]]] = {}
        for rank, t0, key, op in self._ops:
            spans = per_timeline.get(key)
            if spans is None:
                spans = per_timeline[key] = _joined_by_stream(self._placed_by[key][2])
            for stream, intervals in spans.items():
                lane = out.setdefault((rank, stream, op.kind), [])
                lane.extend((t0 + a, t0 + b) for a, b in intervals)
        return out


def _joined_by_stream(placed: list[tuple]) -> dict[str, list[tuple[float, float]]]:
    """An op's task intervals per stream, those that touch or overlap joined."""
    out: dict[str, list[tuple[float, float]]] = {}
    for stream, _, _, start, end in sorted(placed, key=lambda x: (x[0], x[3])):
        lane = out.setdefault(stream, [])
        if lane and start <= lane[-1][1]:
            lane[-1] = (lane[-1][0], max(lane[-1][1], end))
        else:
            lane.append((start, end))
    return out


@dataclass(frozen=True)
class PipelineResult:
    makespan_s: float
    events: Sequence[Event]  # ordered by (start_s, rank): an EventLog from simulate_pipeline
    busy_s: tuple[float, ...]  # per rank: compute-stream task time
    idle_s: tuple[float, ...]  # per rank: makespan - busy
    bubble_s: float  # max idle over ranks
    peak_inflight_activations: tuple[int, ...]  # per rank
    streams: tuple[str, ...]
    covered_s: tuple[float, ...] = ()  # per rank: time with a task on any stream (union of intervals)
    last_compute_end_s: tuple[float, ...] = ()  # per rank: end of its last compute task
    task_time_s: tuple[dict, ...] = ()  # per rank: task name -> summed seconds (kept without the event log)
    op_spans: tuple = ()  # with the event log: (rank, op label e.g. "F3.0&B1.0", start_s, end_s) of every op

    @property
    def num_ranks(self) -> int:
        return len(self.busy_s)


def is_weight_task(task: Task) -> bool:
    """A weight-gradient task ("... backward for weights", V3 §3.2.1): nothing later in its
    chain consumes its result."""
    return task.name.endswith("_bwd_weight")


def arbitrate_streams(chains: Sequence[Sequence[Task]]) -> tuple[float, list[tuple[Task, float, float]]]:
    """Time one op's concurrent chains on capacity-1 streams (a list scheduler).

    A chain requests the stream of its next task the moment its previous task ends. Whenever a
    stream is free, it starts the best of the requests made so far, by (weight-gradient task,
    request time, chain index). With several chains (an overlapped forward+backward pair), a
    weight-gradient task does not hold up its chain: it is requested when its input-gradient task
    ends and runs whenever the stream has nothing else ready. This is DualPipe's arrangement (V3 §3.2.1, Figure 4: MLP(W) and ATTN(W) fill the
    compute stream while the all-to-alls of the pair are in flight). A single chain runs in order.
    Returns the op's duration and (task, start, end) offsets from the op's start.
    """
    if len(chains) == 1:
        t, out = 0.0, []
        for task in chains[0]:
            out.append((task, t, t + task.duration_s))
            t += task.duration_s
        return t, out
    pending: list[tuple] = []   # (is_weight, request time, chain, index)

    def request(c: int, k: int, t: float) -> None:
        chain = chains[c]
        while k < len(chain) and is_weight_task(chain[k]):
            pending.append((True, t, c, k))
            k += 1
        if k < len(chain):
            pending.append((False, t, c, k))

    for c, chain in enumerate(chains):
        request(c, 0, 0.0)
    free_at: dict[str, float] = {}
    out, duration = [], 0.0
    while pending:
        # the stream that can start a task earliest, then its best request ready by then
        starts = {}
        for entry in pending:
            stream = chains[entry[2]][entry[3]].stream
            at = max(entry[1], free_at.get(stream, 0.0))
            if at < starts.get(stream, float("inf")):
                starts[stream] = at
        best = {stream: min(e for e in pending if chains[e[2]][e[3]].stream == stream and e[1] <= at)
                for stream, at in starts.items()}
        stream = min(starts, key=lambda st: (starts[st], best[st][2:]))
        start, entry = starts[stream], best[stream]
        pending.remove(entry)
        is_weight, _, c, k = entry
        task = chains[c][k]
        end = start + task.duration_s
        free_at[stream] = end
        out.append((task, start, end))
        duration = max(duration, end)
        if not is_weight:
            request(c, k + 1, end)
    return duration, out


_event_order = operator.itemgetter(6, 0)  # (start_s, rank)


def _dependencies(schedule: Schedule) -> list[list[tuple]]:
    """Per rank, per op of its program: (op, inputs, forward done key, backward done key), each
    input (0 for a forward's or 1 for a backward's done table, its key (rank, micro-batch, chunk),
    the rank it is sent from or None where nothing travels, "F" or "B"):
      F      the forward upstream's F of the same (micro-batch, chunk), sent;
      B, BW  the backward upstream's B/BW, sent; at the last stage its own F (the loss);
      W      its own B;
      FB     both parts' inputs.
    A function of the schedule alone, kept per schedule object (the steps of a plan search and of a
    replay's perturbations share a few)."""
    hit = _DEPENDENCIES.get(id(schedule))
    if hit is not None and hit[0] is schedule:
        return hit[1]
    num_ranks = schedule.num_ranks
    forward_up = {(r, c): schedule.forward_upstream(r, c) for r in range(num_ranks) for c in range(schedule.num_chunks)}
    backward_up = {(r, c): schedule.backward_upstream(r, c) for r in range(num_ranks) for c in range(schedule.num_chunks)}
    table = []
    for rank in range(num_ranks):
        rows = []
        for op in schedule.programs[rank]:
            needs = []
            fwd, bwd = op.forward_part, op.backward_part
            if fwd is not None:
                mb, chunk = fwd
                up = forward_up[rank, chunk]
                if up is not None:
                    needs.append((0, (up[0], mb, up[1]), up[0] if up[0] != rank else None, "F"))
            if bwd is not None:
                mb, chunk = bwd
                up = backward_up[rank, chunk]
                if up is None:  # last stage: the loss of its own forward
                    needs.append((0, (rank, mb, chunk), None, "B"))
                else:
                    needs.append((1, (up[0], mb, up[1]), up[0] if up[0] != rank else None, "B"))
            if op.kind == "W":
                needs.append((1, (rank, op.microbatch, op.chunk), None, "B"))
            rows.append((op, tuple(needs), None if fwd is None else (rank, *fwd), None if bwd is None else (rank, *bwd)))
        table.append(rows)
    if len(_DEPENDENCIES) >= 64:
        _DEPENDENCIES.pop(next(iter(_DEPENDENCIES)))   # the oldest
    _DEPENDENCIES[id(schedule)] = (schedule, table)   # holds the schedule: its id stays valid
    return table


_DEPENDENCIES: dict = {}   # id(schedule) -> (schedule, _dependencies' table)


def simulate_pipeline(schedule: Schedule, costs: OpCosts,
                      streams: Sequence[str] = ("compute", "comm"),
                      record_events: bool = True, release_s: Sequence[float] | None = None,
                      chunk_gathers: Sequence[Sequence[tuple[float, float]]] | None = None,
                      extra_needs: Sequence[Sequence[Sequence[tuple]]] | None = None) -> PipelineResult:
    """Simulate one step of `schedule`. An activation set is counted from the start of its
    forward (an overlapped FB pair holds both its sets) to the end of its B or BW.
    `record_events=False` skips the per-task event log (sweeps that need only the totals).
    `release_s`: per rank, the earliest its first op may start (e.g. a parameter all-gather it
    waits for); none by default. `chunk_gathers`: per rank and model chunk c (entry 0 unused),
    (offset, seconds) of a transfer chunk c's first forward waits for, launched `offset` seconds
    into the rank's first forward of chunk c - 1 (Megatron's parameter all-gather of a later
    chunk: twin.training.step.later_chunk_gathers); none by default. `extra_needs`: per rank and op
    of its program, inputs beside the dataflow's, in _dependencies' format (a runtime's coupling,
    e.g. twin.core.schedules.torch_lockstep_needs); none by default."""
    streams = tuple(streams)
    env = simpy.Environment()  # env.now is float seconds
    num_ranks = schedule.num_ranks
    # (rank, micro-batch, chunk) of a forward / a backward -> when it finished; and the SimPy event
    # a rank waits on where it needs one not finished yet (only then: most inputs have arrived)
    finished_at: tuple[dict, dict] = ({}, {})
    waiting: tuple[dict, dict] = ({}, {})
    op_log: list[tuple] = []  # with the event log: (rank, start, timeline index, op) of every op
    spans: list[tuple] = []  # (rank, op label, start, end), with the event log
    busy = [0.0] * num_ranks
    covered = [0.0] * num_ranks
    last_compute_end = [0.0] * num_ranks
    task_time: list[dict[str, float]] = [{} for _ in range(num_ranks)]
    peak = [0] * num_ranks
    finished = [False] * num_ranks
    timelines: dict = {}  # id of an op's chains, or the ids of its chains -> (chains, index in placed_by)
    placed_by: list[tuple] = []   # (duration, compute s, placed tasks, covered s, last compute end, s per name)
    op_uses: list[dict[int, int]] = [{} for _ in range(num_ranks)]   # per rank: timeline -> ops that ran it
    delays: dict[tuple[int, int, str], float] = {}

    def delay_s(src: int, dst: int, kind: str) -> float:
        d = delays.get((src, dst, kind))
        if d is None:
            d = delays[src, dst, kind] = costs.p2p_s(src, dst, kind)
        return d

    send_hold = getattr(costs, "send_hold_s", None)   # optional: most cost models hold no send

    def held_s(table: int, key: tuple[int, int, int]) -> float:
        """Extra seconds before a backward's output leaves its rank (OpCosts.send_hold_s), 0 without."""
        return send_hold(key[0], key) if send_hold is not None and table == 1 else 0.0

    def timeline(chains: Sequence[Sequence[Task]]) -> int:
        """The index in `placed_by` of the chains' timeline, memoised on the identity of the chain
        objects (cost models reuse them)."""
        memo = timelines.get(id(chains))   # the same chains object again (StepCosts keeps them)
        if memo is not None and memo[0] is chains:
            return memo[1]
        key = tuple(map(id, chains))
        memo = timelines.get(key)
        if memo is not None and all(a is b for a, b in zip(memo[0], chains)):
            return memo[1]
        for chain in chains:
            for task in chain:
                if task.stream not in streams:
                    raise ValueError(f"task {task.name!r} uses stream {task.stream!r}; "
                                     f"streams are {streams}")
        duration, placed = arbitrate_streams(chains)
        compute_s = sum(task.duration_s for task, _, _ in placed if task.stream == "compute")
        flat = [(task.stream, task.name, task.part == "B", start, end) for task, start, end in placed]
        union = covered_length([(start, end) for _, start, end in placed])
        last_compute = max((end for task, _, end in placed if task.stream == "compute"), default=None)
        by_name: dict[str, float] = {}
        for task, start, end in placed:
            by_name[task.name] = by_name.get(task.name, 0.0) + (end - start)
        placed_by.append((duration, compute_s, flat, union, last_compute, by_name))
        timelines[key] = (tuple(chains), len(placed_by) - 1)   # holds chains: ids stay valid
        timelines[id(chains)] = (chains, len(placed_by) - 1)
        return len(placed_by) - 1

    def plan(rank: int) -> list[tuple]:
        """The rank's program, resolved before the run: per op (table, key, transfer delay) of
        each input, its timeline (an index into `placed_by`), the forward and backward it
        finishes, and the op (the event log's)."""
        out = []
        extra = extra_needs[rank] if extra_needs is not None else None
        for i, (op, needs, f_key, b_key) in enumerate(_dependencies(schedule)[rank]):
            if extra is not None:
                needs = (*needs, *extra[i])
            inputs = [(table, key, 0.0 if src is None else delay_s(src, rank, kind) + held_s(table, key))
                      for table, key, src, kind in needs]
            out.append((inputs, timeline(costs.chains(rank, op)), f_key, b_key, op))
        return out

    def finish(table: int, key: tuple[int, int, int]) -> None:
        finished_at[table][key] = env.now
        ev = waiting[table].pop(key, None)
        if ev is not None:
            ev.succeed(env.now)

    def run_rank(rank: int, program: list[tuple]):
        live = peak_live = 0
        uses = op_uses[rank]
        release = release_s[rank] if release_s is not None else 0.0
        gathers = chunk_gathers[rank] if chunk_gathers is not None else None
        first_forward_at: dict[int, float] = {}   # chunk -> start of the rank's first forward of it
        for needs, key, f_key, b_key, op in program:
            t0 = max(env.now, release)
            release = 0.0
            chunk = f_key[2] if gathers is not None and f_key is not None else None
            if chunk is not None and chunk > 0 and chunk not in first_forward_at and chunk - 1 in first_forward_at:
                offset_s, gather_s = gathers[chunk]
                t0 = max(t0, first_forward_at[chunk - 1] + offset_s + gather_s)
            for table, k, delay in needs:
                at = finished_at[table].get(k)
                if at is None:   # not finished yet: wait for it
                    ev = waiting[table].get(k)
                    if ev is None:
                        ev = waiting[table][k] = env.event()
                    at = yield ev
                t0 = max(t0, env.now, at + delay)   # the op starts once its inputs have arrived
            if chunk is not None and chunk not in first_forward_at:
                first_forward_at[chunk] = t0

            if f_key is not None:
                live += 1
                if live > peak_live:
                    peak_live = live
            duration, compute_s, _, union, last_compute, _ = placed_by[key]
            uses[key] = uses.get(key, 0) + 1
            covered[rank] += union
            if last_compute is not None:
                last_compute_end[rank] = t0 + last_compute
            if record_events:
                spans.append((rank, str(op), t0, t0 + duration))
                op_log.append((rank, t0, key, op))
            busy[rank] += compute_s
            if t0 + duration > env.now:   # the wait for a transfer and the op itself: one timeout
                yield env.timeout(t0 + duration - env.now)

            if f_key is not None:
                finish(0, f_key)
            if b_key is not None:
                finish(1, b_key)
                live -= 1
        peak[rank] = peak_live
        finished[rank] = True

    with gc_paused():
        programs = [plan(rank) for rank in range(num_ranks)]
        for rank in range(num_ranks):
            env.process(run_rank(rank, programs[rank]))
        env.run()
    for rank, uses in enumerate(op_uses):   # seconds per task name: each timeline times its uses
        names = task_time[rank]
        for key, n in uses.items():
            for name, secs in placed_by[key][5].items():
                names[name] = names.get(name, 0.0) + n * secs
    if not all(finished):
        stuck = [r for r in range(num_ranks) if not finished[r]]
        raise RuntimeError(f"pipeline deadlock: ranks {stuck} never finished their programs")

    makespan = env.now
    events = EventLog(op_log, placed_by) if record_events else []
    idle = tuple(makespan - b for b in busy)
    return PipelineResult(
        makespan_s=makespan,
        events=events,
        busy_s=tuple(busy),
        idle_s=idle,
        bubble_s=max(idle),
        peak_inflight_activations=tuple(peak),
        streams=streams,
        covered_s=tuple(covered),
        last_compute_end_s=tuple(last_compute_end),
        task_time_s=tuple(task_time),
        op_spans=tuple(sorted(spans, key=lambda x: (x[2], x[0]))),
    )


def to_chrome_trace(result: PipelineResult, pid_names: dict[int, str] | None = None) -> dict:
    """Chrome-trace JSON (opens in Perfetto): one process per rank, one thread per stream,
    complete ("X") events with ts/dur in microseconds."""
    tids = {s: i for i, s in enumerate(result.streams)}
    trace: list[dict] = []
    for rank in range(result.num_ranks):
        name = (pid_names or {}).get(rank, f"GPU {rank}")
        trace.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0,
                      "args": {"name": name}})
        trace.append({"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0,
                      "args": {"sort_index": rank}})
        for stream, tid in tids.items():
            trace.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid,
                          "args": {"name": stream}})
    for e in result.events:
        trace.append(complete_slice(e.name, e.rank, tids[e.stream], e.start_s, e.end_s, cat=e.kind,
                                    args={"kind": e.kind, "microbatch": e.microbatch, "chunk": e.chunk}))
    return {"traceEvents": nested_cleanly(trace), "displayTimeUnit": "ms"}
