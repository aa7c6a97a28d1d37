"""Section mla_paired (issue 13, session s9mla): every MLA layer record beside a host probe taken
right before it, in one process and interleaved rounds, so the host's speed of each record's own
moment is an input of its prediction (like the SM clock), never read from the record's time.

Why: the H100's MLA held-out misses are host-bound V2-Lite records, and the host's dispatch speed
varies ~2x between rounds of one process even with the machine to itself (h100/s8mla_clean: the
no-grad probe 7.7-15.5 us a kernel across rounds, each round ~19 s long). s8mla's rounds put the
probes at the start of a round and the records ~10 s later; here a probe block precedes every
record pair (fwd, bwd), a few hundred milliseconds before it, and one closes the round.

Per round, in order (all rows in mla_paired.csv, flushed one by one, so a run cut short keeps them):
  1. a probe block (bench `host_class`, `pair` k): PAIRED_PROBES, chains of N_OPS small BF16 ops
     (real/bench/mla_host.py probe_phase) by dispatch class;
  2. the fitting split's MLA host rows (bench `host_dispatch`, phases fwd / infer / bwd, BF16 and
     FP8, PAIRED_FIT_CASES), the twin's host rates per kernel class of that round;
  3. per MLA layer record (real/bench/attention.py's shapes, V3-slice split fit, V2-Lite split
     holdout), a probe block (`pair` k + 1, ...) then the record's forward and backward (bench
     `mla_layer_fwd` / `mla_layer_bwd`, CUDA events around each eager repetition as attention.csv),
     carrying that block's `pair`;
  4. a closing probe block.
Every row carries `round` and `pair`; a record's probes are the block of its `pair` (before) and
the next block (after).
Under REAL_MLA_PAIRED_LAYOUT=rotated (session s14mla, real/campaigns/s14mla.sh) steps 2 and 3 run
without a probe block before each record, in an order rotated by one item each round (run_settings)."""

from __future__ import annotations

import functools
import os
import time

import torch

from real.bench import host_dispatch as hd
from real.bench.device import free_memory, precisions_to_bench
from real.bench.mla_host import N_OPS, PROBE_DIM, probe_phase
from real.bench.records import log
from real.configs import get_spec
from real.model import MLA, building, rope_tables
from twin.costs.flops import attention_ops

MAX_ROUNDS = 8
QUICK_ROUNDS = 2
# the probes of a block: no-grad and autograd-recording forwards, the engine's backward (elementwise)
# and an autograd.Function's backward of GEMMs (real/fp8.py's FP8 backward)
PAIRED_PROBES = (("mul", "nograd"), ("mul", "record"), ("mul", "engine"), ("mm", "custom_bwd"))
PAIRED_FIT_CASES = [("v3-slice-1l", 1, 1024)]
# the MLA layer records (real/bench/attention.py bench_mla_layers): model, (seq_len, batch)
RECORD_MODELS = ("v3-slice-1l", "v2-lite-slice")
RECORD_SHAPES = ((1024, 4), (4096, 1), (4096, 4))
QUICK_RECORDS = (("tiny", 64, 2),)
QUICK_FIT = [("tiny", 2, 32)]
# s14mla's protocol (real/campaigns/s14mla.sh sets these; unset, the section runs as s9mla did):
#   REAL_MLA_PAIRED_LAYOUT=rotated   a probe block opens and closes each round (no block before each
#       record), and the round's items (the fitting host rows, then each record) start one item later
#       each round, so every item is timed at every position of a round over the run (a host that
#       drifts within a round then biases no configuration);
#   REAL_MLA_PAIRED_MODELS           the record models, comma-separated (default RECORD_MODELS);
#   REAL_MLA_PAIRED_ROUNDS           the most rounds (default MAX_ROUNDS; the budget still stops it).
LAYOUTS = ("per_record", "rotated")


def run_settings(quick: bool) -> dict:
    """The section's layout, record models and round cap from the environment (above)."""
    layout = os.environ.get("REAL_MLA_PAIRED_LAYOUT", "per_record")
    if layout not in LAYOUTS:
        raise ValueError(f"REAL_MLA_PAIRED_LAYOUT={layout!r}: one of {LAYOUTS}")
    models = tuple(m for m in os.environ.get("REAL_MLA_PAIRED_MODELS", ",".join(RECORD_MODELS)).split(",") if m)
    if not set(models) <= set(RECORD_MODELS):
        raise ValueError(f"REAL_MLA_PAIRED_MODELS={models}: a subset of {RECORD_MODELS}")
    rounds = int(os.environ.get("REAL_MLA_PAIRED_ROUNDS", MAX_ROUNDS))
    if quick:   # a CPU dry run: a few rounds whatever the campaign asks
        rounds = min(rounds, QUICK_ROUNDS)
    return {"layout": layout, "models": models, "rounds": rounds}


def rotated(items: list, rnd: int) -> list:
    """The round's items starting at item rnd (mod their count)."""
    k = rnd % len(items)
    return items[k:] + items[:k]


class _Pairs:
    """The running probe-block number of the run (`pair`)."""

    def __init__(self):
        self.k = -1

    def next(self) -> int:
        self.k += 1
        return self.k


def probe_block(rec, timer, dev, measure, rnd: int, pair: int, n: int, dim: int, profiled: bool = False) -> None:
    """The block's probes; `profiled` (a round's first block) also counts their kernels with the
    profiler, the others skip it (~0.1 s a probe): each probe's chain launches one kernel per op."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(dim, dim, generator=g) / dim ** 0.5).to(dev, torch.bfloat16)
    w = (torch.randn(dim, dim, generator=g) / dim ** 0.5).to(dev, torch.bfloat16)
    xg = x.clone().requires_grad_(True)
    gy = torch.randn_like(x)
    for op, phase in PAIRED_PROBES:
        fn, setup = probe_phase(op, phase, x, xg, w, gy, n)
        r = dict(measure(fn, setup, dev, profiled=profiled))
        r.pop("per_kernel", None)
        rec.row("mla_paired", bench="host_class", round=rnd, pair=pair, op=op, n_ops=n, phase=phase, split="fit",
                sm_clock_mhz=timer.tel.sm_clock_mhz(), **r)
        log(f"mla_paired r{rnd} p{pair} probe {op} {phase}: {r['host_s'] / n * 1e6:.1f} us an op "
            f"({r['kernels']:.0f} kernels profiled)")


def fit_host_rows(rec, timer, dev, measure, precs, cases, rnd: int, pair: int) -> None:
    for name, B, S in cases:
        mla, cos, sin, x, gx = hd.mla_layer_case(name, B, S, dev)
        split = "holdout" if name in hd.HOLDOUT_MODELS else "fit"
        for prec in precs:
            phases = {"fwd": (lambda _: mla(x, cos, sin, prec), lambda: None),
                      "infer": (lambda _: hd._no_grad(mla, x, cos, sin, prec), lambda: None),
                      "bwd": (lambda o: torch.autograd.grad(o, [x, *mla.parameters()], gx),
                              lambda: mla(x, cos, sin, prec))}
            for phase, (fn, setup) in phases.items():
                r = dict(measure(fn, setup, dev))
                r.pop("per_kernel", None)
                rec.row("mla_paired", bench="host_dispatch", round=rnd, pair=pair, config=f"mla_layer {name} b{B} s{S}",
                        phase=phase, model=name, batch=B, seq_len=S, precision=prec.label, split=split,
                        profiled="phase", sm_clock_mhz=timer.tel.sm_clock_mhz(), **r)
                log(f"mla_paired r{rnd} p{pair} host {name} b{B} s{S} {phase} {prec.label}: "
                    f"{r['host_s'] / max(r['kernels'], 1.0) * 1e6:.1f} us a kernel ({r['kernels']:.0f} kernels)")
        del mla, x, gx
        free_memory()


def record_pair(rec, timer, dev, name: str, S: int, B: int, prec, rnd: int, pair: int) -> None:
    """One MLA layer record's forward and backward (real/bench/attention.py bench_mla_layers)."""
    spec = get_spec(name)
    with building(dev):
        mla = MLA(spec)
        cos, sin = rope_tables(spec.qk_rope_head_dim, S)
    x = torch.randn(B, S, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    fl_fwd = sum(op.flops for op in attention_ops(spec, B, S))
    split = "holdout" if name in hd.HOLDOUT_MODELS else "fit"
    common = dict(round=rnd, pair=pair, model=name, batch=B, seq_len=S, num_heads=spec.num_heads,
                  qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim, v_head_dim=spec.v_head_dim,
                  causal=True, precision=prec.label, split=split)
    r = timer.measure(lambda: mla(x, cos, sin, prec), flops=fl_fwd)
    rec.row("mla_paired", bench="mla_layer_fwd", **common, **r)
    r = timer.measure(lambda o: torch.autograd.grad(o, [x, *mla.parameters()], g),
                      setup=lambda: mla(x, cos, sin, prec), flops=2 * fl_fwd)
    rec.row("mla_paired", bench="mla_layer_bwd", **common, **r)
    log(f"mla_paired r{rnd} p{pair} record {name} b{B} s{S} {prec.label}")
    del mla, x, g
    free_memory()


def bench_mla_paired(rec, timer, dev, deadline, quick, env):
    measure = functools.partial(hd.measure_phase, reps=1, warmup=0) if quick else hd.measure_phase
    precs = precisions_to_bench(env)
    cfg = run_settings(quick)
    n, dim = (8, 16) if quick else (N_OPS, PROBE_DIM)
    fit = QUICK_FIT if quick else PAIRED_FIT_CASES
    records = QUICK_RECORDS if quick else tuple((m, S, B) for m in cfg["models"] for S, B in RECORD_SHAPES)
    log(f"mla_paired: layout {cfg['layout']}, records {[r[0] for r in records]}, at most {cfg['rounds']} rounds")
    pairs, done, last_round_s = _Pairs(), 0, 0.0
    for rnd in range(cfg["rounds"]):
        # a round starts only if the last one's time still fits (rows so far are on disk)
        if deadline.over() or (done and time.perf_counter() + last_round_s > deadline.until):
            break
        t0 = time.perf_counter()
        pair = pairs.next()
        probe_block(rec, timer, dev, measure, rnd, pair, n, dim, profiled=True)
        if cfg["layout"] == "rotated":
            items = [("fit", None)] + [("record", (name, S, B, prec)) for name, S, B in records for prec in precs]
            for what, arg in rotated(items, rnd):
                if deadline.over():
                    break
                if what == "fit":
                    fit_host_rows(rec, timer, dev, measure, precs, fit, rnd, pair)
                else:
                    record_pair(rec, timer, dev, *arg, rnd, pair)
        else:
            fit_host_rows(rec, timer, dev, measure, precs, fit, rnd, pair)
            for name, S, B in records:
                for prec in precs:
                    if deadline.over():
                        break
                    pair = pairs.next()
                    probe_block(rec, timer, dev, measure, rnd, pair, n, dim)
                    record_pair(rec, timer, dev, name, S, B, prec, rnd, pair)
        probe_block(rec, timer, dev, measure, rnd, pairs.next(), n, dim)
        done, last_round_s = rnd + 1, time.perf_counter() - t0
        log(f"mla_paired round {done} done in {last_round_s:.1f} s")
    log(f"mla_paired: {done} round(s), {pairs.k + 1} probe blocks")
