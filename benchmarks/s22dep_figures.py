"""DeepSeek's published decode figures under both settings of ADOPT_DEEPEP_LL_SM_TIME (docs/notes/s22dep_rule.md:
reported, never a criterion): the decode profile row (EP128), the day rows (decode per node, per-user speed,
prefill), and one micro-batch of one MoE layer by kernel group at the profile, with DeepEP's four kernels as the
twin books them. Also the rule's criterion 3 figures: the H200 curve's crossings of 3,872 tok/s per node.

Run: PYTHONPATH=. python benchmarks/s22dep_figures.py [--no-curve]
"""
from __future__ import annotations

import argparse

import twin.serving.iteration as iteration
from twin.core.scenario import SERVING, load_scenario, packaged_scenario
from twin.serving.iteration import deepep_ll_kernels_s
from twin.serving.published import (DEEPSEEK_DECODE_SCENARIO, DEEPSEEK_PROFILE_DECODE_CONDITIONS, crossings,
                                    deepseek_decode_conditions, deepseek_decode_profile, deepseek_day_rows,
                                    deepseek_profile_groups, h200_curve)


def kernels_at_profile() -> dict:
    sc = load_scenario(packaged_scenario(DEEPSEEK_DECODE_SCENARIO),
                       [*DEEPSEEK_PROFILE_DECODE_CONDITIONS, *deepseek_decode_conditions()], SERVING)
    tokens = sc.serve.batch / sc.serve.ep / sc.serve.num_microbatches
    return {k: v * 1e6 for k, v in deepep_ll_kernels_s(sc.model, sc.gpu, sc.serve, tokens, 1.0).items()}


def report(adopt: bool, curve: bool) -> None:
    iteration.ADOPT_DEEPEP_LL_SM_TIME = adopt
    print(f"== ADOPT_DEEPEP_LL_SM_TIME = {adopt}")
    if adopt:
        print("DeepEP kernels at the profile (64 tokens a micro-batch), us: "
              + ", ".join(f"{k} {v:.1f}" for k, v in kernels_at_profile().items()))
    prof = deepseek_decode_profile()
    print(f"decode profile: {prof['predicted']:,.0f} vs {prof['claimed']:,.0f} tok/s/node ({prof['rel_error']:+.1%}), "
          f"step {prof['step_s'] * 1e3:.2f} ms, MoE layer {prof['per_moe_layer_s'] * 1e6:.1f} us")
    g = deepseek_profile_groups("decode")["groups_us"]
    print("  groups (us, one micro-batch-layer): " + ", ".join(f"{k} {v:.1f}" for k, v in g.items()))
    for r in deepseek_day_rows():
        print(f"{r['scenario']} {r['metric']}: {r['predicted']:,.2f} vs {r['claimed']:,.1f} ({r['rel_error']:+.1%})"
              + (f" capacity {r['capacity_requests_per_gpu']:.0f} req/GPU" if "capacity_requests_per_gpu" in r else ""))
    if curve:
        for c in crossings(h200_curve()):
            print(f"H200 curve crossing: {c}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-curve", action="store_true", help="skip the H200 curve (one node: NVLink, untouched)")
    args = p.parse_args()
    for adopt in (False, True):
        report(adopt, not args.no_curve)


if __name__ == "__main__":
    main()
