"""Routing: group-limited top-k with the selection-only balancing bias (DeepSeek-V3 §2.1.2), and
the rows routed to each expert. Used by the gate (`real/model.py` Gate), expert parallelism
(`real/ep.py` dispatch) and the benchmarks; shape legend as in `real/model.py`.
"""

from __future__ import annotations

import torch


def expert_counts(topk_ids_TK: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Rows routed to each expert, counts_E (int64). A scatter-add, not `bincount`, which would
    synchronise with the host on a GPU."""
    ids_N = topk_ids_TK.flatten()
    return torch.zeros(num_experts, dtype=torch.int64, device=ids_N.device).scatter_add_(
        0, ids_N, torch.ones_like(ids_N))


def route(scores_TE: torch.Tensor, bias_E: torch.Tensor, top_k: int, num_groups: int,
          top_k_groups: int, route_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-limited top-k routing with a selection-only bias (V3 eqs. 13-16 and §2.1.2).

    The bias shifts which experts are *chosen*; the gating weights come from the unbiased
    sigmoid scores, normalised over the chosen K and multiplied by route_scale.
    Groups: experts split into G equal groups, a group scores the sum of its top-2 biased
    scores; only the top `top_k_groups` groups may be chosen from.
    Returns weights_TK (float32) and topk_ids_TK (int64)."""
    T, E = scores_TE.shape
    choice_TE = scores_TE + bias_E
    if num_groups > 1:
        choice_TGe = choice_TE.view(T, num_groups, E // num_groups)
        per_group = min(2, E // num_groups)
        group_score_TG = choice_TGe.topk(per_group, dim=-1).values.sum(dim=-1)
        top_groups_TG = group_score_TG.topk(top_k_groups, dim=-1).indices
        excluded_TG = torch.ones_like(group_score_TG, dtype=torch.bool).scatter(1, top_groups_TG, False)
        choice_TE = choice_TGe.masked_fill(excluded_TG[:, :, None], float("-inf")).view(T, E)
    topk_ids_TK = choice_TE.topk(top_k, dim=-1).indices
    weights_TK = scores_TE.gather(1, topk_ids_TK)
    weights_TK = weights_TK / weights_TK.sum(dim=-1, keepdim=True).clamp(min=1e-20)
    return weights_TK * route_scale, topk_ids_TK
