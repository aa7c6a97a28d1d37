"""The fast screen of a plan search: a closed-form step time and the memory check, in about a
millisecond per candidate, so that thousands of candidates can be ranked before the step simulator
(twin.training.step, ~0.1-1 s each) sees the best of them.

Step time. The op costs are the simulator's own: one MoE block and one dense block (plus the
embedding, head and MTP modules) are costed by `twin.training.step.StepCosts`, on a model cut to
those few blocks, and memoised on everything that changes them (GPU, TP, EP, CP, micro-batch, SMs,
precision, recomputation, sequence parallelism, TP overlap, ...) but not on what only arranges them
(PP, schedule, virtual stages, GPU count, ZeRO). The task builders put in the TP/SP collectives
around attention and dense FFN parts and the context-parallel K/V exchange (ring or all-gather)
exactly as the simulator does. Each pipeline op then lasts as its chain of tasks does, run one
after the other (F, B, W, BW); an overlapped F&B pair lasts as long as the busier of its compute
and communication streams. A rank's busy time is the sum over its program's ops (interleaved
1F1B: its V chunks' stages); the step is the busiest rank plus the schedule's closed-form bubble
(the registry's formula, twin.core.schedules, with V for interleaved 1F1B), the pipeline's p2p
fill, and the data-parallel tail of the simulator (`dp_tail_s` of each rank's dense and routed-expert
parameters; under ZeRO-3 with PP the stages' post-backward reduce-scatters, `fsdp_post_backward_tail_s`;
a tied embedding's all-reduce between the end stages, `tied_embedding_all_reduce_s`; with
plan.grad_reduce_groups 'by_group', real/'s all-reduces, `real_reductions_s`, from the simulator's costs). ZeRO-3 (FSDP's per-block
parameter gathers and gradient scatters, on the first forward and last weight gradient of a stage
under PP) and per-layer routing loads take the simulator's StepCosts of the whole model and its
chains op by op (slower, same closed form). What the screen leaves out, the simulator has: the
exact interleaving of the two streams, uneven stages. Its error against the simulator is measured
on every simulated candidate and reported (median, P90).

Memory. The same sum as `twin.training.step.rank_memory` (weights, gradients, optimizer state by
ZeRO stage, activations of the sets alive at the rank's peak, all-to-all buffers, CP K/V and TP
gather buffers, ZeRO-3's gathered working set), from the same memory functions, by block kind per
stage, with the peak found once per (schedule, pp, micro-batches, V) and memoised; a test keeps
the two equal for CP, SP, ZeRO-3 and interleaved plans. ZeRO-2 under PP with plan.pp_grad_sync
'every_backward' also holds the gradients waiting in its queue of reduce-scatters, which depend on
when each op ends: for those plans alone (and only where the count without them fits) the screen
simulates the pipeline and counts them as the simulator does (step.grad_sync_queue, with_grad_queue),
so that both refuse the same plans.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from dataclasses import dataclass

from twin.core.scenario import Scenario
from twin.core.schedules import SCHEDULES, PipeOp, Schedule, build_schedule
from twin.core.units import GIB
from twin.costs import comm, memory
from twin.costs.flops import ALL_TO_ALL_KINDS, BF16_BYTES
from twin.costs.profile import Profile
from twin.sim.pipeline import simulate_pipeline
from twin.training import step as step_module
from twin.training.step import (StepCosts, balanced_stage_layers, board_pace_factor, dp_reduce_scatters_per_step,
                                 dp_tail_s, exposed_reduce_scatter_s, fsdp_post_backward_tail_s, grad_sync_queue,
                                 live_frontier, later_chunk_gathers, local_tokens, megatron_delays_grad_sync,
                                 megatron_grad_prep_s, param_gather_release_s, peak_live_bytes, pipeline_hop_same_node,
                                 plan_profile, rank_memory, rank_params, ranks_holding, real_reductions_s, routing_loads,
                                 runtime_needs, stage_layers, syncs_every_backward_under_pp, tied_embedding_all_reduce_s,
                                 with_grad_queue)

# plan fields that arrange blocks on ranks but don't change what one block costs on a GPU
_ARRANGING = {"pp", "schedule", "virtual_stages", "stage_cut", "zero_stage", "optimizer_bytes_per_param", "overlap_dp_comm",
              "param_gather_kind"}


@dataclass(frozen=True)
class ChainTimes:
    """One op's work on one stage, by stream (seconds)."""

    compute_s: float = 0.0
    comm_s: float = 0.0

    @property
    def serial_s(self) -> float:
        return self.compute_s + self.comm_s

    def __add__(self, other: "ChainTimes") -> "ChainTimes":
        return ChainTimes(self.compute_s + other.compute_s, self.comm_s + other.comm_s)

    def scaled(self, k: float) -> "ChainTimes":
        return ChainTimes(self.compute_s * k, self.comm_s * k)


@dataclass(frozen=True)
class BlockTimes:
    """A block's (or the embedding's, or the head's) forward, input-gradient backward (with its
    recomputation) and weight-gradient work."""

    f: ChainTimes
    b: ChainTimes
    w: ChainTimes

    def __add__(self, other: "BlockTimes") -> "BlockTimes":
        return BlockTimes(self.f + other.f, self.b + other.b, self.w + other.w)

    def scaled(self, k: float) -> "BlockTimes":
        return BlockTimes(self.f.scaled(k), self.b.scaled(k), self.w.scaled(k))


ZERO = BlockTimes(ChainTimes(), ChainTimes(), ChainTimes())


@dataclass(frozen=True)
class Estimate:
    """The screen's verdict on one candidate."""

    fits: bool
    step_time_s: float
    memory_per_gpu_bytes: float
    memory_breakdown_bytes: dict
    reason: str = ""


def _sum(tasks) -> ChainTimes:
    comp = sum(t.duration_s for t in tasks if t.stream == "compute")
    return ChainTimes(comp, sum(t.duration_s for t in tasks) - comp)


@dataclass(frozen=True)
class _Pieces:
    """What one candidate's blocks cost and hold, memoised by _pieces."""

    dense: BlockTimes
    moe: BlockTimes
    first_extra: BlockTimes     # embedding
    last_extra: BlockTimes      # head and MTP modules
    a2a_bytes: float            # largest all-to-all of a MoE block (send), 0 for a dense model


def _block_key(sc: Scenario) -> tuple:
    plan = tuple((f.name, getattr(sc.plan, f.name)) for f in dataclasses.fields(sc.plan) if f.name not in _ARRANGING)
    # the default profile's compute pace depends on the job's GPU count (ADOPT_SLOWEST_BOARD_PACE): keyed by its factor;
    # and by the model switches and TE's overlap figures, which tests and scripts set in one process (s30mlm)
    return (sc.model, sc.cluster.gpu, sc.workload, sc.moe, plan, board_pace_factor(sc), step_module.switch_state(),
            step_module.te_traffic_figures())


_PIECES: dict[tuple, _Pieces] = {}   # _block_key -> _Pieces; a search makes a few hundred
_MAX_PIECES = 8192


def _pieces_for(sc: Scenario) -> _Pieces:
    key = _block_key(sc)
    hit = _PIECES.get(key)
    if hit is None:
        if len(_PIECES) >= _MAX_PIECES:
            _PIECES.clear()
        hit = _PIECES[key] = _pieces(sc)
    return hit


def _pieces(sc: Scenario) -> _Pieces:
    """Cost one dense and one MoE block with the simulator's StepCosts, on the model cut to the
    dense blocks' first and the first MoE block (the MTP modules kept: they cost as in the full model)."""
    m = sc.model
    cut_layers = min(m.num_layers, m.num_dense_layers + 1)
    cut = dataclasses.replace(sc, model=dataclasses.replace(m, num_layers=cut_layers))
    profile = plan_profile(sc)
    costs = StepCosts(cut, build_schedule("1f1b", 1, 1), profile, routing_loads(cut), 1.0, share_blocks=True)

    def times(ops) -> BlockTimes:
        return BlockTimes(_sum(costs._forward_tasks(ops)), _sum(costs._backward_tasks(ops, False)),
                          _sum(costs._weight_tasks(ops)))

    dense_ops = costs.blocks[0].ops if m.num_dense_layers or not m.is_moe else None
    moe_ops = costs.blocks[cut_layers - 1].ops if m.is_moe else None
    a2a = max((op.bytes for op in moe_ops or () if op.kind in ALL_TO_ALL_KINDS), default=0.0)
    mtp_buffers = max((op.bytes for op in costs.extra_last if op.kind in ALL_TO_ALL_KINDS), default=0.0)
    return _Pieces(dense=times(dense_ops) if dense_ops else ZERO, moe=times(moe_ops) if moe_ops else ZERO,
                   first_extra=times(costs.extra_first), last_extra=times(costs.extra_last),
                   a2a_bytes=max(a2a, mtp_buffers))


@functools.lru_cache(maxsize=512)
def _program_counts(name: str, pp: int, n: int, virtual_stages: int = 1) -> tuple:
    """Per rank: Counter of its ops as (kind, forward stage, backward stage, input-only backward),
    and the peaks of live activation sets as per-chunk counts (the frontier of the walk: any
    weighting of chunks peaks at one of them)."""
    s = build_schedule(name, pp, n, virtual_stages)
    out = []
    for rank, program in enumerate(s.programs):
        raw = Counter((op.kind, op.chunk, op.b_chunk, op.b_split) for op in program)
        ops = Counter()
        for (kind, chunk, b_chunk, split), k in raw.items():
            ops[(kind, s.stage_of(rank, chunk), s.stage_of(rank, b_chunk) if kind == "FB" else None, split)] += k
        frontier = live_frontier(name, pp, n, virtual_stages, rank)   # the simulator's own memory walk
        out.append((tuple((kind, fs, bs, split, k) for (kind, fs, bs, split), k in ops.items()), tuple(frontier)))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _stage_kinds(num_layers: int, num_dense_layers: int, is_moe: bool, num_stages: int) -> tuple[tuple[int, int], ...]:
    """(dense blocks, MoE blocks) of each model stage (twin.training.step.stage_layers)."""
    out = []
    for rng in stage_layers(num_layers, num_stages):
        dense = sum(1 for layer in rng if layer < num_dense_layers or not is_moe)
        out.append((dense, len(rng) - dense))
    return tuple(out)


def _kinds(sc: Scenario, num_stages: int) -> tuple[tuple[int, int], ...]:
    m = sc.model
    return _stage_kinds(m.num_layers, m.num_dense_layers, m.is_moe, num_stages)


def _balanced_kinds(sc: Scenario, pieces: _Pieces, num_stages: int) -> tuple[tuple[int, int], ...]:
    """(dense blocks, MoE blocks) of each model stage under plan.stage_cut 'balanced': the cut
    StepCosts makes (balanced_stage_layers on the compute-stream seconds of each block and of the
    embedding and head/MTP), from the screen's one dense and one MoE block."""
    m = sc.model

    def compute_s(t: BlockTimes) -> float:
        return t.f.compute_s + t.b.compute_s + t.w.compute_s

    dense = [layer < m.num_dense_layers or not m.is_moe for layer in range(m.num_layers)]
    block_s = [compute_s(pieces.dense if d else pieces.moe) for d in dense]
    cut = balanced_stage_layers(block_s, compute_s(pieces.first_extra), compute_s(pieces.last_extra), num_stages)
    return tuple((sum(dense[i] for i in rng), sum(not dense[i] for i in rng)) for rng in cut)


def _flat(t: BlockTimes) -> tuple[float, float, float, float, float, float]:
    """(F compute, F comm, B compute, B comm, W compute, W comm) seconds: the screen's hot loop
    works on plain floats."""
    return (t.f.compute_s, t.f.comm_s, t.b.compute_s, t.b.comm_s, t.w.compute_s, t.w.comm_s)


def _flat_stage_times(pieces: _Pieces, kinds: tuple[tuple[int, int], ...]) -> list[tuple]:
    """_stage_times as flat tuples (see _flat)."""
    d, m_, first, last_extra = _flat(pieces.dense), _flat(pieces.moe), _flat(pieces.first_extra), _flat(pieces.last_extra)
    last = len(kinds) - 1
    out = []
    for stage, (nd, nm) in enumerate(kinds):
        t = [nd * a + nm * b for a, b in zip(d, m_)]
        if stage == 0:
            t = [a + b for a, b in zip(t, first)]
        if stage == last:
            t = [a + b for a, b in zip(t, last_extra)]
        out.append(tuple(t))
    return out


def _busy(counts, stages: list[tuple]) -> list[float]:
    """Each rank's busy time: its ops' seconds (on flat stage times): F, B, W, BW run their chains' tasks one after the other; an overlapped F&B pair
    lasts as long as the busiest of its two streams or of its two chains times their counts."""
    busy = []
    for ops, _ in counts:
        total = 0.0
        for kind, fs, bs, split, k in ops:
            if kind == "FB":
                fc, fm = stages[fs][0], stages[fs][1]
                b = stages[bs]
                bc, bm = (b[2], b[3]) if split else (b[2] + b[4], b[3] + b[5])
                t = max(fc + bc, fm + bm, fc + fm, bc + bm)
            else:
                st = stages[fs]
                t = (st[0] + st[1] if kind == "F" else st[2] + st[3] + st[4] + st[5] if kind == "BW"
                     else st[2] + st[3] if kind == "B" else st[4] + st[5])
            total += k * t
        busy.append(total)
    return busy


def rank_memory_parts(sc: Scenario, kinds: tuple[tuple[int, int], ...], schedule: Schedule, peaks,
                      a2a_bytes: float) -> list[tuple[float, float, float, float, float, float, float]]:
    """What rank_memory (twin.training.step) sums on every pipeline rank, by block kind instead of
    by op (`kinds`: each stage's dense and MoE blocks): (dense parameters, expert parameters,
    live activations, communication buffers, ZeRO-3's gathered working set, what the loss's working
    set adds to the peak where counted, the block recomputed in the backward:
    memory.loss_working_bytes, memory.recompute_working_bytes). The same
    parameters, activations of the context-parallel rank's tokens, all-to-all, K/V-exchange and
    TP-gather buffers, from the same memory functions; twin.costs.memory.memory_breakdown turns
    them into bytes by component."""
    m, p = sc.model, sc.plan
    tokens = local_tokens(sc)
    last = len(kinds) - 1
    rp_dense = memory.block_params_on_gpu(m, True, p.tp, p.ep)
    rp_moe = memory.block_params_on_gpu(m, False, p.tp, p.ep)
    act_dense = memory.activation_bytes(m, True, p, tokens)
    act_moe = memory.activation_bytes(m, False, p, tokens)
    mtp_rp, mtp_act = (rp_moe, act_moe) if m.is_moe else (rp_dense, act_dense)
    rc_dense = memory.recompute_working_bytes(m, True, p, tokens)
    rc_moe = memory.recompute_working_bytes(m, False, p, tokens)
    embedding = m.vocab_size * m.hidden_size / p.tp
    extra_buffers = 0.0
    if p.cp > 1:   # ring: the chunk in hand and the one arriving; all-gather: the sequence's K/V
        kv_bytes = tokens * memory.kv_exchange_bytes_per_token(m, p.tp, p.kv_repeat)
        extra_buffers += kv_bytes * (2 if p.cp_kind == "ring" else p.cp)
    if p.tp > 1 and (p.sequence_parallel or m.is_moe):   # a gathered part input, beside its shard
        extra_buffers += tokens * m.hidden_size * BF16_BYTES
    out = []
    for rank in range(schedule.num_ranks):
        dense_p = expert_p = recompute = 0.0
        largest = memory.RankParams(0.0, 0.0)
        set_bytes = []
        chunk_params = []
        has_a2a = False
        for chunk in range(schedule.num_chunks):
            stage = schedule.stage_of(rank, chunk)
            n_dense, n_moe = kinds[stage]
            params_before = dense_p + expert_p
            dense_p += n_dense * rp_dense.dense + n_moe * rp_moe.dense
            expert_p += n_dense * rp_dense.expert + n_moe * rp_moe.expert
            acts = n_dense * act_dense + n_moe * act_moe
            # the simulator keeps the first largest block it meets (dense blocks come first)
            if n_dense and rp_dense.total > largest.total:
                largest = rp_dense
            if n_moe and rp_moe.total > largest.total:
                largest = rp_moe
            has_a2a |= m.is_moe and n_moe > 0
            recompute = max(recompute, rc_dense if n_dense else 0.0, rc_moe if n_moe else 0.0)
            if stage == 0:
                dense_p += embedding
            if stage == last:   # a tied head shares stage 0's weight on stage 0's rank, else a copy
                dense_p += 0 if m.tie_embeddings and rank in ranks_holding(schedule, 0) else embedding
                k = m.num_mtp_modules
                dense_p += k * (mtp_rp.dense + 2 * m.hidden_size * m.hidden_size)
                expert_p, acts = expert_p + k * mtp_rp.expert, acts + k * mtp_act
                has_a2a |= m.is_moe and k > 0
                recompute = max(recompute, (rc_moe if m.is_moe else rc_dense) if k else 0.0)
            set_bytes.append(acts)
            chunk_params.append(dense_p + expert_p - params_before)
        live = max((sum(c * b for c, b in zip(peak, set_bytes)) for peak in peaks[rank]), default=0.0)
        loss = 0.0
        loss_chunks = [c for c in range(schedule.num_chunks) if schedule.stage_of(rank, c) == last]
        if loss_chunks and memory.loss_kind(p) is not None:   # as rank_memory: walked on the last stage's rank
            ws = memory.loss_working_bytes(m, p, tokens)
            loss = max(0.0, peak_live_bytes(schedule.programs[rank], dict(enumerate(set_bytes)), loss_chunks[0], ws)
                       - live - recompute)
        buffers = 2 * (2 * a2a_bytes if has_a2a else 0.0) + extra_buffers
        if p.zero_stage < 3:
            gathered = 0.0
        elif p.pp == 1:   # resharded after every forward and backward: a couple of blocks at a time
            gathered = memory.fsdp_working_set_bytes(largest)
        else:             # with PP the stage stays gathered through the step
            gathered = memory.fsdp_working_set_bytes(memory.RankParams(dense_p, expert_p), resident_blocks=1)
        grads = None   # the base's gradients, unless counted when alive (as rank_memory)
        if (when := step_module.fsdp_grads_when_born(sc, schedule.num_ranks)) is not None:
            zero2 = when == "pp_zero2"   # as rank_memory
            pp = when in ("pp", "pp_zero2")
            base = memory.memory_breakdown(memory.RankParams(dense_p, expert_p), live, buffers, p, sc.dp * p.cp,
                                           gathered, loss, recompute)
            mem = step_module.fsdp_pp_grads_when_born(
                base, schedule.programs[rank], dict(enumerate(set_bytes)),
                {c: n * memory.GRAD_BYTES * pp for c, n in enumerate(chunk_params)},
                0.0 if zero2 else (dense_p + expert_p) * memory.WEIGHT_BYTES if pp else gathered, recompute,
                loss_chunks[0] if loss_chunks and memory.loss_kind(p) is not None else None,
                memory.loss_working_bytes(m, p, tokens) if loss_chunks else 0.0, acc_in_gradients=zero2)
            live, gathered, grads = mem["activations"], mem.get("fsdp_gathered", gathered), mem["gradients"]
            loss, recompute = mem.get("loss", 0.0), mem.get("recompute", 0.0)
        out.append((dense_p, expert_p, live, buffers, gathered, loss, recompute, grads))
    return out


def _worst_and_params(sc: Scenario, parts) -> tuple[int, dict, list[tuple[dict, memory.RankParams]]]:
    """The rank that needs the most memory and its breakdown, and one breakdown per distinct
    parameter holding with that holding (all the data-parallel tail depends on). memory_breakdown is
    a sum of components, so it is built once per parameter holding and the rank's activations and
    buffers put in."""
    p = sc.plan
    by_params: dict[tuple, dict] = {}
    worst, worst_total = None, -1.0
    for rank, (d, e, live, buf, g, loss, rc, grads) in enumerate(parts):
        base = by_params.get((d, e, g, grads))
        if base is None:
            base = memory.memory_breakdown(memory.RankParams(d, e), 0.0, 0.0, p, sc.dp * p.cp, g)
            base = by_params[d, e, g, grads] = base if grads is None else {**base, "gradients": grads}
        total = sum(base.values()) + live + buf + loss + rc
        if total > worst_total:
            worst, worst_total = (rank, base, live, buf, loss, rc), total
    rank, base, live, buf, loss, rc = worst
    return rank, {**base, "activations": live, "comm_buffers": buf, **({"recompute": rc} if rc else {}),
                  **({"loss": loss} if loss else {})}, [(b, memory.RankParams(k[0], k[1])) for k, b in by_params.items()]


_CHAIN_SUMS: dict = {}   # id(chain) -> (chain, its serial seconds, its ChainTimes): chains are shared tuples
_MAX_CHAIN_SUMS = 4096   # bounded: it holds the chains it has summed (a stage chain is a few hundred tasks)


def _chain_sums(chain) -> tuple:
    """(serial seconds, ChainTimes) of a chain of tasks, each summed once per chain tuple: StepCosts
    shares a stage's chain among the ranks and candidates that run it (s21ux)."""
    hit = _CHAIN_SUMS.get(id(chain))
    if hit is None or hit[0] is not chain:   # the entry holds its chain: the id stays its own
        if len(_CHAIN_SUMS) >= _MAX_CHAIN_SUMS:
            _CHAIN_SUMS.clear()
        hit = _CHAIN_SUMS[id(chain)] = (chain, sum(t.duration_s for t in chain), _sum(chain))
    return hit[1], hit[2]


def _chains_s(chains) -> float:
    """An op's seconds from its chains (StepCosts.chains): one chain runs its tasks one after the
    other; an overlapped F&B pair lasts as long as the busier of its streams (see _busy)."""
    if len(chains) == 1:
        return _chain_sums(chains[0])[0]
    f, b = _chain_sums(chains[0])[1], _chain_sums(chains[1])[1]
    return max(f.compute_s + b.compute_s, f.comm_s + b.comm_s, f.serial_s, b.serial_s)


@functools.lru_cache(maxsize=512)
def _op_counts(name: str, pp: int, n: int, virtual_stages: int, by_microbatch: bool) -> tuple:
    """Per rank: its program's ops counted as (kind, chunk, b_chunk, b_split, micro-batch,
    backward micro-batch) -> count, in first-seen order (the micro-batches 0 unless
    `by_microbatch`). A schedule's programs depend only on these arguments: counted once a
    schedule, not once a candidate (until s21ux ~10% of a plan search)."""
    s = build_schedule(name, pp, n, virtual_stages)
    return tuple(tuple(Counter((op.kind, op.chunk, op.b_chunk, op.b_split, op.microbatch if by_microbatch else 0,
                                op.b_microbatch if by_microbatch else 0) for op in program).items())
                 for program in s.programs)


def _busy_from_costs(sc: Scenario, costs: StepCosts) -> list[float]:
    """Each rank's busy time from the simulator's own chains of its ops (ZeRO-3's gathers and
    scatters included: ops are told apart by micro-batch where its first and last ones differ, as
    in step_time_lower_bound_s). compute_chains: the chains' tasks without the names of an F&B
    pair's parts, which a sum of durations does not read."""
    p = sc.plan
    counts = _op_counts(p.schedule, p.pp, sc.num_microbatches, p.virtual_stages, costs.fsdp)   # screen's schedule
    return [sum(n * _chains_s(costs.compute_chains(rank, PipeOp(kind, mb, chunk, b_mb, b_chunk, b_split)))
                for (kind, chunk, b_chunk, b_split, mb, b_mb), n in ops)
            for rank, ops in enumerate(counts)]


def _later_chunk_wait_s(sc: Scenario, costs: StepCosts, schedule, mems: list[dict], flat: list) -> float:
    """The screen's share of Megatron's later-chunk parameter all-gathers (step.later_chunk_gathers,
    which the simulator waits on): chunk c's gather is launched in the rank's first forward of
    chunk c - 1 and the interleaved warm-up runs PP forwards of chunk c - 1 before chunk c's first;
    what the gather outlasts them by, summed over the chunks, on the rank that waits most."""
    gathers = later_chunk_gathers(sc, costs, schedule, mems)
    if gathers is None:
        return 0.0
    pp = sc.plan.pp
    return max(sum(max(0.0, offset_s + gather_s - pp * sum(flat[schedule.stage_of(r, c - 1)][:2]))
                   for c, (offset_s, gather_s) in enumerate(gathers[r]) if c > 0)
               for r in range(schedule.num_ranks))


def screen(sc: Scenario, profile: Profile | None = None) -> Estimate:
    """Closed-form step time and memory of a checked training scenario (see the module docstring).
    Routing loads other than one scalar for every layer (a [moe] load model) and ZeRO-3 (whose
    first forwards and last weight gradients carry the parameter gathers and gradient scatters)
    take the full StepCosts of the scenario, still without a simulation."""
    p, gpu = sc.plan, sc.gpu
    profile = plan_profile(sc, profile)
    n = sc.num_microbatches
    v = p.virtual_stages
    schedule = build_schedule(p.schedule, p.pp, n, v)
    kinds = _kinds(sc, schedule.num_model_stages)
    counts = _program_counts(p.schedule, p.pp, n, v)
    loads = routing_loads(sc)
    gather_wait_s = 0.0
    by_group = None       # plan.grad_reduce_groups 'by_group': real/'s reductions per rank, where asked
    queue_tail_s = None   # ZeRO-2's every-backward queue: its drain after the last compute, where simulated
    # ZeRO-3, ZeRO-2 under PP (FSDP2's FP32 gradient accumulation after each backward) and a chained
    # parameter gather take the simulator's chains
    if (isinstance(loads, (int, float)) and p.zero_stage < 3 and not (p.zero_stage == 2 and p.pp > 1)
            and p.param_gather_kind == "ideal" and p.grad_reduce_groups != "by_group"):
        pieces = _pieces_for(sc)
        if p.stage_cut == "balanced":
            kinds = _balanced_kinds(sc, pieces, schedule.num_model_stages)
        worst, worst_mem, param_mems = _worst_and_params(
            sc, rank_memory_parts(sc, kinds, schedule, [peaks for _, peaks in counts], pieces.a2a_bytes))
        flat = _flat_stage_times(pieces, kinds)
        busy = _busy(counts, flat)
        fsdp_tail_s = 0.0
    else:   # the simulator's costs of every stage and op (slower, same closed form)
        costs = StepCosts(sc, schedule, profile, loads, 1.0, share_blocks=True)
        mems = rank_memory(sc, costs)
        worst = max(range(len(mems)), key=lambda r: sum(mems[r].values()))
        worst_mem, param_mems = mems[worst], list(zip(mems, rank_params(sc, costs)))
        if p.grad_reduce_groups == "by_group":   # real/pipeline's reductions per rank (step.real_reductions_s)
            by_group = real_reductions_s(sc, costs, schedule, gpu, profile)
        flat = [_flat(BlockTimes(*(_chain_sums(costs._chain(st, kind))[1] for kind in ("F", "B", "W"))))
                for st in range(schedule.num_model_stages)]
        busy = _busy_from_costs(sc, costs)
        # ZeRO-3 under PP: the stages' reduce-scatters after their last backward (the simulator's tail)
        fsdp_tail_s = max(fsdp_post_backward_tail_s(costs, schedule, r) for r in range(schedule.num_ranks))
        # Megatron's chained parameter all-gather: a rank's first forward starts no earlier than its
        # gather allows, the pipeline's warm-up held by the part its upstream forwards do not cover
        release = param_gather_release_s(sc, costs, schedule, mems)
        before = [sum(sum(flat[k][:2]) for k in range(schedule.stage_of(r, 0))) for r in range(schedule.num_ranks)]
        gather_wait_s = max(max(0.0, release[r] - before[r]) for r in range(schedule.num_ranks))
        gather_wait_s += _later_chunk_wait_s(sc, costs, schedule, mems, flat)
        if syncs_every_backward_under_pp(sc) and sum(worst_mem.values()) <= step_module.training_capacity_bytes(gpu):
            # ZeRO-2's queue of reduce-scatters after every backward: the gradients it holds depend on
            # when each op ends, so the pipeline is simulated as the simulator does (these plans only,
            # and only where the count without them fits): the same count, the same verdict
            pipe = simulate_pipeline(schedule, costs, release_s=release if any(release) else None,
                                     extra_needs=runtime_needs(sc, schedule))
            queue = grad_sync_queue(sc, costs, schedule, pipe.op_spans, gpu, 1.0)
            mems = with_grad_queue(mems, queue)
            worst = max(range(len(mems)), key=lambda r: sum(mems[r].values()))
            worst_mem, param_mems = mems[worst], list(zip(mems, rank_params(sc, costs)))
            queue_tail_s = max(max(0.0, q[0] - pipe.last_compute_end_s[r]) for r, q in enumerate(queue))
    need = sum(worst_mem.values())

    # the bubble formula's op times: a stage's, or with virtual stages a rank's whole chunks' (the
    # registry's formula divides by V)
    if SCHEDULES[p.schedule].virtual:
        per_rank = [tuple(map(sum, zip(*(flat[schedule.stage_of(r, c)] for c in range(schedule.num_chunks)))))
                    for r in range(schedule.num_ranks)]
    else:
        per_rank = flat
    fc, fm, bc, bm, wc, wm = max(per_rank, key=sum)
    f_s, w_s = fc + fm, wc + wm
    b_s = bc + bm + w_s
    fb_s = max(fc + bc + wc, fm + bm + wm, f_s, b_s)   # an F&B pair with a full backward (_busy)
    bubble_s = max(0.0, SCHEDULES[p.schedule].bubble_s(p.pp, f_s, b_s, w_s, fb_s, v))
    tokens = local_tokens(sc)
    pp_same_node = sc.dp * p.tp * p.cp < gpu.gpus_per_node
    p2p_s = comm.p2p_time_s(tokens * sc.model.hidden_size * BF16_BYTES / p.tp, gpu, pp_same_node)
    if step_module.ADOPT_PP_PAIR_SPANS and p.pp > 1:   # the mean of the pipeline's hops, each from the layout
        hops = [(r, (r + 1) % p.pp) for r in range(p.pp - 1 + (v > 1))]
        p2p_s = sum(comm.p2p_time_s(tokens * sc.model.hidden_size * BF16_BYTES / p.tp, gpu,
                                    pipeline_hop_same_node(sc, a, b)) for a, b in hops) / len(hops)
    makespan = max(busy) + bubble_s + 2 * (p.pp * v - 1) * p2p_s
    tails = [dp_tail_s(sc, b, held, gpu, profile, 1.0) for b, held in param_mems]   # depends on a rank's parameters only
    if by_group is not None:   # each rank's (DualPipe pair, data) all-reduces after its last compute, as the simulator
        tails = [(pair + data, opt, ag) for (pair, data), (_, opt, ag) in zip(by_group, tails)]
    # the reduce-scatter after the last backward (one chunk's, with virtual stages), less what
    # plan.overlap_grad_reduce hides behind it. Under plan.pp_grad_sync 'every_backward' the queue of
    # reduce-scatters beside the pipeline (step.grad_sync_queue, simulated above where the plan's count
    # without its waiting gradients fits) drains after the last compute instead
    chunk_b_s = b_s / v if SCHEDULES[p.schedule].virtual else b_s
    rs_s = exposed_reduce_scatter_s(sc, max(t[0] for t in tails), chunk_b_s) * dp_reduce_scatters_per_step(sc)
    if queue_tail_s is not None:   # the simulator's tail for the every-backward queue (step.simulate_step)
        rs_s = queue_tail_s
    if by_group is not None:   # real/'s all-reduces run after the rank's last compute, none overlapped (simulate_step)
        rs_s = max(t[0] for t in tails)
    if p.overlap_grad_reduce and p.grad_buckets == "megatron":
        # Megatron's one bucket on the later pipeline ranks (step.dp_reduce_after_s): rank r's
        # reduce-scatter starts at its last backward's end, about r chunk backwards before rank 0's,
        # once its bucket is prepared (norm and 1/DP scaling, step.megatron_grad_prep_s), which rank 0
        # does beside its last backward
        prep = [megatron_grad_prep_s(sc, held.total, profile, r == 0) for r, (_, held) in enumerate(param_mems)]
        # under the default --delay-grad-reduce with interleaving (step.megatron_delays_grad_sync) rank 0's
        # first chunk, its last one reduced, goes only after its last backward, its buckets prepared first
        first = prep[0] + tails[0][0] / v if megatron_delays_grad_sync(sc) else max(rs_s, prep[0])
        rs_s = max([first] + [prep[r] + t[0] - r * chunk_b_s for r, t in enumerate(tails) if r > 0])
    # a tied embedding's copies summed between the end stages (the simulator's tail)
    measured = profile.collectives if profile.gpu == sc.cluster.gpu else {}
    tied_s = tied_embedding_all_reduce_s(sc, schedule, gpu, measured)
    step = (makespan + gather_wait_s + rs_s + fsdp_tail_s + tied_s + max(t[1] for t in tails)
            + (0.0 if p.overlap_dp_comm else max(t[2] for t in tails)))
    if need > step_module.training_capacity_bytes(gpu):
        return Estimate(False, step, need, worst_mem,
                        f"out of memory on pipeline rank {worst}: needs {need / GIB:.1f} GiB of {step_module.training_capacity_bytes(gpu) / GIB:.1f} GiB")
    return Estimate(True, step, need, worst_mem)
