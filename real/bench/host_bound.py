"""Section host_bound (issue 13, session s7dec): the host-bound records and their host calibration,
taken together in one process on one host.

Why together: a host-bound eager step (a decode step, a short prefill, a small MLA layer) lasts as
long as the host takes to dispatch its ops, and that speed is the host's, not the GPU's: the same
V2-Lite prefill at batch 1 on an H200 took 6.2 ms in the 2026-11-24 campaign (model.csv) and
10.4 ms host time in the 2026-11-26 one (host_dispatch.csv). The twin's host time per launched
kernel (Profile.eager host_s, calibration.layer_gaps.measured_host_s) is measured on the FITTING
split's layers; it can only predict records taken on the same host at the same time. So, in order:

  1. host calibration: the fitting split's layer cases of the host_dispatch section (MoE
     v3-slice-1l with 128 experts, MLA v3-slice-1l), phases fwd / infer / bwd, both precisions
     (host_dispatch.csv, split fit);
  2. the serve rows (model.csv prefill and decode, real/bench/whole_model.py bench_serve, the same
     code as the first campaign's);
  3. the MLA layer rows (attention.csv mla_layer_fwd / mla_layer_bwd, real/bench/attention.py);
  4. the serve cases' kernels (host_dispatch.csv phases prefill / decode, split holdout, and
     step_kernels.csv): kernels launched and their GPU time at every decode batch, what the
     twin's op lists are checked against (diagnostic, never fitted);
  5. the host calibration of 1. again, where time is left: the host's drift over the run.
"""

from __future__ import annotations

import functools

import torch

from real.bench import host_dispatch as hd
from real.bench.attention import bench_mla_layers
from real.bench.device import free_memory, precisions_to_bench
from real.bench.whole_model import bench_serve
from real.configs import get_spec
from real.infer import decode_step, prefill
from real.model import build_model

PROMPT_LEN, GEN_LEN = 1024, 32       # bench_serve's
# the serve section's models and batches (real/bench/whole_model.py bench_serve)
SERVE_CASES = [("v2-lite-slice", [1, 4, 16], [1, 8, 32, 128, 256]),
               ("v3-slice-2l", [1, 4, 16], [1, 8, 32, 64, 128, 256])]


def bench_host_bound(rec, timer, dev, deadline, quick, env):
    measure = functools.partial(hd.measure_phase, reps=1, warmup=0) if quick else hd.measure_phase
    precs = precisions_to_bench(env)
    moe_fit, mla_fit = hd.fit_layer_cases(quick)
    if not hd.bench_layers(rec, timer, dev, deadline, measure, precs, moe_fit, mla_fit):
        return
    if deadline.over():
        return
    bench_serve(rec, timer, dev, deadline, quick, env)
    if deadline.over():
        return
    bench_mla_layers(rec, timer, dev, deadline, quick, env)
    serve_kernels(rec, timer, dev, deadline, quick, precs[0], measure)
    # the calibration again, after the records: the host's drift over the run (the fit takes the
    # median over both passes)
    hd.bench_layers(rec, timer, dev, deadline, measure, precs, moe_fit, mla_fit)


def serve_kernels(rec, timer, dev, deadline, quick, prec, measure):
    """Per serve case (prefill at each prefill batch, one decode step at each decode batch over a
    cache of PROMPT_LEN + GEN_LEN / 2 positions, the timed steps' mean): host time, event time,
    kernels launched, their GPU time, aten ops (host_dispatch.csv) and each kernel (step_kernels.csv)."""
    cases = [("tiny", [1], [1, 4])] if quick else SERVE_CASES
    P, G = (32, 8) if quick else (PROMPT_LEN, GEN_LEN)
    for name, prefill_batches, decode_batches in cases:
        if deadline.over():
            return
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G)
        model.eval()
        with torch.no_grad():
            for B in prefill_batches:
                if deadline.over():
                    return
                caches = model.new_caches(B, P + G)
                prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
                shape = {"model": name, "batch": B, "seq_len": P, "tokens": B * P, "num_experts": spec.num_routed_experts}
                hd._row(rec, timer, f"prefill {name} b{B} p{P}", "prefill", prec, "holdout",
                        measure(lambda _: prefill(model, prompt, caches), lambda: None, dev), **shape)
                del caches
                free_memory()
            for B in decode_batches:
                if deadline.over():
                    return
                caches = model.new_caches(B, P + G)
                prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
                token = prefill(model, prompt, caches, max_batch=16)
                pos = P + G // 2
                shape = {"model": name, "batch": B, "seq_len": pos, "tokens": B, "num_experts": spec.num_routed_experts}
                hd._row(rec, timer, f"decode {name} b{B} p{pos}", "decode", prec, "holdout",
                        measure(lambda _: decode_step(model, token, caches, pos), lambda: None, dev), **shape)
                del caches
                free_memory()
        del model
        free_memory()
