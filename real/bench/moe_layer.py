"""Section moe (moe_layer.csv): one MoE layer, forward and backward, under controlled routing
skew (skewed_routing), by expert count, token count and precision."""

from __future__ import annotations

import dataclasses
import json

import torch

from real.bench.device import free_memory, precisions_to_bench
from real.bench.records import log
from real.configs import get_spec
from real.model import MoE, building
from twin.costs.flops import gemm_flops


def skewed_routing(T: int, E: int, K: int, skew: float, route_scale: float, device, generator):
    """topk_ids_TK with expert popularity ~ rank^-skew (Zipf; 0 = exactly balanced round-robin),
    K distinct experts per token, uniform weights summing to route_scale.

    The popularity law is twin.moe.load.zipf_weights (the twin's one definition; torch.multinomial
    normalises the weights itself), permuted over experts, and the K experts are drawn by successive
    sampling without replacement, as twin.moe.load.gumbel_topk_counts draws them. real/ may not
    import twin.moe (pyproject's import contracts), so the law is restated here in torch."""
    if skew == 0:
        ids_TK = (torch.arange(T * K) % E).view(T, K)
    else:
        p_E = torch.arange(1, E + 1, dtype=torch.float64) ** -skew
        p_E = p_E[torch.randperm(E, generator=generator)]
        ids_TK = torch.multinomial(p_E.float().expand(T, E), K, replacement=False, generator=generator)
    w_TK = torch.full((T, K), route_scale / K)
    return w_TK.to(device, torch.bfloat16), ids_TK.to(device)


def with_experts(base, num_experts: int):
    """`base` with `num_experts` routed experts; its expert groups kept where they divide them, else one."""
    groups = base.num_expert_groups if num_experts % base.num_expert_groups == 0 else 1
    return dataclasses.replace(base, num_routed_experts=num_experts, num_expert_groups=groups,
                               top_k_groups=min(base.top_k_groups, groups))


def bench_moe(rec, timer, dev, deadline, quick, env):
    if quick:
        cases = [("tiny", [8], [256], [0.0, 1.0])]
    else:
        cases = [("v3-slice-1l", [16, 32, 64, 128], [512, 1024, 2048, 4096, 8192, 16384, 32768],
                  [0.0, 0.5, 1.0, 1.5]),
                 ("v2-lite-slice", [64], [1024, 4096, 16384], [0.0, 0.5, 1.0, 1.5])]
    g = torch.Generator().manual_seed(0)
    for name, experts, token_counts, skews in cases:
        base = get_spec(name)
        for E in experts:
            if deadline.over():
                break
            spec = with_experts(base, E)
            with building(dev):
                moe = MoE(spec)
            D, Fe, K = spec.hidden_size, spec.moe_intermediate_size, spec.top_k
            for T in token_counts:
                x = torch.randn(T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
                gy = torch.randn(T, D, device=dev, dtype=torch.bfloat16)
                for skew in skews:
                    if deadline.over():
                        break
                    routing = skewed_routing(T, E, K, skew, spec.route_scale, dev, g)
                    counts = torch.bincount(routing[1].flatten(), minlength=E)
                    fl = (gemm_flops(T * K, 3 * Fe, D)
                          + gemm_flops(T, 3 * Fe * spec.num_shared_experts, D))
                    by = (E + spec.num_shared_experts) * 3 * D * Fe * 2.0 + 4 * T * K * D * 2.0
                    for prec in precisions_to_bench(env):
                        common = dict(model=name, hidden_size=D, moe_intermediate_size=Fe, tokens=T,
                                      num_experts=E, top_k=K, num_shared_experts=spec.num_shared_experts,
                                      skew=skew, max_expert_tokens=int(counts.max()),
                                      mean_expert_tokens=T * K / E,
                                      tokens_per_expert=json.dumps(counts.tolist()), precision=prec.label)
                        r = timer.measure(lambda: moe(x, prec, routing), flops=fl, bytes_=by)
                        rec.row("moe_layer", bench="moe_layer_fwd", **common, **r)
                        r = timer.measure(lambda o: torch.autograd.grad(o, [x, *moe.parameters()], gy,
                                                                        allow_unused=True),
                                          setup=lambda: moe(x, prec, routing), flops=2 * fl,
                                          bytes_=2 * by)
                        rec.row("moe_layer", bench="moe_layer_bwd", **common, **r)
                del x, gy
                free_memory()
            log(f"moe {name} E={E}: done")
            del moe
            free_memory()
