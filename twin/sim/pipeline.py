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
  sequence, each holding one of the rank's streams (a capacity-1 `simpy.Resource`). The op ends
  when all its chains end. Two chains sharing the compute and comm streams is how DualPipe's
  overlapped forward+backward hides communication behind computation.
* p2p transfers are pure delays: they hold no stream.

Because a rank runs one op at a time, only the chains of that op compete for its streams; an op
with a single chain therefore never waits for a stream and is timed without SimPy resource
events (the result is identical, and the V3-size step stays well under a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import simpy

from twin.sim.schedules import PipeOp, Schedule


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


@dataclass(frozen=True)
class Event:
    rank: int
    stream: str
    name: str
    kind: str  # the op kind: F, B, W, BW, FB
    microbatch: int
    chunk: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class PipelineResult:
    makespan_s: float
    events: list[Event]  # ordered by (start_s, rank)
    busy_s: tuple[float, ...]  # per rank: compute-stream task time
    idle_s: tuple[float, ...]  # per rank: makespan - busy
    bubble_s: float  # max idle over ranks
    peak_inflight_activations: tuple[int, ...]  # per rank
    streams: tuple[str, ...]

    @property
    def num_ranks(self) -> int:
        return len(self.busy_s)


def simulate_pipeline(schedule: Schedule, costs: OpCosts,
                      streams: Sequence[str] = ("compute", "comm")) -> PipelineResult:
    """Simulate one step of `schedule`. Activation sets are counted from the start of their
    forward (an overlapped FB pair holds both its sets) to the end of their B or BW."""
    streams = tuple(streams)
    env = simpy.Environment()  # env.now is float seconds
    num_ranks = schedule.num_ranks
    resources = [{s: simpy.Resource(env, capacity=1) for s in streams} for _ in range(num_ranks)]
    f_done: dict[tuple[int, int, int], simpy.Event] = {}  # (rank, mb, chunk) -> value: end time
    b_done: dict[tuple[int, int, int], simpy.Event] = {}
    events: list[Event] = []
    busy = [0.0] * num_ranks
    peak = [0] * num_ranks
    finished = [False] * num_ranks

    def done_event(table: dict, key: tuple[int, int, int]) -> simpy.Event:
        ev = table.get(key)
        if ev is None:
            ev = table[key] = env.event()
        return ev

    def inputs(rank: int, op: PipeOp) -> list[tuple[simpy.Event, float]]:
        """(event to wait for, transfer delay after it) for each input of `op`."""
        needs = []
        fwd, bwd = op.forward_part, op.backward_part
        if fwd is not None:
            mb, chunk = fwd
            up = schedule.forward_upstream(rank, chunk)
            if up is not None:
                delay = costs.p2p_s(up[0], rank, "F") if up[0] != rank else 0.0
                needs.append((done_event(f_done, (up[0], mb, up[1])), delay))
        if bwd is not None:
            mb, chunk = bwd
            up = schedule.backward_upstream(rank, chunk)
            if up is None:  # last stage: the loss of its own forward
                needs.append((done_event(f_done, (rank, mb, chunk)), 0.0))
            else:
                delay = costs.p2p_s(up[0], rank, "B") if up[0] != rank else 0.0
                needs.append((done_event(b_done, (up[0], mb, up[1])), delay))
        if op.kind == "W":
            needs.append((done_event(b_done, (rank, op.microbatch, op.chunk)), 0.0))
        return needs

    def record(rank: int, op: PipeOp, task: Task, start: float, end: float) -> None:
        if task.stream not in resources[rank]:
            raise ValueError(f"task {task.name!r} uses stream {task.stream!r}; streams are {streams}")
        mb, chunk = op.microbatch, op.chunk
        if op.kind == "FB" and task.part == "B":
            mb, chunk = op.b_microbatch, op.b_chunk
        events.append(Event(rank, task.stream, task.name, op.kind, mb, chunk, start, end))
        if task.stream == "compute":
            busy[rank] += task.duration_s

    def run_chain(rank: int, op: PipeOp, chain: Sequence[Task]):
        for task in chain:
            with resources[rank][task.stream].request() as req:
                yield req
                start = env.now
                yield env.timeout(task.duration_s)
                record(rank, op, task, start, env.now)

    def run_rank(rank: int):
        live = 0
        for op in schedule.programs[rank]:
            ready = env.now
            for ev, delay in inputs(rank, op):
                if not ev.triggered:
                    yield ev
                ready = max(ready, ev.value + delay)
            if ready > env.now:
                yield env.timeout(ready - env.now)

            if op.forward_part is not None:
                live += 1
                peak[rank] = max(peak[rank], live)
            chains = [c for c in costs.chains(rank, op) if c]
            if len(chains) == 1:  # nothing else on this rank competes for its streams
                t = env.now
                for task in chains[0]:
                    record(rank, op, task, t, t + task.duration_s)
                    t += task.duration_s
                if t > env.now:
                    yield env.timeout(t - env.now)
            elif chains:
                yield env.all_of([env.process(run_chain(rank, op, c)) for c in chains])

            if op.forward_part is not None:
                mb, chunk = op.forward_part
                done_event(f_done, (rank, mb, chunk)).succeed(env.now)
            if op.backward_part is not None:
                mb, chunk = op.backward_part
                done_event(b_done, (rank, mb, chunk)).succeed(env.now)
                live -= 1
        finished[rank] = True

    for rank in range(num_ranks):
        env.process(run_rank(rank))
    env.run()
    if not all(finished):
        stuck = [r for r in range(num_ranks) if not finished[r]]
        raise RuntimeError(f"pipeline deadlock: ranks {stuck} never finished their programs")

    makespan = env.now
    events.sort(key=lambda e: (e.start_s, e.rank))
    idle = tuple(makespan - b for b in busy)
    return PipelineResult(
        makespan_s=makespan,
        events=events,
        busy_s=tuple(busy),
        idle_s=idle,
        bubble_s=max(idle),
        peak_inflight_activations=tuple(peak),
        streams=streams,
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
        trace.append({
            "ph": "X", "name": e.name, "cat": e.kind, "pid": e.rank, "tid": tids[e.stream],
            "ts": e.start_s * 1e6, "dur": (e.end_s - e.start_s) * 1e6,
            "args": {"kind": e.kind, "microbatch": e.microbatch, "chunk": e.chunk},
        })
    return {"traceEvents": trace, "displayTimeUnit": "ms"}
