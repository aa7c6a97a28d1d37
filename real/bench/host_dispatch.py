"""Section host_dispatch (host_dispatch.csv): how long the host takes to dispatch real/'s eager
layers and whole steps, beside the kernels they launch (issue 13: the layer bias).

Per case and phase (a layer's forward, its forward under torch.no_grad as inference runs it
(`infer`), its backward, a training step's forward, backward and optimizer, a prefill, a decode
step), over HOST_REPS warm repetitions:
  host_s      median host (CPU) seconds of the Python call that issues the phase, with the GPU
              idle at its start (synchronised before): the dispatch of every op (autograd, the
              allocator and Python included), measured on the host clock; nothing waits for the
              GPU inside these phases (no .item(), no host synchronisation)
  time_s      median CUDA-event seconds around the same call (what per-repetition records time)
  kernels     kernels launched per call and kernel_s their GPU time (torch profiler, KERNEL_REPS
              repetitions; 0 and empty on the CPU)
  aten_ops    aten operators dispatched per call (a TorchDispatchMode count, views included)
  aten_views  of those, the views (OpOverload.is_view: no kernel; columns since 2026-11-26 s7dec)
and, for the whole-step phases, each kernel's calls and GPU time (step_kernels.csv, the
kernels.csv schema).
So host_s / kernels is the host time per launched kernel, measured, that a prediction of an
eager record needs (calibration.layer_gaps reads it).
`split`: fit for shapes of the fitting families of calibration/split.py, holdout otherwise.
"""

from __future__ import annotations

import functools
import re
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from real.bench.device import free_memory, precisions_to_bench
from real.bench.moe_layer import skewed_routing, with_experts
from real.bench.records import log
from real.configs import get_spec
from real.infer import decode_step, prefill
from real.model import MLA, MoE, build_model, building, rope_tables
from real.train import MasterAdamW
from real.sync import synchronize

ANNOTATION = re.compile(r"[\w.]+#[\w.]+")   # a profiler range such as "Optimizer.step#AdamW.step"
HOST_REPS = 10
KERNEL_REPS = 3
WARMUP = 2
# held-out families of calibration/split.py (kept in step by tests/real/test_host_dispatch.py)
HOLDOUT_MODELS = {"v2-lite-slice"}
HOLDOUT_EXPERTS = {32}


class _CountOps(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch 2.13 wraps a mode's __torch_dispatch__ in torch._disable_dynamo, which imports torch._dynamo at the
        # first counted op (~2.5-5 s of CPU on a loaded CI machine, every host_dispatch dry run); nothing here runs
        # under torch.compile, so the wrapper has nothing to disable. The counts are the same.
        return False

    def __init__(self):
        super().__init__()
        self.n = self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        self.views += bool(getattr(func, "is_view", False))   # views launch nothing (cheap to dispatch)
        return func(*args, **(kwargs or {}))


def mla_layer_case(model: str, batch: int, seq: int, dev):
    """One MLA layer of `model` (real.model.MLA, BF16, on `dev`) with its RoPE tables for `seq`
    positions, an input (batch, seq, hidden) that takes gradients and an output gradient of its shape:
    (mla, cos, sin, x, gx), drawn from the generator's state in that order (the MLA benches build
    their layer cases so)."""
    spec = get_spec(model)
    with building(dev):
        mla = MLA(spec)
        cos, sin = rope_tables(spec.qk_rope_head_dim, seq)
    x = torch.randn(batch, seq, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    gx = torch.randn(batch, seq, spec.hidden_size, device=dev, dtype=torch.bfloat16)
    return mla, cos, sin, x, gx

def measure_phase(fn, setup, dev, reps: int = HOST_REPS, warmup: int = WARMUP, profiled: bool = True,
                  before_rep=None, after_rep=None) -> dict:
    """Host seconds, event seconds, kernels, kernel seconds and aten ops of fn(setup()); with
    profiled False no profiler run (kernels 0, kernel_s NaN): a quick probe whose kernels are known.
    `before_rep()` (s21host2: a host probe, returning its seconds per launch): called right before each
    timed repetition, on the idle device; each repetition is then kept (`rep_steps`). `after_rep()` (s25host2: the
    same probe): called right after each timed repetition, the device synchronised, its value kept beside the rep."""
    for _ in range(warmup):
        fn(setup())
    host, wall, rep_steps = [], [], []
    for i in range(reps):
        state = setup()
        synchronize(dev)
        probe_s = before_rep() if before_rep is not None else None
        if dev.type == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
        t0 = time.perf_counter()
        fn(state)
        t1 = time.perf_counter()
        if dev.type == "cuda":
            e1.record()
            synchronize(dev)
            wall.append(e0.elapsed_time(e1) * 1e-3)
        else:
            wall.append(t1 - t0)
        host.append(t1 - t0)
        after_s = after_rep() if after_rep is not None else None
        if probe_s is not None:
            rep_steps.append({"step": i, "block": "probed", "host_probe_launch_s": probe_s, "step_s": wall[-1],
                              "host_s": host[-1], **({} if after_s is None else {"host_probe_after_s": after_s})})
    kernels, kernel_s, per_kernel = 0.0, float("nan"), {}
    if dev.type == "cuda" and profiled:
        ev = []
        for _ in range(KERNEL_REPS):   # the profiler around the phase alone, not its setup
            state = setup()
            synchronize(dev)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                fn(state)
                synchronize(dev)
            # kernels only: range annotations ("Optimizer.step#AdamW.step") also show as CUDA events
            ev += [e for e in prof.events() if e.device_type.name == "CUDA" and not ANNOTATION.fullmatch(e.name)]
        kernels = len(ev) / KERNEL_REPS
        kernel_s = sum(e.device_time for e in ev) * 1e-6 / KERNEL_REPS
        for e in ev:
            n, t = per_kernel.get(e.name, (0, 0.0))
            per_kernel[e.name] = (n + 1, t + e.device_time * 1e-6)
    state = setup()
    counter = _CountOps()
    with counter:
        fn(state)
    synchronize(dev)
    q = statistics.quantiles(wall, n=10, method="inclusive") if len(wall) > 1 else [wall[0]] * 9
    return {"host_s": statistics.median(host), "time_s": statistics.median(wall), "time_p10_s": q[0],
            "time_p90_s": q[-1], "reps": reps, "timing": "per_rep_events" if dev.type == "cuda" else "host_clock",
            "kernels": kernels, "kernel_s": kernel_s, "aten_ops": counter.n, "aten_views": counter.views,
            "per_kernel": {k: (n / KERNEL_REPS, t / KERNEL_REPS) for k, (n, t) in per_kernel.items()},
            **({"rep_steps": rep_steps} if before_rep is not None else {})}


def _row(rec, timer, config: str, phase: str, prec, split: str, r: dict, rep_rows=None, **shape):
    r = dict(r)
    per_kernel = r.pop("per_kernel", {})
    rep_steps = r.pop("rep_steps", [])
    if rep_rows is not None and rep_steps:
        rep_rows(rec, rep_steps, bench="host_dispatch", config=config, phase=phase, precision=prec.label)
    if phase.startswith("train_") or phase in ("prefill", "decode"):
        # whole-step phases: each kernel's calls and GPU time per call of the phase (step_kernels.csv,
        # the kernels.csv schema), so a step's time can be split by kernel class
        for name, (n, t) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
            rec.row("step_kernels", bench="step_kernels", config=f"{config} {phase}", precision=prec.label, profiled="phase",
                    kernel=name if len(name) <= 240 else name[:120] + "..." + name[-117:], calls=n, time_s=t,
                    reps=KERNEL_REPS, timing="profiler", sm_clock_mhz=timer.tel.sm_clock_mhz())
    rec.row("host_dispatch", bench="host_dispatch", config=config, phase=phase, precision=prec.label, profiled="phase",
            split=split, sm_clock_mhz=timer.tel.sm_clock_mhz(), **shape, **r)
    log(f"host_dispatch {config} {phase} {prec.label}: host {r['host_s'] * 1e3:.3f} ms, events "
        f"{r['time_s'] * 1e3:.3f} ms, {r['kernels']:.0f} kernels ({r['kernel_s'] * 1e3:.3f} ms), {r['aten_ops']} aten ops")


def _no_grad(layer, *args):
    """The layer's forward as real/infer.py runs its steps (@torch.no_grad(): no autograd graph
    recorded, so less host work per op): phase `infer`, the host time per kernel of prefill and
    decode."""
    with torch.no_grad():
        return layer(*args)


def _layer_cases(quick: bool):
    if quick:
        return [("moe", "tiny", 8, 64)], [("mla", "tiny", 1, 64)]
    moe = [("moe", "v3-slice-1l", 128, 512), ("moe", "v3-slice-1l", 128, 2048), ("moe", "v3-slice-1l", 32, 1024),
           ("moe", "v2-lite-slice", 64, 1024), ("moe", "v2-lite-slice", 64, 4096)]
    mla = [("mla", "v3-slice-1l", 1, 1024), ("mla", "v2-lite-slice", 1, 1024), ("mla", "v2-lite-slice", 4, 4096)]
    return moe, mla


def bench_host_dispatch(rec, timer, dev, deadline, quick, env):
    # quick (a CPU dry run): one repetition, no warm-up: the code path, not the figures
    measure = functools.partial(measure_phase, reps=1, warmup=0) if quick else measure_phase
    moe_cases, mla_cases = _layer_cases(quick)
    precs = precisions_to_bench(env)
    if not bench_layers(rec, timer, dev, deadline, measure, precs, moe_cases, mla_cases):
        return
    _bench_whole(rec, timer, dev, deadline, quick, precs, measure)


def fit_layer_cases(quick: bool):
    """The layer cases of the fitting split (calibration/split.py): the host calibration that a
    run of host-bound records needs beside them (real/bench/host_bound.py)."""
    moe, mla = _layer_cases(quick)
    return ([c for c in moe if c[1] not in HOLDOUT_MODELS and c[2] not in HOLDOUT_EXPERTS],
            [c for c in mla if c[1] not in HOLDOUT_MODELS])


LAYER_PHASES = ("fwd", "infer", "bwd")


def bench_layers(rec, timer, dev, deadline, measure, precs, moe_cases, mla_cases, phases=LAYER_PHASES,
                 probe=None, rep_rows=None) -> bool:
    """host_dispatch rows (`phases` of fwd, infer, bwd, in that order) of MoE and MLA layer cases;
    False when the deadline ended the section. `probe(rec, **key)`: called right before each row's
    measurement with the row's key (real/bench/host_input.py: the host's speed beside each row).
    `rep_rows(rec, rep_steps, **key)`: writes a row's kept repetitions (real/bench/host_steps.py)."""
    g = torch.Generator().manual_seed(0)
    for _, name, E, T in moe_cases:
        if deadline.over():
            return False
        spec = with_experts(get_spec(name), E)
        with building(dev):
            moe = MoE(spec)
        x = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
        gy = torch.randn(T, spec.hidden_size, device=dev, dtype=torch.bfloat16)
        routing = skewed_routing(T, E, spec.top_k, 0.0, spec.route_scale, dev, g)
        split = "holdout" if name in HOLDOUT_MODELS or E in HOLDOUT_EXPERTS else "fit"
        shape = {"model": name, "tokens": T, "num_experts": E, "batch": "", "seq_len": ""}
        for prec in precs:
            cfg = f"moe_layer {name} t{T} e{E} skew0"
            calls = {"fwd": (lambda _: moe(x, prec, routing), lambda: None),
                     "infer": (lambda _: _no_grad(moe, x, prec, routing), lambda: None),
                     "bwd": (lambda o: torch.autograd.grad(o, [x, *moe.parameters()], gy, allow_unused=True),
                             lambda: moe(x, prec, routing))}
            for phase in phases:
                if probe is not None:
                    probe(rec, bench="host_dispatch", config=cfg, phase=phase, precision=prec.label)
                _row(rec, timer, cfg, phase, prec, split, measure(*calls[phase], dev), rep_rows=rep_rows, **shape)
        del moe, x, gy
        free_memory()
    for _, name, B, S in mla_cases:
        if deadline.over():
            return False
        mla, cos, sin, x, gx = mla_layer_case(name, B, S, dev)
        split = "holdout" if name in HOLDOUT_MODELS else "fit"
        shape = {"model": name, "batch": B, "seq_len": S, "tokens": B * S, "num_experts": ""}
        for prec in precs:
            cfg = f"mla_layer {name} b{B} s{S}"
            calls = {"fwd": (lambda _: mla(x, cos, sin, prec), lambda: None),
                     "infer": (lambda _: _no_grad(mla, x, cos, sin, prec), lambda: None),
                     "bwd": (lambda o: torch.autograd.grad(o, [x, *mla.parameters()], gx),
                             lambda: mla(x, cos, sin, prec))}
            for phase in phases:
                if probe is not None:
                    probe(rec, bench="host_dispatch", config=cfg, phase=phase, precision=prec.label)
                _row(rec, timer, cfg, phase, prec, split, measure(*calls[phase], dev), rep_rows=rep_rows, **shape)
        del mla, x, gx
        free_memory()
    return True


def _bench_whole(rec, timer, dev, deadline, quick, precs, measure):
    """A training step split into its forward, backward and optimizer phases, one prefill and one
    decode step (all held out: whole-model cases are never fitted)."""
    cases = [("tiny", 2, 64)] if quick else [("v3-slice-1l", 1, 2048), ("v2-lite-slice", 1, 2048)]
    for name, B, S in cases:
        if deadline.over():
            return
        spec = get_spec(name)
        P = 32 if quick else 1024   # prompt of the prefill and decode cases
        model = build_model(spec, dev, torch.bfloat16, max_seq_len=max(S, P + 8))
        opt = MasterAdamW(model.parameters())
        tokens = torch.randint(0, spec.vocab_size, (B, S), device=dev)
        targets = torch.roll(tokens, -1, 1)
        shape = {"model": name, "batch": B, "seq_len": S, "tokens": B * S, "num_experts": spec.num_routed_experts}
        for prec in precs:
            if deadline.over():
                return
            cfg = f"train_step {name} b{B} s{S}"

            def fwd(_):
                opt.zero_grad()
                return model.loss(tokens, targets, prec)

            def fwd_bwd():
                fwd(None).backward()

            def optimizer(_):
                opt.step()
                for m in model.moe_layers():
                    m.gate.update_bias(1e-3)

            try:
                _row(rec, timer, cfg, "train_fwd", prec, "holdout", measure(fwd, lambda: None, dev), **shape)
                _row(rec, timer, cfg, "train_bwd", prec, "holdout",
                     measure(lambda loss: loss.backward(), lambda: fwd(None), dev), **shape)
                _row(rec, timer, cfg, "train_opt", prec, "holdout", measure(optimizer, fwd_bwd, dev), **shape)
            except torch.OutOfMemoryError:
                log(f"host_dispatch {cfg} {prec.label}: out of memory")
            opt.zero_grad()
        del opt
        free_memory()
        model.eval()
        with torch.no_grad():
            for Bd in ([2] if quick else [1, 32]):
                caches = model.new_caches(Bd, P + 8)
                prompt = torch.randint(0, spec.vocab_size, (Bd, P), device=dev)
                cos_sh = {"model": name, "batch": Bd, "seq_len": P, "tokens": Bd * P, "num_experts": spec.num_routed_experts}
                _row(rec, timer, f"prefill {name} b{Bd} p{P}", "prefill", precs[0], "holdout",
                     measure(lambda _: prefill(model, prompt, caches), lambda: None, dev), **cos_sh)
                token = prefill(model, prompt, caches)
                _row(rec, timer, f"decode {name} b{Bd} p{P}", "decode", precs[0], "holdout",
                     measure(lambda _: decode_step(model, token, caches, P), lambda: None, dev),
                     **{**cos_sh, "tokens": Bd})
                del caches
        del model
        free_memory()
