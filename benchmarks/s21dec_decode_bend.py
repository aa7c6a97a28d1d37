"""Why DeepSeek's decode unit (EP144, scenario r1_serve_h800_decode) slows superlinearly between ~112 and
~125 requests per GPU (s21mem's finding; docs/notes/s21dec.md). Prints, per load in requests per GPU:
the closed-form decode step's parts (twin.serving.iteration.decode_step at the scenario's mean context)
and, with --sim, the simulated closed loop's output per node, TPOT P50 and preemptions; with --sampled,
the straggler GPU's routed grouped GEMMs as the twin costs them (every slot at its mean rows) beside
their mean over sampled routings (each micro-batch's tokens draw top-8 of 256 experts at the balanced
load model's shares; the layer waits for the GPU whose grouped GEMMs take longest). --sampled is a
diagnostic, not a model: the twin does not sample routings.

Run: PYTHONPATH=. python benchmarks/s21dec_decode_bend.py [--sim | --sampled] [--inferred]
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from twin.core import specs
from twin.core.scenario import SERVING, load_scenario, packaged_scenario
from twin.costs import compute
from twin.serving.iteration import decode_step, serving_profile, straggler_slot_rows, _load_figures, moe_view
from twin.serving.published import DEEPSEEK_DECODE_SCENARIO, deepseek_decode_conditions
from twin.serving.simulate import simulate

LOADS_PER_GPU = (80, 90, 100, 104, 108, 112, 116, 120, 124, 128)


def scenario(concurrency: int | None = None):
    extra = [f"traffic.concurrency={concurrency}"] if concurrency else []
    return load_scenario(packaged_scenario(DEEPSEEK_DECODE_SCENARIO),
                         ["traffic.target_tpot_s=0", *deepseek_decode_conditions(), *extra], SERVING)


def closed_form_rows():
    sc = scenario()
    gpu = specs.get_gpu(sc.cluster.gpu)
    for b in LOADS_PER_GPU:
        batch = b * sc.cluster.num_gpus
        d = decode_step(sc.model, gpu, sc.serve, batch)
        g = d["per_microbatch_groups_s"]
        yield {"req_per_gpu": b, "step_ms": 1e3 * d["step_s"], "moe_layers_ms": 1e3 * d["layers_moe_s"],
               "dense_ms": 1e3 * d["layers_dense_s"], "head_ms": 1e3 * d["head_s"],
               **{f"mb_{k}_us": 1e6 * v for k, v in g.items()},
               "tok_per_s_per_node": batch / d["tpot_s"] / (sc.cluster.num_gpus / 8)}


def sim_rows():
    for b in LOADS_PER_GPU:
        sc = scenario(b * 144)
        r = simulate(sc)
        yield {"req_per_gpu": b, "tok_per_s_per_node": r.output_tokens_per_s_per_node,
               "tpot_p50_ms": 1e3 * r.tpot_s.p50,
               **{k: v for k, v in dataclasses.asdict(r).items() if "preempt" in k or "kv_capacity" in k}}


def routed_s(rows, m, gpu, prof, precision: str) -> float:
    """The routed experts' two grouped GEMMs of one GPU (iteration._moe_compute_parts, without the cast)."""
    f, d = m.moe_intermediate_size, m.hidden_size
    return (compute.grouped_gemm_time_s(rows, 2 * f, d, precision, gpu, prof)
            + compute.grouped_gemm_time_s(rows, d, f, precision, gpu, prof))


def sampled_rows(rng, tokens: int, m, s) -> np.ndarray:
    """(ep, slots per GPU) rows of one sampled micro-batch: per-expert counts Binomial(tokens, top_k / E)
    (top-k without replacement makes each expert's count exactly that), the first `redundant_experts`
    experts split over two replicas, slots dealt to GPUs at random."""
    counts = rng.binomial(tokens, m.top_k / m.num_routed_experts, size=m.num_routed_experts).astype(float)
    r = s.redundant_experts
    slots = np.concatenate([counts[r:], counts[:r] / 2, counts[:r] / 2])
    rng.shuffle(slots)
    return slots.reshape(s.ep, -1)


def sampled_rows_table(samples: int = 40):
    sc = scenario()
    gpu, m, s = specs.get_gpu(sc.cluster.gpu), sc.model, sc.serve
    prof = serving_profile(gpu, s)
    _, ms = moe_view(m, s)
    shares = _load_figures(m, ms, gpu.gpus_per_node)["slot_shares"]
    tile = prof.group_row_tile
    rng = np.random.default_rng(0)
    for b in LOADS_PER_GPU:
        tokens = round(b * sc.cluster.num_gpus / s.num_microbatches)          # one micro-batch's tokens
        mean_rows = straggler_slot_rows(shares, tokens * m.top_k)
        times = []
        for _ in range(samples):
            g = sampled_rows(rng, tokens, m, s)
            padded = np.vectorize(lambda x: compute.padded_group_rows(x, tile))(g).sum(1)
            worst = g[np.lexsort((g.sum(1), padded))[-1]]                    # most padded rows, then most rows
            times.append(routed_s(list(worst), m, gpu, prof, s.weight_precision))
        twin_s, sampled_s = routed_s(mean_rows, m, gpu, prof, s.weight_precision), float(np.mean(times))
        # what the step would take with the sampled cost: the layers are compute-bound here (a micro-batch's
        # compute > its all-to-all, closed_form_rows), so each MoE layer of each micro-batch adds the difference
        d = decode_step(m, gpu, s, b * sc.cluster.num_gpus)
        step_s = d["step_s"] + d["num_microbatches"] * (m.num_moe_layers + s.mtp_draft_tokens) * (sampled_s - twin_s)
        yield {"req_per_gpu": b, "mean_rows_per_slot": mean_rows[0], "twin_routed_us": 1e6 * twin_s,
               "sampled_routed_us": 1e6 * sampled_s, "twin_step_ms": 1e3 * d["step_s"], "sampled_step_ms": 1e3 * step_s,
               "sampled_tok_per_s_per_node": b * sc.cluster.num_gpus / step_s / (sc.cluster.num_gpus / 8)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", action="store_true")
    ap.add_argument("--sampled", action="store_true")
    ap.add_argument("--inferred", action="store_true", help="the H800 at 79.2 GiB (ADOPT_USABLE_HBM_INFERRED)")
    a = ap.parse_args()
    specs.ADOPT_USABLE_HBM_INFERRED = a.inferred
    for row in (sim_rows() if a.sim else sampled_rows_table() if a.sampled else closed_form_rows()):
        print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})


if __name__ == "__main__":
    main()
