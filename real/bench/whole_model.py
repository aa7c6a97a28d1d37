"""Sections train, serve (model.csv) and expert_load (expert_load.csv): whole training steps,
prefill and decode, and the routed-token counts of a short training run."""

from __future__ import annotations

import math
import os

import torch

from real.bench.device import free_memory, peak_flops, precisions_to_bench
from real.bench.records import log
from real.bench.timing import Timer
from real.configs import get_spec
from real.serve.hostspeed import launch_probe
from real.infer import decode_step, prefill
from real.model import build_model
from real.train import MasterAdamW, synthetic_batch, train_step
from twin.costs.flops import (forward_flops_per_token, kv_cache_bytes_per_token, matmul_params_per_token,
                              param_counts, train_flops_per_token)


TRAIN_CASES = [("v2-lite-slice", 4096, [1, 2, 4]), ("v2-lite-slice", 2048, [1, 4]),
               ("v3-slice-1l", 4096, [1, 2, 4]), ("v3-slice-1l", 2048, [1, 4, 8]),
               ("v3-slice-2l", 4096, [1, 2, 3])]


def parse_train_cases(text: str) -> list[tuple[str, int, list[int]]]:
    """REAL_BENCH_TRAIN_CASES: "model:seq_len:b1,b2;model:seq_len:b" -> [(model, seq_len, [b1, b2]), ...]
    (real/campaigns/s20new.sh times catalog models no other campaign runs)."""
    cases = []
    for item in filter(None, (x.strip() for x in text.split(";"))):
        name, seq_len, batches = item.split(":")
        cases.append((name, int(seq_len), [int(b) for b in batches.split(",")]))
    return cases


def bench_train(rec, timer, dev, deadline, quick, env):
    chosen = os.environ.get("REAL_BENCH_TRAIN_CASES", "")
    cases = (parse_train_cases(chosen) if chosen else [("tiny", 64, [2, 4])] if quick else TRAIN_CASES)
    for name, S, batches in cases:
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=S)
        opt = MasterAdamW(model.parameters())
        for B in batches:
            for prec in precisions_to_bench(env):
                if deadline.over():
                    break
                tokens = torch.randint(0, spec.vocab_size, (B, S), device=dev)
                targets = torch.roll(tokens, -1, 1)
                losses = []
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                try:
                    r = timer.measure(lambda: losses.append(train_step(model, opt, tokens, targets, prec)[0]),
                                      flops=train_flops_per_token(spec, S) * B * S, reps=3 if quick else 5)
                except torch.OutOfMemoryError:
                    log(f"train {name} B={B} {prec.label}: out of memory")
                    opt.zero_grad()
                    free_memory()
                    continue
                peak_mem = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else math.nan
                mfu = r["achieved_flops_per_s"] / peak_flops(env, "bf16")
                rec.row("model", bench="train_step", model=name, batch=B, seq_len=S, prompt_len="",
                        gen_len="", precision=prec.label, tokens_per_s=B * S / r["time_s"], mfu=mfu,
                        peak_memory_bytes=peak_mem, loss=losses[-1], **r)
                log(f"train {name} B={B} S={S} {prec.label}: {r['time_s'] * 1e3:.1f} ms, "
                    f"MFU {mfu:.3f} (BF16 peak basis), peak mem {peak_mem / 2**30:.1f} GiB")
        del model, opt
        free_memory()


SERVE_CASES = [("v2-lite-slice", 1024, 32, [1, 4, 16, 64], [1, 8, 32, 128, 256]),
               ("v3-slice-2l", 1024, 32, [1, 4, 16], [1, 8, 32, 64, 128, 256])]


def parse_serve_cases(text: str) -> list[tuple[str, int, int, list[int], list[int]]]:
    """REAL_BENCH_SERVE_CASES: "model:prompt_len:gen_len:p1,p2:d1,d2;..." -> [(model, prompt_len,
    gen_len, prefill batches, decode batches), ...] (real/campaigns/s20new2.sh serves catalog models
    no other campaign runs); an empty batch list times none of that kind."""
    cases = []
    for item in filter(None, (x.strip() for x in text.split(";"))):
        name, prompt_len, gen_len, prefill_batches, decode_batches = item.split(":")
        cases.append((name, int(prompt_len), int(gen_len), [int(b) for b in filter(None, prefill_batches.split(","))],
                      [int(b) for b in filter(None, decode_batches.split(","))]))
    return cases


# REAL_BENCH_SERVE_PROBE_S (session s21host): the window (seconds) of a host probe taken right before each
# prefill / decode record, in the same process (real/serve/hostspeed.py launch_probe: host seconds per
# small kernel launched from Python), written as a host_probe.csv row beside it; unset or 0: no probe
SERVE_PROBE_ENV = "REAL_BENCH_SERVE_PROBE_S"


def serve_probe_window_s() -> float:
    try:
        return max(0.0, float(os.environ.get(SERVE_PROBE_ENV, "") or 0.0))
    except ValueError:
        return 0.0


def probe_row(rec, dev, window_s: float, **key) -> None:
    """The host's speed now (launch_probe over `window_s`), as a host_probe row named by `key`
    (the record's bench, model, batch, lengths, precision; or a host_dispatch row's config and phase).
    Nothing where the window is 0."""
    if window_s <= 0:
        return
    mean_s, p50_s = launch_probe(dev, window_s)
    rec.row("host_probe", **{**PROBE_ROW_BLANK, **key}, probe_window_s=window_s, host_probe_launch_s=mean_s,
            host_probe_launch_p50_s=p50_s)


PROBE_ROW_BLANK = {"bench": "", "model": "", "batch": "", "prompt_len": "", "gen_len": "", "config": "",
                   "phase": "", "precision": ""}


def bench_serve(rec, timer, dev, deadline, quick, env):
    window = serve_probe_window_s()
    chosen = os.environ.get("REAL_BENCH_SERVE_CASES", "")
    cases = (parse_serve_cases(chosen) if chosen else [("tiny", 32, 8, [1, 4], [1, 4])] if quick else SERVE_CASES)
    for name, P, G, prefill_batches, decode_batches in cases:
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G)
        model.eval()
        fwd_tok = forward_flops_per_token(spec, P)
        for B in prefill_batches:
            if deadline.over():
                break
            prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
            caches = model.new_caches(B, P + G)
            probe_row(rec, dev, window, bench="prefill", model=name, batch=B, prompt_len=P, gen_len=0, precision="bf16")
            r = timer.measure(lambda: prefill(model, prompt, caches), flops=fwd_tok * B * P,
                              reps=3 if B >= 16 else None)
            rec.row("model", bench="prefill", model=name, batch=B, seq_len="", prompt_len=P, gen_len=0,
                    precision="bf16", tokens_per_s=B * P / r["time_s"], mfu="", peak_memory_bytes="",
                    loss="", **r)
            del caches
        for B in decode_batches:
            if deadline.over():
                break
            prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
            caches = model.new_caches(B, P + G)
            token = prefill(model, prompt, caches, max_batch=16)
            pos = [P]

            def step():
                nonlocal token
                token = decode_step(model, token, caches, pos[0])
                pos[0] += 1

            timer_ = Timer(dev, timer.tel, 0.0, max_reps=G - 4, warmup=3)
            L = P + G / 2  # mean cached length over the timed steps
            probe_row(rec, dev, window, bench="decode", model=name, batch=B, prompt_len=P, gen_len=G, precision="bf16")
            r = timer_.measure(step, flops=decode_flops(spec, B, L),
                               bytes_=kv_cache_bytes_per_token(spec) * B * L + _weight_bytes(spec, B),
                               reps=G - 4)
            rec.row("model", bench="decode", model=name, batch=B, seq_len="", prompt_len=P, gen_len=G,
                    precision="bf16", tokens_per_s=B / r["time_s"], mfu="", peak_memory_bytes="",
                    loss="", **r)
            log(f"decode {name} B={B}: {B / r['time_s']:.0f} tok/s ({r['time_s'] * 1e3:.2f} ms/step)")
            del caches
            free_memory()
        del model
        free_memory()


def decode_flops(spec, batch: int, cached_len: float) -> float:
    """One decode step: 2 x activated matmul weights per token, plus absorbed MLA attention over
    the cache: scores on C + R dims and values on C dims, per head and cached token."""
    per_key = 2 * spec.num_heads * (2 * spec.kv_lora_rank + spec.qk_rope_head_dim)
    return batch * (2.0 * matmul_params_per_token(spec) + spec.num_layers * per_key * cached_len)


def _weight_bytes(spec, batch: int) -> float:
    """BF16 weights one decode step reads: all but unvisited routed experts (at most batch*K)."""
    pc = param_counts(spec)
    total = pc["total_params"] - pc["embedding_params"]
    if spec.num_routed_experts:
        expert = 3 * spec.hidden_size * spec.moe_intermediate_size
        n_moe = spec.num_layers - spec.num_dense_layers
        untouched = max(0, spec.num_routed_experts - batch * spec.top_k)
        total -= n_moe * untouched * expert
    return 2.0 * total


def bench_expert_load(rec, timer, dev, deadline, quick, env):
    """Per-layer, per-step routed-token counts of a short training run, with and without the
    auxiliary-loss-free bias update (V3 uses rate 0.001)."""
    name, steps, B, S = ("tiny", 6, 4, 32) if quick else ("bench-small", 60, 8, 512)
    spec = get_spec(name)
    for rate in [0.0, 1e-3, 1e-2]:
        if deadline.over():
            break
        torch.manual_seed(0)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=S)
        opt = MasterAdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        for step in range(steps):
            tokens, targets = synthetic_batch(spec.vocab_size, B, S, generator=gen, device=dev)
            _, loads = train_step(model, opt, tokens, targets, bias_update_rate=rate)
            for layer, load in enumerate(loads):
                load = load.cpu()
                rec.row("expert_load", bench="expert_load", model=name, step=step, layer=layer,
                        bias_update_rate=rate, num_experts=load.numel(),
                        max_over_mean=float(load.max() / load.mean()),
                        tokens_per_expert=" ".join(str(int(v)) for v in load.tolist()))
        log(f"expert_load rate={rate}: last step max/mean per layer "
            + ", ".join(f"{float(l.max() / l.mean()):.2f}" for l in loads))
        del model, opt
        free_memory()
