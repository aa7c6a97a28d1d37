"""Figures (not a test): what the twin charges in torchtitan's Llama 3.1 8B rows beside the
transformer blocks (session s18tt, issue 14), the 32K row that misses (tt-8b-cp1-32k, +13.2%)
beside the 8K Float8 rows that meet.

calibration.cp_block shows the twin's block (the training path's own StepCosts, BF16, FA2, full AC
compiled) within +0.3% of the measured one at 32K (H200, s17cp, fit), so this script takes each
row's step apart into what the twin charges outside it:
  blocks      num_layers x one block's forward and backward tasks (recomputation included)
  embedding   the token lookup (StepCosts.extra_first), forward and backward
  head+loss   final norm, output projection (BF16) and the FP32 cross-entropy, eager (extra_last)
  fsdp        FSDP2's exposed all-gathers / reduce-scatters and its copy-in / copy-out kernels
  optimizer   foreach AdamW and the gradient clip
  rest        the step less all of the above (the pipeline's own gaps)
and the counterfactual steps that size the 500 W clock the twin charges (hardware.toml
h100-hbm2e-500w: clock_frac 0.863 for every compute-bound kernel, FA2's own
attention_clock_fracs 0.915-0.948) and the sustained-load curves (Profile.under_sustained_load):
  clock 1     every kernel at the profile's speed (700 W): clock_frac 1, no attention fracs
  attn@gemm   FA2 at the GEMMs' clock_frac instead of its own fracs
  burst       the fitted profile's burst curves instead of the sustained ones (the 500 W fracs kept)
  fa2@block   FA2's time per direction scaled by measured / twin in s17cp's CP1 block (forward:
              its forward and recomputed forward; calibration.cp_block, H200 burst): the row's
              attention as slow against the twin as our measured block's
Each counterfactual's error is given against the published figure: a size, not a proposal.

Usage: PYTHONPATH=. python benchmarks/tt_cp1_outside_block.py [ROW_ID ...]  (a few seconds)
"""

from __future__ import annotations

import dataclasses
import sys
from unittest import mock

from calibration import cp_block
from calibration.published_runs import load_runs, predicted_metric, scenario_of
from twin.core import scenario as scenario_mod
from twin.costs.profile import load_profile
from twin.training import step as step_mod
from twin.training.results import Perturb

ROWS = ("tt-8b-cp1-32k", "tt-8b-fsdp8-compile-fp8", "tt-8b-fsdp128-compile-fp8")


def parts_s(sc, profile=None) -> dict:
    """{part: seconds} of one step of `sc` (see the module docstring)."""
    step = step_mod.simulate_step(sc, profile, record_events=False)
    _, costs, *_ = step_mod._prepare(sc, profile, Perturb(), False)
    ops = costs.blocks[0].ops
    block_s = sum(t.duration_s for t in (*costs._forward_tasks(ops), *costs._backward_tasks(ops, True)))
    def fwd_bwd_s(extra) -> float:
        return sum(costs._compute_s(list(extra), ph) for ph in ("fwd", "bwd_input", "bwd_weight"))
    out = {"blocks": sc.model.num_layers * block_s, "embedding": fwd_bwd_s(costs.extra_first),
           "head+loss": fwd_bwd_s(costs.extra_last),
           "fsdp": sum(v for k, v in step.op_time_s.items() if k.startswith("fsdp_")),
           "optimizer": step.op_time_s.get("optimizer", 0.0)}
    out["rest"] = step.step_time_s - sum(out.values())
    out["step"] = step.step_time_s
    return out


def step_with_gpu(sc, **gpu_fields) -> float:
    """The row's step with its GPU's catalog fields replaced (the prepared-costs cache cleared so
    the same scenario is costed again)."""
    gpu = dataclasses.replace(sc.gpu, **gpu_fields)
    step_mod._PREPARED.clear()
    with mock.patch.object(scenario_mod, "get_gpu", lambda name: gpu):
        s = step_mod.simulate_step(sc, record_events=False).step_time_s
    step_mod._PREPARED.clear()
    return s


def fa2_block_factors() -> dict[str, float]:
    """Measured over twin FA2 seconds per direction in s17cp's CP1 block (calibration.cp_block)."""
    cp1 = next(t for t in cp_block.compare() if t["cp"] == 1 and t["precision"] == "bf16")
    m, w = cp1["measured"], cp1["twin"]
    fwd = (m["fwd"]["attention_fwd"] + m["bwd"]["attention_fwd"]) / (w["fwd"]["attention_fwd"] + w["bwd"]["attention_fwd"])
    return {"fwd": fwd, "bwd": m["bwd"]["attention_bwd"] / w["bwd"]["attention_bwd"]}


def with_attention_slower(profile, factors: dict[str, float]):
    """`profile` with each attention direction's curve slowed by its factor (time x factor)."""
    return dataclasses.replace(profile, attention={d: dataclasses.replace(c, e_max=c.e_max / factors[d])
                                                   for d, c in profile.attention.items()})


def row_figures(run) -> dict:
    sc = scenario_of(run)
    parts = parts_s(sc)
    step = parts["step"]
    burst = cp_block.burst_profile(sc.gpu.calibrated_as)
    counter = {"clock 1": step_with_gpu(sc, clock_frac=1.0, attention_clock_fracs=(), attention_clock_frac=0.0),
               "attn@gemm": step_with_gpu(sc, attention_clock_fracs=(), attention_clock_frac=0.0),
               "burst": step_mod.simulate_step(sc, burst, record_events=False).step_time_s,
               "fa2@block": step_mod.simulate_step(sc, with_attention_slower(load_profile(sc.gpu.calibrated_as),
                                                                            fa2_block_factors()),
                                                   record_events=False).step_time_s}
    result = step_mod.simulate_step(sc, record_events=False)
    tokens_per_gpu = result.tokens_per_step / result.num_gpus
    pred = predicted_metric(run, sc, result)
    return {"id": run.id, "published": run.published, "predicted": pred, "rel_error": pred / run.published - 1,
            "published_step_s": tokens_per_gpu / run.published, "parts": parts,
            "counterfactual_step_s": counter,
            "counterfactual_rel_error": {k: step / v * pred / run.published - 1 for k, v in counter.items()}}


def main(argv: list[str]) -> int:
    runs = {r.id: r for r in load_runs()[0]}
    for rid in argv or ROWS:
        f = row_figures(runs[rid])
        print(f"{rid}: published {f['published']:,.0f}, twin {f['predicted']:,.1f} ({f['rel_error']:+.1%}); "
              f"step twin {f['parts']['step']:.3f} s, published {f['published_step_s']:.3f} s")
        for k, v in f["parts"].items():
            if k != "step":
                print(f"  {k:10} {v:7.3f} s  ({v / f['parts']['step']:5.1%} of the step)")
        for k, v in f["counterfactual_step_s"].items():
            print(f"  step with {k:10} {v:7.3f} s  (error {f['counterfactual_rel_error'][k]:+.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
