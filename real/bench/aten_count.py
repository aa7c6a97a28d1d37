"""Aten operators real/'s eager MLA and MoE layers dispatch per call, counted without a GPU
(issue 13: the host's dispatch time follows dispatched ops rather than launched kernels).

A TorchDispatchMode (the one real/bench/host_dispatch.py counts with on the GPU) sees every aten
operator that reaches the backend, views included, below autograd: a layer's forward (`fwd`, grad
mode on), its forward under torch.no_grad (`infer`) and its backward (`bwd`, the autograd engine's
ops). Each op is also classed by where it was dispatched from: inside an autograd.Function of
real/ (real/fp8.py _Fp8Linear, _Fp8GroupedMM: grad mode off, no autograd node per op), or not.

The counts depend on the layer's configuration (model, precision, direction), not on its shape
(tests/real/test_aten_count.py checks two shapes) and, for BF16, not on the device: the CPU counts
equal the CUDA counts of host_dispatch.csv (same test). FP8 takes other paths off CUDA (no
block-scaled kernel: real/fp8.py falls back to row-wise or emulated GEMMs), so FP8 counts are
taken on CUDA only (real/campaigns/s10mla.sh); on the CPU they are written with device `cpu` and
never used for FP8 by calibration.

    python -m real.bench.aten_count --out calibration/data/aten_ops.csv [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from real import fp8
from real.bench.host_dispatch import mla_layer_case
from real.bench.moe_layer import skewed_routing, with_experts
from real.configs import get_spec
from real.model import MoE, building
from real.telemetry import Telemetry
from real.sync import synchronize

COLUMNS = ("layer", "model", "precision", "phase", "shape", "aten_ops", "aten_views", "function_ops", "function_views",
           "device", "gpu_name", "sm_clock_mhz", "mem_clock_mhz", "torch_version", "cuda_version", "timestamp_utc")
# the models whose MLA / MoE layers the records time (attention.csv, moe_layer.csv)
MODELS = ("v3-slice-1l", "v2-lite-slice")


def _function_codes() -> set:
    """The code objects of the forward/backward of every autograd.Function defined in real/."""
    codes, todo = set(), list(torch.autograd.Function.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__.startswith("real."):
            for name in ("forward", "backward"):
                fn = cls.__dict__.get(name)
                fn = getattr(fn, "__func__", fn)
                if fn is not None and hasattr(fn, "__code__"):
                    codes.add(fn.__code__)
    return codes


class CountOps(TorchDispatchMode):
    """Counts the aten ops dispatched while active: all, views, and those of each inside an
    autograd.Function of real/ (found on the Python stack of the dispatching thread); nothing
    while `paused` (the fused-attention stand-in's own work)."""

    def __init__(self):
        super().__init__()
        self.n = self.views = self.function_n = self.function_views = 0
        self.paused = False
        self._codes = _function_codes()

    def _in_function(self) -> bool:
        f = sys._getframe(2)
        while f is not None:
            if f.f_code in self._codes:
                return True
            f = f.f_back
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.paused:
            return func(*args, **(kwargs or {}))
        view = bool(getattr(func, "is_view", False))
        self.n += 1
        self.views += view
        if self._in_function():
            self.function_n += 1
            self.function_views += view
        return func(*args, **(kwargs or {}))

    def counts(self) -> dict:
        return {"aten_ops": self.n, "aten_views": self.views, "function_ops": self.function_n,
                "function_views": self.function_views}


# ---------------------------------------------------------------------------------------------
# Fused operators off CUDA. Two of the composites real/'s layers call run as ONE operator on CUDA
# and decompose elsewhere:
#   F.scaled_dot_product_attention  picks a fused backend through a dispatch stub (not an
#       operator) and dispatches aten::_scaled_dot_product_{efficient,cudnn,flash}_attention;
#       its autograd node dispatches the matching *_backward (PyTorch
#       aten/src/ATen/native/transformers/attention.cpp); off CUDA the math path (~40 operators)
#   F.rms_norm  aten::_fused_rms_norm on CUDA (backward aten::_fused_rms_norm_backward); off CUDA
#       pow, mean, add, rsqrt, mul, casts (aten/src/ATen/native/layer_norm.cpp rms_norm_composite)
# Off CUDA the counter stands a one-operator fused call in for each (its own work uncounted, one
# operator counted in each direction). The CUDA counts of host_dispatch.csv confirm it
# (tests/real/test_aten_count.py).

_ACTIVE: list[CountOps] = []


def _uncounted(fn, *args, **kwargs):
    counter = _ACTIVE[-1] if _ACTIVE else None
    if counter is None:
        return fn(*args, **kwargs)
    was, counter.paused = counter.paused, True
    try:
        return fn(*args, **kwargs)
    finally:
        counter.paused = was


def _count_one() -> None:
    if _ACTIVE and not _ACTIVE[-1].paused:
        _ACTIVE[-1].n += 1


class _FusedOp(torch.autograd.Function):
    """fn(*tensors, **kwargs) counted as one operator forward and one backward."""

    @staticmethod
    def forward(ctx, fn, kwargs, *tensors):
        ctx.like = tensors
        _count_one()
        return _uncounted(fn, *tensors, **kwargs)

    @staticmethod
    def backward(ctx, g):
        _count_one()
        return (None, None, *(_uncounted(torch.empty_like, t) if t is not None else None for t in ctx.like))


_FUSED_ON_CUDA = {"scaled_dot_product_attention": torch.nn.functional.scaled_dot_product_attention,
                  "rms_norm": torch.nn.functional.rms_norm}


def _sdpa(q, k, v, **kwargs):
    return _FusedOp.apply(_FUSED_ON_CUDA["scaled_dot_product_attention"], kwargs, q, k, v)


def _rms_norm(x, shape, weight=None, eps=None):
    return _FusedOp.apply(lambda x_, w_: _FUSED_ON_CUDA["rms_norm"](x_, shape, w_, eps), {}, x, weight)


@contextlib.contextmanager
def fused_stand_ins(dev: torch.device):
    """Off CUDA: the composites CUDA runs fused, counted as the one operator CUDA dispatches."""
    if dev.type == "cuda":
        yield
        return
    F = torch.nn.functional
    F.scaled_dot_product_attention, F.rms_norm = _sdpa, _rms_norm
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _FUSED_ON_CUDA["scaled_dot_product_attention"]
        F.rms_norm = _FUSED_ON_CUDA["rms_norm"]


def count(fn) -> dict:
    counter = CountOps()
    _ACTIVE.append(counter)
    try:
        with counter:
            fn()
    finally:
        _ACTIVE.pop()
    return counter.counts()


def precision_of(label: str) -> fp8.Precision:
    return fp8.BF16 if label == "bf16" else fp8.Precision("fp8", label.split("-", 1)[1])


def mla_call(model: str, batch: int, seq: int, dev):
    """One MLA layer of `model` (seeded) with its RoPE tables, a BF16 input that takes gradients
    and an output gradient: (mla, cos, sin, x, gx), as real/bench/host_dispatch.py builds them."""
    torch.manual_seed(0)
    return mla_layer_case(model, batch, seq, dev)


def mla_counts(model: str, label: str, batch: int, seq: int, dev) -> dict:
    """{phase: counts} of one MLA layer call (as real/bench/host_dispatch.py runs it)."""
    prec = precision_of(label)
    mla, cos, sin, x, gx = mla_call(model, batch, seq, dev)
    with fused_stand_ins(dev):
        mla(x, cos, sin, prec)   # warm: one-time probes (real/fp8.py) are not the layer's ops
        out = {"fwd": count(lambda: mla(x, cos, sin, prec))}
        with torch.no_grad():
            out["infer"] = count(lambda: mla(x, cos, sin, prec))
        y = mla(x, cos, sin, prec)
        out["bwd"] = count(lambda: torch.autograd.grad(y, [x, *mla.parameters()], gx))
    return out


def moe_counts(model: str, label: str, tokens: int, experts: int, dev) -> dict:
    """{phase: counts} of one MoE layer call with injected routing (real/bench/moe_layer.py)."""
    spec, prec = with_experts(get_spec(model), experts), precision_of(label)
    torch.manual_seed(0)
    with building(dev):
        moe = MoE(spec)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
    gy = torch.randn(tokens, spec.hidden_size, device=dev, dtype=torch.bfloat16)
    routing = skewed_routing(tokens, experts, spec.top_k, 0.0, spec.route_scale, dev, g)
    moe(x, prec, routing)
    out = {"fwd": count(lambda: moe(x, prec, routing))}
    with torch.no_grad():
        out["infer"] = count(lambda: moe(x, prec, routing))
    y = moe(x, prec, routing)
    out["bwd"] = count(lambda: torch.autograd.grad(y, [x, *moe.parameters()], gy, allow_unused=True))
    return out


# small shapes (the counts do not depend on them; the test and the campaign check two of each)
MLA_SHAPES = ((1, 64), (2, 128))          # (batch, seq_len)
MOE_SHAPES = ((64, 8), (256, 16))         # (tokens, experts)
# on a GPU: shapes of the records' families (real/bench/host_dispatch.py's), two of each
GPU_MLA_SHAPES = ((1, 1024), (4, 4096))
GPU_MOE_SHAPES = ((1024, 32), (4096, 64))


def _env(dev: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    sm = mem = ""
    if dev.type == "cuda":
        tel = Telemetry(dev.index or 0)
        sm, mem = tel.sm_clock_mhz(), tel.mem_clock_mhz() if hasattr(tel, "mem_clock_mhz") else ""
    return {"gpu_name": gpu, "sm_clock_mhz": sm, "mem_clock_mhz": mem, "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda or ""}


def count_rows(models=MODELS, labels=("bf16",), dev="cpu", mla_shapes=MLA_SHAPES, moe_shapes=MOE_SHAPES,
               on_row=None) -> list[dict]:
    """One row per (layer, model, precision, phase, shape): the counts of one call."""
    dev = torch.device(dev)
    env = _env(dev)
    rows = []
    for model in models:
        for label in labels:
            for layer, fn, shapes in (("mla_layer", mla_counts, mla_shapes), ("moe_layer", moe_counts, moe_shapes)):
                for shape in shapes:
                    for phase, c in fn(model, label, *shape, dev).items():
                        row = {"layer": layer, "model": model, "precision": label, "phase": phase, **c,
                               "device": dev.type, "shape": "x".join(map(str, shape)), **env,
                               "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
                        rows.append(row)
                        if on_row:
                            on_row(row)
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
    return rows


class RowWriter:
    """Rows appended to a CSV and flushed one by one (a run cut short keeps what it counted)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("w", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=COLUMNS)
        self.w.writeheader()

    def __call__(self, row: dict) -> None:
        self.w.writerow(row)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="CSV to write (rows flushed one by one)")
    ap.add_argument("--device", default="meta", help="meta (default: no computation), cpu or cuda")
    ap.add_argument("--precision", action="append", help="precision labels (default bf16, and fp8-blockwise on CUDA)")
    ap.add_argument("--model", action="append", help=f"models (default {', '.join(MODELS)})")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("aten_count: --device cuda: no CUDA device", file=sys.stderr)
        return 2
    labels = args.precision or (["bf16", "fp8-blockwise"] if dev.type == "cuda" else ["bf16"])
    shapes = (GPU_MLA_SHAPES, GPU_MOE_SHAPES) if dev.type == "cuda" else (MLA_SHAPES, MOE_SHAPES)
    writer = RowWriter(args.out)
    try:
        rows = count_rows(args.model or MODELS, labels, dev, *shapes, on_row=writer)
    finally:
        writer.close()
    for r in rows:
        print(f"{r['layer']} {r['model']} {r['precision']} {r['phase']} {r['shape']}: {r['aten_ops']} ops "
              f"({r['aten_views']} views), {r['function_ops']} inside autograd.Functions")
    return 0




# ---------------------------------------------------------------------------------------------
# Timelines (s10mla): where in a layer call the host's dispatch time falls against its kernels.
# The twin spreads a layer's host time evenly over its launches; whether a host-bound layer ends
# host- or GPU-bound depends on how much host time comes before its long kernels (the attention).
# One torch.profiler Chrome trace per case (CPU ops, their launches and the kernels, linked by
# flow events), each after warm-up calls, beside the call's CUDA-event time.

TIMELINE_CASES = (("v3-slice-1l", 1, 1024), ("v3-slice-1l", 1, 4096),      # fitting split's shapes
                  ("v2-lite-slice", 4, 1024), ("v2-lite-slice", 1, 4096))  # held-out records' (diagnostic)
QUICK_TIMELINE_CASES = (("tiny", 1, 32),)


def mla_timelines(dev, out_dir: Path, cases=TIMELINE_CASES, warmup: int = 3, on_row=None) -> list[dict]:
    """Per case and phase (fwd, bwd; BF16): a Chrome trace of one warm call
    (OUT/trace_<model>_b<B>_s<S>_<phase>.json) and a row with its CUDA-event (or host-clock) time."""
    dev = torch.device(dev)
    env = _env(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    rows = []
    for model, B, S in cases:
        mla, cos, sin, x, gx = mla_call(model, B, S, dev)
        phases = {"fwd": (lambda: None, lambda _: mla(x, cos, sin)),
                  "bwd": (lambda: mla(x, cos, sin), lambda y: torch.autograd.grad(y, [x, *mla.parameters()], gx))}
        for phase, (setup, call) in phases.items():
            for _ in range(warmup):
                call(setup())
            state = setup()
            synchronize(dev)
            with profile(activities=acts) as prof:
                t = _timed(call, state, dev)
            path = out_dir / f"trace_{model}_b{B}_s{S}_{phase}.json"
            prof.export_chrome_trace(str(path))
            row = {"model": model, "batch": B, "seq_len": S, "phase": phase, "precision": "bf16",
                   "time_s": t, "trace": path.name, **env,
                   "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            rows.append(row)
            if on_row:
                on_row(row)
        del mla, x, gx
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _timed(call, state, dev) -> float:
    """One call's time: CUDA events around it (as the layer records time a repetition), or the
    host clock off CUDA."""
    if dev.type == "cuda":
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        call(state)
        e1.record()
        synchronize(dev)
        return e0.elapsed_time(e1) * 1e-3
    t0 = time.perf_counter()
    call(state)
    return time.perf_counter() - t0


TIMELINE_COLUMNS = ("model", "batch", "seq_len", "phase", "precision", "time_s", "trace", "gpu_name", "sm_clock_mhz",
                    "mem_clock_mhz", "torch_version", "cuda_version", "timestamp_utc")


def timelines_main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="MLA layer Chrome traces (s10mla): where the host time falls")
    ap.add_argument("--out", type=Path, required=True, help="folder for mla_timeline.csv and the traces")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="one tiny-shaped case (a CPU dry run)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("aten_count timelines: --device cuda: no CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    f = (args.out / "mla_timeline.csv").open("w", newline="")
    w = csv.DictWriter(f, fieldnames=TIMELINE_COLUMNS)
    w.writeheader()

    def write(row):
        w.writerow(row)
        f.flush()

    try:
        rows = mla_timelines(dev, args.out, QUICK_TIMELINE_CASES if args.quick else TIMELINE_CASES, on_row=write)
    finally:
        f.close()
    for r in rows:
        print(f"mla_timeline {r['model']} b{r['batch']} s{r['seq_len']} {r['phase']}: {r['time_s'] * 1e3:.3f} ms, {r['trace']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(timelines_main(sys.argv[2:]) if sys.argv[1:2] == ["timelines"] else main())
