"""The serving engine's eager prefill iteration, kernel by kernel (issue 15, s24v3pre).

    python -m real.serve.prefillprof --out DIR [--models a,b] [--device cpu] [--reps 2] [--budget-s 40]

Why: s24pipe (docs/notes/s24pipe_rule.md, its Outcome) found the serving twin's kernels plus scores 23-34% under
v3-slice-2l's measured kernel-bound prompt steps (1-6 prompts of 336-768 tokens), while the training-side prefill
of the same model validates within ~5%: some kernels of the engine's own prefill path (the paged cache writes and
gathers, the chunked attention, the per-chunk expansion of the latents, sampling, bookkeeping) are priced short or
not at all. No committed record profiles those kernels per iteration. This records them, as eagerhost.py runs the
steps (Engine.step on an engine of GPU1's settings, graphs off, one composition's step after the engine's reset):
after a first unprofiled pass over every composition (every shape met once, as eagerhost's operator count does),
each composition's step runs `reps` times unprofiled (duration_s, host_s, gpu_s: the iteration's own figures) and
`reps` times under torch.profiler (CPU + CUDA activity). Every kernel of a profiled step is attributed to the
innermost host range that launched it:
- `embed`, `layers.<i>.attn` (real/serve/forward.paged_mla: projections, cache writes, attention, output),
  inside it `layers.<i>.attn.queries` / `.latents` (MLA._queries / _latents), `.prefill_core` (prefill_attention:
  the prefix gather, the wkv_b expansion, SDPA), `.decode_core` (decode_attention);
- every submodule the forward calls as a module (its named path: layers.<i>.attn_norm, layers.<i>.ffn and below,
  norm, ...), `logits` (Transformer.logits);
- `forward` for step_forward's own kernels outside those (rope tables, argmax), `engine` for the rest of
  Engine.step (input tensors, the page table, the copy of the tokens back).

Rows (prefill_kernels.csv): model, num_layers, composition, prompts, tokens, decode_rows, rep, region, op (the
aten operator that launched the kernel), kernel, calls, time_s (GPU seconds of those calls), env columns.
Rows (prefill_steps.csv): one per step: model, composition, ..., rep, profiled (0/1), duration_s, host_s, gpu_s,
kernel_s (the profiled step's kernels summed; blank unprofiled), kernels (their count), env columns.
env.json: the environment and the settings.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import real.serve.forward as fwd
from real.bench.records import ENV_COLS, log
from real.configs import get_spec
from real.model import MLA, Transformer
from real.serve.eagerhost import TINY_SETUP, Driver, eager_engine, label, run_environment, run_setup

MARK = "v3p/"            # prefix of this probe's host ranges
MODELS = ("v3-slice-2l", "qwen3moe-mla-slice")
# (prompts, tokens each, decode rows): the kernel-bound prompt steps s24pipe found short on v3-slice-2l (1-6 prompts
# of 336-768 tokens), each one of eagerhost's compositions (so h100/s24eager/fit holds their unprofiled steps)
COMPOSITIONS = ((1, 480, 0), (1, 768, 0), (4, 480, 0), (6, 336, 0))
TINY_COMPOSITIONS = ((1, 12, 0), (3, 6, 0))
KERNEL_COLS = ["bench", "model", "num_layers", "composition", "prompts", "tokens", "decode_rows", "rep", "region",
               "op", "kernel", "calls", "time_s", *ENV_COLS, "nccl_version"]
STEP_COLS = ["bench", "model", "num_layers", "composition", "prompts", "tokens", "decode_rows", "rep", "profiled",
             "duration_s", "host_s", "gpu_s", "kernel_s", "kernels", *ENV_COLS, "nccl_version"]


class Regions:
    """Names host ranges around the forward's parts while `on`; restores everything on `close`."""

    def __init__(self, model: Transformer):
        self.on = False
        self.num_layers = len(model.layers)
        self._attn_calls = 0
        self._undo = []
        self._stack = []
        for name, mod in model.named_modules():
            if name:   # only the modules the forward calls as modules fire (a Block, an MLA are not called)
                self._undo.append(mod.register_forward_pre_hook(functools.partial(self._enter, name)))
                self._undo.append(mod.register_forward_hook(self._exit))
        self._patch(fwd, "paged_mla", self._attn_name)
        self._patch(fwd, "prefill_attention", lambda: self._current_attn() + ".prefill_core")
        self._patch(fwd, "decode_attention", lambda: self._current_attn() + ".decode_core")
        self._patch(fwd, "step_forward", lambda: "forward")
        self._patch(MLA, "_queries", lambda: self._current_attn() + ".queries")
        self._patch(MLA, "_latents", lambda: self._current_attn() + ".latents")
        self._patch(Transformer, "logits", lambda: "logits")

    def _current_attn(self) -> str:
        return f"layers.{(self._attn_calls - 1) % self.num_layers}.attn"

    def _attn_name(self) -> str:
        self._attn_calls += 1
        return self._current_attn()

    def _patch(self, owner, attr: str, name_fn) -> None:
        orig = getattr(owner, attr)

        @functools.wraps(orig)
        def wrapped(*a, **k):
            if not self.on:
                return orig(*a, **k)
            with record_function(MARK + name_fn()):
                return orig(*a, **k)

        setattr(owner, attr, wrapped)
        self._undo.append(_Restore(owner, attr, orig))

    def _enter(self, name, _mod, _inp):
        if self.on:
            rf = record_function(MARK + name)
            rf.__enter__()
            self._stack.append(rf)
        else:
            self._stack.append(None)

    def _exit(self, _mod, _inp, _out):
        rf = self._stack.pop() if self._stack else None
        if rf is not None:
            rf.__exit__(None, None, None)

    def close(self) -> None:
        for u in reversed(self._undo):
            u.remove()


class _Restore:
    def __init__(self, owner, attr, orig):
        self.owner, self.attr, self.orig = owner, attr, orig

    def remove(self):
        setattr(self.owner, self.attr, self.orig)


def _on_host(e) -> bool:
    return str(getattr(e, "device_type", "CPU")).rsplit(".", 1)[-1] == "CPU"


def attribute(events) -> dict[tuple[str, str, str], list]:
    """(region, launching aten op, kernel name) -> [calls, GPU seconds]: each kernel to the innermost of this
    probe's host ranges holding the start of the CPU op that launched it ('engine' outside them all)."""
    ranges = [(e.time_range.start, e.time_range.end, e.name[len(MARK):]) for e in events
              if e.name.startswith(MARK) and _on_host(e)]
    out: dict[tuple[str, str, str], list] = {}
    for e in events:
        kernels = getattr(e, "kernels", None)
        if not kernels or e.name.startswith(MARK):
            continue
        t = e.time_range.start
        holding = [r for r in ranges if r[0] <= t <= r[1]]
        region = max(holding, key=lambda r: (r[0], -r[1]))[2] if holding else "engine"
        for kern in kernels:
            slot = out.setdefault((region, e.name, kern.name), [0, 0.0])
            slot[0] += 1
            slot[1] += kern.duration * 1e-6
    return out


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m real.serve.prefillprof", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--device", default="auto", choices=("auto", "cpu"))
    p.add_argument("--reps", type=int, default=2, help="unprofiled and profiled steps of every composition")
    p.add_argument("--budget-s", type=float, default=1e9, help="no model starts after this many seconds")
    p.add_argument("--compositions", default="",
                   help="prompt-only compositions PxN[,PxN...] (P prompts of N tokens; GPU only): default s24v3pre's")
    return p.parse_args(argv)


def parse_compositions(text: str) -> tuple[tuple[int, int, int], ...]:
    """'1x1280,3x640' -> ((1, 1280, 0), (3, 640, 0)): prompt-only compositions (no decode rows)."""
    out = []
    for part in (x for x in text.split(",") if x):
        p, _, n = part.partition("x")
        if not (p.isdigit() and n.isdigit() and int(p) > 0 and int(n) > 0):
            raise SystemExit(f"--compositions: {part!r} is not PxN with P, N positive integers (e.g. 1x1280)")
        out.append((int(p), int(n), 0))
    return tuple(out)


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = _args(argv)
    chosen = parse_compositions(args.compositions)
    use_cuda, dev, plan, dtype, cpus = run_setup(args.device)
    comps = (chosen or COMPOSITIONS) if use_cuda else TINY_COMPOSITIONS
    args.out.mkdir(parents=True, exist_ok=True)
    tel, env = run_environment(dev, use_cuda)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if use_cuda else [])
    fk = (args.out / "prefill_kernels.csv").open("w", newline="")
    fs = (args.out / "prefill_steps.csv").open("w", newline="")
    wk, ws = csv.DictWriter(fk, fieldnames=KERNEL_COLS), csv.DictWriter(fs, fieldnames=STEP_COLS)
    wk.writeheader()
    ws.writeheader()
    done = []
    models = [m for m in args.models.split(",") if m] if use_cuda else ["tiny"]
    for name in models:
        if time.perf_counter() - t_start > args.budget_s:
            log(f"budget of {args.budget_s:.0f} s spent: {name} and the rest skipped")
            break
        t = time.perf_counter()
        spec = get_spec(name)
        engine = eager_engine(spec, dev, dtype, plan)
        model = engine.model
        drv = Driver(engine, spec.vocab_size) if use_cuda else Driver(engine, spec.vocab_size, TINY_SETUP)
        regions = Regions(model)
        for c in comps:          # every shape met once
            drv.run(*c)
        common = {"bench": "prefill_kernels", "model": name, "num_layers": spec.num_layers,
                  **{k: env.get(k, "") for k in ENV_COLS}, "nccl_version": env["nccl_version"],
                  "sm_clock_mhz": tel.sm_clock_mhz(), "mem_clock_mhz": tel.mem_clock_mhz(),
                  "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            for c in comps:
                p, n, d = c
                key = {**common, "composition": label(*c), "prompts": p, "tokens": n, "decode_rows": d}
                for rep in range(args.reps):
                    _, rec = drv.run(*c)
                    ws.writerow({**key, "bench": "prefill_steps", "rep": rep, "profiled": 0, "duration_s": rec.duration_s,
                                 "host_s": rec.host_s, "gpu_s": rec.gpu_s, "kernel_s": "", "kernels": ""})
                for rep in range(args.reps):
                    drv._prepare(*c)
                    regions.on = True
                    with profile(activities=acts) as prof:
                        rec = engine.step()
                    regions.on = False
                    per = attribute(prof.events())
                    for (region, op, kern), (calls, secs) in sorted(per.items()):
                        wk.writerow({**key, "rep": rep, "region": region, "op": op, "kernel": kern, "calls": calls,
                                     "time_s": secs})
                    ws.writerow({**key, "bench": "prefill_steps", "rep": rep, "profiled": 1,
                                 "duration_s": rec.duration_s, "host_s": rec.host_s, "gpu_s": rec.gpu_s,
                                 "kernel_s": sum(v[1] for v in per.values()),
                                 "kernels": sum(v[0] for v in per.values())})
        finally:
            regions.on = False
            regions.close()
        fk.flush()
        fs.flush()
        done.append(name)
        log(f"{name}: {len(comps)} compositions x {args.reps} profiled steps in {time.perf_counter() - t:.1f} s")
        del engine, model, drv
        if use_cuda:
            torch.cuda.empty_cache()
    fk.close()
    fs.close()
    env.update(models=done, compositions=[list(c) for c in comps], reps=args.reps,
               plan="gpu1 settings, graphs off" if use_cuda else plan.model, pin_cpus=cpus,
               elapsed_s=time.perf_counter() - t_start)
    (args.out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    return 0 if len(done) == len(models) else 1


if __name__ == "__main__":
    sys.exit(main())
