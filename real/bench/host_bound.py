"""Section host_bound (issue 13, session s7dec): the host-bound records and their host calibration,
taken together in one process on one host, in interleaved rounds.

Why together: a host-bound eager step (a decode step, a short prefill, a small MLA layer) lasts as
long as the host takes to dispatch its ops, and that speed is the host's, not the GPU's: the same
V2-Lite prefill at batch 1 on an H200 took 6.2 ms in the 2026-11-24 campaign (model.csv) and
10.4 ms host time in the 2026-11-26 one (host_dispatch.csv). The twin's host time per launched
kernel (Profile.eager host_s, calibration.layer_gaps.measured_host_s) is measured on the FITTING
split's layers; it can only predict records taken on the same host at the same time.
Why rounds: the host's speed also drifts within a run (the same decode step measured 30% apart a
second later), so each record is taken ROUNDS times, interleaved with the others, and the round
with the median time is written (the row as that round's code wrote it; the raw rounds are kept
in DIR/round<i>/).

Per round, in order:
  1. host calibration: the fitting split's layer cases of the host_dispatch section (MoE
     v3-slice-1l with 128 experts, MLA v3-slice-1l), phases fwd / infer / bwd, both precisions
     (host_dispatch.csv, split fit);
  2. the serve rows (model.csv prefill and decode: real/bench/whole_model.py bench_serve, the
     first campaign's code);
  3. the MLA layer rows (attention.csv mla_layer_fwd / mla_layer_bwd: real/bench/attention.py).
A round starts only if the one before it would still fit the section's time (all records then
have the same number of rounds). Then, where time is left:
  4. the serve cases' kernels (host_dispatch.csv phases prefill / decode, split holdout, and
     step_kernels.csv): kernels launched and their GPU time at every decode batch, what the
     twin's op lists are checked against (diagnostic, never fitted).
"""

from __future__ import annotations

import functools
import time

import torch

from real.bench import host_dispatch as hd
from real.bench.attention import bench_mla_layers
from real.bench.device import free_memory, precisions_to_bench
from real.bench.records import SHAPE_COLS, Recorder, log
from real.bench.whole_model import bench_serve
from real.configs import get_spec
from real.infer import decode_step, prefill
from real.model import build_model

ROUNDS = 3
QUICK_ROUNDS = 2     # a CPU dry run still takes the rounds path (median of two)
PROMPT_LEN, GEN_LEN = 1024, 32       # bench_serve's
# the serve section's models and batches (real/bench/whole_model.py bench_serve)
# (the kernels part takes them in this order, where time is left: the GPU-bound decode steps first)
SERVE_CASES = [("v3-slice-2l", [1, 4, 16], [256, 128, 64, 32, 8, 1]),
               ("v2-lite-slice", [1, 4, 16], [256, 128, 32, 8, 1])]
# the columns that name a record (the rest is its measurement); step_kernels rows are written
# directly (not in rounds)
KEY_COLS = {"model": ["bench", "model", "batch", "prompt_len", "gen_len", "precision"],
            "attention": ["bench", "model", "batch", "seq_len", "num_heads", "precision"],
            "host_dispatch": ["bench", "config", "phase", "precision"],
            "host_class": ["bench", "op", "n_ops", "phase", "dim"]}


class RoundRecorder:
    """Collects the rounds' rows in memory (family -> rows), each also written at once to
    DIR/round<i>/<family>.csv (kept if the run is cut short); `write_median_rounds` writes, per
    record, the row of the round with the median time_s (or the family's `rank_by` column; the
    lower median for an even count)."""

    def __init__(self, rec, rank_by: dict | None = None):
        # rank_by: family -> the column whose median round is written (default time_s)
        self.rec, self.rows, self.raw, self.round, self.rank_by = rec, {}, None, 0, rank_by or {}

    def start_round(self, i: int) -> None:
        if self.raw is not None:
            self.raw.close()
        self.round, out = i, getattr(self.rec, "out_dir", None)
        if out is not None:
            (out / f"round{i}").mkdir(parents=True, exist_ok=True)
            self.raw = Recorder(out / f"round{i}", self.rec.env)

    def row(self, family: str, **values) -> None:
        if family in KEY_COLS:
            self.rows.setdefault(family, []).append({**values, "_round": self.round})
            if self.raw is not None:
                self.raw.row(family, **values)
        else:
            self.rec.row(family, **values)   # per-kernel rows of a profiled phase: as they come

    def drop_round(self, i: int) -> None:
        self.rows = {f: [r for r in rows if r["_round"] != i] for f, rows in self.rows.items()}

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()

    def write_median_rounds(self) -> int:
        n = 0
        for family, rows in self.rows.items():
            groups: dict = {}
            for r in rows:
                groups.setdefault(tuple(str(r.get(k, "")) for k in KEY_COLS[family]), []).append(r)
            for group in groups.values():
                col = self.rank_by.get(family, "time_s")
                ranked = sorted(group, key=lambda r: float(r[col]))
                self.rec.row(family, **{k: v for k, v in ranked[(len(ranked) - 1) // 2].items() if k != "_round"})
                n += 1
        return n


def bench_host_bound(rec, timer, dev, deadline, quick, env):
    measure = functools.partial(hd.measure_phase, reps=1, warmup=0) if quick else hd.measure_phase
    precs = precisions_to_bench(env)
    moe_fit, mla_fit = hd.fit_layer_cases(quick)
    rounds = RoundRecorder(rec)
    done, last_round_s = 0, 0.0
    for i in range(QUICK_ROUNDS if quick else ROUNDS):
        if deadline.over() or (done and time.perf_counter() + last_round_s > deadline.until):
            break
        t0 = time.perf_counter()
        rounds.start_round(i)
        ok = hd.bench_layers(rounds, timer, dev, deadline, measure, precs, moe_fit, mla_fit)
        ok = ok and not deadline.over()
        if ok:
            bench_serve(rounds, timer, dev, deadline, quick, env)
            ok = not deadline.over()
        if ok:
            bench_mla_layers(rounds, timer, dev, deadline, quick, env)
            ok = not deadline.over()
        if not ok and done:
            rounds.drop_round(i)   # cut short: its records would have one round more than the rest
            break
        done, last_round_s = i + 1, time.perf_counter() - t0
        log(f"host_bound round {done} done in {last_round_s:.1f} s")
    rounds.close()
    log(f"host_bound: {rounds.write_median_rounds()} records from {done} round(s) (the median round's row)")
    serve_kernels(rec, timer, dev, deadline, quick, precs[0], measure)


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
            for B in decode_batches:
                if deadline.over():
                    return
                # the cache left zero (no prefill: the same kernels at the same sizes, seconds saved)
                caches = model.new_caches(B, P + G)
                token = torch.randint(0, spec.vocab_size, (B, 1), device=dev)
                pos = P + G // 2
                shape = {"model": name, "batch": B, "seq_len": pos, "tokens": B, "num_experts": spec.num_routed_experts}
                hd._row(rec, timer, f"decode {name} b{B} p{pos}", "decode", prec, "holdout",
                        measure(lambda _: decode_step(model, token, caches, pos), lambda: None, dev), **shape)
                del caches
                free_memory()
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
        del model
        free_memory()


assert all(set(KEY_COLS[f]) <= set(SHAPE_COLS[f]) for f in KEY_COLS)
