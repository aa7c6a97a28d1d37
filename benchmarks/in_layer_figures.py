"""The figures s15gl's and s15gl2's rules judge an in-layer-factor candidate by (docs/notes/s15gl_rule.md,
docs/notes/s15gl2_rule.md), for the profiles of the tree it runs in (PYTHONPATH). Diagnostics only.

    PYTHONPATH=. .venv/bin/python benchmarks/in_layer_figures.py VALIDATE_JSON [--no-step]

VALIDATE_JSON: `twin validate --quiet --json F` of the same tree. Prints per GPU the held-out
median / P90 |error| of the kernel benches, the memory bench, kernels + layers, each one-GPU kind,
the EP2 layers, ep_step, pipeline_step per host, the pipelines' idle misses, TP2 / CP2 blocks
within 10%, the H800 chunk pair, the published rows; then T's MoE component factors (fitting
traces, calibration.parallel_blocks.folder_terms) and, unless --no-step, V3's step time and MFU.
"""

from __future__ import annotations

import json
import sys

import numpy as np

IDLE_TOL, IDLE_FLOOR_OF_STEP = 0.10, 0.01   # tests/calibration/test_whole_runs.py
ONE_GPU_KINDS = ("train_step", "moe_layer", "mla_layer", "prefill", "decode")
KERNEL_BENCHES = ("gemm", "grouped_gemm", "grouped_gemm_wgrad", "attn_fwd", "attn_bwd", "memory")
LAYER_BENCHES = ("moe_layer_fwd", "moe_layer_bwd", "mla_layer_fwd", "mla_layer_bwd")


def _fig(cases: list[dict]) -> str:
    if not cases:
        return "none"
    err = np.abs([c["rel_error"] for c in cases])
    signed = np.median([c["rel_error"] for c in cases])
    return f"{np.median(err):.2%} / {np.percentile(err, 90):.2%} (signed {signed:+.2%}, n={len(cases)})"


def idle_misses(pipelines: list[dict]) -> int:
    miss = 0
    for p in pipelines:
        sim = p["idle_simulated_s"]
        if not sim:
            continue
        for r, meas in p["idle_measured_s"].items():
            s = sim[int(r) % len(sim)]
            miss += abs(s - meas) > max(IDLE_TOL * meas, IDLE_FLOOR_OF_STEP * p["measured_s"])
    return miss


def validate_figures(d: dict) -> None:
    held = [c for c in d["cases"] if c["held_out"]]
    for gpu in ("h100", "h200"):
        g = [c for c in held if c["gpu"] == gpu]
        one = [c for c in g if c["num_gpus"] == 1]
        for b in KERNEL_BENCHES:
            print(f"{gpu} bench {b}: {_fig([c for c in one if c['bench'] == b])}")
        print(f"{gpu} kernels+layers: {_fig([c for c in one if c['bench'] in KERNEL_BENCHES + LAYER_BENCHES])}")
        medians = []
        for k in ONE_GPU_KINDS:
            sub = [c for c in one if c["kind"] == k]
            medians.append(float(np.median(np.abs([c["rel_error"] for c in sub]))))
            print(f"{gpu} kind {k}: {_fig(sub)}")
        print(f"{gpu} sum of one-GPU kind medians: {100 * sum(medians):.2f}")
        for n in (2, 4):
            multi = [c for c in g if c["num_gpus"] == n]
            for k in ("moe_layer", "ep_comm", "ep_step", "pipeline_step"):
                sub = [c for c in multi if c["kind"] == k]
                if sub:
                    print(f"{gpu}x{n} kind {k}: {_fig(sub)}")
        blocks = [c for c in g if c["num_gpus"] == 2 and c["kind"] in ("tp_block", "cp_block")]
        print(f"{gpu}x2 TP2/CP2 within 10%: {sum(abs(c['rel_error']) <= 0.10 for c in blocks)} of {len(blocks)}")
    print(f"pipelines' idle misses: {idle_misses(d['pipelines'])}")
    cp = d["h800_trace"]["chunk_pair"]
    print(f"H800 chunk pair: {cp['rel_error']:+.2%}")
    s = d["published_runs"]["summary"]
    print(f"published rows: median {s['median_abs_rel_error']:.2%}, {s['num_within_row_target']} of "
          f"{s['num_evaluated']} within 10%")


def trace_factors() -> None:
    from calibration import parallel_blocks as blocks
    from calibration import records as rec
    from calibration.nccl import collectives_terms
    from calibration.validate import load_fitted_profile
    import dataclasses
    for gpu in ("h100", "h200"):
        prof, _ = load_fitted_profile(gpu, None)
        if not prof.collectives:
            prof = dataclasses.replace(prof, collectives=collectives_terms(gpu)[0])
        t = blocks.folder_terms(rec.MEASUREMENTS_DIR / f"{gpu}x2", gpu, prof, component_factors=True)
        f = t.component_factors
        print(f"{gpu} T: " + ", ".join(f"{blk} {comp} {v:.3f}" for blk in sorted(f) for comp, v in sorted(f[blk].items())))


def v3_step() -> None:
    import twin
    r = twin.simulate_step(twin.load_scenario())
    print(f"V3 step: {r.step_time_s:.3f} s, MFU {r.mfu_frac:.1%}")


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        validate_figures(json.load(f))
    trace_factors()
    if "--no-step" not in argv:
        v3_step()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
