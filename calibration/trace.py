"""Validation rung 3: the twin against DeepSeek's H800 trace (one DualPipe F+B chunk pair).

The twin side: the default V3 scenario (`twin.core.scenario.load_scenario()`: 2,048 H800, EP64, DualPipe,
FP8), its H800 GPU spec (links from the catalog) and the H100 profile (DESIGN: H800 compute is H100
silicon). A middle pipeline stage holding 4 MoE layers runs one overlapped forward+backward chunk
pair: `StepCosts._op_chains(stage, stage, "FB", False)` timed by `arbitrate_streams`.

Phase mapping (per layer = twin task time summed over the pair / 4 layers):
  attn_F  <- attn_fwd            mlp_F  <- mlp_fwd
  attn_B  <- attn_bwd_input      attn_W <- attn_bwd_weight
  mlp_B   <- mlp_bwd_input       mlp_W  <- mlp_bwd_weight   (trace: mlp_W + mlp_W_stream23)
  dispatch_F <- dispatch         combine_F <- combine
  dispatch_B <- dispatch_bwd     combine_B <- combine_bwd
(the trace names backward phases after the forward op they differentiate: its combine(B) runs a
DeepEP dispatch kernel in FP8, its dispatch(B) a combine kernel in BF16, as the twin's
combine_bwd and dispatch_bwd are costed, V3 §3.3.3).

Where the two sides book the same work differently (known, not corrected for):
  - The twin charges the 128x1 re-quantization of a weight gradient's operands (cast kernels of
    DeepSeek's stack, twin.costs.compute.fp8_cast_passes) to the W phase; the trace runs the
    attention's in attn(B) (`per_channel_cast_and_transpose`, ~0.45 ms per layer) and the MLP's
    in mlp(W).
  - The trace's mlp(W) kernels on stream 23 run concurrently with those on stream 7, so the two
    streams' kernel times (compared here, as the published phase means give them) add up to more
    than the GPU time they take: the union of the two streams' mlp(W) kernels is ~5.06 ms per
    layer against the 6.38 ms sum (analysed from train.json; not a published figure).

Communication is compared twice, per phase and per data-moving DeepEP kernel (the published
kernel means; a phase also holds the notify kernels that exchange counts with the 63 peers first).
Every phase, communication included, is judged against the same 20% target. The communication
phases do NOT meet it (the twin is 32-61% short): the twin times a DeepEP kernel at DeepEP's
published isolated rate and has no term for what the trace adds in situ - notify kernels of 1-4 ms
that wait for all 63 peers, and data kernels 1.2-1.6x slower than the isolated rate while GEMMs
share the GPU. On one H100, a data mover on 20 held SMs runs 1.37-1.55x slower beside FP8 GEMMs
than alone (calibration/sm_reserve.py), which would explain the data kernels if DeepEP's were
SM-bound. Telling peer skew, compute contention and the 20-vs-24 SM difference apart needs a
multi-node DeepEP run under concurrent compute, which no lent machine can make (issue 5, blocked).
The data-kernel rows are diagnostic: the published per-kernel means, without the notify kernels.
Targets: chunk pair within 10%, each phase within 20%.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from pathlib import Path

from calibration import entry
from twin.costs.profile import Profile, load_profile
from twin.core.scenario import load_scenario
from twin.sim.pipeline import arbitrate_streams
from twin.core.schedules import build_schedule
from twin.training.step import StepCosts

TRACE_FILE = Path(__file__).resolve().parent / "data" / "h800_trace.toml"
CHUNK_PAIR_TARGET = 0.10
PHASE_TARGET = 0.20

COMPUTE_PHASES = {"attn_F": ("attn_fwd",), "mlp_F": ("mlp_fwd",), "mlp_B": ("mlp_bwd_input",),
                  "mlp_W": ("mlp_bwd_weight",), "attn_B": ("attn_bwd_input",), "attn_W": ("attn_bwd_weight",)}
COMM_PHASES = {"dispatch_F": ("dispatch",), "combine_F": ("combine",), "dispatch_B": ("dispatch_bwd",),
               "combine_B": ("combine_bwd",)}
# the data-moving kernel of each communication phase (h800_trace.toml [comm_kernel_means_us])
COMM_KERNELS = {"dispatch_fresh": ("dispatch",), "dispatch_cached": ("combine_bwd",),
                "combine": ("combine", "dispatch_bwd")}


def load_trace(path: Path | str = TRACE_FILE) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def middle_stage(costs: StepCosts, num_layers: int) -> int:
    """The first stage after stage 0 holding `num_layers` MoE layers (and no embedding/head)."""
    m = costs.sc.model
    for s in range(1, costs.last_stage):
        layers = costs.layers[s]
        if len(layers) == num_layers and all(layer >= m.num_dense_layers for layer in layers):
            return s
    raise ValueError(f"no middle stage with {num_layers} MoE layers in {[len(r) for r in costs.layers]}")


def predict_chunk_pair(profile: Profile | None = None, scenario=None, stage: int | None = None) -> dict:
    sc = scenario or load_scenario()
    profile = profile or load_profile(sc.gpu.calibrated_as)
    trace = load_trace()
    n_layers = int(trace["meta"]["num_layers"])
    schedule = build_schedule(sc.plan.schedule, sc.plan.pp, sc.num_microbatches)
    costs = StepCosts(sc, schedule, profile, sc.workload.routing_imbalance, 1.0)
    stage = middle_stage(costs, n_layers) if stage is None else stage
    chains = costs._op_chains(stage, stage, "FB", False)
    makespan_s, _ = arbitrate_streams(chains)
    per_name: dict[str, float] = defaultdict(float)
    for chain in chains:
        for t in chain:
            per_name[t.name] += t.duration_s
    return {"stage": stage, "gpu": sc.gpu.name, "profile_gpu": profile.gpu, "profile_calibrated": profile.calibrated,
            "chunk_pair_s": makespan_s, "per_task_s": dict(per_name), "num_layers": n_layers}


def compare(profile: Profile | None = None, scenario=None) -> dict:
    trace = load_trace()
    pred = predict_chunk_pair(profile, scenario)
    n = pred["num_layers"]
    ph = trace["phase_means_us"]
    rows = []

    def add(phase, names, kind, trace_us, per_kernel=False):
        """twin: per layer, the named tasks summed (a phase) or averaged (one kernel's mean)."""
        twin_us = sum(pred["per_task_s"].get(x, 0.0) for x in names) / n * 1e6
        if per_kernel:
            twin_us /= len(names)
        err = twin_us / trace_us - 1.0
        target = PHASE_TARGET if kind in ("compute", "comm") else None
        rows.append({"phase": phase, "kind": kind, "twin_tasks": list(names), "trace_us": float(trace_us),
                     "predicted_us": twin_us, "rel_error": err,
                     "target": target, "meets_target": None if target is None else abs(err) <= target})

    for phase, names in COMPUTE_PHASES.items():
        trace_us = ph[phase] + (ph.get("mlp_W_stream23", 0.0) if phase == "mlp_W" else 0.0)
        add(phase, names, "compute", trace_us)
    for phase, names in COMM_PHASES.items():
        add(phase, names, "comm", ph[phase])
    kernels = trace.get("comm_kernel_means_us", {})
    for kernel, names in COMM_KERNELS.items():
        if kernel in kernels:
            add(f"{kernel} kernel", names, "comm_kernel", kernels[kernel], per_kernel=True)
    span_us = float(trace["chunk_pair"]["gpu_span_us"])
    pair_us = pred["chunk_pair_s"] * 1e6
    return {"stage": pred["stage"], "gpu": pred["gpu"], "profile_gpu": pred["profile_gpu"],
            "profile_calibrated": pred["profile_calibrated"],
            "chunk_pair": {"trace_us": span_us, "predicted_us": pair_us, "rel_error": pair_us / span_us - 1.0,
                           "target": CHUNK_PAIR_TARGET, "meets_target": abs(pair_us / span_us - 1.0) <= CHUNK_PAIR_TARGET},
            "phases": rows}


def format_table(result: dict) -> str:
    c = result["chunk_pair"]
    lines = [f"H800 chunk pair (stage {result['stage']}, profile {result['profile_gpu']}"
             f"{'' if result['profile_calibrated'] else ' UNCALIBRATED'}): twin {c['predicted_us'] / 1e3:.1f} ms vs trace "
             f"{c['trace_us'] / 1e3:.1f} ms ({c['rel_error']:+.1%}, target 10%: {'met' if c['meets_target'] else 'NOT met'})",
             f"{'phase':22} {'kind':11} {'trace_us':>9} {'twin_us':>9} {'error':>8}  target"]
    for r in result["phases"]:
        tgt = "diagnostic" if r["target"] is None else ("met" if r["meets_target"] else "NOT met")
        lines.append(f"{r['phase']:22} {r['kind']:11} {r['trace_us']:>9.0f} {r['predicted_us']:>9.0f} {r['rel_error']:>+8.1%}  {tgt}")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    entry.parser("calibration.trace", __doc__).parse_args(argv)
    print(format_table(compare()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
