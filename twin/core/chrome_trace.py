"""Complete ('X') slices of a Chrome trace, timed so that Perfetto keeps every one.

Perfetto reads a JSON `ts` and `dur` in microseconds and rounds each to whole nanoseconds on its
own (`llround(value * 1000)`, trace_processor's json importer), so a slice ends at
round(ts) + round(dur). On one thread, slices must nest or be disjoint: a slice that starts inside
the one before and ends after it is dropped (the `slice_drop_overlapping_complete_event` import
error). Rounding `ts` and `dur` separately, as `twin trace` and `twin serve --trace` did until
s21walk, made back-to-back ops overlap by 1 ns: Perfetto dropped 156 of a V3 step's op slices and
6,744 of its layer slices, and 794 of R1's serving iterations.

Here a slice's start and end are each rounded to the nanosecond and its `dur` is their difference,
so round(ts) + round(dur) is exactly the rounded end: back-to-back slices meet at the same
nanosecond. `nested_cleanly` then moves a start that rounding alone put 1 ns before the end of the
slice before it on its thread (two float times a hair apart that straddle a half nanosecond).
"""

from __future__ import annotations

from collections import defaultdict

NS_PER_S = 1_000_000_000
NS_PER_US = 1_000
# an overlap this small is float rounding at a shared boundary, never two ops really overlapping
ROUNDING_OVERLAP_NS = 1


def _ns(t_s: float) -> int:
    return round(t_s * NS_PER_S)


def complete_slice(name: str, pid: int, tid: int, start_s: float, end_s: float, **fields) -> dict:
    """An 'X' event from start_s to end_s (seconds), ts and dur in µs on whole nanoseconds."""
    start_ns, end_ns = _ns(start_s), _ns(end_s)
    return {"ph": "X", "name": name, "pid": pid, "tid": tid, "ts": start_ns / NS_PER_US,
            "dur": max(end_ns - start_ns, 0) / NS_PER_US, **fields}


def slice_ns(event: dict) -> tuple[int, int]:
    """(start, end) of an 'X' event in nanoseconds, as Perfetto rounds them."""
    start = round(event["ts"] * NS_PER_US)
    return start, start + round(event["dur"] * NS_PER_US)


def nested_cleanly(events: list[dict]) -> list[dict]:
    """The events with each 'X' slice that starts up to 1 ns before the end of the one before it on
    its (pid, tid), and ends after it, started at that end instead (same end). Larger overlaps are
    left as they are: they are the producer's bug, and `perfetto_drops` names them."""
    by_track: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_track[(e["pid"], e["tid"])].append(e)
    for slices in by_track.values():
        slices.sort(key=lambda e: slice_ns(e)[0])
        prev_end = None
        for e in slices:
            start, end = slice_ns(e)
            if prev_end is not None and 0 < prev_end - start <= ROUNDING_OVERLAP_NS and end > prev_end:
                e["ts"], e["dur"] = prev_end / NS_PER_US, (end - prev_end) / NS_PER_US
                start = prev_end
            prev_end = end if prev_end is None or start >= prev_end else max(prev_end, end)
    return events


def perfetto_drops(events: list[dict]) -> list[tuple]:
    """The 'X' slices Perfetto's importer would drop: on one (pid, tid), each slice that starts
    inside an open one and ends after it ((pid, tid), name, start_ns, end_ns, the open slice)."""
    by_track: dict[tuple, list] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_track[(e["pid"], e["tid"])].append((*slice_ns(e), e["name"]))
    drops = []
    for track, slices in by_track.items():
        slices.sort(key=lambda s: (s[0], -s[1]))   # a parent before the children that share its start
        stack: list[tuple] = []
        for start, end, name in slices:
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1]:
                drops.append((track, name, start, end, stack[-1]))
                continue
            stack.append((start, end, name))
    return drops
