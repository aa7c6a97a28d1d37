"""Group-limited top-k routing, route scaling, the selection-only bias and its balancing update."""

import dataclasses

import pytest
import torch

from real.model import Gate
from real.routing import expert_counts, route

# one token, 8 experts in 4 groups of 2; group score = sum of its top-2 scores:
#   g0 = 0.9 + 0.1 = 1.0, g1 = 0.8 + 0.7 = 1.5, g2 = 0.2 + 0.3 = 0.5, g3 = 0.85 + 0.0 = 0.85
SCORES = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.85, 0.0]])
NO_BIAS = torch.zeros(8)


def test_without_groups_top2_is_the_two_highest():
    w, ids = route(SCORES, NO_BIAS, top_k=2, num_groups=1, top_k_groups=1, route_scale=1.0)
    assert ids.tolist() == [[0, 6]]
    torch.testing.assert_close(w, torch.tensor([[0.9 / 1.75, 0.85 / 1.75]]))


def test_group_limit_excludes_experts_outside_the_top_groups():
    # top-2 groups are g1 (1.5) and g0 (1.0): expert 6 (0.85, in g3) is not eligible
    w, ids = route(SCORES, NO_BIAS, top_k=2, num_groups=4, top_k_groups=2, route_scale=2.5)
    assert ids.tolist() == [[0, 2]]
    # weights: unbiased scores normalised over the chosen two, times route_scale
    torch.testing.assert_close(w, torch.tensor([[2.5 * 0.9 / 1.7, 2.5 * 0.8 / 1.7]]))


def test_bias_changes_selection_but_not_weights():
    bias = torch.zeros(8)
    bias[3] = 0.5  # expert 3: 0.7 + 0.5 = 1.2 now wins the selection
    w, ids = route(SCORES, bias, top_k=2, num_groups=4, top_k_groups=2, route_scale=1.0)
    assert ids.tolist() == [[3, 0]]
    # weights come from the unbiased scores 0.7 and 0.9
    torch.testing.assert_close(w, torch.tensor([[0.7 / 1.6, 0.9 / 1.6]]))


@pytest.mark.parametrize("groups, top_groups", [(1, 1), (4, 2), (8, 3)])
def test_routing_properties_on_random_scores(groups, top_groups):
    scores = torch.rand(64, 16)
    w, ids = route(scores, torch.randn(16) * 0.1, top_k=4, num_groups=groups,
                   top_k_groups=top_groups, route_scale=2.5)
    assert ids.shape == (64, 4)
    assert all(len(set(row)) == 4 for row in ids.tolist())  # distinct experts
    torch.testing.assert_close(w.sum(-1), torch.full((64,), 2.5))  # normalised then scaled
    used_groups = {len(set((ids[t] // (16 // groups)).tolist())) for t in range(64)}
    assert max(used_groups) <= top_groups


def test_expert_counts():
    assert expert_counts(torch.tensor([[0, 2], [2, 3]]), 5).tolist() == [1, 0, 2, 1, 0]


def test_bias_update_step(tiny):
    gate = Gate(tiny)
    gate.tokens_per_expert_E.copy_(torch.tensor([10.0, 0, 5, 5, 5, 5, 5, 5]))  # mean 5
    load = gate.update_bias(0.01)
    assert load.tolist() == [10.0, 0, 5, 5, 5, 5, 5, 5]
    # overloaded expert 0 down, idle expert 1 up, the rest unchanged; counters cleared
    torch.testing.assert_close(gate.bias_E, torch.tensor([-0.01, 0.01, 0, 0, 0, 0, 0, 0]))
    assert gate.tokens_per_expert_E.sum() == 0


def test_bias_update_moves_load_toward_balance(tiny):
    spec = dataclasses.replace(tiny, num_expert_groups=1, top_k_groups=1)
    gate = Gate(spec)
    x = torch.randn(512, spec.hidden_size)
    with torch.no_grad():
        gate.weight_ED[0] = x.mean(0) * 50  # expert 0 attracts almost every token
    def imbalance():
        gate(x)
        load = gate.update_bias(0.0)
        return (load.max() / load.mean()).item()
    before = imbalance()
    for _ in range(200):
        gate(x)
        gate.update_bias(0.01)
    after = imbalance()
    assert before > 2.0 and after < 0.6 * before, (before, after)
