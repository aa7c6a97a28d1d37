"""One training step of the whole job: cost functions -> op chains -> SimPy pipeline -> StepResult.

Symmetry: the job is DP x EP x PP x TP, but every pipeline is alike, so one representative pipeline
(all PP ranks) is simulated at op granularity. Expert parallelism enters through the per-GPU op
shapes (local experts, rows received, all-to-all bytes over IB and NVLink with node-limited
routing); data parallelism through the gradient reduce-scatter / all-gather tail.

Each block is split as DualPipe splits it: attention and MLP compute on the compute stream,
dispatch and combine on the communication stream. An F op runs its blocks' tasks in sequence; an
overlapped FB pair runs the forward and the backward chains concurrently, so one micro-batch's
all-to-all hides behind the other's computation as far as the streams allow.
"""

from __future__ import annotations

import dataclasses
import functools

from twin.costs import comm, compute, memory
from twin.costs.flops import (ALL_TO_ALL_KINDS, BF16_BYTES, GEMM_KINDS, Op, OpKind, attention_ops, dense_ffn_ops,
                              embedding_ops, head_ops, moe_ops, train_flops_per_token)
from twin.costs.profile import Profile, load_profile
from twin.moe.load import load_model_of
from twin.moe.placement import scenario_layer_loads
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.training.results import Perturb, StepResult
from twin.core.scenario import Scenario
from twin.sim.pipeline import Event, PipelineResult, Task, simulate_pipeline
from twin.core.schedules import PipeOp, Schedule, build_schedule
from twin.core.specs import GPUSpec
from twin.core.units import GIB


def stage_layers(num_layers: int, num_stages: int) -> list[range]:
    """Blocks per model stage: as even as possible, the remainder going to middle stages so the
    first stage (embedding) and the last (head, MTP) carry fewer blocks."""
    base, extra = divmod(num_layers, num_stages)
    sizes = [base] * num_stages
    for i in range(extra):
        sizes[1 + i if num_stages > 1 and extra < num_stages - 1 else i] += 1
    out, start = [], 0
    for size in sizes:
        out.append(range(start, start + size))
        start += size
    return out


@dataclasses.dataclass(frozen=True)
class _Block:
    """One block's ops on one GPU, grouped the way they are scheduled."""

    ops: tuple[Op, ...]
    is_moe: bool


def _layer_load(imbalance, layer: int):
    """A layer's routing load: one scalar for all layers, or a per-layer sequence (twin.moe)."""
    return imbalance[layer] if isinstance(imbalance, (list, tuple)) else imbalance


def routing_loads(sc: Scenario, perturb: Perturb = Perturb()):
    """What the MoE ops get as routing load: `perturb.routing_imbalance` (absolute scalar) if
    given; else the scenario's [moe] load model (per-layer ExpertLoads from twin.moe.placement,
    scaled by workload.routing_imbalance) if it has one; else workload.routing_imbalance."""
    if perturb.routing_imbalance is not None:
        return perturb.routing_imbalance
    spec = getattr(sc, "moe", None)
    model = load_model_of(spec) if spec is not None else None
    if model is None or not sc.model.is_moe:
        return sc.workload.routing_imbalance
    return scenario_layer_loads(sc, model, sc.workload.routing_imbalance)


def _block_ops(sc: Scenario, layer: int, imbalance) -> _Block:
    m, p, w = sc.model, sc.plan, sc.workload
    tokens = sc.tokens_per_microbatch
    ops = attention_ops(m, p.micro_batch_seqs, w.seq_len, p.tp, w.causal)
    dense = layer < m.num_dense_layers or not m.is_moe
    if dense:
        ops += dense_ffn_ops(m, tokens, p.tp)
    else:
        ops += moe_ops(m, tokens // p.tp, p.ep, sc.gpu.gpus_per_node, p.max_nodes_per_token, _layer_load(imbalance, layer),
                       dispatch_bytes_per_elem=1 if p.gemm_precision == "fp8" else BF16_BYTES)
    return _Block(tuple(ops), not dense)


class StepCosts:
    """OpCosts for the pipeline engine: chains of tasks per (rank, op), built once per stage."""

    def __init__(self, sc: Scenario, schedule: Schedule, profile: Profile, imbalance, link_bw_scale: float):
        """imbalance: a max/mean ratio for every MoE layer, or a per-layer list of ratios or
        ExpertLoads (see routing_loads)."""
        self.sc, self.schedule, self.profile = sc, schedule, profile
        self.gpu: GPUSpec = sc.gpu
        self.link_bw_scale = link_bw_scale
        self._tasks_of: dict[tuple, tuple[Task, ...]] = {}
        self.sm_frac = compute.sm_fraction(self.gpu, sc.plan.comm_sms)
        self.untold_slowdown = None
        if not sc.plan.comm_sms_told and sc.plan.comm_sms > 0:
            try:
                self.untold_slowdown = {p: compute.untold_sm_slowdown(profile, p, sc.plan.comm_sms, self.gpu)
                                        for p in ("bf16", sc.plan.gemm_precision)}
            except ValueError as exc:
                raise ScenarioError("plan.comm_sms_told", False, f"true: {exc}") from None
        m = sc.model
        self.layers = stage_layers(m.num_layers, schedule.num_model_stages)
        self.blocks = [_block_ops(sc, layer, imbalance) for layer in range(m.num_layers)]
        last = schedule.num_model_stages - 1
        tokens = sc.tokens_per_microbatch
        self.extra_first = tuple(embedding_ops(m, tokens))
        head = head_ops(m, tokens, sc.plan.tp)
        mtp = []
        for _ in range(m.num_mtp_modules):  # an MTP module: projection, one block, its own logits
            mtp += [Op("mtp_proj", OpKind.GEMM, "mlp", tokens, m.hidden_size, 2 * m.hidden_size)]
            mtp += list(_block_ops(sc, m.num_layers - 1, imbalance).ops) + head
        self.extra_last = tuple(head + mtp)
        self.last_stage = last
        pp_same_node = sc.dp * sc.plan.tp < self.gpu.gpus_per_node
        self._p2p_s = comm.p2p_time_s(tokens * m.hidden_size * BF16_BYTES / sc.plan.tp, self.gpu, pp_same_node, link_bw_scale)

    # -- costs of op lists --------------------------------------------------------------------
    def _compute_s(self, ops, phase: str) -> float:
        prec = self.sc.plan.gemm_precision
        if self.untold_slowdown is None:
            return sum(compute.op_time_s(op, phase, prec, self.gpu, self.profile, self.sm_frac) for op in ops)
        return sum(compute.op_time_s(op, phase, prec, self.gpu, self.profile) * self._untold_factor(op, prec)
                   for op in ops)

    def _untold_factor(self, op: Op, prec: str) -> float:
        """Compute kernels not told the held SMs: the measured factor of the precision they run in
        (Op.precision where the op is pinned to one: the router, the attention core); bandwidth-bound
        kernels keep their time."""
        if op.kind in GEMM_KINDS or op.kind == OpKind.ATTENTION:
            return self.untold_slowdown[op.precision or prec]
        return 1.0

    def _comm_s(self, op: Op) -> float:
        return comm.all_to_all_time_s(op, self.gpu, self.link_bw_scale)

    def _segments(self, ops) -> list[tuple[str, list[Op]]]:
        """Split a block's ops at its all-to-alls: [('attn', ...), ('dispatch', [op]), ('mlp', ...), ...]."""
        segs: list[tuple[str, list[Op]]] = []
        for op in ops:
            key = op.kind if op.kind in ALL_TO_ALL_KINDS else op.part
            if segs and segs[-1][0] == key and key not in ALL_TO_ALL_KINDS:
                segs[-1][1].append(op)
            else:
                segs.append((key, [op]))
        return segs

    def _memo(self, key: tuple, build) -> list[Task]:
        """Task lists per (kind, block ops): blocks with the same ops (every MoE layer under one
        routing load) are costed once per step instead of once per stage and op kind."""
        hit = self._tasks_of.get(key)
        if hit is None:
            hit = self._tasks_of[key] = tuple(build())
        return list(hit)

    def _forward_tasks(self, ops) -> list[Task]:
        return self._memo(("F", tuple(ops)), lambda: self._build_forward_tasks(ops))

    def _build_forward_tasks(self, ops) -> list[Task]:
        tasks = []
        for key, seg in self._segments(ops):
            if key in ALL_TO_ALL_KINDS:
                tasks.append(Task("comm", self._comm_s(seg[0]), key.value))
            else:
                tasks.append(Task("compute", self._compute_s(seg, "fwd"), f"{key}_fwd"))
        return tasks

    def _backward_tasks(self, ops, with_weight: bool) -> list[Task]:
        return self._memo(("B", with_weight, tuple(ops)), lambda: self._build_backward_tasks(ops, with_weight))

    def _build_backward_tasks(self, ops, with_weight: bool) -> list[Task]:
        """Input-gradient backward of a block (reverse order); with_weight adds each segment's
        weight gradient right after its input gradient (a full, unsplit backward)."""
        recompute = self.sc.plan.recompute
        tasks = []
        if recompute == "full":
            tasks += [dataclasses.replace(t, name="recompute_" + t.name) for t in self._forward_tasks(ops)]
        segments = self._segments(ops)
        comm_op = {key: seg[0] for key, seg in segments if key in ALL_TO_ALL_KINDS}
        for key, seg in reversed(segments):
            if key in ALL_TO_ALL_KINDS:
                # the gradient of a combine travels like a dispatch (to the experts, in FP8: V3
                # §3.3.3 quantizes the activation gradient before the MoE down-projections) and
                # the gradient of a dispatch like a combine (back to the tokens, kept in BF16)
                twin = comm_op.get(OpKind.DISPATCH if key == OpKind.COMBINE else OpKind.COMBINE, seg[0])
                tasks.append(Task("comm", self._comm_s(twin), f"{key}_bwd"))
                continue
            t = self._compute_s(seg, "bwd_input")
            if recompute == "selective":
                t += self._compute_s([op for op in seg if op.recompute], "fwd")
            tasks.append(Task("compute", t, f"{key}_bwd_input"))
            if with_weight:
                tasks.append(Task("compute", self._compute_s(seg, "bwd_weight"), f"{key}_bwd_weight"))
        return tasks

    def _weight_tasks(self, ops) -> list[Task]:
        return self._memo(("W", tuple(ops)), lambda: self._build_weight_tasks(ops))

    def _build_weight_tasks(self, ops) -> list[Task]:
        return [Task("compute", self._compute_s(seg, "bwd_weight"), f"{key}_bwd_weight")
                for key, seg in reversed(self._segments(ops)) if key not in ALL_TO_ALL_KINDS]

    def stage_ops(self, stage: int) -> list[tuple[Op, ...]]:
        """Per block op tuples of a model stage, the embedding and head folded into its ends."""
        blocks = [self.blocks[layer].ops for layer in self.layers[stage]]
        if stage == 0:
            blocks = [self.extra_first + (blocks[0] if blocks else ())] + blocks[1:]
        if stage == self.last_stage:
            blocks = blocks + [self.extra_last]
        return blocks

    @functools.cache
    def _chain(self, stage: int, kind: str) -> tuple[Task, ...]:
        blocks = self.stage_ops(stage)
        tasks: list[Task] = []
        if kind == "F":
            for ops in blocks:
                tasks += self._forward_tasks(ops)
        elif kind in ("B", "BW"):
            for ops in reversed(blocks):
                tasks += self._backward_tasks(ops, with_weight=kind == "BW")
        elif kind == "W":
            for ops in reversed(blocks):
                tasks += self._weight_tasks(ops)
        return tuple(_merge(tasks))

    @functools.cache
    def _op_chains(self, stage_f: int | None, stage_b: int | None, kind: str, b_split: bool):
        if kind == "FB":
            f = tuple(dataclasses.replace(t, part="F") for t in self._chain(stage_f, "F"))
            b = tuple(dataclasses.replace(t, part="B") for t in self._chain(stage_b, "B" if b_split else "BW"))
            return (f, b)
        return (self._chain(stage_f if stage_f is not None else stage_b, kind),)

    def chains(self, rank: int, op: PipeOp):
        s = self.schedule
        if op.kind == "FB":
            return self._op_chains(s.stage_of(rank, op.chunk), s.stage_of(rank, op.b_chunk), "FB", op.b_split)
        return self._op_chains(s.stage_of(rank, op.chunk), None, op.kind, False)

    def p2p_s(self, src_rank: int, dst_rank: int, kind: str) -> float:
        return self._p2p_s


def _merge(tasks: list[Task]) -> list[Task]:
    """Join consecutive tasks of one stream and name (fewer SimPy events, same timeline)."""
    out: list[Task] = []
    for t in tasks:
        if out and out[-1].stream == t.stream and out[-1].name == t.name:
            out[-1] = dataclasses.replace(out[-1], duration_s=out[-1].duration_s + t.duration_s)
        else:
            out.append(t)
    return out


def peak_live_bytes(program, set_bytes: dict[int, float]) -> float:
    """Largest sum of activation sets alive on a rank, walking its program in order: a set is
    born with its forward and freed when its input-gradient backward (B or BW) ends."""
    live = peak = 0.0
    for op in program:
        if op.forward_part is not None:
            live += set_bytes[op.forward_part[1]]
            peak = max(peak, live)
        if op.backward_part is not None:
            live -= set_bytes[op.backward_part[1]]
    return peak


def rank_memory(sc: Scenario, costs: StepCosts) -> list[dict]:
    """Memory breakdown (bytes) of every pipeline rank."""
    m, p = sc.model, sc.plan
    s = costs.schedule
    tokens = sc.tokens_per_microbatch // p.tp

    def is_dense(layer: int) -> bool:
        return layer < m.num_dense_layers or not m.is_moe

    out = []
    for rank in range(s.num_ranks):
        dense = expert = buffers = 0.0
        set_bytes = {}
        for chunk in range(s.num_chunks):
            stage = s.stage_of(rank, chunk)
            acts = 0.0
            for layer in costs.layers[stage]:
                rp = memory.block_params_on_gpu(m, is_dense(layer), p.tp, p.ep)
                dense, expert = dense + rp.dense, expert + rp.expert
                acts += tokens * memory.activation_bytes_per_token(m, is_dense(layer), p)
            if stage == 0:
                dense += m.vocab_size * m.hidden_size / p.tp
            if stage == costs.last_stage:
                dense += 0 if m.tie_embeddings else m.vocab_size * m.hidden_size / p.tp
                for _ in range(m.num_mtp_modules):
                    rp = memory.block_params_on_gpu(m, not m.is_moe, p.tp, p.ep)
                    dense += rp.dense + 2 * m.hidden_size * m.hidden_size
                    expert += rp.expert
                    acts += tokens * memory.activation_bytes_per_token(m, not m.is_moe, p)
            set_bytes[chunk] = acts
            for ops in costs.stage_ops(stage):
                for op in ops:
                    if op.kind in ALL_TO_ALL_KINDS:
                        buffers = max(buffers, 2 * op.bytes)  # send + receive of one all-to-all
        live = peak_live_bytes(s.programs[rank], set_bytes)
        # two sets of all-to-all buffers: an overlapped F&B pair has two micro-batches in flight
        out.append(memory.memory_breakdown(memory.RankParams(dense, expert), live, 2 * buffers, p, sc.dp))
    return out


def dp_tail_s(sc: Scenario, breakdown: dict, gpu: GPUSpec, profile: Profile, link_bw_scale: float) -> tuple[float, float, float]:
    """(reduce-scatter, optimizer, all-gather) seconds after a rank's last backward. Gradients
    travel over the scale-out network (data-parallel peers are on other nodes) in BF16 - an
    assumption: the V3 report says gradients are accumulated in FP32 but not how they are sent."""
    p = sc.plan
    params = breakdown["weights"] / memory.WEIGHT_BYTES * (sc.dp if p.zero_stage >= 3 else 1)
    grad_bytes = params * BF16_BYTES
    same_node = sc.dp * p.tp <= gpu.gpus_per_node and p.pp == 1
    rs = comm.ring_collective_time_s(grad_bytes, sc.dp, gpu, same_node, link_bw_scale) if p.zero_stage >= 1 else 0.0
    ag = comm.ring_collective_time_s(grad_bytes, sc.dp, gpu, same_node, link_bw_scale) if p.zero_stage >= 1 else 0.0
    if p.zero_stage == 0:  # plain all-reduce = reduce-scatter + all-gather
        rs = 2 * comm.ring_collective_time_s(grad_bytes, sc.dp, gpu, same_node, link_bw_scale)
    # optimizer: read and write master weights and moments, read gradients, write BF16 weights
    opt_bytes = breakdown["optimizer"] * 2 + breakdown["gradients"] / (sc.dp if p.zero_stage < 2 and p.zero_stage >= 1 else 1) + breakdown["weights"]
    opt = compute.memory_time_s(opt_bytes, gpu, profile)
    return rs, opt, ag


def bubble_and_exposed_comm_s(pipe: PipelineResult) -> tuple[float, float]:
    """Pipeline bubble = time a rank has no task on any stream (waiting on other stages);
    exposed communication = time it communicates with its compute stream idle. Both are taken
    on the rank with the largest bubble."""
    worst = max(range(pipe.num_ranks), key=lambda r: pipe.makespan_s - pipe.covered_s[r])
    return pipe.makespan_s - pipe.covered_s[worst], pipe.covered_s[worst] - pipe.busy_s[worst]


def simulate_step(sc: Scenario, profile: Profile | None = None, perturb: Perturb = Perturb(),
                  record_events: bool = True, check_memory: bool = True) -> StepResult:
    """Simulate one optimizer step of a training scenario. `perturb` moves the uncertain inputs
    (sensitivity and Monte Carlo runs); `record_events` keeps the per-task event log that traces
    and Gantt charts need (totals are identical without it)."""
    gpu = sc.gpu
    profile = profile or load_profile(gpu.calibrated_as)
    if perturb.compute_eff_scale != 1.0 or perturb.memory_eff_scale != 1.0:
        profile = profile.scaled(perturb.compute_eff_scale, perturb.memory_eff_scale)
    link_bw_scale = perturb.link_bw_scale
    imbalance = routing_loads(sc, perturb)

    schedule = build_schedule(sc.plan.schedule, sc.plan.pp, sc.num_microbatches)
    costs = StepCosts(sc, schedule, profile, imbalance, link_bw_scale)
    # memory first: a plan that doesn't fit is refused before its pipeline is simulated
    mems = rank_memory(sc, costs)
    totals = [sum(b.values()) for b in mems]
    worst = max(range(len(totals)), key=totals.__getitem__)
    if check_memory and totals[worst] > gpu.hbm_bytes:
        raise InfeasiblePlan(
            f"out of memory on pipeline rank {worst}: needs {totals[worst] / GIB:.1f} GiB of {gpu.hbm_bytes / GIB:.1f} GiB "
            f"({', '.join(f'{k} {v / GIB:.1f} GiB' for k, v in mems[worst].items())})",
            breakdown=mems[worst])
    pipe = simulate_pipeline(schedule, costs, record_events=record_events)

    # step end: each rank reduce-scatters after its own last compute; then optimizer (+ all-gather)
    last_end = pipe.last_compute_end_s
    tails = [dp_tail_s(sc, mems[r], gpu, profile, link_bw_scale) for r in range(schedule.num_ranks)]
    end = max(max(last_end[r] + tails[r][0], pipe.makespan_s) for r in range(schedule.num_ranks))
    opt_s = max(t[1] for t in tails)
    ag_s = 0.0 if sc.plan.overlap_dp_comm else max(t[2] for t in tails)
    step_time = end + opt_s + ag_s

    bubble_s, exposed_comm_s = bubble_and_exposed_comm_s(pipe)
    tokens = sc.workload.tokens_per_step
    model_flops = train_flops_per_token(sc.model, sc.workload.seq_len, sc.workload.causal) * tokens
    n = sc.cluster.num_gpus
    busiest = max(range(schedule.num_ranks), key=lambda r: pipe.busy_s[r])
    op_time: dict[str, float] = dict(pipe.task_time_s[busiest])
    op_time["dp_reduce_scatter"] = tails[busiest][0]
    op_time["optimizer"] = opt_s
    op_time["dp_all_gather"] = tails[busiest][2] if not sc.plan.overlap_dp_comm else 0.0
    tail_events = tuple(_tail_events(last_end, tails, end, opt_s, ag_s)) if record_events else ()
    return StepResult(
        schedule=sc.plan.schedule,
        step_time_s=step_time,
        pipeline_time_s=pipe.makespan_s,
        bubble_frac=bubble_s / pipe.makespan_s if pipe.makespan_s else 0.0,
        exposed_comm_frac=exposed_comm_s / pipe.makespan_s if pipe.makespan_s else 0.0,
        tokens_per_step=tokens,
        tokens_per_s_per_gpu=tokens / step_time / n,
        model_flops_per_step=model_flops,
        mfu_frac=model_flops / (step_time * n * gpu.peak_bf16_flops_per_s),
        memory_per_gpu_bytes=totals[worst],
        memory_breakdown_bytes=mems[worst],
        memory_capacity_bytes=gpu.hbm_bytes,
        op_time_s=dict(op_time),
        num_gpus=n,
        num_microbatches=sc.num_microbatches,
        pipeline=pipe,
        tail_events=tail_events,
    )


def _tail_events(last_end: tuple[float, ...], tails: list[tuple[float, float, float]], end_s: float,
                 opt_s: float, ag_s: float) -> list[Event]:
    """The step's tail on each rank: its gradient reduce-scatter right after its last compute, then
    (once every rank is done) the optimizer, then the parameter all-gather unless overlapped."""
    out = []
    for rank, (rs_s, _, _) in enumerate(tails):
        if rs_s > 0:
            out.append(Event(rank, "comm", "dp_reduce_scatter", "step", -1, 0, last_end[rank], last_end[rank] + rs_s))
        if opt_s > 0:
            out.append(Event(rank, "compute", "optimizer", "step", -1, 0, end_s, end_s + opt_s))
        if ag_s > 0:
            out.append(Event(rank, "comm", "dp_all_gather", "step", -1, 0, end_s + opt_s, end_s + opt_s + ag_s))
    return out
