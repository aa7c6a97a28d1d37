"""Training entry point: AdamW over FP32 master weights for a BF16 model, plus bias balancing.

`python -m real.train --model tiny --steps 20` trains on synthetic tokens (CPU or one GPU);
under torchrun with several ranks the MoE layers run expert-parallel over the world group and
replicated parameters' gradients are all-reduced (data parallel over the same ranks).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

from real.configs import get_spec
from real.fp8 import BF16, Precision, best_fp8
from real.model import Transformer, build_model


class MasterAdamW:
    """AdamW whose state and master weights are FP32 while the model keeps BF16 (or any dtype)
    weights: grads are upcast into the masters, the step runs in FP32, results are cast back."""

    def __init__(self, params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.masters = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        fused = bool(self.params) and self.params[0].is_cuda
        self.opt = torch.optim.AdamW(self.masters, lr=lr, betas=betas, eps=eps,
                                     weight_decay=weight_decay, fused=fused)

    @torch.no_grad()
    def step(self):
        for p, m in zip(self.params, self.masters):
            m.grad = None if p.grad is None else p.grad.float()
        self.opt.step()
        torch._foreach_copy_(self.params, self.masters)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def allreduce_replicated_grads(model: Transformer, group) -> None:
    """Sum gradients of parameters every rank holds (all but local experts) over `group`."""
    expert = {id(m.w13_E2FD) for m in model.moe_layers()} | {id(m.w2_EDF) for m in model.moe_layers()}
    for p in model.parameters():
        if p.grad is not None and id(p) not in expert:
            dist.all_reduce(p.grad, group=group)


def train_step(model: Transformer, opt: MasterAdamW, tokens_BS, targets_BS,
               precision: Precision = BF16, bias_update_rate: float = 1e-3, group=None):
    """One optimizer step: forward+backward, (DP grad sum), AdamW, balancing-bias update.
    Returns the loss (a host float: this synchronises) and each MoE layer's routed-token
    counts of this step (summed over `group`), E-vectors."""
    opt.zero_grad()
    loss = model.loss(tokens_BS, targets_BS, precision)
    loss.backward()
    if group is not None and dist.get_world_size(group) > 1:
        allreduce_replicated_grads(model, group)
    opt.step()
    loads = [moe.gate.update_bias(bias_update_rate, group) for moe in model.moe_layers()]
    return loss.item(), loads


def synthetic_batch(vocab: int, batch: int, seq_len: int, *, generator=None, device=None):
    """A learnable synthetic stream: tokens follow t_{i+1} = (a * t_i + b) mod vocab with a
    per-sequence (a, b), so a model can reduce its loss quickly. Returns tokens, targets."""
    g = generator
    a = torch.randint(1, 8, (batch, 1), generator=g)
    b = torch.randint(0, vocab, (batch, 1), generator=g)
    t = torch.empty(batch, seq_len + 1, dtype=torch.long)
    t[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
    for i in range(seq_len):
        t[:, i + 1] = (a[:, 0] * t[:, i] + b[:, 0]) % vocab
    t = t.to(device)
    return t[:, :-1], t[:, 1:]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp8"])
    args = ap.parse_args(argv)
    group = None
    if dist.is_available() and "RANK" in os.environ:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        group = dist.group.WORLD
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)  # identical replicated weights on every rank
    spec = get_spec(args.model)
    model = build_model(spec, device, dtype, ep_group=group, max_seq_len=args.seq_len)
    opt = MasterAdamW(model.parameters())
    precision = best_fp8(device) if args.precision == "fp8" else BF16
    g = torch.Generator().manual_seed(1 + (dist.get_rank() if group else 0))
    for step in range(args.steps):
        tokens, targets = synthetic_batch(spec.vocab_size, args.batch, args.seq_len, generator=g,
                                          device=device)
        t0 = time.perf_counter()
        loss, _ = train_step(model, opt, tokens, targets, precision, group=group)
        print(f"step {step} loss {loss:.4f} step_time_s {time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    main()
