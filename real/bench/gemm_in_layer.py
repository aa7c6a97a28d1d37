"""Section gemm_in_layer (s14gl, issue 13): the one-GPU MoE and MLA layers' kernels inside the eager
layer beside the same aten calls ALONE, each with the NVML SM clock sampled while it ran.

Why: the GEMM curves (gemm.csv: CUDA-graph loops at the power limit, 1,400-1,600 MHz) run slower than
GEMMs inside eager layers (~1,700-1,980 MHz) and memory kernels slower inside layers than alone
(docs/notes/s14gemm_rule.md); only grouped GEMMs had an in-layer vs alone pair (s14epl). Per
configuration (fitting-split layer shapes; BF16 and FP8) this writes:
  gl_layer  the layer forward and backward timed eagerly (CUDA events per repetition, as the
            moe_layer / attention mla_layer rows are), with the NVML SM clock sampled every 2 ms
  gl_ops    where=layer: the same calls under the torch profiler (record_shapes): per aten op and input
            shapes (the profiler's key), calls and device seconds per repetition, the sampled clock;
            where=alone_burst / alone_graph: every dense GEMM, FP8 GEMM, grouped GEMM, gather,
            index_put / scatter, sort / scan, reduction and elementwise aten call the layer made
            (captured once by a TorchDispatchMode: integer operands copied, float operands rebuilt as
            random values in the same layout), called ALONE: a short eager burst (BURST_CALLS calls
            after a BURST_REST_S rest, profiled: the call's device seconds, its clock) and as gemm.csv
            times them (a CUDA graph of back-to-back calls, Timer.measure batched, with its clock).
The reader (calibration/gemm_in_layer.py) joins layer and alone rows on (config, direction, op,
input_shapes). Every row carries GPU name, clocks, torch/CUDA versions (Recorder's env columns).
Rows are diagnostic (split `fit`); nothing validates against them."""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from real.bench.device import free_memory, precisions_to_bench
from real.bench.ep_kernels import ClockSampler
from real.bench.moe_layer import skewed_routing, with_experts
from real.bench.records import log
from real.bench.timing import Timer
from real.configs import get_spec
from real.model import MLA, MoE, building, rope_tables

PROFILED_REPS = 3
BURST_CALLS = 3       # an eager burst of a few calls, as a layer calls one shape
BURST_REST_S = 0.02   # idle before a burst, so it does not start in the previous graph loop's clock
MAX_ALONE_OPS = 32    # per configuration and direction (GEMM classes first, then the largest operands)
# the CPU dry run's replays per class: two, as one would leave index_put's (whose profiler shapes never
# match the layer's on the CPU) a quarter of the dry run's alone rows
QUICK_ALONE_PER_CLASS = 2
ALONE_MIN_TIME_S = 0.03

OP_CLASSES = {
    "dense_gemm": {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"},
    "fp8_gemm": {"aten::_scaled_mm"},
    "grouped_gemm": {"aten::_grouped_mm", "aten::_scaled_grouped_mm"},
    "gather": {"aten::index", "aten::index_select", "aten::gather", "aten::embedding", "aten::take_along_dim"},
    "index_put": {"aten::index_put_", "aten::index_put", "aten::_index_put_impl_", "aten::index_copy",
                  "aten::index_copy_", "aten::index_add", "aten::index_add_", "aten::scatter", "aten::scatter_",
                  "aten::scatter_add", "aten::scatter_add_"},
    "sort_scan": {"aten::sort", "aten::topk", "aten::argsort", "aten::cumsum"},
    "reduction": {"aten::sum", "aten::mean", "aten::amax", "aten::max", "aten::norm", "aten::linalg_vector_norm"},
    "elementwise": {"aten::mul", "aten::mul_", "aten::add", "aten::add_", "aten::sub", "aten::div", "aten::div_",
                    "aten::silu", "aten::silu_backward", "aten::sigmoid", "aten::sigmoid_backward", "aten::neg",
                    "aten::exp", "aten::rsqrt", "aten::pow", "aten::copy_", "aten::_to_copy", "aten::clamp",
                    "aten::clamp_min", "aten::abs", "aten::where", "aten::cat", "aten::fill_", "aten::zero_",
                    "aten::sqrt", "aten::reciprocal", "aten::masked_fill", "aten::maximum", "aten::minimum",
                    "aten::clone", "aten::stack", "aten::softmax", "aten::_softmax", "aten::_softmax_backward_data"},
    "attention": {"aten::_flash_attention_forward", "aten::_flash_attention_backward",
                  "aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_flash_attention_backward",
                  "aten::_efficient_attention_forward", "aten::_efficient_attention_backward",
                  "aten::_scaled_dot_product_efficient_attention",
                  "aten::_scaled_dot_product_efficient_attention_backward",
                  "aten::_scaled_dot_product_cudnn_attention", "aten::_scaled_dot_product_cudnn_attention_backward"},
}
CLASS_OF_OP = {op: cls for cls, ops in OP_CLASSES.items() for op in ops}
ALONE_ORDER = ("grouped_gemm", "fp8_gemm", "dense_gemm", "gather", "index_put", "sort_scan", "reduction",
               "elementwise")   # attention is not replayed alone (not this campaign's question)


def op_class(name: str) -> str | None:
    return CLASS_OF_OP.get(name)


def _layout(t: torch.Tensor):
    return (tuple(t.shape), tuple(t.stride()), t.storage_offset(), str(t.dtype))


class _Spec:
    """A float operand by layout only: rebuilt as random values in the same strides and storage."""

    def __init__(self, t: torch.Tensor):
        self.shape, self.stride, self.offset = tuple(t.shape), tuple(t.stride()), t.storage_offset()
        self.dtype, self.device = t.dtype, t.device
        self.storage_numel = t.untyped_storage().nbytes() // max(t.element_size(), 1)

    def build(self) -> torch.Tensor:
        base = torch.randn(max(self.storage_numel, 1), device=self.device, dtype=torch.bfloat16)
        if base.dtype != self.dtype:
            base = base.to(self.dtype)
        return base.as_strided(self.shape, self.stride, self.offset)


def _snapshot(v):
    if not isinstance(v, torch.Tensor):
        return v
    if v.dtype.is_floating_point:
        return _Spec(v)
    return v.detach().clone()   # indices, offsets, masks: their values decide the work


def _rebuild(v):
    return v.build() if isinstance(v, _Spec) else v


def _signature(name, args, kwargs):
    flat = []
    tree_map(lambda v: flat.append(_layout(v) if isinstance(v, torch.Tensor) else repr(v)), (args, kwargs))
    return (name, tuple(flat))


def _has_bool_index(args) -> bool:
    found = []
    tree_map(lambda v: found.append(isinstance(v, torch.Tensor) and v.dtype == torch.bool), args)
    return any(found)


def _devices(tree) -> set:
    found = set()
    tree_map(lambda v: found.add(str(v.device)) if isinstance(v, torch.Tensor) else None, tree)
    return found


def _operand_bytes(args) -> float:
    total = [0.0]
    tree_map(lambda v: total.__setitem__(0, total[0] + (v.numel() * v.element_size()
                                                        if isinstance(v, torch.Tensor) else 0.0)), args)
    return total[0]


class OpCapture(TorchDispatchMode):
    """Records each distinct (op, operand layouts) call of the replayable classes the block makes."""

    def __init__(self):
        super().__init__()
        self.ops: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._schema.name
        cls = op_class(name)
        # bool masks and copies between devices sync the host: neither is captured in a CUDA graph
        if cls in ALONE_ORDER and not _has_bool_index((args, kwargs)) and len(_devices((args, kwargs, out))) == 1:
            key = _signature(name, args, kwargs)
            if key not in self.ops:
                self.ops[key] = dict(func=func, name=name, cls=cls, args=tree_map(_snapshot, args),
                                     kwargs=tree_map(_snapshot, kwargs), bytes=_operand_bytes((args, kwargs)))
        return out


def alone_order(ops: list[dict]) -> list[dict]:
    """GEMM classes first, then memory classes; within a class the largest operands first."""
    return sorted(ops, key=lambda o: (ALONE_ORDER.index(o["cls"]), -o["bytes"]))


def alone_ops(ops: list[dict], quick: bool) -> list[dict]:
    """The captured calls replayed alone, in alone_order: up to MAX_ALONE_OPS; under --quick (the CPU
    dry run) the QUICK_ALONE_PER_CLASS largest of each class, each through the same replay as the rest
    (the dry run's ~240 replays were most of its time, a fifth of it sleeping BURST_REST_S)."""
    ordered = alone_order(ops)
    if not quick:
        return ordered[:MAX_ALONE_OPS]
    kept, seen = [], {}
    for o in ordered:
        seen[o["cls"]] = seen.get(o["cls"], 0) + 1
        if seen[o["cls"]] <= QUICK_ALONE_PER_CLASS:
            kept.append(o)
    return kept


def _device_s(evt, on_gpu: bool) -> float:
    if not on_gpu:
        return evt.cpu_time_total * 1e-6
    return getattr(evt, "device_time_total", getattr(evt, "cuda_time_total", 0.0)) * 1e-6


def profiled_ops(timer: Timer, fn, setup=None, reps: int = PROFILED_REPS):
    """[(op, input_shapes, calls per rep, device seconds per rep)] of the classified aten ops of `reps`
    calls of fn (or fn(setup()) with each state made before the profile), and the median SM clock."""
    on_gpu = timer.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    states = [setup() for _ in range(reps)] if setup else [None] * reps
    timer.sync()
    with ClockSampler(timer.tel) as clock, profile(activities=acts, record_shapes=True) as prof:
        for s in states:
            fn(s) if setup else fn()
        timer.sync()
    rows = []
    for evt in prof.key_averages(group_by_input_shape=True):
        cls = op_class(evt.key)
        if cls is None:
            continue
        rows.append((evt.key, cls, str(evt.input_shapes), evt.count / reps, _device_s(evt, on_gpu) / reps))
    return rows, clock.median_mhz


def _alone(rec, t: Timer, op: dict, common: dict) -> None:
    """One captured call alone: an eager burst (profiled) and a CUDA-graph loop, each with its clock."""
    args, kwargs = tree_map(_rebuild, op["args"]), tree_map(_rebuild, op["kwargs"])
    fn = lambda: op["func"](*args, **kwargs)   # noqa: E731
    fn()
    t.sync()
    time.sleep(BURST_REST_S)
    rows, clock = profiled_ops(t, fn, reps=BURST_CALLS)
    own = [r for r in rows if r[0] == op["name"]]
    for name, cls, shapes, calls, secs in own[:1]:
        rec.row("gl_ops", **common, where="alone_burst", op=name, op_class=cls, input_shapes=shapes, calls=calls,
                sampled_sm_clock_mhz=clock, time_s=secs / max(calls, 1e-9), reps=BURST_CALLS, timing="profiler",
                bytes=op["bytes"])
    shapes = own[0][2] if own else ""
    with ClockSampler(t.tel) as gclock:
        r = t.measure(fn, bytes_=op["bytes"], batched=True)
    rec.row("gl_ops", **common, where="alone_graph", op=op["name"], op_class=op["cls"], input_shapes=shapes,
            calls=1, sampled_sm_clock_mhz=gclock.median_mhz, **r)
    del args, kwargs


def _configs(quick: bool):
    """(layer, model, shape) in priority order: fitting-split shapes of moe_layer.csv (v3-slice-1l, 64
    experts, skew 0; 32 experts and v2-lite-slice are held-out families) and attention.csv's mla_layer
    rows (v3-slice-1l; v2-lite-slice's MLA layers are held out)."""
    if quick:
        return [("moe", "tiny", dict(experts=8, tokens=64)), ("mla", "tiny", dict(batch=2, seq_len=32))]
    return [("moe", "v3-slice-1l", dict(experts=64, tokens=4096)), ("mla", "v3-slice-1l", dict(batch=4, seq_len=1024)),
            ("moe", "v3-slice-1l", dict(experts=64, tokens=16384)), ("mla", "v3-slice-1l", dict(batch=1, seq_len=4096))]


def _build(layer: str, model: str, shape: dict, dev, prec):
    """(forward fn, backward fn of its output, config columns) of one layer case."""
    gen = torch.Generator().manual_seed(0)
    if layer == "moe":
        spec = with_experts(get_spec(model), shape["experts"])
        with building(dev):
            mod = MoE(spec)
        T, D = shape["tokens"], spec.hidden_size
        x = torch.randn(T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
        routing = skewed_routing(T, spec.num_routed_experts, spec.top_k, 0.0, spec.route_scale, dev, gen)
        fwd = lambda: mod(x, prec, routing)   # noqa: E731
        cfg = f"moe {model} E={shape['experts']} T={T} skew=0"
    else:
        spec = get_spec(model)
        B, S = shape["batch"], shape["seq_len"]
        with building(dev):
            mod = MLA(spec)
            cos, sin = rope_tables(spec.qk_rope_head_dim, S)
        x = torch.randn(B, S, spec.hidden_size, device=dev, dtype=torch.bfloat16, requires_grad=True)
        fwd = lambda: mod(x, cos, sin, prec)   # noqa: E731
        cfg = f"mla {model} B={B} S={S}"
    gy = torch.randn_like(x)
    bwd = lambda o: torch.autograd.grad(o, [x, *mod.parameters()], gy, allow_unused=True)   # noqa: E731
    return fwd, bwd, cfg


def bench_gemm_in_layer(rec, timer, dev, deadline, quick, env):
    """See the module docstring; configurations in priority order until the budget is spent."""
    alone_t = Timer(dev, timer.tel, 0.0 if quick else ALONE_MIN_TIME_S, max_reps=3 if quick else 20,
                    warmup=1 if quick else 2)
    for layer, model, shape in _configs(quick):
        for prec in precisions_to_bench(env):
            if deadline.over():
                log("gemm_in_layer: budget spent")
                return
            fwd, bwd, cfg = _build(layer, model, shape, dev, prec)
            common = dict(bench="gemm_in_layer", layer=layer, model=model, config=cfg, precision=prec.label, split="fit")
            for direction, fn, setup in (("fwd", fwd, None), ("bwd", bwd, fwd)):
                with ClockSampler(timer.tel) as clock:
                    r = timer.measure(fn, setup=setup)
                rec.row("gl_layer", **common, direction=direction, sampled_sm_clock_mhz=clock.median_mhz, **r)
                rows, pclock = profiled_ops(timer, fn, setup)
                for name, cls, shapes, calls, secs in rows:
                    rec.row("gl_ops", **common, direction=direction, where="layer", op=name, op_class=cls,
                            input_shapes=shapes, calls=calls, sampled_sm_clock_mhz=pclock, time_s=secs / max(calls, 1e-9),
                            reps=PROFILED_REPS, timing="profiler")
            for direction, fn, setup in (("fwd", fwd, None), ("bwd", bwd, fwd)):
                state = setup() if setup else None
                with OpCapture() as cap:
                    fn(state) if setup else fn()
                del state
                timer.sync()
                for op in alone_ops(list(cap.ops.values()), quick):
                    if deadline.over():
                        break
                    try:
                        _alone(rec, alone_t, op, dict(common, direction=direction))
                    except Exception as e:   # one op that cannot be replayed must not end the section
                        log(f"gemm_in_layer: {op['name']} alone failed ({type(e).__name__}: {str(e)[:100]})")
                        timer.sync()
                del cap
            del fwd, bwd
            free_memory()
            log(f"gemm_in_layer {cfg} {prec.label}: done")
