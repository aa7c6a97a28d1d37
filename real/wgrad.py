"""Zero-bubble backward split: input gradients now (B), weight gradients later (W).

The pipeline schedules zb1p, dualpipe and dualpipev run a backward in two ops: B computes the
gradient of a chunk's input (what the previous stage waits for) and W, issued later by the
schedule, the gradients of its weights. The weight GEMMs are the bulk of W, so the split lives at
the GEMM seam (`real/fp8.py` `linear` / `grouped_mm` with `Precision.split_wgrad`), like
DeepSeek's DualPipe `WeightGradStore`: the backward of a split GEMM returns dX and, while a
`WeightGradStore` is collecting (`deferring(store)`), parks a closure computing dW = dY^T X; the
W op runs the closures (`store.flush()`). Outside `deferring` the same backward computes dW at
once (a BW op). Small weights (norms, router, embedding) get their gradients in B.

The store is process-wide on purpose: the autograd engine runs CUDA backwards on its own thread,
which sees module globals but not the caller's thread-local or context variables.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


class WeightGradStore:
    """Weight-gradient closures parked by split GEMM backwards, run by `flush()` (the W op)."""

    def __init__(self):
        self.pending: list = []

    def flush(self) -> int:
        """Compute and accumulate every parked weight gradient; returns how many ran."""
        n = len(self.pending)
        for wgrad in self.pending:
            wgrad()
        self.pending.clear()
        return n


_collecting: WeightGradStore | None = None


@contextlib.contextmanager
def deferring(store: WeightGradStore):
    """Split GEMM backwards inside park their weight gradients in `store` instead of computing them."""
    global _collecting
    previous, _collecting = _collecting, store
    try:
        yield store
    finally:
        _collecting = previous


def _accumulate(weight: torch.Tensor, grad: torch.Tensor) -> None:
    """Add grad to the leaf behind `weight` (a parameter, or a view of one: autograd routes it)."""
    torch.autograd.backward(weight, grad)


def _weight_grad(weight: torch.Tensor, compute):
    """dW now (returned to autograd) or parked in the collecting store (None to autograd)."""
    if _collecting is None:
        return compute()
    _collecting.pending.append(lambda: _accumulate(weight, compute()))
    return None


class _SplitLinear(torch.autograd.Function):
    """y = x @ w^T (F.linear) whose weight gradient may be deferred."""

    @staticmethod
    def forward(ctx, x_xK, w_NK):
        ctx.save_for_backward(x_xK, w_NK)
        ctx.weight_ref = w_NK  # by reference: a deferred dW is routed back through autograd
        return F.linear(x_xK, w_NK)

    @staticmethod
    def backward(ctx, g_xN):
        x_xK, w_NK = ctx.saved_tensors
        dx = g_xN @ w_NK if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[1]:
            def compute():
                return g_xN.reshape(-1, g_xN.shape[-1]).t() @ x_xK.reshape(-1, x_xK.shape[-1])

            dw = _weight_grad(ctx.weight_ref, compute)
        return dx, dw


class _SplitGroupedMM(torch.autograd.Function):
    """torch._grouped_mm (rows sorted by expert, offs_E cumulative ends) with deferrable dW."""

    @staticmethod
    def forward(ctx, x_TK, w_EKN, offs_E):
        ctx.save_for_backward(x_TK, w_EKN, offs_E)
        ctx.weight_ref = w_EKN  # a transposed view of the parameter: autograd routes dW through it
        return torch._grouped_mm(x_TK, w_EKN, offs=offs_E)

    @staticmethod
    def backward(ctx, g_TN):
        x_TK, w_EKN, offs_E = ctx.saved_tensors
        g_TN = g_TN.contiguous()
        dx = torch._grouped_mm(g_TN, w_EKN.transpose(-2, -1), offs=offs_E) if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[1]:
            dw = _weight_grad(ctx.weight_ref, lambda: torch._grouped_mm(x_TK.t(), g_TN, offs=offs_E))
        return dx, dw, None


def split_linear(x_xK: torch.Tensor, w_NK: torch.Tensor) -> torch.Tensor:
    return _SplitLinear.apply(x_xK, w_NK)


def split_grouped_mm(x_TK: torch.Tensor, w_EKN: torch.Tensor, offs_E: torch.Tensor) -> torch.Tensor:
    return _SplitGroupedMM.apply(x_TK, w_EKN, offs_E)
