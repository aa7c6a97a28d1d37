"""Which op torch's selective activation checkpointing policy sees when a linear's operands are a
tensor subclass (torchao's Float8Tensor): the op called on the subclass (aten.mm), or the op the
subclass runs inside (torch._scaled_mm)? A check behind twin.costs.flops.op_sac_recompute (s26mem).

A wrapper subclass stands for Float8Tensor: its aten.mm runs another op (addmm) on the inner
tensors, as Float8Tensor's float8_mm runs torch._scaled_mm (torchao float8_ops.py @ eab345c), and
the mm is called inside an autograd.Function, as torchao's manual_float8_matmul_with_args_in_float8.
The policy records every op it is asked about. Prints, on torch 2.13 (CPU):

    plain mm seen by the policy: ['aten.mm.default', 'aten.relu.default']
    mm on a subclass seen by the policy: ['aten.mm.default', 'aten.relu.default']
    the same under torch.compile (aot_eager): ['aten.mm.default', 'aten.relu.default']

so a dispatch mode (torch.utils.checkpoint's _CachingTorchDispatchMode) is asked before the
subclass and never about the op inside, which runs with the mode off; compiled, the policy tags the
mm on the subclass too (torchtitan compiles each checkpointed block). Runs in a few seconds:
    .venv/bin/python benchmarks/sac_policy_ops.py
"""

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

aten = torch.ops.aten
_VIEWS = (aten.t.default, aten.view.default, aten._unsafe_view.default, aten.detach.default, aten.alias.default)


class Wrapped(torch.Tensor):
    """A minimal traceable wrapper subclass whose mm runs a different op (addmm) on its inner tensors."""

    @staticmethod
    def __new__(cls, inner):
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(), dtype=inner.dtype,
                                                   device=inner.device)

    def __init__(self, inner):
        self.inner = inner

    def __tensor_flatten__(self):
        return ["inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return Wrapped(inner_tensors["inner"])

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == aten.mm.default:
            a, b = (x.inner if isinstance(x, Wrapped) else x for x in args)
            return torch.addmm(torch.zeros(()), a, b)
        if func in _VIEWS:
            return Wrapped(func(args[0].inner, *args[1:], **kwargs))
        raise NotImplementedError(str(func))


@torch._dynamo.allow_in_graph
class WrappedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return torch.mm(x, w)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad @ w.inner.t(), x.inner.t() @ grad


SEEN: list[str] = []


def _policy(ctx, func, *args, **kwargs):
    if not ctx.is_recompute:
        SEEN.append(str(func))
    return CheckpointPolicy.MUST_SAVE if func == aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE


def _context_fn():   # module level, as torchtitan's: dynamo traces a checkpoint's context_fn only so
    return create_selective_checkpoint_contexts(_policy)


def _plain(x, w):
    return torch.relu(torch.mm(x, w))


def _on_subclass(x, w):
    return WrappedMatmul.apply(Wrapped(x), Wrapped(w)).relu()


def ops_seen(block, compiled: bool = False) -> list[str]:
    SEEN.clear()
    x, w = torch.randn(4, 8, requires_grad=True), torch.randn(8, 8, requires_grad=True)

    def region(a, b):
        return checkpoint(block, a, b, use_reentrant=False, context_fn=_context_fn)

    run = torch.compile(region, backend="aot_eager") if compiled else region
    run(x, w)
    return sorted(set(SEEN))


def main() -> None:
    print("plain mm seen by the policy:", ops_seen(_plain))
    print("mm on a subclass seen by the policy:", ops_seen(_on_subclass))
    print("the same under torch.compile (aot_eager):", ops_seen(_on_subclass, compiled=True))


if __name__ == "__main__":
    main()
