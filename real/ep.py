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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_to_all_single as all_to_all_single_autograd

from real.routing import expert_counts


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
    world = dist.get_world_size(group)
    El = num_experts // world
    T, K = topk_ids_TK.shape
    flat_ids_N = topk_ids_TK.flatten()
    order_N = torch.argsort(flat_ids_N, stable=True)
    counts_E = expert_counts(flat_ids_N, num_experts)

    recv_counts_E = torch.empty_like(counts_E)  # laid out (source rank W, local expert El)
    dist.all_to_all_single(recv_counts_E, counts_E, group=group)
    send_splits = counts_E.view(world, El).sum(dim=1).tolist()  # host sync
    recv_counts_WEl = recv_counts_E.view(world, El)
    recv_splits = recv_counts_WEl.sum(dim=1).tolist()

    x_send_ND = x_TD[order_N // K]
    x_recv_RD = x_send_ND.new_empty(sum(recv_splits), x_TD.shape[1])
    x_recv_RD = all_to_all_single_autograd(x_recv_RD, x_send_ND, recv_splits, send_splits, group=group)

    local_expert_R = torch.repeat_interleave(
        torch.arange(El, device=x_TD.device).repeat(world), recv_counts_WEl.flatten(),
        output_size=sum(recv_splits))
    perm_R = torch.argsort(local_expert_R, stable=True)
    state = DispatchState(order_N, perm_R, send_splits, recv_splits)
    return x_recv_RD[perm_R], local_expert_R[perm_R], recv_counts_WEl.sum(dim=0), state


def combine(y_RD: torch.Tensor, state: DispatchState, group) -> torch.Tensor:
    """Return expert outputs to their tokens' ranks; rows come back in (token, slot) order, y_ND."""
    y_recv_RD = y_RD[torch.argsort(state.perm_R)]  # back to source-rank-major order
    y_send_ND = y_RD.new_empty(sum(state.send_splits), y_RD.shape[1])
    y_send_ND = all_to_all_single_autograd(y_send_ND, y_recv_RD, state.send_splits,
                                           state.recv_splits, group=group)
    return y_send_ND[torch.argsort(state.order_N)]
