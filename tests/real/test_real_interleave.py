"""Interleaved steps (s17alt, real/pipeline/engine.py cycle_order and interleaved_steps): the Williams
design's orders, and, on two gloo ranks, each configuration's loss and gradients stepped in turn with
others equal to the same configuration stepped on its own."""

import dataclasses
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from real.configs import get_spec
from real.model import Transformer
from real.pipeline import PipelineRunner, build_mesh, cycle_order, interleaved_steps
from twin.core.schedules import build_schedule
from tests.ports import free_port

MB_SEQS, SEQ, N = 2, 8, 4


def test_cycle_order_of_two_alternates_and_of_four_is_the_williams_square():
    assert [cycle_order(["a", "b"], c) for c in range(3)] == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert ["".join(cycle_order(list("abcd"), c)) for c in range(5)] == ["abdc", "bcad", "cdba", "dacb", "abdc"]


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_cycle_order_balances_position_and_predecessor_over_a_period(k):
    names = list(range(k))
    period = k if k % 2 == 0 else 2 * k
    rows = [cycle_order(names, c) for c in range(period)]
    assert all(sorted(r) == names for r in rows)
    for pos in range(k):  # each configuration at each place equally often
        assert Counter(r[pos] for r in rows) == {x: period // k for x in names}
    follows = Counter((a, b) for r in rows for a, b in zip(r, r[1:]))
    # each ordered pair of distinct configurations adjacent within a cycle equally often
    assert set(follows) == {(a, b) for a in names for b in names if a != b}
    assert len(set(follows.values())) == 1


def _spec():
    return dataclasses.replace(get_spec("tiny"), num_layers=4, num_mtp_modules=0)


def _worker(rank, world, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        spec = _spec()
        mesh = build_mesh(2, 1, pairs=True)
        torch.manual_seed(0)
        model = Transformer(spec, max_seq_len=SEQ)
        gen = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, spec.vocab_size, (N, MB_SEQS, SEQ), generator=gen)
        targets = torch.roll(tokens, -1, -1)
        runs = {name: (PipelineRunner(model, build_schedule(name, 2, N), mesh, torch.device("cpu"),
                                      (MB_SEQS, SEQ, spec.hidden_size)), tokens, targets)
                for name in ("dualpipe", "dualpipev", "zb1p")}

        def snapshot(runner, timeline):
            return timeline.loss, {k: g.clone() for k, g in runner.grads_by_name().items()}

        alone = {}
        for name, (runner, tok, tgt) in runs.items():
            alone[name] = snapshot(runner, runner.step(tok, tgt))
        seen = []
        for cycle, pos, name, timeline in interleaved_steps(runs, 3):
            seen.append((cycle, pos, name))
            loss, grads = snapshot(runs[name][0], timeline)
            assert loss == pytest.approx(alone[name][0], rel=1e-6), (name, cycle)
            assert grads.keys() == alone[name][1].keys()
            for k, g in grads.items():
                torch.testing.assert_close(g, alone[name][1][k], rtol=1e-5, atol=1e-7, msg=f"{name} {cycle} {k}")
        names = list(runs)
        assert seen == [(c, p, n) for c in range(3) for p, n in enumerate(cycle_order(names, c))]
    finally:
        dist.destroy_process_group()


def test_interleaved_steps_give_each_configuration_its_own_loss_and_gradients():
    mp.spawn(_worker, args=(2, free_port()), nprocs=2, join=True)
