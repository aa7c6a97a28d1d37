"""Section ep (ep.csv): expert parallelism under torchrun with >= 2 ranks."""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
import torch.distributed as dist

from real.bench.device import precisions_to_bench
from real.bench.moe_layer import skewed_routing
from real.bench.nccl import distributed_env
from real.bench.records import log
from real.bench.timing import Timer
from real.configs import get_spec
from real.ep import combine, dispatch
from real.model import MoE, building
from twin.costs.flops import gemm_flops


class HostMarks:
    """The host's side of each timed call (s12ep): seconds from the call's start to its return,
    on the host clock, around the very calls the CUDA events time. A call whose host interval
    reaches its event time was paced by the host (dispatch's split sizes to the host synchronise
    it inside every call); one far shorter ran ahead of a GPU-bound stream."""

    def __init__(self):
        self.seconds: list[float] = []

    def wrap(self, fn):
        def timed(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            self.seconds.append(time.perf_counter() - t0)
            return out
        return timed

    def measure(self, timer, fn, **kw) -> dict:
        """timer.measure of fn with host_s: the median host interval over the timed repetitions
        (the last `reps` calls; the warm-up ones come first)."""
        self.seconds = []
        r = timer.measure(self.wrap(fn), **kw)
        timed = self.seconds[-int(r["reps"]):] if self.seconds else []
        return {**r, "host_s": statistics.median(timed) if timed else float("nan")}


def ep_case(spec, T: int, skew: float, dev, gen, group, split: str):
    """One EP layer case on this rank: its routing (weights, expert ids), its input tokens, and the
    fields every ep.csv row of it carries (max_rank_rows: the most rows any rank receives, summed
    over the world's routing)."""
    world = dist.get_world_size(group)
    E, K, D = spec.num_routed_experts, spec.top_k, spec.hidden_size
    w, ids = skewed_routing(T, E, K, skew, spec.route_scale, dev, gen)
    x = torch.randn(T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    rows = torch.zeros(world, dtype=torch.int64, device=dev).scatter_add_(
        0, ids.flatten() // (E // world), torch.ones(T * K, dtype=torch.int64, device=dev))
    dist.all_reduce(rows, group=group)
    common = dict(world_size=world, tokens_per_rank=T, num_experts=E, top_k=K, hidden_size=D,
                  skew=skew, max_rank_rows=int(rows.max()), bytes_per_rank=T * K * D * 2.0, split=split)
    return w, ids, x, common


def measure_dispatch(rec, marks: HostMarks, timer, x, ids, group, common: dict, reps: int):
    """Times dispatch of the case's tokens (x, their expert ids) to the experts' ranks, records its
    ep_dispatch row, and returns what the last call dispatched (rows, expert ids, counts, the
    combine plan: real.ep.dispatch)."""
    out = []

    def do_dispatch():
        out[:] = [dispatch(x.detach(), ids, common["num_experts"], group)]

    r = marks.measure(timer, do_dispatch, bytes_=common["bytes_per_rank"], reps=reps)
    rec.row("ep", bench="ep_dispatch", precision="bf16", **common, **r)
    return out[0]


def bench_ep(rec, timer, dev, deadline, quick, env):
    """Expert parallelism over the torchrun world (NCCL on GPUs): raw all-to-all, and an MoE
    layer's dispatch, combine, forward and backward with E/W experts per rank. Fixed repetition
    counts so every rank issues the same collectives; rank 0 writes ep.csv, every row with the
    host's interval per timed call (HostMarks), its split (every ep row is held out: the twin
    fits nothing to them) and the NCCL version and GPU count."""
    distributed_env(env, dev)
    marks = HostMarks()
    group = dist.group.WORLD
    world = dist.get_world_size()
    t = Timer(dev, timer.tel, 0.0, warmup=3)
    reps = 3 if quick else 20
    for mib in ([1] if quick else [1, 4, 16, 64, 256, 1024]):
        x = torch.randn(mib * 2**20 // 2, device=dev, dtype=torch.bfloat16)
        out = torch.empty_like(x)
        sent = mib * 2**20 * (world - 1) / world
        r = marks.measure(t, lambda: dist.all_to_all_single(out, x, group=group), bytes_=sent, reps=reps)
        rec.row("ep", bench="all_to_all", world_size=world, tokens_per_rank="", num_experts="",
                top_k="", hidden_size="", skew="", max_rank_rows="", bytes_per_rank=sent,
                precision="bf16", split="holdout", **r)
        log(f"all_to_all {mib} MiB/rank: {r['achieved_bytes_per_s'] / 1e9:.0f} GB/s sent per rank")
    name = "tiny" if quick else "v3-slice-1l"
    spec = get_spec(name)
    E = 8 if quick else 32
    spec = dataclasses.replace(spec, num_routed_experts=E)
    torch.manual_seed(0)
    with building(dev):
        moe = MoE(spec, ep_group=group)
    gen = torch.Generator().manual_seed(dist.get_rank())
    D, K = spec.hidden_size, spec.top_k
    for T in ([64] if quick else [1024, 4096, 16384]):
        for skew in [0.0, 1.0]:
            w, ids, x, common = ep_case(spec, T, skew, dev, gen, group, "holdout")
            fl = gemm_flops(T * K, 3 * spec.moe_intermediate_size, D)
            dispatched = measure_dispatch(rec, marks, t, x, ids, group, common, reps)
            y_local = dispatched[0]
            r = marks.measure(t, lambda: combine(y_local, dispatched[3], group), bytes_=T * K * D * 2.0,
                              reps=reps)
            rec.row("ep", bench="ep_combine", precision="bf16", **common, **r)
            for prec in precisions_to_bench(env):
                r = marks.measure(t, lambda: moe(x, prec, (w, ids)), flops=fl, reps=reps)
                rec.row("ep", bench="moe_layer_ep_fwd", precision=prec.label, **common, **r)
                r = marks.measure(t, lambda o: torch.autograd.grad(o, [x, *moe.parameters()], torch.ones_like(o),
                                                                   allow_unused=True),
                                  setup=lambda: moe(x, prec, (w, ids)), flops=2 * fl, reps=reps)
                rec.row("ep", bench="moe_layer_ep_bwd", precision=prec.label, **common, **r)
            log(f"ep T={T} skew={skew}: done")
