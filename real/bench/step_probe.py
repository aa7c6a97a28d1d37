"""Section step_probe (session s24probe, issues 13 and 15): host-speed probe candidates beside the eager steps whose
host time they must predict, on each fresh host (docs/notes/s24probe_rule.md).

In order, one process: a probe set (real/serve/stepprobe.probe_set: every candidate once, STEP_PROBE_SET_WINDOW_S
each), then for every case (model, phase, batch; REAL_BENCH_SERVE_CASES as host_steps parses them) its timed steps
(the device synchronised before each; host_steps' protocol: control / probed alternating, the old 3 ms launch probe
right before each probed step), then the next probe set, so every case lies between two sets (serve_steps' `config`
says which: `set<k>` lies between host_probes' set k and k + 1). Rows:
  host_probes  one per candidate per set: its mean and median host seconds per unit, window, set index;
  serve_steps  one per timed step (host_steps' columns: event seconds, host seconds of the call, per-step probe).
No profiler, no back-to-back steps, no fitting layers: the host time of the call is what a probe must predict.
"""

from __future__ import annotations

import os

import torch

from real.bench.device import free_memory
from real.bench.host_steps import STEP_PROBE_WINDOW_S, probed, run_steps, timed_call, write_steps
from real.bench.records import log
from real.bench.whole_model import parse_serve_cases
from real.configs import get_spec
from real.infer import decode_step, prefill
from real.model import build_model
from real.serve.stepprobe import CANDIDATES, EACH_KINDS, each_probers, probe_set
from real.sync import synchronize

STEP_PROBE_SET_WINDOW_S = 0.15   # each candidate's window in a set (a time-sliced core's average share)
PREFILL_STEPS = 8                # timed prefills a case (4 control, 4 probed)
DECODE_STEPS = 24                # timed decode steps a case (12 control, 12 probed)
DECODE_WARMUP = 3
QUICK_CASES = "tiny:16:10:1:2;tiny-gqa:16:10:1:2"


def write_set(rec, k: int, where: str, window_s: float, measured: dict) -> None:
    for name in CANDIDATES:
        mean, p50 = measured[name]
        rec.row("host_probes", set=k, where=where, candidate=name,
                window_s=0.003 if name == "launch_3ms" else window_s, host_s_per_unit=mean,
                host_s_per_unit_p50=p50)


def warmed_step(phase: str, model, prompt, caches, P: int, G: int):
    """One eager step of `phase` as a call, warmed up: a prefill of `prompt` into `caches` (2 untimed first), or a
    decode step after a prefill (DECODE_WARMUP untimed first), each call one position further, held at P + G - 1
    (the cache holds P + G)."""
    if phase == "prefill":
        for _ in range(2):
            prefill(model, prompt, caches)
        return lambda: prefill(model, prompt, caches)
    token = [prefill(model, prompt, caches, max_batch=16)]
    pos = [P]

    def step():
        token[0] = decode_step(model, token[0], caches, pos[0])
        pos[0] = min(pos[0] + 1, P + G - 1)
    for _ in range(DECODE_WARMUP):
        step()
    return step


def bench_step_probe(rec, timer, dev, deadline, quick, env):
    window = 0.02 if quick else STEP_PROBE_SET_WINDOW_S
    chosen = os.environ.get("REAL_BENCH_SERVE_CASES", "") or QUICK_CASES
    cases = parse_serve_cases(chosen)
    k = 0
    write_set(rec, k, "start", window, probe_set(dev, window))
    for name, P, G, prefill_batches, decode_batches in cases:
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G)
        model.eval()
        for phase, batches in (("prefill", prefill_batches), ("decode", decode_batches)):
            for B in batches:
                if deadline.over():
                    break
                prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
                caches = model.new_caches(B, P + G)
                fn = warmed_step(phase, model, prompt, caches, P, G)
                if phase == "prefill":
                    n, gen = (4 if quick else PREFILL_STEPS), 0
                else:
                    n, gen = min(DECODE_STEPS, G - 1 - DECODE_WARMUP), G
                steps = run_steps(fn, dev, n, STEP_PROBE_WINDOW_S, probed)
                key = dict(bench=phase, model=name, batch=B, prompt_len=P, gen_len=gen, precision="bf16",
                           config=f"set{k}")
                write_steps(rec, steps, STEP_PROBE_WINDOW_S, **key)
                hosts = sorted(s["host_s"] for s in steps)
                log(f"step_probe {phase} {name} B={B} P={P}: host median {hosts[len(hosts) // 2] * 1e3:.2f} ms "
                    f"({n} steps)")
                del fn, caches
                k += 1
                write_set(rec, k, f"after {phase} {name} b{B}", window, probe_set(dev, window))
        del model
        free_memory()
    log(f"step_probe: {k} cases, {k + 1} probe sets")


# Candidate 2 (docs/notes/s24probe_rule.md "Candidate 2"; section step_probe_each, real/campaigns/s24probe2.sh): every
# timed step has a short probe right before it, the kind rotating over stepprobe.EACH_KINDS (step i: kind i mod 5), so
# every kind samples the same moments of the host; which kind's r = host / probe stays flattest within a case is
# the question (the host's state moves between steps: host_probes' sets above flip 1.3-1.7x within seconds).
EACH_WINDOW_S = 0.003      # host_steps' per-step window, for every kind
EACH_STEPS = 40            # timed steps a case (8 of each kind)
EACH_CASES = (("tiny-gqa", ("decode", 8), ("decode", 32), ("prefill", 1)),
              ("megatron-gpt-1.7b", ("decode", 8), ("decode", 32), ("prefill", 1)),
              ("bench-small", ("decode", 8),), ("tiny", ("decode", 8),))
EACH_P, EACH_G = 384, 48


def rotating_steps(fn, dev, n: int, probers: dict, window_s: float) -> list[dict]:
    """n timed calls of fn, each right after one probe of kind EACH_KINDS[i % 5]: [{step, kind, probe_s, step_s,
    host_s}] (probe_s: the kind's mean host seconds per unit over its window)."""
    out = []
    for i in range(n):
        kind = EACH_KINDS[i % len(EACH_KINDS)]
        synchronize(dev)
        probe_s = probers[kind](window_s)[0]
        synchronize(dev)
        step_s, host_s = timed_call(fn, dev)
        out.append({"step": i, "kind": kind, "probe_s": probe_s, "step_s": step_s, "host_s": host_s})
    return out


def bench_step_probe_each(rec, timer, dev, deadline, quick, env):
    n = 10 if quick else EACH_STEPS
    P, G = (16, 16) if quick else (EACH_P, EACH_G)
    cases = (("tiny", ("decode", 2), ("prefill", 1)),) if quick else EACH_CASES
    probers = each_probers(dev)
    for name, *runs in cases:
        if deadline.over():
            break
        spec = get_spec(name)
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=P + G)
        model.eval()
        for phase, B in runs:
            if deadline.over():
                break
            prompt = torch.randint(0, spec.vocab_size, (B, P), device=dev)
            caches = model.new_caches(B, P + G)
            fn = warmed_step(phase, model, prompt, caches, P, G)
            for s in rotating_steps(fn, dev, n, probers, EACH_WINDOW_S):
                rec.row("probe_steps", bench=phase, model=name, batch=B, prompt_len=P, step=s["step"], kind=s["kind"],
                        probe_window_s=EACH_WINDOW_S, probe_s_per_unit=s["probe_s"], step_s=s["step_s"],
                        host_s=s["host_s"])
            log(f"step_probe_each {phase} {name} B={B}: {n} steps")
            del fn, caches
        del model
        free_memory()
