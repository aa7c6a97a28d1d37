"""Dense transformer blocks on one GPU (issue 14, session s8dense): what the published runs beyond
DeepSeek (torchtitan's Llama 3.1, Megatron-LM's GPT; calibration/data/published_runs.toml) run per
layer on each GPU, timed forward and forward+backward, with the kernels of one repetition.

`python -m real.bench.dense_block --out DIR [--quick] [--budget-s S]` writes DIR/dense_block.csv,
DIR/dense_kernels.csv and DIR/env.json. Parts, in order (each ends when its share of the budget is
spent; rows are flushed one by one, so a run cut short keeps what it wrote):
  1. block   one LlamaBlock / GPTBlock (real/dense.py) at the rows' per-GPU shapes: Llama 3.1 8B
             (seq 2K..32K, micro-batch as the rows: 2 at 8K, 1 at 32K, tokens ~16K below),
             70B and 405B as one GPU's TP8 slice, Megatron's GPT sizes as one GPU's TP slice (seq
             4096, micro-batch 1); SDPA flash (FlashAttention-2), and cuDNN on the 8B rows;
             bench block_fwd (forward with autograd recording, as in training) and block_fwd_bwd.
  2. gemm    the forward GEMMs of four blocks (8B, 405B slice, GPT 1.7B and 177B slice) each alone:
             the same kernels as inside the block, without the kernels around them.
  3. head    final norm + output projection + FP32 cross-entropy at the 128,256 (Llama) and
             131,072 (GPT) vocabularies (the slice's under TP), bench head_fwd / head_fwd_bwd.
  4. attention  the SDPA call alone (K/V already repeated to the query heads) at every block's
             attention shape and at 64K / 128K (8B heads), each backend (flash, cudnn, efficient)
             timed separately: FA2 vs cuDNN measured. The 8B shapes also with SDPA's enable_gqa
             (K/V heads as they are) instead.
  5. compile torch.compile'd blocks (8B at 2 x 8K, GPT 1.7B at 1 x 4K), where time is left.
Every timed config also gets one profiled repetition: per-kernel GPU time (dense_kernels.csv,
phase fwd or fwd_bwd). Columns: records.py SHAPE_COLS["dense_block"], ["dense_kernels"].

Timing: `WARMUP` calls, then CUDA events around each of >= 3 repetitions (p10/p50/p90), and the
host seconds to issue a call (`host_s`: where it exceeds time_s the GPU waited on the host).
Split: whole shapes held out (HOLDOUT_MODELS: every row of the Llama 70B and GPT 70B TP8 slices);
the rest fit.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from real.bench.device import environment, free_memory, nccl_version
from real.bench.host_dispatch import ANNOTATION
from real.bench.records import Recorder, log
from real.dense import DenseShape, LMHead, attention_core, build_block, rope_freqs_cis, slice_of
from real.telemetry import Telemetry
from real.sync import synchronize

WARMUP = 2
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}
HOLDOUT_MODELS = ("llama3.1-70b", "megatron-gpt-70b")
SHARES = {"block": 0.42, "gemm": 0.04, "head": 0.07, "attention": 0.30, "compile": 0.17}
LLAMA_VOCAB, GPT_VOCAB = 128256, 131072


@dataclass(frozen=True)
class Case:
    model: str            # the catalog model (twin/data/models.toml) this block is one layer of
    tp: int
    shape: DenseShape
    batch: int
    seq_len: int

    @property
    def split(self) -> str:
        return "holdout" if self.model in HOLDOUT_MODELS else "fit"


def _llama(model, D, H, G, Fw, tp, runs):
    return [Case(model, tp, slice_of("llama", D, H, G, 128, Fw, LLAMA_VOCAB, tp), b, s) for b, s in runs]


def _gpt(model, D, H, tp):
    # Megatron's GPT: MHA with head dim 128 (hidden / heads), GeLU FFN of 4 x hidden (README model table)
    return Case(model, tp, slice_of("gpt", D, H, H, D // H, 4 * D, GPT_VOCAB, tp), 1, 4096)


def block_cases(quick: bool) -> list[Case]:
    """The per-GPU blocks of the published rows (calibration/data/published_runs.toml)."""
    if quick:   # one GQA Llama block (as the 8B's: fit) and one GPT TP2 slice (as the held-out 70B's)
        return [Case("tiny-llama", 1, DenseShape("llama", 64, 4, 2, 16, 96, 256), 2, 32),
                Case("megatron-gpt-70b", 2, slice_of("gpt", 64, 4, 4, 16, 256, 256, 2), 1, 32)]
    return [
        # torchtitan Llama 3.1 8B: local batch 2 at 8K (Table 1/3), 1 at 32K (Table 2); ~16K tokens below
        *_llama("llama3.1-8b", 4096, 32, 8, 14336, 1, [(2, 8192), (8, 2048), (4, 4096), (1, 16384), (1, 32768)]),
        # 405B under TP8: PP micro-batch 4 at 8K (Table 5), 1 at 32K (Table 6)
        *_llama("llama3.1-405b", 16384, 128, 8, 53248, 8, [(4, 8192), (1, 32768)]),
        # held out: 70B under TP8 (torchtitan Table 4: local batch 16 at 8K), and Megatron's 70B below
        *_llama("llama3.1-70b", 8192, 64, 8, 28672, 8, [(16, 8192)]),
        _gpt("megatron-gpt-1.7b", 2048, 16, 1), _gpt("megatron-gpt-7.1b", 4096, 32, 2),
        _gpt("megatron-gpt-16b", 6144, 48, 4), _gpt("megatron-gpt-32b", 7168, 56, 8),
        _gpt("megatron-gpt-70b", 8192, 64, 8), _gpt("megatron-gpt-119b", 10240, 80, 8),
        _gpt("megatron-gpt-177b", 12288, 96, 8), _gpt("megatron-gpt-314b", 16384, 128, 8),
        _gpt("megatron-gpt-462b", 18432, 144, 8),
    ]


def time_call(fn, setup, dev, reps: int, warmup: int = WARMUP) -> dict:
    """fn(setup()) timed: CUDA events around each repetition (the host clock on CPU), the host
    seconds to issue it beside."""
    for _ in range(warmup):
        fn(setup())
    synchronize(dev)
    gpu, host = [], []
    for _ in range(reps):
        state = setup()
        synchronize(dev)
        if dev.type == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
        t0 = time.perf_counter()
        fn(state)
        host.append(time.perf_counter() - t0)
        if dev.type == "cuda":
            e1.record()
            e1.synchronize()
            gpu.append(e0.elapsed_time(e1) * 1e-3)
        else:
            gpu.append(host[-1])
    gpu.sort()
    q = statistics.quantiles(gpu, n=10, method="inclusive") if len(gpu) > 1 else [gpu[0]] * 9
    return {"time_s": statistics.median(gpu), "time_p10_s": q[0], "time_p90_s": q[-1], "reps": reps,
            "timing": "per_rep_events" if dev.type == "cuda" else "host_clock", "host_s": statistics.median(host)}


def kernel_times(fn, setup, dev) -> dict[str, tuple[int, float]]:
    """kernel name -> (calls, GPU seconds) of one profiled fn(setup()) (CPU ops' times on a CPU)."""
    state = setup()
    synchronize(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn(state)
        synchronize(dev)
    out: dict[str, tuple[int, float]] = {}
    for ev in prof.events():
        if dev.type == "cuda":   # kernels, not range annotations ("Optimizer.step#AdamW.step"; a
            # kernel's own name may hold '#': "{lambda(float)#1}")
            if ev.device_type.name != "CUDA" or ANNOTATION.fullmatch(ev.name):
                continue
            t = ev.device_time
        else:
            if ev.cpu_parent is not None:   # top-level CPU ops only on a CPU (no kernels there)
                continue
            t = ev.cpu_time
        n, s = out.get(ev.name, (0, 0.0))
        out[ev.name] = (n + 1, s + t * 1e-6)
    return out


class Bench:
    def __init__(self, rec, dev, tel: Telemetry, quick: bool, budget_s: float):
        self.rec, self.dev, self.tel, self.quick = rec, dev, tel, quick
        self.t0, self.budget_s, self.used, self.until = time.perf_counter(), budget_s, 0.0, time.perf_counter()
        self.reps = 2 if quick else 3

    def start(self, part: str):
        self.used += SHARES[part]
        self.until = self.t0 + self.budget_s * self.used
        log(f"== dense_block part {part} (until +{self.until - self.t0:.0f} s)")

    def over(self) -> bool:
        return time.perf_counter() > self.until

    def record(self, bench: str, block: str, case: Case, fn, setup, backend: str, gqa: str, compiled: str,
               flops: float, profile_phase: str | None):
        common = dict(block=block, model=case.model, tp=case.tp, batch=case.batch, seq_len=case.seq_len,
                      **{k: v for k, v in asdict(case.shape).items() if k not in ("kind", "norm_eps")},
                      sdpa_backend=backend, gqa=gqa, compiled=compiled, precision="bf16", split=case.split)
        r = time_call(fn, setup, self.dev, self.reps, warmup=1 if self.quick else WARMUP)
        self.rec.row("dense_block", bench=bench, **common, **r, flops=flops, bytes=math.nan,
                     achieved_flops_per_s=flops / r["time_s"], achieved_bytes_per_s=math.nan,
                     sm_clock_mhz=self.tel.sm_clock_mhz(), mem_clock_mhz=self.tel.mem_clock_mhz())
        if profile_phase:
            for name, (calls, secs) in sorted(kernel_times(fn, setup, self.dev).items(), key=lambda kv: -kv[1][1]):
                name = name if len(name) <= 240 else name[:120] + "..." + name[-117:]
                self.rec.row("dense_kernels", bench=bench, phase=profile_phase, **common, kernel=name, calls=calls,
                             time_s=secs, reps=1, timing="profiler", sm_clock_mhz=self.tel.sm_clock_mhz())
        log(f"{bench} {case.model} tp{case.tp} b{case.batch} s{case.seq_len} {backend} {gqa}"
            f"{'' if compiled == 'no' else ' ' + compiled}: {r['time_s'] * 1e3:.3f} ms (host {r['host_s'] * 1e3:.2f} ms), "
            f"{flops / r['time_s'] / 1e12:.0f} TFLOP/s")
        return r


def block_flops(case: Case) -> float:
    """Forward FLOPs of one block as the twin counts dense layers: 2 per multiply-add of every
    GEMM, causal attention at half the full score matrix (QK^T and PV)."""
    s, T = case.shape, case.batch * case.seq_len
    proj = s.hidden_size * s.head_dim * (2 * s.num_heads + 2 * s.num_kv_heads)
    ffn = (3 if s.kind == "llama" else 2) * s.hidden_size * s.ffn
    return 2 * T * (proj + ffn) + attention_fwd_flops(case)


def attention_fwd_flops(case: Case) -> float:
    s = case.shape
    return 2 * 2 * case.batch * case.seq_len ** 2 * s.num_heads * s.head_dim / 2


def run_block(b: Bench, case: Case, backend: str, compiled: bool = False, gqa: str = "repeat_kv"):
    """block_fwd and block_fwd_bwd of one case (each also profiled once)."""
    dev, s = b.dev, case.shape
    torch.manual_seed(0)
    block = build_block(s, gqa).to(dev, torch.bfloat16)
    fc = rope_freqs_cis(s.head_dim, case.seq_len).to(dev)
    x = torch.randn(case.batch, case.seq_len, s.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(x)
    params = list(block.parameters())
    # inductor on the GPU; a CPU dry run takes the same path through dynamo and AOT autograd
    # without generating code (inductor on a CPU needs minutes and a C++ compiler)
    compiled_by = ("inductor" if dev.type == "cuda" else "aot_eager") if compiled else "no"
    call = torch.compile(block, backend=compiled_by) if compiled else block
    fl = block_flops(case)
    with sdpa_kernel([BACKENDS[backend]]):
        b.record("block_fwd", s.kind, case, lambda _: call(x, fc), lambda: None, backend, gqa, compiled_by, fl, "fwd")
        b.record("block_fwd_bwd", s.kind, case, lambda _: torch.autograd.grad(call(x, fc), [x, *params], g),
                 lambda: None, backend, gqa, compiled_by, 3 * fl, "fwd_bwd")


def run_head(b: Bench, case: Case):
    dev, s = b.dev, case.shape
    torch.manual_seed(0)
    head = LMHead(s).to(dev, torch.bfloat16)
    x = torch.randn(case.batch, case.seq_len, s.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, s.vocab, (case.batch, case.seq_len), device=dev)
    params = list(head.parameters())
    fl = 2.0 * case.batch * case.seq_len * s.hidden_size * s.vocab
    b.record("head_fwd", "head", case, lambda _: head(x, labels), lambda: None, "none", "none", "no", fl, "fwd")
    b.record("head_fwd_bwd", "head", case, lambda _: torch.autograd.grad(head(x, labels), [x, *params]),
             lambda: None, "none", "none", "no", 3 * fl, "fwd_bwd")


def block_gemms(case: Case) -> list[tuple[str, int, int, int]]:
    """(name, m, n, k) of the forward GEMMs of one block: tokens x out x in, as F.linear runs them."""
    s, T = case.shape, case.batch * case.seq_len
    D, q, kv = s.hidden_size, s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    if s.kind == "gpt":
        return [("qkv", T, 3 * q, D), ("proj", T, D, q), ("fc1", T, s.ffn, D), ("fc2", T, D, s.ffn)]
    return [("wq", T, q, D), ("wk", T, kv, D), ("wo", T, D, q), ("w1", T, s.ffn, D), ("w2", T, D, s.ffn)]


def run_gemms(b: Bench, case: Case):
    """The block's forward GEMMs each alone (F.linear, per-repetition events): the same kernels as
    inside the block, without the kernels around them (bench gemm_<name>, block 'gemm')."""
    for name, m, n, k in block_gemms(case):
        torch.manual_seed(0)
        x = torch.randn(m, k, device=b.dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=b.dev, dtype=torch.bfloat16) * 0.02
        b.record(f"gemm_{name}", "gemm", case, lambda _: F.linear(x, w), lambda: None, "none", "none", "no",
                 2.0 * m * n * k, "fwd")


def run_attention(b: Bench, case: Case, backend: str, gqa: str = "repeat_kv"):
    """The SDPA call alone, forward and forward+backward. gqa 'repeat_kv': K/V made with every
    query head's copy beforehand (the kernel as torchtitan calls it; the copy itself is timed in
    the block rows); 'enable_gqa': K/V heads as they are, SDPA broadcasting them."""
    dev, s = b.dev, case.shape
    B, S = case.batch, case.seq_len

    def t(heads):
        return torch.randn(B, S, heads, s.head_dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
    kv_heads = s.num_heads if gqa == "repeat_kv" else s.num_kv_heads
    q, k, v = t(s.num_heads), t(kv_heads), t(kv_heads)
    g = torch.randn(B, S, s.num_heads, s.head_dim, device=dev, dtype=torch.bfloat16)
    fl = attention_fwd_flops(case)
    try:
        with sdpa_kernel([BACKENDS[backend]]):
            b.record("attn_fwd", "attention", case, lambda _: attention_core(q, k, v, gqa), lambda: None, backend, gqa,
                     "no", fl, "fwd")
            b.record("attn_fwd_bwd", "attention", case,
                     lambda _: torch.autograd.grad(attention_core(q, k, v, gqa), [q, k, v], g), lambda: None,
                     backend, gqa, "no", 3.5 * fl, "fwd_bwd")   # backward 2.5x forward (FA2 paper §3.1)
    except RuntimeError as e:   # a backend without a kernel for this shape/device: say so, go on
        log(f"attention {case.model} s{S} {backend} {gqa}: not run ({str(e).splitlines()[0][:100]})")


def attention_cases(blocks: list[Case], quick: bool) -> list[Case]:
    """Each block's attention shape once, then the 8B heads at 64K and 128K (batch 1)."""
    first = blocks[0]
    long = [Case(first.model, first.tp, first.shape, 1, s) for s in ((64,) if quick else (65536, 131072))]
    seen, out = set(), []
    for c in blocks:
        key = (c.shape.num_heads, c.shape.num_kv_heads, c.shape.head_dim, c.batch, c.seq_len)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out + long


def run(out: Path, quick: bool, budget_s: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    tel = Telemetry(0)
    env = environment(dev, tel)
    env.update(nccl_version=nccl_version() if dev.type == "cuda" else "",
               num_gpus=1, section="dense_block", budget_s=budget_s)
    (out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    rec = Recorder(out, env)
    b = Bench(rec, dev, tel, quick, budget_s)
    blocks = block_cases(quick)
    failures = []

    def guarded(what, fn, *args, **kw):
        try:   # the case's tensors go with fn's frame; free_memory returns them to the device
            fn(*args, **kw)
        except Exception as e:   # out of memory, a missing kernel: logged, the campaign goes on
            failures.append(f"{what}: {type(e).__name__}: {str(e)[:200]}")
            log(f"FAILED {what}: {type(e).__name__}: {str(e)[:200]}")
        free_memory()

    b.start("block")
    for c in blocks:   # FA2 first for every block, then cuDNN where the 8B rows are
        if b.over():
            break
        guarded(f"block {c.model} s{c.seq_len}", run_block, b, c, "flash")
    for c in blocks:
        if c.model.startswith("llama3.1-8b") and not b.over():
            guarded(f"block {c.model} s{c.seq_len} cudnn", run_block, b, c, "cudnn")
    b.start("gemm")
    for c in [blocks[0], blocks[-1]] if quick else [c for c in blocks if (c.model, c.batch, c.seq_len) in {
            ("llama3.1-8b", 2, 8192), ("llama3.1-405b", 4, 8192), ("megatron-gpt-1.7b", 1, 4096),
            ("megatron-gpt-177b", 1, 4096)}]:
        if not b.over():
            guarded(f"gemm {c.model}", run_gemms, b, c)
    b.start("head")
    heads = [c for c in blocks if (c.model, c.batch, c.seq_len) in {
        ("llama3.1-8b", 2, 8192), ("llama3.1-70b", 16, 8192), ("megatron-gpt-1.7b", 1, 4096),
        ("megatron-gpt-177b", 1, 4096), ("tiny-llama", 2, 32), ("megatron-gpt-70b", 1, 32)}]
    for c in heads:
        if not b.over():
            guarded(f"head {c.model}", run_head, b, c)
    b.start("attention")
    for c in attention_cases(blocks, quick):
        for backend in BACKENDS:
            if not b.over():
                guarded(f"attention {c.model} s{c.seq_len} {backend}", run_attention, b, c, backend)
        if c.model in ("llama3.1-8b", "tiny-llama") and c.shape.num_kv_heads < c.shape.num_heads and not b.over():
            guarded(f"attention {c.model} s{c.seq_len} enable_gqa", run_attention, b, c, "flash", "enable_gqa")
    b.start("compile")
    for c in [c for c in blocks if (c.model, c.batch, c.seq_len) in {
            ("llama3.1-8b", 2, 8192), ("megatron-gpt-1.7b", 1, 4096), ("tiny-llama", 2, 32)}]:
        if not b.over():
            guarded(f"compile {c.model}", run_block, b, c, "flash", compiled=True)
    rec.close()
    env.update(failures=failures, elapsed_s=time.perf_counter() - b.t0)
    (out / "env.json").write_text(json.dumps(env, indent=2, default=str))
    log(f"dense_block done in {time.perf_counter() - b.t0:.1f} s; failures: {failures or 'none'}")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m real.bench.dense_block", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a CPU dry run")
    ap.add_argument("--budget-s", type=float, default=130.0, help="time budget of all parts together")
    args = ap.parse_args(argv)
    return run(args.out, args.quick, args.budget_s)


if __name__ == "__main__":
    raise SystemExit(main())
