"""Unions of time intervals: how long a set of possibly overlapping spans (kernels on one GPU,
ops of one rank) covers. Pure Python, shared by the simulator, calibration's trace readers and
real/'s benches."""

from __future__ import annotations


def union_intervals(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of closed intervals (start, end), as disjoint sorted intervals; empty or reversed
    ones cover nothing."""
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if end < start:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def covered_length(intervals: list[tuple[float, float]]) -> float:
    """Total length the intervals cover, overlaps counted once."""
    return sum(b - a for a, b in union_intervals(intervals))


def uncovered_length(intervals: list[tuple[float, float]], cover: list[tuple[float, float]]) -> float:
    """Length of the intervals' union not under the union of `cover` (e.g. communication kernels
    not hidden under compute)."""
    covered = union_intervals(cover)
    return sum((b - a) - sum(max(0.0, min(b, d) - max(a, c)) for c, d in covered)
               for a, b in union_intervals(intervals))
