"""Are the compiled tensorwise Float8 linears' gradients the eager ones? (session s18fp8)

s18tt's compiled Float8 Llama block (torch.compile with inductor around torchtitan's full-AC
checkpoint wrapper, one H100, torch 2.11) returned zero gradients through its linears
(docs/notes/s18tt.md, run 2). This check runs, per implementation of the linear and per case, the
same module eager and compiled (both under the checkpoint wrapper, as real/bench/cp_block.py runs
the block) and compares every gradient:

  implementations  "s18tt": the autograd.Function of s18tt (dynamo traces it; it saves the FP8
                   casts made in its forward), kept here only to reproduce the failure;
                   "custom_op" and "function": real.fp8.TENSORWISE_IMPLS (the fix)
  cases            "linear": one tensorwise linear, M x K x N = 4096 x 1024 x 1024 (CPU: 64 x 32 x 48);
                   "tiny": the tiny Llama block (real/bench/cp_block.py QUICK_SHAPE), 256 positions
                   (CPU: 64); "mid": a Llama block of hidden 1024, 8 heads of 128, 2 K/V heads, FFN
                   3584, 4096 positions (CPU: skipped)

One row per (case, implementation) in fp8_grad_check.csv, written as it is measured: the largest
relative error (Frobenius norm) of a weight's gradient compiled against eager, the input's, the
eager Float8 gradients against the block eager in BF16 (FP8 rounding), grads_ok (compiled within
GRAD_OK_REL_ERROR of eager), the compiled and eager step times (median of a few, CUDA events), the
compile time, any error, and the GPU name, clocks, torch and CUDA versions. Imports only real/.

    python -m real.bench.fp8_grad_check --out DIR [--budget-s 50] [--quick] [--cases tiny/s18tt,...]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from real import fp8
from real.bench.cp_block import QUICK_SHAPE, _torchtitan_sdpa
from real.dense import build_block, rope_freqs_cis, slice_of
from real.telemetry import Telemetry
from real.sync import synchronize

IMPLS = ("s18tt", "custom_op", "function")
# FP8 rounding moves a compiled gradient by a few percent from eager (inductor keeps elementwise
# chains in FP32, so the casts' amax differ); the failure reads 1.0 (zero gradients)
GRAD_OK_REL_ERROR = 0.25
MID_SHAPE = dict(hidden_size=1024, num_heads=8, num_kv_heads=2, head_dim=128, ffn=3584, vocab=256)
COLUMNS = ["case", "impl", "backend", "tokens", "hidden_size", "max_weight_rel_error", "x_rel_error",
           "eager_vs_bf16_max_rel_error", "grads_ok", "rel_errors_json", "compiled_step_s", "eager_step_s",
           "compile_s", "error", "gpu_name", "sm_clock_mhz", "mem_clock_mhz", "torch_version", "cuda_version",
           "timestamp_utc"]


class S18ttFloat8Linear(torch.autograd.Function):
    """s18tt's implementation (real/fp8.py at a0a87d2), kept to reproduce the compiled failure:
    saves the E4M3 casts and their 0-dim inverse scales made in the forward, and the input dtypes
    as a ctx attribute."""

    @staticmethod
    def forward(ctx, x_MK, w_NK):
        xq_MK, inv_x = fp8.quantize_tensorwise(x_MK.contiguous())
        wq_NK, inv_w = fp8.quantize_tensorwise(w_NK.contiguous())
        ctx.save_for_backward(xq_MK, inv_x, wq_NK, inv_w)
        ctx.dtypes = (x_MK.dtype, w_NK.dtype)
        return fp8.mm_tensorwise(xq_MK, inv_x, wq_NK.t(), inv_w).to(x_MK.dtype)

    @staticmethod
    def backward(ctx, g_MN):
        xq_MK, inv_x, wq_NK, inv_w = ctx.saved_tensors
        gq_MN, inv_g = fp8.quantize_tensorwise(g_MN.contiguous(), fp8.E5M2_DTYPE, fp8.E5M2_MAX)
        dx_MK = fp8.mm_tensorwise(gq_MN, inv_g, wq_NK.t().contiguous().t(), inv_w)
        dw_NK = fp8.mm_tensorwise(gq_MN.t().contiguous(), inv_g, xq_MK.t().contiguous().t(), inv_x)
        return dx_MK.to(ctx.dtypes[0]), dw_NK.to(ctx.dtypes[1])


def s18tt_linear(x_xK: torch.Tensor, w_NK: torch.Tensor) -> torch.Tensor:
    lead = x_xK.shape[:-1]
    return S18ttFloat8Linear.apply(x_xK.reshape(-1, x_xK.shape[-1]), w_NK).reshape(*lead, w_NK.shape[0])


def linear_of(impl: str):
    """The tensorwise linear `impl` names, as a function of (x, w)."""
    if impl == "s18tt":
        return s18tt_linear
    return lambda x, w: fp8.tensorwise_linear(x, w, impl)


class _Linear(torch.nn.Module):
    def __init__(self, K: int, N: int, impl: str):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(N, K) * K ** -0.5)
        self.impl, self.float8 = impl, True

    def forward(self, x_MK, _unused=None):
        return linear_of(self.impl)(x_MK, self.weight) if self.float8 else F.linear(x_MK, self.weight)


class _Block(torch.nn.Module):
    """dense.LlamaBlock(float8=True) with its linears through `impl`."""

    def __init__(self, shape, impl: str):
        super().__init__()
        self.block, self.impl = build_block(shape, float8=True), impl
        self.block.linear = self._linear

    def _linear(self, x, w):
        return linear_of(self.impl)(x, w) if self.block.float8 else F.linear(x, w)

    @property
    def float8(self):
        return self.block.float8

    @float8.setter
    def float8(self, value):
        self.block.float8 = value

    def forward(self, x_BSD, freqs_cis_SK2):
        return self.block(x_BSD, freqs_cis_SK2)


def build_case(case: str, impl: str, dev, quick: bool):
    """(module, inputs, output gradient) of a case, in BF16 on dev."""
    torch.manual_seed(0)
    if case == "linear":
        M, K, N = (64, 32, 48) if quick else (4096, 1024, 1024)
        mod = _Linear(K, N, impl)
        args = (torch.randn(M, K, device=dev, dtype=torch.bfloat16).requires_grad_(),)
        gy = torch.randn(M, N, device=dev, dtype=torch.bfloat16)
        return mod.to(device=dev, dtype=torch.bfloat16), args, gy
    shape = slice_of("llama", tp=1, **(QUICK_SHAPE if case == "tiny" else MID_SHAPE))
    s = (64 if quick else 256) if case == "tiny" else 4096
    mod = _Block(shape, impl).to(device=dev, dtype=torch.bfloat16)
    x = torch.randn(1, s, shape.hidden_size, device=dev, dtype=torch.bfloat16).requires_grad_()
    gy = torch.randn(1, s, shape.hidden_size, device=dev, dtype=torch.bfloat16)
    return mod, (x, rope_freqs_cis(shape.head_dim, s).to(dev)), gy


def grads(run, mod, args, gy, dev) -> tuple:
    with _torchtitan_sdpa(dev):
        return torch.autograd.grad(run(*args), [args[0], *mod.parameters()], gy)


def rel_errors(names, got, ref) -> dict:
    return {n: float((g.float() - r.float()).norm() / r.float().norm().clamp(min=1e-30))
            for n, g, r in zip(names, got, ref)}


def step_time_s(fn, dev, reps: int = 3) -> float:
    """Median wall time of fn() (CUDA events on a GPU), after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_case(case: str, impl: str, dev, quick: bool) -> dict:
    """One row: the case's gradients compiled against eager (both under the checkpoint wrapper)."""
    mod, args, gy = build_case(case, impl, dev, quick)
    names = ["x", *(n.removeprefix("block.") for n, _ in mod.named_parameters())]
    wrapped = checkpoint_wrapper(mod, preserve_rng_state=False)
    backend = "inductor" if dev.type == "cuda" else "aot_eager"
    row = {"case": case, "impl": impl, "backend": backend, "tokens": args[0].numel() // args[0].shape[-1],
           "hidden_size": args[0].shape[-1]}
    eager = grads(wrapped, mod, args, gy, dev)
    mod.float8 = False
    bf16 = grads(mod, mod, args, gy, dev)
    mod.float8 = True
    torch._dynamo.reset()
    compiled = torch.compile(wrapped, fullgraph=True, backend=backend)
    t0 = time.perf_counter()
    got = grads(compiled, mod, args, gy, dev)
    synchronize(dev)
    row["compile_s"] = time.perf_counter() - t0
    errs = rel_errors(names, got, eager)
    weight_errs = [e for n, e in errs.items() if n != "x"]
    row.update(max_weight_rel_error=max(weight_errs), x_rel_error=errs["x"],
               eager_vs_bf16_max_rel_error=max(rel_errors(names, eager, bf16).values()),
               grads_ok=max(errs.values()) < GRAD_OK_REL_ERROR, rel_errors_json=json.dumps(errs))
    row["compiled_step_s"] = step_time_s(lambda: grads(compiled, mod, args, gy, dev), dev)
    row["eager_step_s"] = step_time_s(lambda: grads(wrapped, mod, args, gy, dev), dev)
    return row


def env_cols(dev) -> dict:
    cols = {"gpu_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "sm_clock_mhz": "",
            "mem_clock_mhz": "", "torch_version": torch.__version__, "cuda_version": torch.version.cuda or ""}
    if dev.type == "cuda":
        tel = Telemetry(dev.index or 0)
        cols.update(sm_clock_mhz=tel.sm_clock_mhz(), mem_clock_mhz=tel.mem_clock_mhz())
    return cols


def cases(quick: bool) -> list[tuple[str, str]]:
    """(case, impl) in the order they are worth a cut budget: the failure reproduced and the fix
    checked on the tiny block, then on the mid-size block, then the torchao-style path, then the
    single linear."""
    order = [("tiny", "s18tt"), ("tiny", "custom_op"), ("mid", "custom_op"), ("mid", "s18tt"),
             ("tiny", "function"), ("mid", "function")] + [("linear", i) for i in IMPLS]
    return [c for c in order if not (quick and c[0] == "mid")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=50.0, help="no case starts after this many seconds")
    ap.add_argument("--quick", action="store_true", help="CPU-sized cases (a dry run)")
    ap.add_argument("--cases", default="", help="only these case/impl pairs, comma-separated (default all)")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fp8_grad_check.csv"
    start = time.perf_counter()
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        wanted = [tuple(c.split("/")) for c in args.cases.split(",") if c]
        for case, impl in wanted or cases(args.quick or dev.type != "cuda"):
            if time.perf_counter() - start > args.budget_s:
                print(f"fp8_grad_check: budget reached before {case}/{impl}", flush=True)
                break
            try:
                row = check_case(case, impl, dev, args.quick or dev.type != "cuda")
            except Exception as e:  # noqa: BLE001 - a refused compile is a result: recorded, next case
                row = {"case": case, "impl": impl, "error": f"{type(e).__name__}: {str(e)[:300]}"}
            row.update(env_cols(dev), timestamp_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            w.writerow(row)
            f.flush()
            print(f"fp8_grad_check {case}/{impl}: weights {row.get('max_weight_rel_error')}, "
                  f"x {row.get('x_rel_error')}, ok {row.get('grads_ok')} {row.get('error', '')}", flush=True)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
