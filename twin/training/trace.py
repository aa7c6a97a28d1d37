"""A simulated training step as a Chrome trace (`twin trace`), to open in Perfetto beside DeepSeek's.

One process per pipeline rank, one thread per stream (compute, comm), times in microseconds.
Slices carry DeepSeek's own annotation names (`attn(F)`, `mlp(B)`, `mlp(W)`, `dispatch(F)`,
`combine(B)`, as in shared/reference/profile-data/train.json), so a twin slice and the real one
line up by name. The step's tail is included: each rank's data-parallel reduce-scatter after its
last backward, then the optimizer (and the parameter all-gather unless it is overlapped). Flow
arrows join the last forward slice of a micro-batch's chunk on one rank to the first forward slice
that consumes it on the next (and likewise for backward input-gradients), so the pipeline's
dependencies show as arrows across ranks. Zero-length slices are dropped.

Granularity: `layer` (per layer and block part, with DeepSeek's names: about 108k slices and 13 MB
for a whole V3 step) or `op` (the default: one slice per pipeline op and stream, named as the
schedule names it, e.g. `F3.0&B1.0`, with the tail and the same flow arrows: about 1 MB for a whole
V3 step). The JSON is compact (no spaces, times rounded to 1 ns); a `.gz` path writes it gzipped,
which Perfetto opens directly. `window_s` keeps only slices that overlap [start, end) seconds:
one chunk pair at layer granularity is a few hundred kB, to open beside DeepSeek's trace.
"""

from __future__ import annotations

import bisect
import sys

from tqdm import tqdm

from twin.core.chrome_trace import complete_slice, nested_cleanly
from twin.core.schedules import build_schedule
from twin.core.scenario import Scenario
from twin.sim.pipeline import Event
from twin.training.results import StepResult

# the twin's task names -> DeepSeek's annotations in its published H800 trace
TRACE_NAMES = {
    "attn_fwd": "attn(F)", "attn_bwd_input": "attn(B)", "attn_bwd_weight": "attn(W)",
    "mlp_fwd": "mlp(F)", "mlp_bwd_input": "mlp(B)", "mlp_bwd_weight": "mlp(W)",
    "dispatch": "dispatch(F)", "combine": "combine(F)",
    "dispatch_bwd": "dispatch(B)", "combine_bwd": "combine(B)",
    "dp_reduce_scatter": "reduce_scatter(DP)", "optimizer": "optimizer", "dp_all_gather": "all_gather(DP)",
    # beyond DeepSeek's layout (no TP, CP or ZeRO-3 in its trace): the collective and its group
    "tp_all_reduce": "all_reduce(TP)", "tp_all_reduce_bwd": "all_reduce(TP, B)",
    "tp_all_gather": "all_gather(TP)", "tp_all_gather_bwd": "all_gather(TP, B)",
    "tp_reduce_scatter": "reduce_scatter(TP)", "tp_reduce_scatter_bwd": "reduce_scatter(TP, B)",
    "cp_ring_kv": "ring_kv(CP)", "cp_ring_kv_bwd": "ring_kv(CP, B)", "cp_ring_dkv_home": "dkv_home(CP, B)",
    "cp_all_gather_kv": "all_gather_kv(CP)", "cp_reduce_scatter_kv": "reduce_scatter_kv(CP, B)",
    "fsdp_all_gather": "all_gather(FSDP)", "fsdp_reduce_scatter": "reduce_scatter(FSDP)",
    "fsdp_copy_out": "copy_out(FSDP)", "fsdp_copy_in": "copy_in(FSDP)",
    "pp_embedding_all_reduce": "all_reduce(tied embedding, PP ends)",
}
# recomputed forwards (plan.recompute = 'full') keep their collectives, marked as recomputed
TRACE_NAMES.update({"recompute_" + k: v.replace(")", ", recompute)") for k, v in list(TRACE_NAMES.items())
                    if k.startswith(("tp_", "cp_")) and not k.endswith("_bwd") and "reduce_scatter_kv" not in k
                    and "dkv_home" not in k})
FORWARD_TASKS = ("attn_fwd", "mlp_fwd")
BACKWARD_TASKS = ("attn_bwd_input", "mlp_bwd_input")


def _us(t_s: float) -> float:
    """Seconds -> µs on a whole nanosecond (as twin.core.chrome_trace times the slices)."""
    return round(t_s * 1e9) / 1e3


def _in_window(e: Event, window_s: tuple[float, float] | None) -> bool:
    return window_s is None or (e.end_s > window_s[0] and e.start_s < window_s[1])


def _flows(sc: Scenario, res: StepResult, tids: dict[str, int]) -> list[tuple[Event, Event]]:
    """(producer, consumer) slice pairs of the pipeline's point-to-point dependencies."""
    pipe = res.pipeline
    schedule = build_schedule(sc.plan.schedule, sc.plan.pp, sc.num_microbatches, sc.plan.virtual_stages)
    first: dict[tuple, Event] = {}
    last: dict[tuple, Event] = {}
    for e in pipe.events:
        if e.stream != "compute":
            continue
        direction = "F" if e.name in FORWARD_TASKS else "B" if e.name in BACKWARD_TASKS else None
        if direction is None:
            continue
        key = (direction, e.rank, e.microbatch, e.chunk)
        if key not in first or e.start_s < first[key].start_s:
            first[key] = e
        if key not in last or e.end_s > last[key].end_s:
            last[key] = e
    pairs = []
    for (direction, rank, mb, chunk), consumer in first.items():
        up = (schedule.forward_upstream if direction == "F" else schedule.backward_upstream)(rank, chunk)
        if up is None or up[0] == rank:
            continue
        producer = last.get((direction, up[0], mb, up[1]))
        if producer is not None:
            pairs.append((producer, consumer))
    return pairs


GRANULARITIES = ("op", "layer")


BAR_EVERY = 1 << 16   # tasks or slices between progress bar updates (a per-item update costs more than the item)


def _op_slices(res: StepResult, bar: tqdm) -> list[Event]:
    """One slice per pipeline op and stream: from the op's first to its last task on that stream."""
    spans_by_rank: dict[int, list] = {}
    for rank, label, start, end in res.pipeline.op_spans:
        spans_by_rank.setdefault(rank, []).append((start, end, label))
    starts_by_rank = {rank: [s[0] for s in spans] for rank, spans in spans_by_rank.items()}
    extent: dict[tuple, list] = {}
    for i, e in enumerate(res.pipeline.events):
        if i and not i % BAR_EVERY:
            bar.update(BAR_EVERY)
        spans = spans_by_rank[e.rank]
        # the op whose span holds this task (ops run one after another on a rank): the last to start at or before it
        # (bisect, in C: the same index as the binary search written out here until s26walk, ~3x faster)
        lo = max(bisect.bisect_right(starts_by_rank[e.rank], e.start_s) - 1, 0)
        key = (e.rank, e.stream, lo)
        box = extent.setdefault(key, [e.start_s, e.end_s, spans[lo][2]])
        box[0], box[1] = min(box[0], e.start_s), max(box[1], e.end_s)
    return [Event(rank, stream, label, "op", -1, 0, start, end)
            for (rank, stream, _), (start, end, label) in sorted(extent.items(), key=lambda kv: kv[1][0])]


def step_trace(sc: Scenario, res: StepResult, window_s: tuple[float, float] | None = None,
               granularity: str = "op", progress: bool = False) -> dict:
    """Chrome-trace JSON of a simulated step (with its event log: simulate_step(record_events=True)).
    `progress`: a bar over the tasks cut into op slices, then over the slices written (~20 s at the task bound,
    STEP_TASK_LIMIT, without a word until s27walk)."""
    with tqdm(total=len(res.pipeline.events), desc="trace: tasks", unit="task", file=sys.stderr, disable=not progress,
              leave=False, unit_scale=True) as bar:
        return _step_trace(sc, res, window_s, granularity, bar)


def _step_trace(sc: Scenario, res: StepResult, window_s: tuple[float, float] | None, granularity: str,
                bar: tqdm) -> dict:
    pipe = res.pipeline
    # the data-parallel collectives run on their own stream (NCCL's), beside the pipeline's comm stream
    tids = {s: i for i, s in enumerate((*pipe.streams, "dp"))}
    out: list[dict] = []
    for rank in range(pipe.num_ranks):
        # every event names its pid and tid, the process-wide metadata too (tid 0), as Trace Event Format lists them
        out.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": f"PP rank {rank} (GPU)"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0, "args": {"sort_index": rank}})
        for stream, tid in tids.items():
            out.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": stream}})
    slices = pipe.events if granularity == "layer" else _op_slices(res, bar)
    tail = [e._replace(stream="dp") if e.stream == "comm" else e for e in res.tail_events]
    bar.unit = "slice"
    bar.set_description("trace: slices", refresh=False)
    bar.reset(total=len(slices) + len(tail))
    for i, e in enumerate((*slices, *tail)):
        if i and not i % BAR_EVERY:
            bar.update(BAR_EVERY)
        if e.end_s <= e.start_s or not _in_window(e, window_s):
            continue
        args = {"args": {"mb": e.microbatch, "chunk": e.chunk, "op": e.kind}} if e.microbatch >= 0 else {}
        out.append(complete_slice(TRACE_NAMES.get(e.name, e.name), e.rank, tids[e.stream], e.start_s, e.end_s, **args))
    for i, (src, dst) in enumerate(_flows(sc, res, tids)):
        if not (_in_window(src, window_s) and _in_window(dst, window_s)):
            continue
        out.append({"ph": "s", "id": i, "name": "p2p", "cat": "p2p", "pid": src.rank, "tid": tids[src.stream],
                    "ts": round(_us(src.end_s) - 0.001, 3)})   # 1 ns inside the producer's slice
        out.append({"ph": "f", "bp": "e", "id": i, "name": "p2p", "cat": "p2p", "pid": dst.rank,
                    "tid": tids[dst.stream], "ts": _us(dst.start_s)})
    return {"traceEvents": nested_cleanly(out), "displayTimeUnit": "ms",
            # the model beside the scenario's name: a scenario run with another model (`--set model=...`) keeps its name
            "otherData": {"scenario": sc.name, "model": sc.model.name, "step_time_s": res.step_time_s,
                          "granularity": granularity,
                          "window_s": list(window_s) if window_s else None}}
