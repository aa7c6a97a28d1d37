"""Section wgrad_accum (wgrad_accum.csv): how the pipeline's weight gradients of routed experts
reach `.grad`, timed as real/ runs it.

real/wgrad.py `_SplitGroupedMM` (every BF16 pipeline backward, B/W split or not) computes an
expert weight's gradient as `torch._grouped_mm(x^T, dY)`: contiguous (E, K, N), the layout of the
forward's operand `w.transpose(-2, -1)`, not of the parameter (E, N, K). Autograd routes it back
through the transpose, so AccumulateGrad receives a gradient whose strides break the layout
contract: on the first micro-batch it clones it into the parameter's strides (op `first`), on later
ones it adds it in place into the existing .grad (op `add`), each time reading the transposed view.
Here both run exactly that way: `torch.autograd.backward(w.transpose(-2, -1), dW)` on a BF16
parameter w, with .grad None (first) or present (add), at the expert shapes the pipeline records
use (V2-Lite's w13 and w2) and a V3 slice's. The twin's pipeline predictor
(calibration/pipeline.py accumulate_grads) takes the measured seconds per element where these rows
exist. Not in the profile fit (its own family).
"""

from __future__ import annotations

import torch

from real.bench.device import free_memory
from real.bench.records import log

# (label, experts, N, K) of the parameter (E, N, K): real/model.py w13_E2FD (E, 2F, D), w2_EDF (E, D, F)
SHAPES = [("v2-lite w13", 64, 2 * 1408, 2048), ("v2-lite w2", 64, 2048, 1408),
          ("v3 w13", 16, 2 * 2048, 7168), ("v3 w2", 16, 7168, 2048)]
QUICK_SHAPES = [("tiny w13", 4, 64, 32), ("tiny w2", 4, 32, 32)]


def accumulate_fn(w: torch.Tensor, grad_view_shape, op: str):
    """The timed call: route a contiguous (E, K, N) gradient back through w.transpose(-2, -1)."""
    dw_EKN = torch.randn(grad_view_shape, device=w.device, dtype=w.dtype)
    view = w.transpose(-2, -1)

    def first():
        w.grad = None
        torch.autograd.backward(view, dw_EKN)   # as real/wgrad.py _accumulate

    def add():
        torch.autograd.backward(view, dw_EKN)   # as real/wgrad.py _accumulate

    if op == "add":
        w.grad = torch.zeros_like(w)
    return first if op == "first" else add


def bench_wgrad_accum(rec, timer, dev, deadline, quick, env):
    for label, E, N, K in (QUICK_SHAPES if quick else SHAPES):
        if deadline.over():
            break
        w = torch.zeros(E, N, K, device=dev, dtype=torch.bfloat16, requires_grad=True)
        elems = E * N * K
        for op in ("first", "add"):
            fn = accumulate_fn(w, (E, K, N), op)
            # bytes as a streaming kernel would move them: read dW and write .grad (first); read
            # dW and .grad, write .grad (add); 2 B each
            nbytes = (2 if op == "first" else 3) * elems * 2
            r = timer.measure(fn, bytes_=float(nbytes))
            rec.row("wgrad_accum", bench="wgrad_accum", op=op, shape_tag=label, num_experts=E, n=N, k=K,
                    elements=elems, bytes_moved=nbytes, precision="bf16", **r)
            log(f"wgrad_accum {label} {op}: {r['time_s'] * 1e3:.3f} ms, "
                f"{r['achieved_bytes_per_s'] / 1e9:.0f} GB/s as streaming bytes")
        w.grad = None
        del w
        free_memory()
