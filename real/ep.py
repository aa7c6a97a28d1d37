"""Expert parallelism: dispatch tokens to the ranks holding their experts, and combine them back.

W ranks in the group; E routed experts, El = E/W local experts per rank; rank r holds experts
[r*El, (r+1)*El). T tokens on this rank, each routed to K experts, N = T*K (token, slot) rows.

dispatch:
  1. sort this rank's N rows by global expert (so also by destination rank);
  2. exchange per-expert counts with `all_to_all_single` (counts_E -> recv_counts_WEl);
  3. move the split sizes to the CPU (the one host synchronisation);
  4. send the token rows with a variable-size `all_to_all_single` (autograd-aware);
  5. permute the received rows (source-rank major) into local-expert order.
combine mirrors it: un-permute, all-to-all back with the splits swapped, un-sort.

Works with NCCL on GPUs and gloo on CPUs; the differentiable all-to-all comes from
`torch.distributed.nn.functional`, so gradients flow back through both exchanges.

Host marks (s13ep, issue 13): under `recording(HostMarks(...))` dispatch and combine note the host
clock (perf_counter_ns) at each point of MARK_SEGMENTS, i.e. where each segment of their host work
begins, and the backward of their two autograd all-to-alls notes its begin and end (node hooks).
A mark adds no synchronisation (with events=True also a CUDA event on the current stream, a
record and no wait); outside `recording` every mark is a no-op call.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_to_all_single as all_to_all_single_autograd

from real.routing import expert_counts


# Each mark starts the segment of host work named by it; the segment ends at the next mark.
MARK_SEGMENTS = {
    "dispatch": "argsort of the expert ids and the per-expert counts (issue)",
    "counts_a2a": "the split-size exchange: all_to_all_single of the counts (call)",
    "tolist_send": "send splits .tolist(): waits for the GPU queue, the counts exchange and the peer",
    "tolist_recv": "recv splits .tolist() (the second device-to-host copy)",
    "gather": "the token-row gather x_TD[order // K] and the receive buffer (issue)",
    "tokens_a2a": "the token all-to-all, autograd wrapper (call)",
    "dispatch_post": "local-expert ids, their argsort and the received rows' permutation (issue)",
    "dispatch_end": "dispatch returned: the expert FFN follows, up to combine",
    "combine": "combine's un-permute gather and send buffer (issue)",
    "combine_a2a": "the return all-to-all, autograd wrapper (call)",
    "combine_post": "the un-sort gather y_send_ND[argsort(order)] (issue)",
    "combine_end": "combine returned: weights, shared experts, the next layers up to the next dispatch",
    "bwd_combine_a2a": "backward of combine's all-to-all (autograd node, call)",
    "bwd_combine_a2a_end": "after it: the backward up to the next hooked node",
    "bwd_dispatch_a2a": "backward of dispatch's token all-to-all (autograd node, call)",
    "bwd_dispatch_a2a_end": "after it: the backward up to the next hooked node",
}


@dataclass(frozen=True)
class HostMark:
    """One point the host reached: `label` (a MARK_SEGMENTS key), the MoE layer's dispatch count
    within the recording (`layer`), perf_counter_ns, the CUDA event recorded there (events mode)
    and whether the main thread (not the autograd engine's device thread) reached it."""

    label: str
    layer: int
    host_ns: int
    event: object
    main_thread: bool


class HostMarks:
    """Collects HostMark points while `recording`; events=True also records a CUDA event at each
    point on the current stream (GPU time of that point in the stream; costs a record each)."""

    active = True

    def __init__(self, events: bool = False):
        self.events = events
        self.points: list[HostMark] = []
        self.layer = -1
        self._main = threading.get_ident()

    def point(self, label: str, layer: int | None = None) -> None:
        host_ns = time.perf_counter_ns()
        event = None
        if self.events:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        self.points.append(HostMark(label, self.layer if layer is None else layer, host_ns, event,
                                    threading.get_ident() == self._main))

    def next_layer(self) -> None:
        self.layer += 1

    def watch_backward(self, out: torch.Tensor, label: str) -> None:
        """Mark the begin (`label`) and end (`label`_end) of the backward of the autograd node
        that made `out` (the autograd all-to-all)."""
        node = out.grad_fn
        if node is None:
            return
        layer = self.layer
        node.register_prehook(lambda grad_outputs: self.point(label, layer))
        node.register_hook(lambda grad_inputs, grad_outputs: self.point(f"{label}_end", layer))


class _NoMarks:
    """What dispatch and combine mark into outside `recording`: nothing."""

    active = False

    def point(self, label: str, layer: int | None = None) -> None:
        pass

    def next_layer(self) -> None:
        pass

    def watch_backward(self, out: torch.Tensor, label: str) -> None:
        pass


_NO_MARKS = _NoMarks()
_marks: HostMarks | _NoMarks = _NO_MARKS


@contextlib.contextmanager
def recording(marks: HostMarks | None):
    """dispatch and combine mark into `marks` inside the block (None: no marks)."""
    global _marks
    before, _marks = _marks, (marks if marks is not None else _NO_MARKS)
    try:
        yield marks
    finally:
        _marks = before


@dataclass
class DispatchState:
    """What combine needs to undo dispatch."""

    order_N: torch.Tensor  # this rank's (token, slot) rows sorted by expert
    perm_R: torch.Tensor  # received rows (source-major) -> local-expert order
    send_splits: list[int]  # rows sent to each rank
    recv_splits: list[int]  # rows received from each rank


def dispatch(x_TD: torch.Tensor, topk_ids_TK: torch.Tensor, num_experts: int, group):
    """Send each (token, slot) row to its expert's rank.

    Returns x_RD (received rows sorted by local expert), expert_of_row_R (local expert index of
    each row), counts_El (rows per local expert) and the DispatchState for `combine`."""
    marks = _marks
    marks.next_layer()
    marks.point("dispatch")
    world = dist.get_world_size(group)
    El = num_experts // world
    T, K = topk_ids_TK.shape
    flat_ids_N = topk_ids_TK.flatten()
    order_N = torch.argsort(flat_ids_N, stable=True)
    counts_E = expert_counts(flat_ids_N, num_experts)

    recv_counts_E = torch.empty_like(counts_E)  # laid out (source rank W, local expert El)
    marks.point("counts_a2a")
    dist.all_to_all_single(recv_counts_E, counts_E, group=group)
    marks.point("tolist_send")
    send_splits = counts_E.view(world, El).sum(dim=1).tolist()  # host sync
    marks.point("tolist_recv")
    recv_counts_WEl = recv_counts_E.view(world, El)
    recv_splits = recv_counts_WEl.sum(dim=1).tolist()

    marks.point("gather")
    x_send_ND = x_TD[order_N // K]
    x_recv_RD = x_send_ND.new_empty(sum(recv_splits), x_TD.shape[1])
    marks.point("tokens_a2a")
    x_recv_RD = all_to_all_single_autograd(x_recv_RD, x_send_ND, recv_splits, send_splits, group=group)
    marks.point("dispatch_post")
    marks.watch_backward(x_recv_RD, "bwd_dispatch_a2a")

    local_expert_R = torch.repeat_interleave(
        torch.arange(El, device=x_TD.device).repeat(world), recv_counts_WEl.flatten(),
        output_size=sum(recv_splits))
    perm_R = torch.argsort(local_expert_R, stable=True)
    state = DispatchState(order_N, perm_R, send_splits, recv_splits)
    out = x_recv_RD[perm_R], local_expert_R[perm_R], recv_counts_WEl.sum(dim=0), state
    marks.point("dispatch_end")
    return out


def combine(y_RD: torch.Tensor, state: DispatchState, group) -> torch.Tensor:
    """Return expert outputs to their tokens' ranks; rows come back in (token, slot) order, y_ND."""
    marks = _marks
    marks.point("combine")
    y_recv_RD = y_RD[torch.argsort(state.perm_R)]  # back to source-rank-major order
    y_send_ND = y_RD.new_empty(sum(state.send_splits), y_RD.shape[1])
    marks.point("combine_a2a")
    y_send_ND = all_to_all_single_autograd(y_send_ND, y_recv_RD, state.send_splits,
                                           state.recv_splits, group=group)
    marks.point("combine_post")
    marks.watch_backward(y_send_ND, "bwd_combine_a2a")
    y_TD = y_send_ND[torch.argsort(state.order_N)]
    marks.point("combine_end")
    return y_TD
