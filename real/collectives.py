"""Autograd-aware collectives for tensor and sequence parallelism (Megatron-LM's f/g operators),
and CommTimer, which times each collective call when a benchmark asks for it.

Tokens are the leading dimension (x_TD: T tokens, D features). With sequence parallelism a rank
holds T/W consecutive tokens (rank r: rows [r*T/W, (r+1)*T/W)).

  to_tp(x, sp)    entering the tensor-parallel region:
                    sp:     all-gather the token shards  (backward: reduce-scatter)
                    not sp: identity on a replicated x   (backward: all-reduce)
  from_tp(y, sp)  leaving it with partial sums:
                    sp:     reduce-scatter to token shards (backward: all-gather)
                    not sp: all-reduce                    (backward: identity)

Works with NCCL on GPUs and gloo on CPUs (`all_gather_into_tensor`, `reduce_scatter_tensor`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict

import torch
import torch.distributed as dist


class CommTimer:
    """Collects the time of each collective by kind (all_gather, reduce_scatter, all_reduce,
    p2p_wait). On a GPU: CUDA events on the current stream around the call, so a blocking
    collective counts from its launch to the point where the stream may go on (its exposed time,
    waits for the peer included); on a CPU: the host clock. `reset()` starts a repetition,
    `totals_s()` (after a device sync) sums that repetition's spans by kind.
    `host_marks` (None: off): a list a benchmark hands in to collect host-only marks, (kind,
    "start" | "end", perf_counter_ns, native thread id), at each span's entry and exit and at each
    `host_span` (e.g. a P2P post): no device work, no sync (real/bench/cp_traces.py)."""

    def __init__(self, device: torch.device, host_marks: list | None = None):
        self.device, self.spans, self.host_marks = device, [], host_marks

    def reset(self):
        self.spans = []

    def mark(self, kind: str, phase: str) -> None:
        if self.host_marks is not None:
            self.host_marks.append((kind, phase, time.perf_counter_ns(), threading.get_native_id()))

    @contextlib.contextmanager
    def host_span(self, kind: str):
        """Host marks only around the body (nothing on the device)."""
        self.mark(kind, "start")
        yield
        self.mark(kind, "end")

    @contextlib.contextmanager
    def span(self, kind: str):
        self.mark(kind, "start")
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.spans.append((kind, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.spans.append((kind, t0, time.perf_counter()))
        self.mark(kind, "end")

    def totals_s(self) -> dict[str, float]:
        out = defaultdict(float)
        for kind, a, b in self.spans:
            out[kind] += a.elapsed_time(b) * 1e-3 if self.device.type == "cuda" else b - a
        return dict(out)


def _timed(timer: CommTimer | None, kind: str):
    return timer.span(kind) if timer is not None else contextlib.nullcontext()


def all_gather_tokens(x_tD: torch.Tensor, group, timer: CommTimer | None = None) -> torch.Tensor:
    """Concatenate every rank's token shard in rank order (no autograd)."""
    world = dist.get_world_size(group)
    out_TD = x_tD.new_empty((world * x_tD.shape[0], *x_tD.shape[1:]))
    with _timed(timer, "all_gather"):
        dist.all_gather_into_tensor(out_TD, x_tD.contiguous(), group=group)
    return out_TD


def reduce_scatter_tokens(x_TD: torch.Tensor, group, timer: CommTimer | None = None) -> torch.Tensor:
    """Sum over ranks, each rank keeping its token shard (no autograd)."""
    world = dist.get_world_size(group)
    if x_TD.shape[0] % world:
        raise ValueError(f"{x_TD.shape[0]} tokens do not split over {world} ranks")
    out_tD = x_TD.new_empty((x_TD.shape[0] // world, *x_TD.shape[1:]))
    with _timed(timer, "reduce_scatter"):
        dist.reduce_scatter_tensor(out_tD, x_TD.contiguous(), group=group)
    return out_tD


def all_reduce_sum(x: torch.Tensor, group, timer: CommTimer | None = None) -> torch.Tensor:
    out = x.contiguous().clone()
    with _timed(timer, "all_reduce"):
        dist.all_reduce(out, group=group)
    return out


class _GatherTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, timer):
        ctx.group, ctx.timer = group, timer
        return all_gather_tokens(x, group, timer)

    @staticmethod
    def backward(ctx, g):
        return reduce_scatter_tokens(g, ctx.group, ctx.timer), None, None


class _ScatterTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, timer):
        ctx.group, ctx.timer = group, timer
        return reduce_scatter_tokens(x, group, timer)

    @staticmethod
    def backward(ctx, g):
        return all_gather_tokens(g, ctx.group, ctx.timer), None, None


class _CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, timer):
        ctx.group, ctx.timer = group, timer
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return all_reduce_sum(g, ctx.group, ctx.timer), None, None


class _ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, timer):
        return all_reduce_sum(x, group, timer)

    @staticmethod
    def backward(ctx, g):
        return g, None, None


def to_tp(x: torch.Tensor, sequence_parallel: bool, group, timer: CommTimer | None = None):
    """Enter the tensor-parallel region (see the module docstring)."""
    if sequence_parallel:
        return _GatherTokens.apply(x, group, timer)
    return _CopyToTP.apply(x, group, timer)


def from_tp(y: torch.Tensor, sequence_parallel: bool, group, timer: CommTimer | None = None):
    """Leave the tensor-parallel region, summing the ranks' partial outputs."""
    if sequence_parallel:
        return _ScatterTokens.apply(y, group, timer)
    return _ReduceFromTP.apply(y, group, timer)
