"""Megatron-LM's GPT block with Megatron's dropout on one GPU (issue 14, session s11drop): what
the 0.1 attention dropout and 0.1 hidden dropout (Megatron's defaults, arguments.py @ core_r0.8.0;
the gpt3 example script overrides neither) cost per block, and which SDPA kernel runs under them.

`python -m real.bench.dense_dropout --out DIR [--quick] [--budget-s S]` writes DIR/dense_dropout.csv,
DIR/dense_dropout_kernels.csv and DIR/env.json. Cases: the GPT 1.7B block (hidden 2048, 16 heads,
TP1) and one GPU's TP2 slice of the 7.1B block (hidden 4096, 32 heads -> 16), seq 4096, micro-batch 1,
BF16 (real/dense.py GPTBlock). Per case, rows flushed one by one (a run cut short keeps them):
  block_fwd / block_fwd_bwd  the whole block, dropout (attention, hidden) in (0,0), (0.1,0), (0,0.1),
             (0.1,0.1) with SDPA as torch picks it ('auto'), then (0,0) and (0.1,0.1) with SDPA held
             to FlashAttention-2 ('flash') and to cuDNN ('cudnn');
  attn_fwd / attn_fwd_bwd    the SDPA call alone, dropout_p 0 and 0.1, backends auto / flash / cudnn
             (and memory-efficient last);
  dropadd_fwd_bwd / add_fwd_bwd  one hidden dropout + residual add (Megatron's bias_dropout_add, here
             unfused: F.dropout then +) on the block's (tokens x hidden) tensor beside the add alone.
`--calls` (s28mlm2, docs/notes/s28mlm2_rule.md) runs instead the cuDNN SDPA call alone (attn_fwd,
attn_fwd_bwd; dropout_p 0 and 0.1 back to back per call) at Megatron's per-rank calls under the
SC21 micro-batch: 16 heads (1.7B TP1, 7.1B TP2) at batch 1, 2, 4, 8; 12 heads (16B TP4) and 7 heads
(32B TP8) at batch 1, 2, 4; seq 4096, head dim 128, causal. Split: 16 heads x batch 1 fits, the rest
is held out. 15 timed repetitions a row; `--passes N` runs the list N times. Then (report only) the 16-head batch-4 call in Megatron's layout (block
'attention_sbhd': q, k, v as views of one (S, B, H, 3, D) QKV output, as TE's 'sbhd' input).
`sdpa_ran` is the attention op the profiler saw in one profiled repetition of each config (cudnn,
flash, efficient or math): a backend that cannot take dropout shows as 'not run' in the log, and
'auto' records which backend torch chose. Split: the 1.7B rows fit, the 7.1B TP2 rows held out.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from real.bench.dense_block import time_call
from real.bench.device import environment, free_memory, nccl_version
from real.bench.records import Recorder, log
from real.dense import DenseShape, GPTBlock, attention_core, slice_of
from real.telemetry import Telemetry
from real.sync import synchronize

BACKENDS = {"flash": [SDPBackend.FLASH_ATTENTION], "cudnn": [SDPBackend.CUDNN_ATTENTION],
            "efficient": [SDPBackend.EFFICIENT_ATTENTION], "auto": None}
MEGATRON_DROPOUT = 0.1   # attention_dropout and hidden_dropout defaults, Megatron arguments.py @ core_r0.8.0
GPT_VOCAB = 131072


@dataclass(frozen=True)
class Case:
    model: str
    tp: int
    shape: DenseShape
    batch: int
    seq_len: int
    split: str


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("tiny-gpt", 1, slice_of("gpt", 64, 4, 4, 16, 256, 256, 1), 1, 64, "fit"),
                Case("tiny-gpt-tp2", 2, slice_of("gpt", 64, 4, 4, 16, 256, 256, 2), 1, 64, "holdout")]
    return [Case("megatron-gpt-1.7b", 1, slice_of("gpt", 2048, 16, 16, 128, 8192, GPT_VOCAB, 1), 1, 4096, "fit"),
            Case("megatron-gpt-7.1b", 2, slice_of("gpt", 4096, 32, 32, 128, 16384, GPT_VOCAB, 2), 1, 4096,
                 "holdout")]


# (model, tp, hidden, heads, batches): Megatron-LM README table rows' per-rank attention calls
# (twin/data/models.toml: 1.7B 16 heads, 7.1B 32, 16B 48, 32B 56; head dim 128)
CALLS = (("megatron-gpt-1.7b", 1, 2048, 16, (1, 2, 4, 8)), ("megatron-gpt-16b", 4, 6144, 48, (1, 2, 4)),
         ("megatron-gpt-32b", 8, 7168, 56, (1, 2, 4)))
SBHD_CALL = ("megatron-gpt-1.7b", 1, 2048, 16, 4)


def call_cases(quick: bool) -> list[Case]:
    """--calls: one Case per (model slice, batch); 16 heads at batch 1 fits, the rest held out."""
    if quick:
        return [Case("tiny-gpt", 1, slice_of("gpt", 64, 4, 4, 16, 256, 256, 1), b, 64, "fit" if b == 1 else "holdout")
                for b in (1, 2)]
    return [Case(model, tp, slice_of("gpt", hidden, heads, heads, 128, 4 * hidden, GPT_VOCAB, tp), b, 4096,
                 "fit" if (heads // tp, b) == (16, 1) else "holdout")
            for model, tp, hidden, heads, batches in CALLS for b in batches]


def sbhd_case(quick: bool) -> Case:
    if quick:
        return Case("tiny-gpt", 1, slice_of("gpt", 64, 4, 4, 16, 256, 256, 1), 2, 64, "holdout")
    model, tp, hidden, heads, b = SBHD_CALL
    return Case(model, tp, slice_of("gpt", hidden, heads, heads, 128, 4 * hidden, GPT_VOCAB, tp), b, 4096, "holdout")


def sdpa_op_ran(names: list[str]) -> str:
    """The SDPA implementation among a profile's op names (aten::_scaled_dot_product_<impl>...)."""
    for key, label in (("cudnn_attention", "cudnn"), ("flash_attention", "flash"),
                       ("efficient_attention", "efficient"), ("attention_math", "math")):
        if any(key in n for n in names):
            return label
    return "none"


def profiled(fn, dev) -> tuple[str, dict[str, tuple[int, float]]]:
    """One profiled fn(): the SDPA op that ran and kernel name -> (calls, GPU seconds) (top-level
    CPU ops' times on a CPU)."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        synchronize(dev)
    events = list(prof.events())
    ran = sdpa_op_ran([ev.name for ev in events if ev.device_type.name == "CPU"])
    out: dict[str, tuple[int, float]] = {}
    for ev in events:
        if dev.type == "cuda":
            if ev.device_type.name != "CUDA":
                continue
            t = ev.device_time
        else:
            if ev.cpu_parent is not None:
                continue
            t = ev.cpu_time
        n, s = out.get(ev.name, (0, 0.0))
        out[ev.name] = (n + 1, s + t * 1e-6)
    return ran, out


class Bench:
    def __init__(self, rec: Recorder, dev, tel: Telemetry, quick: bool, budget_s: float, reps: int = 5):
        self.rec, self.dev, self.tel = rec, dev, tel
        self.t0, self.budget_s = time.perf_counter(), budget_s
        self.reps, self.warmup = (2, 1) if quick else (reps, 3)

    def over(self) -> bool:
        return time.perf_counter() - self.t0 > self.budget_s

    def record(self, bench: str, block: str, case: Case, fn, p_attn: float, p_hidden: float, backend: str,
               flops: float, nbytes: float = math.nan) -> dict:
        s = case.shape
        r = time_call(lambda _: fn(), lambda: None, self.dev, self.reps, warmup=self.warmup)
        ran, kernels = profiled(fn, self.dev)
        common = dict(bench=bench, model=case.model, tp=case.tp, attention_dropout=p_attn, hidden_dropout=p_hidden,
                      sdpa_backend=backend, sdpa_ran=ran)
        self.rec.row("dense_dropout", **common, block=block, batch=case.batch, seq_len=case.seq_len,
                     hidden_size=s.hidden_size, num_heads=s.num_heads, head_dim=s.head_dim, ffn=s.ffn,
                     precision="bf16", split=case.split, **r, flops=flops, bytes=nbytes,
                     achieved_flops_per_s=flops / r["time_s"] if flops else math.nan,
                     achieved_bytes_per_s=nbytes / r["time_s"],
                     sm_clock_mhz=self.tel.sm_clock_mhz(), mem_clock_mhz=self.tel.mem_clock_mhz())
        for name, (calls, secs) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:40]:
            name = name if len(name) <= 240 else name[:120] + "..." + name[-117:]
            self.rec.row("dense_dropout_kernels", **common, kernel=name, calls=calls, time_s=secs, reps=1,
                         timing="profiler", sm_clock_mhz=self.tel.sm_clock_mhz())
        log(f"{bench} {case.model} tp{case.tp} drop attn {p_attn} hidden {p_hidden} {backend} (ran {ran}): "
            f"{r['time_s'] * 1e3:.3f} ms (p10 {r['time_p10_s'] * 1e3:.3f}, p90 {r['time_p90_s'] * 1e3:.3f})")
        return r


def block_fwd_flops(case: Case) -> float:
    s, T = case.shape, case.batch * case.seq_len
    gemms = 2 * T * s.hidden_size * (4 * s.num_heads * s.head_dim + 2 * s.ffn)
    return gemms + attn_fwd_flops(case)


def attn_fwd_flops(case: Case) -> float:
    s = case.shape
    return 2 * 2 * case.batch * case.seq_len ** 2 * s.num_heads * s.head_dim / 2


def run_block(b: Bench, case: Case, p_attn: float, p_hidden: float, backend: str):
    dev, s = b.dev, case.shape
    torch.manual_seed(0)
    block = GPTBlock(s, p_attn, p_hidden).to(dev, torch.bfloat16).train()
    x = torch.randn(case.batch, case.seq_len, s.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    params = list(block.parameters())
    fl = block_fwd_flops(case)
    with _backend(backend):
        b.record("block_fwd", "gpt", case, lambda: block(x), p_attn, p_hidden, backend, fl)
        b.record("block_fwd_bwd", "gpt", case, lambda: torch.autograd.grad(block(x), [x, *params], g),
                 p_attn, p_hidden, backend, 3 * fl)


def run_attention(b: Bench, case: Case, p: float, backend: str):
    dev, s = b.dev, case.shape

    def t():
        return torch.randn(case.batch, case.seq_len, s.num_heads, s.head_dim, device=dev, dtype=torch.bfloat16,
                           requires_grad=True)
    q, k, v = t(), t(), t()
    g = torch.randn_like(q)
    fl = attn_fwd_flops(case)
    with _backend(backend):
        b.record("attn_fwd", "attention", case, lambda: attention_core(q, k, v, "repeat_kv", p), p, 0.0, backend, fl)
        b.record("attn_fwd_bwd", "attention", case,
                 lambda: torch.autograd.grad(attention_core(q, k, v, "repeat_kv", p), [q, k, v], g), p, 0.0,
                 backend, 3.5 * fl)


def run_attention_sbhd(b: Bench, case: Case, p: float, backend: str):
    """The SDPA call on q, k, v viewed out of one (S, B, H, 3, D) tensor (Megatron's fused QKV output,
    split per head as TE's 'sbhd' format takes it), permuted to (B, H, S, D) without a copy."""
    dev, s = b.dev, case.shape
    qkv = torch.randn(case.seq_len, case.batch, s.num_heads, 3, s.head_dim, device=dev, dtype=torch.bfloat16,
                      requires_grad=True)
    g = torch.randn(case.batch, s.num_heads, case.seq_len, s.head_dim, device=dev, dtype=torch.bfloat16)

    def call():
        q, k, v = (t.permute(1, 2, 0, 3) for t in qkv.unbind(3))
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
    fl = attn_fwd_flops(case)
    with _backend(backend):
        b.record("attn_fwd", "attention_sbhd", case, call, p, 0.0, backend, fl)
        b.record("attn_fwd_bwd", "attention_sbhd", case, lambda: torch.autograd.grad(call(), [qkv], g), p, 0.0,
                 backend, 3.5 * fl)


def run_dropadd(b: Bench, case: Case, p: float):
    """One hidden dropout + residual add on (tokens x hidden), forward and backward (p 0: the add
    alone). Bytes: BF16 x, residual, out (+ a 1-byte mask written) forward; grad in, grad out
    (+ the mask read) backward."""
    dev, s = b.dev, case.shape
    x = torch.randn(case.batch, case.seq_len, s.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    res = torch.randn_like(x, requires_grad=True)
    g = torch.randn_like(x)
    n = x.numel()
    nbytes = n * (3 * 2 + 2 * 2 + 2 * 2) + (2 * n if p > 0 else 0)

    def fn():
        out = res + (F.dropout(x, p, training=True) if p > 0 else x)
        return torch.autograd.grad(out, [x, res], g)
    b.record("dropadd_fwd_bwd" if p > 0 else "add_fwd_bwd", "dropout", case, fn, 0.0, p, "none", 0.0, float(nbytes))


class _backend:
    """sdpa_kernel([backend]) or, for 'auto', nothing: torch's own choice."""

    def __init__(self, name: str):
        self.ctx = sdpa_kernel(BACKENDS[name]) if BACKENDS[name] else None

    def __enter__(self):
        return self.ctx.__enter__() if self.ctx else None

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc) if self.ctx else False


def plan(case: Case) -> list[tuple]:
    """The configs of one case, most telling first."""
    d = MEGATRON_DROPOUT
    out = [("block", 0.0, 0.0, "auto"), ("block", d, d, "auto"), ("attention", 0.0, "auto"), ("attention", d, "auto"),
           ("dropadd", 0.0), ("dropadd", d), ("block", d, 0.0, "auto"), ("block", 0.0, d, "auto")]
    for be in ("flash", "cudnn"):
        out += [("attention", 0.0, be), ("attention", d, be), ("block", 0.0, 0.0, be), ("block", d, d, be)]
    return out + [("attention", 0.0, "efficient"), ("attention", d, "efficient")]


def call_plan(quick: bool) -> list[tuple]:
    """--calls: (case, what, *args), dropout 0 then 0.1 per call, the sbhd layout last."""
    d, be = MEGATRON_DROPOUT, "auto" if quick else "cudnn"   # quick: a CPU has no cuDNN SDPA
    out = [(c, "attention", p, be) for c in call_cases(quick) for p in (0.0, d)]
    return out + [(sbhd_case(quick), "attention_sbhd", p, be) for p in (0.0, d)]


def run(out: Path, quick: bool, budget_s: float, calls: bool = False, passes: int = 1) -> int:
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    tel = Telemetry(0)
    env = environment(dev, tel)
    env.update(nccl_version=nccl_version() if dev.type == "cuda" else "",
               num_gpus=1, section="dense_dropout", budget_s=budget_s)
    (out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    rec = Recorder(out, env)
    b = Bench(rec, dev, tel, quick, budget_s, reps=15 if calls else 5)
    failures, not_run = [], []
    runners = {"block": run_block, "attention": run_attention, "dropadd": run_dropadd,
               "attention_sbhd": run_attention_sbhd}
    work = call_plan(quick) * passes if calls else [(case, *cfg) for case in cases(quick) for cfg in plan(case)]
    for case, what, *args in work:
        if b.over():
            log(f"budget spent: {case.model} {what} {args} and after not run")
            break
        try:
            runners[what](b, case, *args)
        except RuntimeError as e:   # a backend without a kernel (cuDNN on a CPU, or under dropout): say so
            msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            if "out of memory" in msg:
                failures.append(f"{case.model} {what} {args}: {msg}")
            else:
                not_run.append(f"{case.model} {what} {args}: {msg}")
            log(f"{case.model} {what} {args}: not run ({msg})")
        free_memory()
    rec.close()
    env.update(failures=failures, not_run=not_run, elapsed_s=time.perf_counter() - b.t0)
    (out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    log(f"dense_dropout done in {time.perf_counter() - b.t0:.1f} s; failures: {failures or 'none'}")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real.bench.dense_dropout", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a CPU dry run")
    ap.add_argument("--budget-s", type=float, default=70.0, help="time budget of all configs together")
    ap.add_argument("--calls", action="store_true", help="s28mlm2: the cuDNN SDPA call alone at Megatron's per-rank calls")
    ap.add_argument("--passes", type=int, default=1, help="--calls: the whole list this many times (rows per pass)")
    args = ap.parse_args(argv)
    return run(args.out, args.quick, args.budget_s, args.calls, args.passes)


if __name__ == "__main__":
    raise SystemExit(main())
