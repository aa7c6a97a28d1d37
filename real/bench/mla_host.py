"""Section mla_host (issue 13, session s8mla): the host time per launched kernel of real/'s eager
MLA layers BY OP CLASS, beside the MLA layer records, in one process and interleaved rounds.

Why: the small V2-Lite MLA layers are host-bound, and the committed host calibration (s7dec) shows
the host time per kernel depending on the op mix: an FP8 layer's backward dispatches most of its
kernels from Python inside real/fp8.py's autograd.Functions (quantize, transpose copies, the
scaled GEMMs), where grad mode is off, as a no-grad forward dispatches them; a BF16 backward's
kernels are each the work of an autograd node that the C++ engine runs. One host rate per phase
cannot serve both, and one fitting-split row per class is too few when the host's speed drifts
~30% within a run. Per round, in order:
  1. op-class probes (host_class.csv, split fit): a chain of N_OPS small BF16 ops (`mul`: x * c,
     one kernel; `mm`: x @ w, one GEMM forward, two in backward), host seconds per kernel as
       nograd       under torch.no_grad (inference; real/infer.py)
       record       with autograd recording the graph (a training forward of built-in ops)
       engine       its backward: the C++ autograd engine runs one node per op
       custom_fwd   the chain inside an autograd.Function's forward (grad mode off, one node)
       custom_bwd   the chain inside that Function's backward (Python on the engine's thread)
  2. MLA layer host rows (host_dispatch.csv, phases fwd / infer / bwd, BF16 and FP8): the fitting
     split's V3-slice shapes at MLA_FIT_CASES token counts (split fit) and the held-out V2-Lite
     records' own shapes (split holdout: diagnostic, the kernels and GPU time behind each record);
  3. the MLA layer records (attention.csv mla_layer_*: real/bench/attention.py bench_mla_layers).
A round starts only if the one before it would still fit the section's time; each record is the
round with its median time, each host row the round with its median host time (real/bench/
host_bound.py RoundRecorder; the raw rounds are kept in DIR/round<i>/).
"""

from __future__ import annotations

import functools
import time

import torch

from real.bench import host_dispatch as hd
from real.bench.attention import bench_mla_layers
from real.bench.device import free_memory, precisions_to_bench
from real.bench.host_bound import RoundRecorder
from real.bench.records import log

MAX_ROUNDS = 6
QUICK_ROUNDS = 2
N_OPS = 64              # ops per probe chain
PROBE_DIM = 256         # probe tensors: PROBE_DIM x PROBE_DIM BF16 (each kernel ~2 us: host-bound)
PROBE_OPS = ("mul", "mm")
PROBE_PHASES = ("nograd", "record", "engine", "custom_fwd", "custom_bwd")
# (model, batch, seq_len): the fitting split's MLA model at several token counts, then the
# held-out records' shapes (real/bench/attention.py bench_mla_layers), V2-Lite's
MLA_FIT_CASES = [("v3-slice-1l", 1, 512), ("v3-slice-1l", 1, 1024), ("v3-slice-1l", 1, 2048)]
MLA_HOLDOUT_CASES = [("v2-lite-slice", 4, 1024), ("v2-lite-slice", 1, 4096), ("v2-lite-slice", 4, 4096)]
QUICK_CASES = [("tiny", 2, 32)]


def _chain(op: str, x: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        x = x @ w if op == "mm" else x * 1.0001
    return x


class _CustomChain(torch.autograd.Function):
    """The chain inside one autograd.Function (as real/fp8.py runs its FP8 GEMMs): forward and
    backward each dispatch n ops from Python with grad mode off."""

    @staticmethod
    def forward(ctx, x, w, op, n):
        ctx.op, ctx.n = op, n
        ctx.save_for_backward(w)
        return _chain(op, x, w, n)

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return _chain(ctx.op, g, w.t(), ctx.n), None, None, None


def probe_phase(op: str, phase: str, x, xg, w, gy, n: int = N_OPS):
    """(fn, setup) of one probe phase for hd.measure_phase."""
    if phase == "nograd":
        return (lambda _: _no_grad_chain(op, x, w, n)), (lambda: None)
    if phase == "record":
        return (lambda _: _chain(op, xg, w, n)), (lambda: None)
    if phase == "engine":
        return (lambda y: torch.autograd.grad(y, [xg], gy)), (lambda: _chain(op, xg, w, n))
    if phase == "custom_fwd":
        return (lambda _: _CustomChain.apply(xg, w, op, n)), (lambda: None)
    if phase == "custom_bwd":
        return (lambda y: torch.autograd.grad(y, [xg], gy)), (lambda: _CustomChain.apply(xg, w, op, n))
    raise ValueError(f"probe phase {phase!r}: one of {PROBE_PHASES}")


def _no_grad_chain(op, x, w, n):
    with torch.no_grad():
        return _chain(op, x, w, n)


def bench_probes(rec, timer, dev, measure, n: int = N_OPS, dim: int = PROBE_DIM) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(dim, dim, generator=g) / dim ** 0.5).to(dev, torch.bfloat16)
    w = (torch.randn(dim, dim, generator=g) / dim ** 0.5).to(dev, torch.bfloat16)
    xg = x.clone().requires_grad_(True)
    gy = torch.randn_like(x)
    for op in PROBE_OPS:
        for phase in PROBE_PHASES:
            fn, setup = probe_phase(op, phase, x, xg, w, gy, n)
            r = dict(measure(fn, setup, dev))
            r.pop("per_kernel", None)
            rec.row("host_class", bench="host_class", op=op, n_ops=n, phase=phase, dim=dim, split="fit",
                    sm_clock_mhz=timer.tel.sm_clock_mhz(), **r)
            per = r["host_s"] / max(r["kernels"], 1.0) if r["kernels"] else r["host_s"] / n
            log(f"host_class {op} x{n} {phase}: host {r['host_s'] * 1e3:.3f} ms, {r['kernels']:.0f} kernels, "
                f"{per * 1e6:.1f} us a kernel, {r['aten_ops']} aten ops")


def _kernel_rows(rec, timer, config: str, label: str, per_kernel: dict) -> None:
    """Each kernel of one profiled phase (step_kernels.csv, `profiled` phase: the phase alone)."""
    for name, (n, t) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
        rec.row("step_kernels", bench="step_kernels", config=config, precision=label, profiled="phase",
                kernel=name if len(name) <= 240 else name[:120] + "..." + name[-117:], calls=n, time_s=t,
                reps=hd.KERNEL_REPS, timing="profiler", sm_clock_mhz=timer.tel.sm_clock_mhz())


def bench_mla_host_rows(rec, timer, dev, deadline, measure, precs, cases, with_kernels: bool = False) -> bool:
    """host_dispatch rows (fwd, infer, bwd) of MLA layer cases, and with_kernels each phase's kernels
    (step_kernels.csv, config "mla_layer <model> b<B> s<S> <phase>"); False when the deadline ended it."""
    for name, B, S in cases:
        if deadline.over():
            return False
        mla, cos, sin, x, gx = hd.mla_layer_case(name, B, S, dev)
        split = "holdout" if name in hd.HOLDOUT_MODELS else "fit"
        shape = {"model": name, "batch": B, "seq_len": S, "tokens": B * S, "num_experts": ""}
        cfg = f"mla_layer {name} b{B} s{S}"
        for prec in precs:
            phases = {"fwd": (lambda _: mla(x, cos, sin, prec), lambda: None),
                      "infer": (lambda _: hd._no_grad(mla, x, cos, sin, prec), lambda: None),
                      "bwd": (lambda o: torch.autograd.grad(o, [x, *mla.parameters()], gx),
                              lambda: mla(x, cos, sin, prec))}
            for phase, (fn, setup) in phases.items():
                r = measure(fn, setup, dev)
                if with_kernels:
                    _kernel_rows(rec, timer, f"{cfg} {phase}", prec.label, r.get("per_kernel", {}))
                hd._row(rec, timer, cfg, phase, prec, split, r, **shape)
        del mla, x, gx
        free_memory()
    return True


def bench_mla_host(rec, timer, dev, deadline, quick, env):
    measure = functools.partial(hd.measure_phase, reps=1, warmup=0) if quick else hd.measure_phase
    precs = precisions_to_bench(env)
    cases = QUICK_CASES if quick else MLA_FIT_CASES + MLA_HOLDOUT_CASES
    # host rows: the round with the median HOST time (a GPU-bound phase's event times tie across
    # rounds while its host time varies ~40%); the records: the median event time, as timed
    rounds = RoundRecorder(rec, rank_by={"host_dispatch": "host_s", "host_class": "host_s"})
    done, last_round_s = 0, 0.0
    for i in range(QUICK_ROUNDS if quick else MAX_ROUNDS):
        if deadline.over() or (done and time.perf_counter() + last_round_s > deadline.until):
            break
        t0 = time.perf_counter()
        rounds.start_round(i)
        bench_probes(rounds, timer, dev, measure, n=8 if quick else N_OPS, dim=16 if quick else PROBE_DIM)
        # the kernels of every phase once (first round: kernel times drift less than the host's)
        ok = bench_mla_host_rows(rounds, timer, dev, deadline, measure, precs, cases, with_kernels=i == 0)
        ok = ok and not deadline.over()
        if ok:
            bench_mla_layers(rounds, timer, dev, deadline, quick, env)
            ok = not deadline.over()
        if not ok and done:
            rounds.drop_round(i)   # cut short: its records would have one round more than the rest
            break
        done, last_round_s = i + 1, time.perf_counter() - t0
        log(f"mla_host round {done} done in {last_round_s:.1f} s")
    rounds.close()
    log(f"mla_host: {rounds.write_median_rounds()} records from {done} round(s) (the median round's row)")
