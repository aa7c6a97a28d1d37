"""Expert parallelism over gloo ranks (spawned processes) against a single-process reference."""

import dataclasses

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from real.configs import get_spec
from real.model import MoE, Transformer
from real.train import allreduce_replicated_grads
from tests.ports import free_port

T_PER_RANK = 12
EXPERT_PARAMS = ("w13_E2FD", "w2_EDF")


def _load_shard(ep_module, ref_module, rank, world):
    """Copy the reference weights into the EP module: experts [r*El, (r+1)*El) for rank r."""
    ref = dict(ref_module.named_parameters())
    with torch.no_grad():
        for name, p in ep_module.named_parameters():
            src = ref[name]
            if name.endswith(EXPERT_PARAMS):
                el = src.shape[0] // world
                src = src[rank * el:(rank + 1) * el]
            p.copy_(src)


def _check_grads(ep_module, ref_module, rank, world, scale):
    """Expert grads: this rank's slice of the reference; replicated grads: summed over ranks."""
    ref = dict(ref_module.named_parameters())
    for name, p in ep_module.named_parameters():
        if p.grad is None:
            assert ref[name].grad is None, name
            continue
        want = ref[name].grad
        if name.endswith(EXPERT_PARAMS):
            el = want.shape[0] // world
            want = want[rank * el:(rank + 1) * el]
        torch.testing.assert_close(p.grad * scale, want, rtol=1e-4, atol=1e-6, msg=name)


def _worker(rank, world, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        spec = dataclasses.replace(get_spec("tiny"), num_routed_experts=8, num_expert_groups=4,
                                   top_k_groups=2, top_k=3)
        shard = slice(rank * T_PER_RANK, (rank + 1) * T_PER_RANK)

        # 1. one MoE layer: output, input gradient, expert and replicated gradients
        torch.manual_seed(0)
        ref = MoE(spec)
        ep = MoE(spec, ep_group=dist.group.WORLD)
        assert ep.w13_E2FD.shape[0] == 8 // world
        _load_shard(ep, ref, rank, world)
        x_all = torch.randn(world * T_PER_RANK, spec.hidden_size)
        target_all = torch.randn_like(x_all)
        x_ref = x_all.clone().requires_grad_()
        (ref(x_ref) * target_all).sum().backward()
        x = x_all[shard].clone().requires_grad_()
        y = ep(x)
        (y * target_all[shard]).sum().backward()
        torch.testing.assert_close(y, ref(x_all)[shard].detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x.grad, x_ref.grad[shard], rtol=1e-5, atol=1e-6)
        for p in ep.parameters():  # replicated parameters: sum the ranks' contributions
            if p.grad is not None and p is not ep.w13_E2FD and p is not ep.w2_EDF:
                dist.all_reduce(p.grad)
        _check_grads(ep, ref, rank, world, scale=1.0)

        # 2. the whole model (MLA, dense + MoE layers, MTP): mean loss over all ranks' tokens
        torch.manual_seed(1)
        ref_model = Transformer(spec, max_seq_len=16)
        model = Transformer(spec, ep_group=dist.group.WORLD, max_seq_len=16)
        _load_shard(model, ref_model, rank, world)
        tokens = torch.randint(0, spec.vocab_size, (world * 2, 8))
        targets = torch.roll(tokens, -1, 1)
        ref_loss = ref_model.loss(tokens, targets)
        ref_loss.backward()
        loss = model.loss(tokens[2 * rank:2 * rank + 2], targets[2 * rank:2 * rank + 2])
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        torch.testing.assert_close(mean_loss / world, ref_loss.detach(), rtol=1e-5, atol=1e-6)
        allreduce_replicated_grads(model, dist.group.WORLD)
        _check_grads(model, ref_model, rank, world, scale=1.0 / world)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_expert_parallel_matches_single_process(world):
    mp.spawn(_worker, args=(world, free_port()), nprocs=world, join=True)
