"""Section parallel_blocks (parallel_blocks.csv): tensor- and context-parallel blocks, forward +
backward, under torchrun with W >= 2 ranks (tp = W or cp = W), each beside its one-GPU
reference (tp = cp = 1, run on rank 0 while the others wait).

  bench tp_block, block mla:  x + MLA(norm(x))  (real/tp.py TPMLABlock), heads split over W
  bench tp_block, block moe:  x + MoE(norm(x))  (TPMoEBlock), every expert's width split over W,
                              balanced routing injected (skew 0, round-robin)
      sequence_parallel true: all-gather in, reduce-scatter out; false: all-reduce out.
      tokens = seq_len = the whole sequence (batch 1); each rank holds tokens/W with SP.
  bench cp_block, block attention: causal context-parallel attention (real/cp.py) of MLA-shaped
      heads (qk 192, v 128) over seq_len positions, each rank seq_len/W (zigzag), of each cp_kind:
      allgather (keys/values all-gathered) and ring (keys/values around the ring), both attending
      block by block with cuDNN's fused kernel (attn_kernel: the kernel that ran); the reference
      (cp 1, cp_kind empty) is causal `scaled_dot_product_attention` on the whole sequence
      (attn_kernel sdpa_<the backend SDPA chose>).
  bench cp_block, block mla: x + MLA(norm(x)) with the positions split (real/cp.py CPMLABlock:
      projections local, expanded K/V all-gathered or around the ring); the reference is the
      unsplit sublayer.
Sections: parallel_blocks runs the TP rows then the CP rows (all-gather before ring); tp_blocks
the TP rows alone; cp_blocks the CP rows of both kinds with the references; cp_allgather the
all-gather CP rows with the references; cp_ring the ring CP rows alone.
time_s: the median over repetitions of forward + backward (input and weight gradients), each
repetition timed by CUDA events on every rank and taken as the slowest rank's (ranks start
together after a barrier). comm_time_s: rank 0's median per repetition of the time its stream
spent in the collectives (`real/collectives.py` CommTimer: all-gather/reduce-scatter/all-reduce
for TP, all exposed; for ring CP the waits for the P2P exchanges, i.e. the exposed part of the
overlapped transfer; for all-gather CP its all-gathers and reduce-scatters, all exposed);
comm_detail the same by kind (JSON). host_time_s: the median over repetitions of the slowest
rank's host time to issue the repetition (forward + backward calls returned, no device sync):
where it is close to time_s the block is host-bound.
Split (`block_split`): holdout the middle size of each sweep (tp tokens 4096, cp seq_len 16384)
and every row of v2-lite-slice's MoE at the sweep's sizes; fit otherwise (the extra v2-lite MoE
sizes of EXTRA_TP_CASES are fitting rows).
Host probe (REAL_BENCH_HOST_PROBE_S = a window in seconds; unset or 0: off, the committed
campaigns' rows): real/serve/hostspeed.py's launch probe (host seconds per small kernel launched
from Python) run right before and right after each row, the slowest rank's for a W-rank row, rank
0's for a reference: probe_launch_before_s, probe_launch_after_s and their mean probe_launch_s, the
speed of the host that issued the row (issue 14, s15cp: the host-bound blocks' host is an input).
The collective_host rows carry the same columns. REAL_BENCH_TP_EXTRA=1 adds EXTRA_TP_CASES.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from real import cp as cp_mod
from real.bench.device import free_memory
from real.bench.moe_layer import skewed_routing
from real.bench.nccl import agreed_over, distributed_env, log, stats
from real.collectives import CommTimer, all_gather_tokens, all_reduce_sum, reduce_scatter_tokens
from real.configs import get_spec
from real.model import building, rope_tables
from real.serve.hostspeed import launch_probe
from real.tp import TPMLABlock, TPMoEBlock
from real.sync import synchronize
from twin.costs.flops import attention_flops, gemm_flops

HELD_OUT_TP_TOKENS = {4096}
HELD_OUT_CP_SEQ_LENS = {16384}
HELD_OUT_TP_MOE_MODELS = {"v2-lite-slice"}
TP_SWEEP_TOKENS = (2048, 4096, 8192)
CP_KIND_ORDER = ("allgather", "ring")  # the all-gather rows first: public kernels only
# fitting v2-lite MoE TP rows at sizes between the sweep's (s15cp): the sweep's v2-lite MoE rows are
# all held out, so no fitting row measured that block's host; these do (REAL_BENCH_TP_EXTRA=1)
EXTRA_TP_CASES = (("moe", "v2-lite-slice", 3072), ("moe", "v2-lite-slice", 6144))
QUICK_EXTRA_TP_CASES = (("moe", "tiny", 48),)


def block_split(bench: str, block: str, model: str, tokens: int) -> str:
    if bench == "cp_block":
        return "holdout" if tokens in HELD_OUT_CP_SEQ_LENS else "fit"
    if tokens in HELD_OUT_TP_TOKENS or (block == "moe" and model in HELD_OUT_TP_MOE_MODELS
                                         and tokens in TP_SWEEP_TOKENS):
        return "holdout"
    return "fit"


def tp_cases(quick: bool):
    """(block, model, tokens) of the TP sweep, and EXTRA_TP_CASES last where REAL_BENCH_TP_EXTRA=1."""
    extra = os.environ.get("REAL_BENCH_TP_EXTRA", "") == "1"
    if quick:
        return [("mla", "tiny", 32), ("moe", "tiny", 32)] + (list(QUICK_EXTRA_TP_CASES) if extra else [])
    out = []
    for block in ("mla", "moe"):
        for model in ("v2-lite-slice", "v3-slice-1l"):  # the host-bound model first
            out += [(block, model, t) for t in TP_SWEEP_TOKENS]
    return out + (list(EXTRA_TP_CASES) if extra else [])


PROBE_ENV = "REAL_BENCH_HOST_PROBE_S"


def probe_window_s() -> float:
    """The host probe's window (seconds) from REAL_BENCH_HOST_PROBE_S; 0: no probe."""
    try:
        return max(0.0, float(os.environ.get(PROBE_ENV, "") or 0.0))
    except ValueError:
        return 0.0


def host_probe_s(dev, group) -> float:
    """Host seconds per small kernel launch now (hostspeed.launch_probe's window mean), the slowest
    rank's where `group` is given (every rank probes at once); NaN where the probe is off."""
    window = probe_window_s()
    if window <= 0:
        return math.nan
    launch, _ = launch_probe(dev, window)
    if group is not None:
        t = torch.tensor([launch], device=dev, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        launch = float(t.item())
    return launch


def probe_cols(before: float, after: float) -> dict:
    """A row's probe columns ({} where the probe is off)."""
    if math.isnan(before) and math.isnan(after):
        return {}
    return {"probe_launch_before_s": before, "probe_launch_after_s": after,
            "probe_launch_s": (before + after) / 2}


def probed_reps(fn, dev, reps: int, warmup: int, comm, group) -> tuple[list, list, list, dict]:
    """`time_reps` with the host probe right before and right after it (`probe_cols`)."""
    before = host_probe_s(dev, group)
    times, comms, hosts = time_reps(fn, dev, reps, warmup, comm, group)
    return times, comms, hosts, probe_cols(before, host_probe_s(dev, group))


def cp_cases(quick: bool):
    """(model, heads, seq_len) of the CP sweep: MLA-shaped heads of the model."""
    if quick:
        return [("tiny", 2, 32)]
    return ([("v2-lite-slice", 16, s) for s in (4096, 8192, 16384, 32768)]
            + [("v3-slice-1l", 128, s) for s in (4096, 8192, 16384)])


def common_kernel(dev) -> str:
    """Which per-block attention kernel the CP forms ran (real/cp.py)."""
    return cp_mod.BLOCK_KERNEL["name"] if dev.type == "cuda" else "math"


def sdpa_kernel(q, k, v) -> str:
    """The backend causal `scaled_dot_product_attention` runs for these inputs ("sdpa_cudnn",
    "sdpa_flash", "sdpa_efficient", "sdpa_math"; "sdpa" where PyTorch cannot say)."""
    try:
        choice = torch._fused_sdp_choice(q, k, v, is_causal=True)
        return "sdpa_" + torch.nn.attention.SDPBackend(choice).name.lower().removesuffix("_attention")
    except (AttributeError, RuntimeError, ValueError):
        return "sdpa"


def cp_mla_cases(quick: bool):
    """(model, seq_len) of the context-parallel MLA sublayer sweep."""
    if quick:
        return [("tiny", 32)]
    return ([("v2-lite-slice", s) for s in (4096, 8192, 16384, 32768)]
            + [("v3-slice-1l", s) for s in (4096, 8192, 16384)])


def time_reps(fn, dev, reps: int, warmup: int, comm: CommTimer | None, group) -> tuple[list, list, list]:
    """Seconds per repetition of fn() (the slowest rank's when group is not None), per repetition
    this rank's collective time by kind, and seconds per repetition the host took to issue fn()
    (the slowest rank's)."""
    for _ in range(warmup):
        fn()
    cuda = dev.type == "cuda"
    synchronize(dev)
    if group is not None:
        dist.barrier(group=group)
    handles, comms, hosts = [], [], []
    for _ in range(reps):
        if comm is not None:
            comm.reset()
        if cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            h0 = time.perf_counter()
            fn()
            hosts.append(time.perf_counter() - h0)
            e.record()
            handles.append((s, e))
        else:
            t0 = time.perf_counter()
            fn()
            handles.append(time.perf_counter() - t0)
            hosts.append(handles[-1])
        if comm is not None:
            synchronize(dev)
            comms.append(comm.totals_s())
    synchronize(dev)
    times = [s.elapsed_time(e) * 1e-3 for s, e in handles] if cuda else handles
    if group is not None:
        t = torch.tensor([times, hosts], device=dev, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        times, hosts = t.tolist()
    return times, comms, hosts


def _comm_cols(comms: list[dict]) -> dict:
    if not comms:
        return {"comm_time_s": math.nan, "comm_detail": ""}
    kinds = sorted({k for c in comms for k in c})
    detail = {k: statistics.median(c.get(k, 0.0) for c in comms) for k in kinds}
    return {"comm_time_s": statistics.median(sum(c.values()) for c in comms),
            "comm_detail": json.dumps({k: float(f"{v:.6g}") for k, v in detail.items()})}


def _row(rec, env, timer, times, comms, hosts, **cols):
    st = stats(times)
    fl = cols.pop("flops", math.nan)
    rec.row("parallel_blocks", **cols, **_comm_cols(comms), host_time_s=statistics.median(hosts), **st,
            timing="per_rep_events" if env.get("num_gpus") else "host_clock",
            flops=fl, bytes=math.nan, achieved_flops_per_s=fl / st["time_s"],
            achieved_bytes_per_s=math.nan, sm_clock_mhz=timer.tel.sm_clock_mhz(),
            mem_clock_mhz=timer.tel.mem_clock_mhz())
    return st


def _tp_block_fn(block_kind, spec, group, sp, T, dev, rank, world):
    """A fwd+bwd closure of a TP block (group None: the one-GPU reference) and its block."""
    with building(dev):
        block = (TPMLABlock if block_kind == "mla" else TPMoEBlock)(spec, group, sp)
    shard = slice(rank * T // world, (rank + 1) * T // world) if (group is not None and sp) else slice(None)
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn(T, spec.hidden_size, generator=g).to(dev, torch.bfloat16)
    x = x_all[shard].clone().requires_grad_()
    gy = torch.randn_like(x)
    params = [p for p in block.parameters() if p.requires_grad]
    if block_kind == "mla":
        cos, sin = (t.to(dev) for t in rope_tables(spec.qk_rope_head_dim, T))

        def fwd():
            return block(x, cos, sin)
    else:
        w, ids = skewed_routing(T, spec.num_routed_experts, spec.top_k, 0.0, spec.route_scale, dev, g)
        routing = (w[shard], ids[shard])

        def fwd():
            return block(x, routing=routing)

    def step():
        torch.autograd.grad(fwd(), [x, *params], gy, allow_unused=True)
    return step, block


def _tp_flops(block_kind, spec, T) -> float:
    """Forward + backward FLOPs of the whole (unsharded) block, 3x the forward's GEMMs plus
    attention (forward 1x, backward 2.5x as twin.costs.flops counts it)."""
    D = spec.hidden_size
    if block_kind == "moe":
        Fe = spec.moe_intermediate_size
        return 3 * (gemm_flops(T * spec.top_k, 3 * Fe, D) + gemm_flops(T, 3 * Fe * spec.num_shared_experts, D))
    H, P, R, O, C, Q = (spec.num_heads, spec.qk_nope_head_dim, spec.qk_rope_head_dim, spec.v_head_dim,
                        spec.kv_lora_rank, spec.q_lora_rank)
    proj = (gemm_flops(T, Q, D) + gemm_flops(T, H * (P + R), Q) if Q else gemm_flops(T, H * (P + R), D))
    proj += gemm_flops(T, C + R, D) + gemm_flops(T, H * (P + O), C) + gemm_flops(T, D, H * O)
    return 3 * proj + 3.5 * attention_flops(1, T, H, P + R, O, causal=True)


def _cp_mla_fn(spec, group, S, dev, rank, world, kind="ring"):
    """A fwd+bwd closure of the CP MLA sublayer (of `kind`) on this rank's zigzag positions
    (group None: the unsplit sublayer, TPMLABlock without a group), and its block."""
    with building(dev):
        block = cp_mod.CPMLABlock(spec, group, kind) if group is not None else TPMLABlock(spec, None)
    pos = (cp_mod.zigzag_positions(S, world, rank) if group is not None else torch.arange(S)).to(dev)
    cos, sin = (t.to(dev)[pos] for t in rope_tables(spec.qk_rope_head_dim, S))
    g = torch.Generator(device=dev).manual_seed(0)  # on the device: no GiB of host randn
    x = torch.randn(S, spec.hidden_size, generator=g, device=dev, dtype=torch.bfloat16)[pos].requires_grad_()
    gy = torch.randn_like(x)
    params = list(block.parameters())

    def step():
        torch.autograd.grad(block(x, cos, sin), [x, *params], gy)
    return step, block


ROUNDS_ENV = "REAL_BENCH_ROUNDS"


def bench_rounds() -> int:
    """How many rounds the parallel_blocks section runs (REAL_BENCH_ROUNDS; 1 where unset)."""
    try:
        return max(1, int(os.environ.get(ROUNDS_ENV, "") or 1))
    except ValueError:
        return 1


def rotated(cases: list, round_index: int) -> list:
    """`cases` started at case round_index (mod their count): each round in another order, so no
    configuration always runs in the same phase of the host's slow and fast spells (s14mla)."""
    if not cases:
        return cases
    k = round_index % len(cases)
    return cases[k:] + cases[:k]


def bench_parallel_blocks(rec, timer, dev, deadline, quick, env):
    """Section parallel_blocks: the TP rows, then the CP rows of both kinds with references; with
    REAL_BENCH_ROUNDS=N > 1, N rounds of both (each in `rotated` order, the rows carrying `round`; the
    collective host and the CP self-checks in round 0 only)."""
    rounds = bench_rounds()
    for r in range(rounds):
        index = r if rounds > 1 else None
        bench_tp_blocks(rec, timer, dev, deadline, quick, env, index)
        bench_cp_rows(rec, timer, dev, deadline, quick, env, CP_KIND_ORDER, reference=True, round_index=index)


def bench_cp_blocks(rec, timer, dev, deadline, quick, env):
    """Section cp_blocks: the CP rows of both kinds (all-gather first) with the references."""
    bench_cp_rows(rec, timer, dev, deadline, quick, env, CP_KIND_ORDER, reference=True)


COLLECTIVE_HOST_OPS = ("kernel", "all_gather", "reduce_scatter", "all_reduce")


def _collective_call(op: str, x_TD, group, comm: CommTimer):
    """One call of `op` as the TP blocks issue it (real/collectives.py, timed by a CommTimer as
    the benchmarks time theirs); "kernel": one plain eager elementwise kernel, for comparison."""
    if op == "kernel":
        return x_TD.add_(1.0)
    if op == "all_gather":
        return all_gather_tokens(x_TD, group, comm)
    if op == "reduce_scatter":
        return reduce_scatter_tokens(x_TD, group, comm)
    return all_reduce_sum(x_TD, group, comm)


def bench_collective_host(rec, dev, quick, group):
    """collective_host.csv: host seconds to issue one call of each TP collective (and of a plain
    eager kernel) in this W-rank process, the slowest rank's: `calls` calls back to back, timed
    by the host clock, repeated; the device synchronised and the ranks aligned between repetitions.
    The host side of a collective, which the block rows' host-bound cases pay at every one."""
    T, D = (32, 64) if quick else (2048, 2048)
    calls, reps = (4, 2) if quick else (20, 7)
    x = torch.randn(T, D, device=dev).to(torch.bfloat16)
    comm = CommTimer(dev)
    for op in COLLECTIVE_HOST_OPS:
        for _ in range(3):
            _collective_call(op, x, group, comm)
        before = host_probe_s(dev, group)
        per_call = []
        for _ in range(reps):
            synchronize(dev)
            dist.barrier(group=group)
            comm.reset()
            t0 = time.perf_counter()
            for _ in range(calls):
                _collective_call(op, x, group, comm)
            per_call.append((time.perf_counter() - t0) / calls)
        synchronize(dev)
        t = torch.tensor(per_call, device=dev, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        st = stats(t.tolist())
        probe = probe_cols(before, host_probe_s(dev, group))
        rec.row("collective_host", bench="collective_host", op=op, tokens=T, hidden_size=D, calls=calls,
                split="fit", **st, **probe, timing="host_clock", flops=math.nan, bytes=math.nan,
                achieved_flops_per_s=math.nan, achieved_bytes_per_s=math.nan)
        log(f"collective_host {op} {T}x{D}: {st['time_s'] * 1e6:.1f} us a call")


TRACE_CASES = (("mla", True), ("mla", False), ("moe", False))  # v2-lite-slice, fit tokens (2048)
# section tp_traces' cases, overridable by REAL_BENCH_TRACE_CASES ("block:model:tokens:sp|nosp,...");
# fitting sizes only (block_split): the miss analysis of issue 14 never looks at a held-out row
TP_TRACE_CASES = (("mla", "v2-lite-slice", 8192, True), ("mla", "v2-lite-slice", 8192, False),
                  ("moe", "v3-slice-1l", 2048, True), ("moe", "v3-slice-1l", 2048, False),
                  ("moe", "v3-slice-1l", 8192, True), ("mla", "v3-slice-1l", 8192, True))


def trace_cases(spec: str) -> list[tuple[str, str, int, bool]]:
    """(block, model, tokens, sequence_parallel) from "block:model:tokens:sp|nosp,..."."""
    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 4 or parts[0] not in ("mla", "moe") or parts[3] not in ("sp", "nosp"):
            raise ValueError(f"trace case {item!r}: allowed block:model:tokens:sp|nosp, block mla or moe")
        out.append((parts[0], parts[1], int(parts[2]), parts[3] == "sp"))
    return out


def trace_tp_reps(dev, quick, group, rank, world, out_dir: str, cases=None) -> None:
    """Chrome traces (torch.profiler, host and device) of two repetitions of TP blocks, one file
    per rank and case (trace_tp_<block>_<sp|nosp>_rank<r>.json.gz for the default cases: the
    host-bound v2-lite TP2 blocks of TRACE_CASES at a fitting size; with `cases`, (block, model,
    tokens, sp) each, trace_tp_<block>_<model>_<tokens>_<sp|nosp>_rank<r>.json.gz, and the one-GPU
    reference of the block on rank 0, ..._tp1.json.gz): each op's host dispatch and each
    collective's wait, rank by rank, and each kernel beside its one-GPU counterpart."""
    if cases is None:
        model, T = ("tiny", 32) if quick else ("v2-lite-slice", 2048)
        named = [(b, model, T, sp, f"trace_tp_{b}_{'sp' if sp else 'nosp'}") for b, sp in TRACE_CASES]
    else:
        named = [(b, m, T, sp, f"trace_tp_{b}_{m}_{T}_{'sp' if sp else 'nosp'}") for b, m, T, sp in cases]
    for block_kind, model, T, sp, stem in named:
        spec = get_spec(model)
        step, block = _tp_block_fn(block_kind, spec, group, sp, T, dev, rank, world)
        block.comm = CommTimer(dev)
        time_reps(step, dev, 1, 3, block.comm, group)  # warm
        dist.barrier(group=group)
        _trace_two_reps(step, dev, Path(out_dir) / f"{stem}_rank{rank}.json.gz")
        del step, block
        free_memory()
        if cases is not None and rank == 0:   # the one-GPU reference of the same block, kernel by kernel
            step, _ = _tp_block_fn(block_kind, spec, None, False, T, dev, 0, 1)
            time_reps(step, dev, 1, 3, None, None)
            _trace_two_reps(step, dev, Path(out_dir) / f"{stem}_tp1.json.gz")
            del step
            free_memory()
        dist.barrier(group=group)


def _trace_two_reps(step, dev, path: Path) -> None:
    """A Chrome trace (host and device) of two repetitions of step() at `path`."""
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(2):
            step()
        synchronize(dev)
    prof.export_chrome_trace(str(path))
    log(f"trace {path.name}")


def bench_tp_traces(rec, timer, dev, deadline, quick, env):
    """Section tp_traces (torchrun, W >= 2 ranks): Chrome traces of TP blocks into
    REAL_BENCH_TRACE_DIR (the cases of REAL_BENCH_TRACE_CASES, else TP_TRACE_CASES; quick: the
    tiny model), no rows; stops at the deadline."""
    group, world, rank = dist.group.WORLD, dist.get_world_size(), dist.get_rank()
    distributed_env(env, dev)
    out_dir = os.environ.get("REAL_BENCH_TRACE_DIR", "")
    if not out_dir:
        log("tp_traces: no REAL_BENCH_TRACE_DIR, nothing to do")
        return
    spec = os.environ.get("REAL_BENCH_TRACE_CASES", "")
    cases = trace_cases(spec) if spec else ([("mla", "tiny", 32, True), ("moe", "tiny", 32, False)] if quick
                                            else list(TP_TRACE_CASES))
    for case in cases:
        if agreed_over(deadline, dev):
            log("tp_traces: deadline reached")
            return
        trace_tp_reps(dev, quick, group, rank, world, out_dir, [case])


def bench_tp_blocks(rec, timer, dev, deadline, quick, env, round_index: int | None = None):
    """Section tp_blocks: the host cost of a collective call (`bench_collective_host`), then the
    TP rows (TP = W with and without sequence parallelism, and the one-GPU reference) of
    `tp_cases`; `round_index` (rounds of bench_parallel_blocks): the rows carry it, the cases
    `rotated` by it, the collective host in round 0 alone."""
    group, world, rank = dist.group.WORLD, dist.get_world_size(), dist.get_rank()
    distributed_env(env, dev)
    if not round_index:
        bench_collective_host(rec, dev, quick, group)
    reps, warmup = (2, 1) if quick else (10, 3)
    tagged = {} if round_index is None else {"round": round_index}
    for block_kind, model, T in rotated(tp_cases(quick), round_index or 0):
        spec = get_spec(model)
        common = dict(bench="tp_block", block=block_kind, model=model, cp=1, tokens=T, seq_len=T, batch=1,
                      hidden_size=spec.hidden_size, num_heads=spec.num_heads,
                      qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim, v_head_dim=spec.v_head_dim,
                      num_experts=spec.num_routed_experts if block_kind == "moe" else "",
                      top_k=spec.top_k if block_kind == "moe" else "",
                      moe_intermediate_size=spec.moe_intermediate_size if block_kind == "moe" else "",
                      skew=0.0 if block_kind == "moe" else "", precision="bf16", attn_kernel="",
                      flops=_tp_flops(block_kind, spec, T),
                      split=block_split("tp_block", block_kind, model, T), **tagged)
        for sp in (True, False):
            if agreed_over(deadline, dev):
                log("parallel_blocks: deadline reached")
                return
            step, block = _tp_block_fn(block_kind, spec, group, sp, T, dev, rank, world)
            block.comm = CommTimer(dev)
            times, comms, hosts, probe = probed_reps(step, dev, reps, warmup, block.comm, group)
            st = _row(rec, env, timer, times, comms if rank == 0 else [], hosts, tp=world,
                      sequence_parallel=sp, **common, **probe)
            log(f"tp_block {block_kind} {model} T={T} tp{world} sp={sp}: {st['time_s'] * 1e3:.2f} ms")
            del step, block
            free_memory()
        if rank == 0:  # the one-GPU reference
            step, block = _tp_block_fn(block_kind, spec, None, False, T, dev, 0, 1)
            times, _, hosts, probe = probed_reps(step, dev, reps, warmup, None, None)
            st = _row(rec, env, timer, times, [], hosts, tp=1, sequence_parallel=False, **common, **probe)
            log(f"tp_block {block_kind} {model} T={T} tp1: {st['time_s'] * 1e3:.2f} ms")
            del step, block
            free_memory()
        dist.barrier()
    trace_dir = os.environ.get("REAL_BENCH_TRACE_DIR", "")
    if trace_dir and not agreed_over(deadline, dev):
        try:
            trace_tp_reps(dev, quick, group, rank, world, trace_dir)
        except Exception as e:  # a diagnostic: its failure costs no row
            log(f"tp traces failed: {type(e).__name__}: {e}")


def bench_cp_allgather(rec, timer, dev, deadline, quick, env):
    """Section cp_allgather: the CP rows of the all-gather form and the one-GPU references."""
    bench_cp_rows(rec, timer, dev, deadline, quick, env, ("allgather",), reference=True)


def bench_cp_ring(rec, timer, dev, deadline, quick, env):
    """Section cp_ring: the CP rows of ring attention only (a campaign runs it in a process of
    its own after cp_allgather, so a fault in the ring's private kernels loses no other row)."""
    bench_cp_rows(rec, timer, dev, deadline, quick, env, ("ring",), reference=False)


def _cp_attention_fn(kind, H, S, E, Ev, scale, group, dev, rank, world, comm):
    """A fwd+bwd closure of causal attention over S positions: context-parallel of `kind` on this
    rank's S/W (zigzag) positions, or (group None) public SDPA on the whole sequence; and the
    kernel it runs (the CP blocks' kernel is known once it has run: `common_kernel`)."""
    n = S // world if group is not None else S
    g = torch.Generator(device=dev).manual_seed(rank)  # on the device: no GiB of host randn
    q, k, v = (torch.randn(1, H, n, d, generator=g, device=dev, dtype=torch.bfloat16).requires_grad_()
               for d in (E, E, Ev))
    gy = torch.randn(1, H, n, Ev, generator=g, device=dev, dtype=torch.bfloat16)
    if group is None:
        def fwd():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    else:
        def fwd():
            return cp_mod.CP_ATTENTION[kind](q, k, v, group, scale, comm)

    def step():
        torch.autograd.grad(fwd(), [q, k, v], gy)
    return step, (sdpa_kernel(q, k, v) if group is None else common_kernel(dev))


def _attn_kernel(kind: str, dev) -> str:
    """What computed the attention of a CP row: the per-block kernel both forms use."""
    return common_kernel(dev)


def cp_self_check(kind, dev, quick, group, rank, world) -> dict:
    """Max abs error, over the ranks, of the context-parallel attention of `kind` (BF16) against
    FP32 causal SDPA of the same BF16 inputs on the whole sequence: output and input gradients
    of this rank's zigzag shard, beside the reference's largest magnitude (`ref_max_abs`)."""
    H, S, E, Ev = (2, 16 * world, 24, 16) if quick else (4, 1024 * world, 192, 128)
    scale = 1 / math.sqrt(E)
    g = torch.Generator().manual_seed(1)  # the same whole-sequence inputs on every rank
    q, k, v = (torch.randn(1, H, S, d, generator=g).to(dev, torch.bfloat16) for d in (E, E, Ev))
    gy = torch.randn(1, H, S, Ev, generator=g).to(dev, torch.bfloat16)
    ref_in = [t.float().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*ref_in, is_causal=True, scale=scale)
    ref.backward(gy.float())
    pos = cp_mod.zigzag_positions(S, world, rank).to(dev)
    mine = [t[..., pos, :].clone().requires_grad_() for t in (q, k, v)]
    out = cp_mod.CP_ATTENTION[kind](*mine, group, scale)
    out.backward(gy[..., pos, :])
    pairs = {"out": (out, ref), **{f"d{n}": (t.grad, r.grad) for n, t, r in zip("qkv", mine, ref_in)}}
    errs = torch.stack([(a.float() - b[..., pos, :]).abs().max() for a, b in pairs.values()]
                       + [ref.detach().abs().max()])
    dist.all_reduce(errs, op=dist.ReduceOp.MAX, group=group)
    return {name: float(f"{e:.3g}") for name, e in zip([*pairs, "ref_max_abs"], errs.tolist())}


def bench_cp_rows(rec, timer, dev, deadline, quick, env, kinds, reference: bool, round_index: int | None = None):
    """Context-parallel rows (cp = W) of each kind in `kinds`, in that order for each case, and
    with `reference` the one-GPU row (cp = 1, cp_kind empty) on rank 0. First, each kind's
    accuracy on a small case (`cp_self_check`) into the environment (env.json: cp_check_<kind>).
    `round_index` as bench_tp_blocks' (the self-checks in round 0 alone)."""
    group, world, rank = dist.group.WORLD, dist.get_world_size(), dist.get_rank()
    distributed_env(env, dev)
    reps, warmup = (2, 1) if quick else (8, 2)
    tagged = {} if round_index is None else {"round": round_index}
    for kind in kinds if not round_index else ():
        env[f"cp_check_{kind}"] = cp_self_check(kind, dev, quick, group, rank, world)
        log(f"cp {kind} vs FP32 SDPA, max abs error: {env[f'cp_check_{kind}']}")
        free_memory()
    for model, H, S in rotated(cp_cases(quick), round_index or 0):
        if agreed_over(deadline, dev):
            log("cp blocks: deadline reached")
            return
        spec = get_spec(model)
        E, Ev = spec.qk_nope_head_dim + spec.qk_rope_head_dim, spec.v_head_dim
        scale = 1 / math.sqrt(E)
        common = dict(bench="cp_block", block="attention", model=model, tp=1, sequence_parallel=False,
                      tokens=S, seq_len=S, batch=1, hidden_size=spec.hidden_size, num_heads=H,
                      qk_head_dim=E, v_head_dim=Ev, num_experts="", top_k="", moe_intermediate_size="",
                      skew="", precision="bf16", flops=3.5 * attention_flops(1, S, H, E, Ev, causal=True),
                      split=block_split("cp_block", "attention", model, S), **tagged)
        for kind in kinds:
            comm = CommTimer(dev)
            step, _ = _cp_attention_fn(kind, H, S, E, Ev, scale, group, dev, rank, world, comm)
            times, comms, hosts, probe = probed_reps(step, dev, reps, warmup, comm, group)
            st = _row(rec, env, timer, times, comms if rank == 0 else [], hosts, cp=world, cp_kind=kind,
                      attn_kernel=_attn_kernel(kind, dev), **common, **probe)
            log(f"cp_block attention {model} S={S} cp{world} {kind}: {st['time_s'] * 1e3:.2f} ms "
                f"({_attn_kernel(kind, dev)})")
            del step
            free_memory()
        if reference and rank == 0:
            step, kernel = _cp_attention_fn("", H, S, E, Ev, scale, None, dev, 0, 1, None)
            times, _, hosts, probe = probed_reps(step, dev, reps, warmup, None, None)
            st = _row(rec, env, timer, times, [], hosts, cp=1, cp_kind="", attn_kernel=kernel, **common, **probe)
            log(f"cp_block attention {model} S={S} cp1: {st['time_s'] * 1e3:.2f} ms")
            del step
            free_memory()
        dist.barrier()
    for model, S in rotated(cp_mla_cases(quick), round_index or 0):
        if agreed_over(deadline, dev):
            log("cp blocks: deadline reached")
            return
        spec = get_spec(model)
        common = dict(bench="cp_block", block="mla", model=model, tp=1, sequence_parallel=False,
                      tokens=S, seq_len=S, batch=1, hidden_size=spec.hidden_size, num_heads=spec.num_heads,
                      qk_head_dim=spec.qk_nope_head_dim + spec.qk_rope_head_dim, v_head_dim=spec.v_head_dim,
                      num_experts="", top_k="", moe_intermediate_size="", skew="", precision="bf16",
                      flops=_tp_flops("mla", spec, S), split=block_split("cp_block", "mla", model, S), **tagged)
        for kind in kinds:
            step, block = _cp_mla_fn(spec, group, S, dev, rank, world, kind)
            block.comm = CommTimer(dev)
            times, comms, hosts, probe = probed_reps(step, dev, reps, warmup, block.comm, group)
            st = _row(rec, env, timer, times, comms if rank == 0 else [], hosts, cp=world, cp_kind=kind,
                      attn_kernel=_attn_kernel(kind, dev), **common, **probe)
            log(f"cp_block mla {model} S={S} cp{world} {kind}: {st['time_s'] * 1e3:.2f} ms")
            del step, block
            free_memory()
        if reference and rank == 0:
            step, block = _cp_mla_fn(spec, None, S, dev, 0, 1)
            times, _, hosts, probe = probed_reps(step, dev, reps, warmup, None, None)
            st = _row(rec, env, timer, times, [], hosts, cp=1, cp_kind="", attn_kernel="sdpa", **common, **probe)
            log(f"cp_block mla {model} S={S} cp1: {st['time_s'] * 1e3:.2f} ms")
            del step, block
            free_memory()
        dist.barrier()
