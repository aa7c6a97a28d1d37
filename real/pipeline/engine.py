"""Pipeline parallelism over torch.distributed, running the twin's own per-rank programs.

Every rank executes `twin.core.schedules.build_schedule(...).programs[pp_rank]`: the op list the
twin simulates (F, B, W, BW, FB), in the same order, with activations and input-gradients moving
between stages by point-to-point sends. Launch with torchrun (NCCL on GPUs, gloo on CPUs):

    torchrun --standalone --nproc-per-node 2 -m real.pipeline --out DIR [--tiny] ...

(`real/pipeline/bench.py` is the command: configurations, CSVs, Chrome traces.)

Ranks form a (dp, pp) grid, pp innermost: global rank = dp_rank * pp + pp_rank. Each data-parallel
replica runs the pipeline on its own micro-batches; MoE experts are split over `ep` consecutive
replicas of the same stage (EP groups: the existing dispatch/combine of `real/ep.py`), so EP ranks
are DP ranks, as in DeepSeek-V3. After the program: DualPipe's two model copies sum their
gradients (ranks r and pp-1-r), then non-expert gradients are all-reduced over the dp replicas of
a stage and expert gradients over the dp/ep replicas holding the same experts.

Stages: the model's layers are cut into `schedule.num_model_stages` contiguous stages,
stage s holding layers [s*L//S, (s+1)*L//S) (`stage_layers`); stage 0 also holds the embedding
and the last stage the final norm, output head and cross entropy. (rank, chunk) computes stage
`schedule.stage_of(rank, chunk)`; DualPipe holds two copies (chunk 1 a copy of stage pp-1-rank).
MTP modules and tied embeddings are not supported (refused).

Ops: F forward; BW backward; B backward with the weight GEMMs deferred (`real/wgrad.py`), W runs
them; FB = the forward, then the backward, issued back to back on one stream (DualPipe overlaps
the pair across streams for its all-to-all; here it is one op in the same place of the program).
Loss: each micro-batch's mean cross entropy times 1/(num_microbatches * dp), so the summed loss
and gradients equal one process's over the whole batch.

Sends never block (isend); each flow (activations or gradients, src -> dst rank, chunk) has its
own 2-rank process group, so on NCCL every flow gets its own communicator and stream and the k-th
send of a flow matches the k-th receive whatever the other flows do (`flow_orders` checks both
ends issue every flow in the same micro-batch order). Groups are warmed up one by one, in one
global order, before any step.

Timing: every op on every rank (CUDA events on the compute stream; the host clock on CPU), from
a start mark taken right after a barrier; each rank's host clock (CLOCK_MONOTONIC, shared by the
processes of one host) at that mark gives the offset that puts all ranks on one axis. With
host_marks "host" (or "events": also a CUDA event at each mark) a step also records real/ep.py's
host marks inside dispatch, combine and their backward (StepTimeline.marks): no synchronisation added.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from real.ep import HostMarks, recording
from real.fp8 import BF16, Precision, linear
from real.model import MoE, Transformer
from real.sync import synchronize
from real.wgrad import WeightGradStore, deferring
from twin.core.schedules import PipeOp, Schedule

EXPERT_PARAMS = ("w13_E2FD", "w2_EDF")
HOST_MARK_MODES = ("off", "host", "events")  # events: CUDA events too (GPU only)


# --------------------------------------------------------------------------------------------
# pure helpers: stage cut and flows


def stage_layers(num_layers: int, num_stages: int) -> list[range]:
    """Contiguous layer ranges of the model stages: stage s holds [s*L//S, (s+1)*L//S)."""
    if num_layers < num_stages:
        raise ValueError(f"{num_layers} layers cannot fill {num_stages} pipeline stages")
    return [range(s * num_layers // num_stages, (s + 1) * num_layers // num_stages)
            for s in range(num_stages)]


def downstream(schedule: Schedule, rank: int, chunk: int, kind: str) -> tuple[int, int] | None:
    """(rank, chunk) that receives this (rank, chunk)'s output activation ("act") or input
    gradient ("grad"); None at the last stage (act) or the first (grad)."""
    stage = schedule.stage_of(rank, chunk)
    nxt = stage + 1 if kind == "act" else stage - 1
    if nxt < 0 or nxt >= schedule.num_model_stages:
        return None
    return schedule.layout.rank_of_stage(schedule.num_ranks, nxt, chunk)


def upstream(schedule: Schedule, rank: int, chunk: int, kind: str) -> tuple[int, int] | None:
    """(rank, chunk) whose output feeds this forward ("act") or whose input gradient is this
    backward's output gradient ("grad")."""
    if kind == "act":
        return schedule.forward_upstream(rank, chunk)
    return schedule.backward_upstream(rank, chunk)


def flow_orders(schedule: Schedule) -> tuple[dict, dict]:
    """Per flow (kind, src, dst, dst_chunk): the micro-batches in the order the sender sends them
    and in the order the receiver receives them (equal for every schedule: tested)."""
    sent: dict = {}
    received: dict = {}
    for rank, program in enumerate(schedule.programs):
        for op in program:
            for kind, part in (("act", op.forward_part), ("grad", op.backward_part)):
                if part is None:
                    continue
                mb, chunk = part
                src = upstream(schedule, rank, chunk, kind)
                if src is not None and src[0] != rank:
                    received.setdefault((kind, src[0], rank, chunk), []).append(mb)
                dst = downstream(schedule, rank, chunk, kind)
                if dst is not None and dst[0] != rank:
                    sent.setdefault((kind, rank, dst[0], dst[1]), []).append(mb)
    return sent, received


def possible_flows(pp: int) -> list[tuple]:
    """Every flow key a schedule on pp ranks can use: activations or gradients between adjacent
    ranks, to chunk 0 or 1 (one process group each; NCCL creates a communicator on first use)."""
    keys = []
    for src in range(pp):
        for dst in (src - 1, src + 1):
            if 0 <= dst < pp:
                keys += [(kind, src, dst, chunk) for kind in ("act", "grad") for chunk in (0, 1)]
    return keys


# --------------------------------------------------------------------------------------------
# process groups


@dataclass
class Mesh:
    """This rank's place in the (dp, pp) grid and the groups it communicates in (None: size 1)."""

    pp: int
    dp: int
    ep: int
    rank: int
    pp_rank: int
    dp_rank: int
    ep_group: object = None          # ranks of this stage whose experts together make the layer
    dp_group: object = None          # replicas of this stage: non-expert gradient all-reduce
    expert_dp_group: object = None   # replicas holding the same experts
    pair_group: object = None        # DualPipe: this rank and pp-1-rank (the two model copies)
    flows: dict = field(default_factory=dict)  # flow key -> 2-rank group of this replica

    def global_rank(self, pp_rank: int) -> int:
        return self.dp_rank * self.pp + pp_rank


def build_mesh(pp: int, ep: int = 1, pairs: bool = False, flows=None) -> Mesh:
    """Create every group of a (world/pp, pp) grid; collective: all ranks call it alike.
    `flows`: the flow keys the schedules to run use (`flow_orders`); default every possible one."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % pp:
        raise ValueError(f"pp={pp} does not divide the {world} ranks")
    dp = world // pp
    if dp % ep:
        raise ValueError(f"ep={ep} does not divide the dp={dp} replicas of a stage")
    mesh = Mesh(pp, dp, ep, rank, rank % pp, rank // pp)
    warm: list = []

    def group(ranks: list[int], p2p: tuple[int, int] | None = None):
        g = dist.new_group(ranks)  # every rank creates every group, in the same order
        warm.append((ranks, g, p2p))
        return g if rank in ranks else None

    for p in range(pp):
        replicas = [d * pp + p for d in range(dp)]
        if dp > 1:
            g = group(replicas)
            if p == mesh.pp_rank:
                mesh.dp_group = g
        if ep > 1:
            for b in range(dp // ep):
                g = group(replicas[b * ep:(b + 1) * ep])
                if g is not None:
                    mesh.ep_group = g
        if dp // ep > 1:
            for j in range(ep):
                g = group(replicas[j::ep])
                if g is not None:
                    mesh.expert_dp_group = g
    for d in range(dp):
        if pairs:
            for r in range(pp // 2):
                g = group([d * pp + r, d * pp + pp - 1 - r])
                if g is not None:
                    mesh.pair_group = g
        for key in sorted(flows) if flows is not None else possible_flows(pp):
            src, dst = d * pp + key[1], d * pp + key[2]
            g = group(sorted((src, dst)), p2p=(src, dst))
            if d == mesh.dp_rank:
                mesh.flows[key] = g
    _warm_up(warm)
    return mesh


def _warm_up(groups: list) -> None:
    """One tiny all-reduce per group (on a flow's group: one send from its source to its
    destination), group by group in creation order: NCCL creates each communicator here, before
    any step, never in an order that could wait in a cycle."""
    cuda = dist.get_backend() == "nccl"
    dev = torch.device("cuda", torch.cuda.current_device()) if cuda else "cpu"
    me = dist.get_rank()
    for ranks, g, p2p in groups:
        if me not in ranks:
            continue
        if p2p is None:
            dist.all_reduce(torch.ones(1, device=dev), group=g)
        else:  # flow groups only ever send one way
            t = torch.ones(1, device=dev)
            work = dist.isend(t, dst=p2p[1], group=g) if me == p2p[0] else dist.irecv(t, src=p2p[0], group=g)
            work.wait()
        if cuda:
            torch.cuda.synchronize(dev)
    dist.barrier()


# --------------------------------------------------------------------------------------------
# stages


class Stage(nn.Module):
    """Contiguous layers of the model (plus the embedding at the first stage, and the final norm,
    head and loss at the last), sharing the model's parameters."""

    def __init__(self, model: Transformer, layers: range, first: bool, last: bool):
        super().__init__()
        if model.head_YD is None:
            raise ValueError("pipeline stages need an untied output head (tie_embeddings = false)")
        self.embed_YD = model.embed_YD if first else None
        self.layers = nn.ModuleList(model.layers[i] for i in layers)
        self.layer_ids = list(layers)
        self.norm = model.norm if last else None
        self.head_YD = model.head_YD if last else None
        self.cos_LR, self.sin_LR = model.cos_LR, model.sin_LR
        names = {id(p): n for n, p in model.named_parameters()}
        self.full_names = [names[id(p)] for p in self.parameters()]  # the same tensors' names in the model

    def forward(self, x, targets_BS, precision: Precision, loss_scale: float) -> torch.Tensor:
        """Tokens (first stage) or hidden states -> hidden states, or the scaled loss (last stage)."""
        S = x.shape[1]
        if self.embed_YD is not None:
            x = self.embed_YD(x)
        cos_SR, sin_SR = self.cos_LR[:S], self.sin_LR[:S]
        for layer in self.layers:
            x = layer(x, cos_SR, sin_SR, precision)
        if self.norm is None:
            return x
        logits_BSY = linear(self.norm(x), self.head_YD, precision)
        return F.cross_entropy(logits_BSY.flatten(0, 1).float(), targets_BS.flatten()) * loss_scale


def build_stages(model: Transformer, schedule: Schedule, pp_rank: int) -> dict[int, Stage]:
    """chunk -> the Stage this rank computes for it. DualPipe's chunk 1 is a copy (its own
    parameters, same values) of the stage that chunk 0 computes on rank pp-1-pp_rank."""
    if len(model.mtp):
        raise ValueError("pipeline stages do not run MTP modules: use a spec with num_mtp_modules = 0")
    cuts = stage_layers(model.spec.num_layers, schedule.num_model_stages)
    last = schedule.num_model_stages - 1
    stages = {}
    for chunk in range(schedule.num_chunks):
        s = schedule.stage_of(pp_rank, chunk)
        stage = Stage(model, cuts[s], s == 0, s == last)
        if schedule.name == "dualpipe" and chunk == 1:
            names = stage.full_names
            # process groups are shared, not copied
            groups = {id(m.ep_group): m.ep_group for m in stage.modules() if isinstance(m, MoE)}
            stage = copy.deepcopy(stage, memo=groups)
            stage.full_names = names
        stages[chunk] = stage
    return stages


def load_from(model: Transformer, reference: Transformer, ep_rank: int, ep: int) -> None:
    """Copy a single-process reference's weights into `model`; expert tensors take this EP
    rank's slice [ep_rank*El, (ep_rank+1)*El)."""
    ref = dict(reference.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            src = ref[name]
            if name.endswith(EXPERT_PARAMS):
                el = src.shape[0] // ep
                src = src[ep_rank * el:(ep_rank + 1) * el]
            p.copy_(src)


# --------------------------------------------------------------------------------------------
# timing


@dataclass(frozen=True)
class Mark:
    """One point of a rank's program: on the compute stream (a CUDA event; the host clock on CPU,
    where ops are synchronous) and on the host (perf_counter when the host reached it: the host
    issues a GPU op's kernels ahead of the GPU, so host and GPU marks of one op differ)."""

    gpu: object
    host_s: float


class Clock:
    """Marks on the compute stream (CUDA events) or the host clock (CPU, where ops are synchronous)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def mark(self) -> Mark:
        host_s = time.perf_counter()
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return Mark(e, host_s)
        return Mark(host_s, host_s)

    def sync(self) -> None:
        synchronize(self.device)

    def seconds(self, start: Mark, mark: Mark) -> float:
        return start.gpu.elapsed_time(mark.gpu) * 1e-3 if self.cuda else mark.gpu - start.gpu

    @staticmethod
    def host_seconds(start: Mark, mark: Mark) -> float:
        return mark.host_s - start.host_s


@dataclass
class OpRecord:
    """One timed op of one rank: seconds from the rank's own step start."""

    op_index: int
    kind: str          # F B W BW FB send recv allreduce optimizer
    microbatch: int
    chunk: int
    name: str          # the twin's op label (e.g. F3.0, F3.0&BW1.0) or what the comm op moved
    start_s: float
    end_s: float
    # when the host began and finished issuing the op (same axis: the step's start mark is taken
    # on the host and the stream together, after a synchronize); host_end_s < end_s: the host ran ahead
    host_start_s: float = float("nan")
    host_end_s: float = float("nan")


@dataclass
class StepTimeline:
    """What one rank measured in one step; host_start_s puts it on the shared axis."""

    rank: int
    pp_rank: int
    dp_rank: int
    host_start_s: float
    loss: float
    ops: list[OpRecord]
    # real/ep.py's host marks (host_marks on): (label, dispatch count in the step, host_s, gpu_s,
    # main thread?) on the same axis as the ops; gpu_s: the point's CUDA event (nan without one)
    marks: list[tuple] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# the runner


class PipelineRunner:
    """Runs one rank's program of `schedule` over its stages; one `step()` per training step."""

    def __init__(self, model: Transformer, schedule: Schedule, mesh: Mesh, device: torch.device,
                 act_shape: tuple[int, ...], precision: Precision = BF16, sgd_lr: float | None = None,
                 host_marks: str = "off"):
        if host_marks not in HOST_MARK_MODES:
            raise ValueError(f"host_marks {host_marks!r}: one of {HOST_MARK_MODES}")
        self.host_marks = host_marks
        if schedule.num_ranks != mesh.pp:
            raise ValueError(f"schedule for {schedule.num_ranks} ranks on a mesh with pp={mesh.pp}")
        self.schedule, self.mesh, self.device = schedule, mesh, device
        self.program = schedule.programs[mesh.pp_rank]
        self.stages = build_stages(model, schedule, mesh.pp_rank)
        self.act_shape, self.dtype = act_shape, next(model.parameters()).dtype
        # every BF16 GEMM can defer its weight gradient: B ops defer, BW ops compute it at once
        self.precision = Precision(precision.gemm, precision.fp8_kernel, split_wgrad=True)
        self.loss_scale = 1.0 / (schedule.num_microbatches * mesh.dp)
        self.sgd_lr = sgd_lr
        self.clock = Clock(device)
        self.params = [p for s in self.stages.values() for p in s.parameters()]
        expert = {id(p) for s in self.stages.values() for m in s.modules() if isinstance(m, MoE)
                  for p in (m.w13_E2FD, m.w2_EDF)}
        self.expert_params = [p for p in self.params if id(p) in expert]
        self.dense_params = [p for p in self.params if id(p) not in expert]

    def moe_gates(self):
        """(chunk, model stage, model layer, Gate) of every MoE layer this rank computes (DualPipe's
        chunk 1 has gates of its own, in its copy of the stage)."""
        for chunk, stage in self.stages.items():
            s = self.schedule.stage_of(self.mesh.pp_rank, chunk)
            for layer_id, layer in zip(stage.layer_ids, stage.layers):
                if isinstance(layer.ffn, MoE):
                    yield chunk, s, layer_id, layer.ffn.gate

    # ---- one step

    def step(self, tokens_MBS: torch.Tensor, targets_MBS: torch.Tensor) -> StepTimeline:
        """One training step over this replica's micro-batches (tokens_MBS[m] is micro-batch m)."""
        self.tokens, self.targets = tokens_MBS, targets_MBS
        self.saved: dict = {}
        self.local: dict = {}
        self.deferred: dict = {}
        self.sends: list = []
        self.marks: list = []
        self.loss = torch.zeros((), device=self.device, dtype=torch.float32)
        for p in self.params:
            p.grad = None
        dist.barrier()
        self.clock.sync()
        host_start_s = time.perf_counter()
        self.t0 = self.clock.mark()
        marks = None
        if self.host_marks != "off":
            marks = HostMarks(events=self.host_marks == "events" and self.clock.cuda)
        with recording(marks):
            for i, op in enumerate(self.program):
                self._run(i, op)
        n = len(self.program)
        self._reduce(n)
        if self.sgd_lr is not None:
            m0 = self.clock.mark()
            with torch.no_grad():
                grads = [p.grad for p in self.params]
                torch._foreach_add_(self.params, grads, alpha=-self.sgd_lr)
            self.marks.append((n + 1, "optimizer", -1, -1, "optimizer", m0, self.clock.mark()))
        for work, _ in self.sends:
            work.wait()
        self.clock.sync()
        c = self.clock
        ops = [OpRecord(i, kind, mb, chunk, name, c.seconds(self.t0, a), c.seconds(self.t0, b),
                        c.host_seconds(self.t0, a), c.host_seconds(self.t0, b))
               for i, kind, mb, chunk, name, a, b in self.marks]
        m = self.mesh
        return StepTimeline(m.rank, m.pp_rank, m.dp_rank, host_start_s, float(self.loss), ops,
                            self._host_marks(marks))

    def _host_marks(self, marks: HostMarks | None) -> list[tuple]:
        """The step's host marks on the ops' axis (after the step's closing synchronize)."""
        if marks is None:
            return []
        nan = float("nan")
        return [(p.label, p.layer, p.host_ns * 1e-9 - self.t0.host_s,
                 self.t0.gpu.elapsed_time(p.event) * 1e-3 if p.event is not None else nan, p.main_thread)
                for p in marks.points]

    def _run(self, i: int, op: PipeOp) -> None:
        if op.kind == "F":
            self._forward(i, op, op.microbatch, op.chunk)
        elif op.kind in ("B", "BW"):
            self._backward(i, op, op.microbatch, op.chunk, split=op.kind == "B")
        elif op.kind == "W":
            a = self.clock.mark()
            self.deferred.pop((op.microbatch, op.chunk)).flush()
            self.marks.append((i, "W", op.microbatch, op.chunk, str(op), a, self.clock.mark()))
        elif op.kind == "FB":
            # both inputs first (as DualPipe posts the pair's receives together), then the pair
            x = self._input(i, op.microbatch, op.chunk)
            grad = self._output_grad(i, op.b_microbatch, op.b_chunk)
            self._forward(i, op, op.microbatch, op.chunk, record=False, x=x)
            self._backward(i, op, op.b_microbatch, op.b_chunk, split=op.b_split, record=False, grad=grad)
            # one record for the pair: from the forward's start to the backward's end
            fwd, bwd = self.pending_marks
            self.marks.append((i, "FB", op.microbatch, op.chunk, str(op), fwd[0], bwd[1]))
        else:
            raise ValueError(f"unknown op kind {op.kind!r}")

    def _input(self, i, mb, chunk) -> torch.Tensor:
        """Tokens at the first stage, else the received activation (a leaf that collects its grad)."""
        if self.schedule.stage_of(self.mesh.pp_rank, chunk) == 0:
            return self.tokens[mb]
        return self._receive(i, "act", mb, chunk).requires_grad_()

    def _output_grad(self, i, mb, chunk) -> torch.Tensor | None:
        """The gradient of this chunk's output (None at the last stage: it starts from the loss)."""
        if self.schedule.stage_of(self.mesh.pp_rank, chunk) == self.schedule.num_model_stages - 1:
            return None
        return self._receive(i, "grad", mb, chunk)

    def _forward(self, i, op, mb, chunk, record=True, x=None):
        stage_idx = self.schedule.stage_of(self.mesh.pp_rank, chunk)
        stage = self.stages[chunk]
        if x is None:
            x = self._input(i, mb, chunk)
        a = self.clock.mark()
        last = stage_idx == self.schedule.num_model_stages - 1
        out = stage(x, self.targets[mb] if last else None, self.precision, self.loss_scale)
        b = self.clock.mark()
        self._mark(i, op, "F", mb, chunk, a, b, record)
        self.saved[(mb, chunk)] = (x if stage_idx else None, out)
        if last:
            self.loss += out.detach().float()
        else:
            self._send(i, "act", mb, chunk, out.detach())

    def _backward(self, i, op, mb, chunk, split, record=True, grad=False):
        x, out = self.saved.pop((mb, chunk))
        if grad is False:  # not received by the caller
            grad = self._output_grad(i, mb, chunk)
        a = self.clock.mark()
        if split:
            store = WeightGradStore()
            with deferring(store):
                torch.autograd.backward(out, grad)
            self.deferred[(mb, chunk)] = store
        else:
            torch.autograd.backward(out, grad)
        b = self.clock.mark()
        self._mark(i, op, "B" if split else "BW", mb, chunk, a, b, record)
        if x is not None:
            self._send(i, "grad", mb, chunk, x.grad)

    def _mark(self, i, op, kind, mb, chunk, a, b, record):
        if record:
            self.marks.append((i, kind, mb, chunk, str(op), a, b))
        elif kind == "F":
            self.pending_marks = [(a, b)]
        else:
            self.pending_marks.append((a, b))

    # ---- point to point

    def _receive(self, i, kind, mb, chunk) -> torch.Tensor:
        src = upstream(self.schedule, self.mesh.pp_rank, chunk, kind)
        if src[0] == self.mesh.pp_rank:  # DualPipeV's turn: the other chunk of this rank
            return self.local.pop((kind, mb, chunk))
        buf = torch.empty(self.act_shape, device=self.device, dtype=self.dtype)
        a = self.clock.mark()
        dist.irecv(buf, src=self.mesh.global_rank(src[0]),
                   group=self.mesh.flows[(kind, src[0], self.mesh.pp_rank, chunk)]).wait()
        self.marks.append((i, "recv", mb, chunk, f"recv {kind} {mb}.{chunk}", a, self.clock.mark()))
        return buf

    def _send(self, i, kind, mb, chunk, tensor: torch.Tensor) -> None:
        dst = downstream(self.schedule, self.mesh.pp_rank, chunk, kind)
        if dst[0] == self.mesh.pp_rank:
            self.local[(kind, mb, dst[1])] = tensor.detach()
            return
        if tuple(tensor.shape) != tuple(self.act_shape):  # the receiver's buffer has act_shape: fail, not hang
            raise ValueError(f"sending {kind} of shape {tuple(tensor.shape)}, receivers expect {self.act_shape}")
        tensor = tensor.detach().to(self.dtype).contiguous()
        a = self.clock.mark()
        work = dist.isend(tensor, dst=self.mesh.global_rank(dst[0]),
                          group=self.mesh.flows[(kind, self.mesh.pp_rank, dst[0], dst[1])])
        self.sends.append((work, tensor))  # the tensor lives until the send is done
        self.marks.append((i, "send", mb, chunk, f"send {kind} {mb}.{chunk}", a, self.clock.mark()))

    # ---- gradient reductions

    def _reduce(self, n: int) -> None:
        """DualPipe's two copies of a stage sum their gradients, then the data-parallel replicas
        (the loss already carries 1/dp, so a sum gives the whole batch's gradient)."""
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        m = self.mesh
        steps = []
        if self.schedule.name == "dualpipe" and m.pp > 1:
            if m.pair_group is None:
                raise ValueError("dualpipe needs the copy-pair groups: build_mesh(..., pairs=True)")
            # both copies of a stage, in stage order on both ranks of the pair
            order = sorted(self.stages, key=lambda c: self.schedule.stage_of(m.pp_rank, c))
            steps.append(("pair", [p for c in order for p in self.stages[c].parameters()], m.pair_group))
        if m.dp_group is not None:
            steps.append(("dp", self.dense_params, m.dp_group))
        if m.expert_dp_group is not None:
            steps.append(("expert dp", self.expert_params, m.expert_dp_group))
        for k, (name, params, group) in enumerate(steps):
            if not params:
                continue
            a = self.clock.mark()
            grads = [p.grad for p in params]
            flat = torch._utils._flatten_dense_tensors(grads)
            dist.all_reduce(flat, group=group)
            for g, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(reduced)
            self.marks.append((n, "allreduce", -1, -1, f"all_reduce({name})", a, self.clock.mark()))

    def grads_by_name(self) -> dict[str, torch.Tensor]:
        """Gradient of every parameter this rank holds, by its name in the full model (DualPipe's
        chunk-1 copy under the same name: after the step both copies hold the summed gradient)."""
        return {n: p.grad for s in self.stages.values() for n, p in zip(s.full_names, s.parameters())}


def cycle_order(names: list, cycle: int) -> list:
    """The order of one interleaved cycle: row `cycle` of a Williams design over `names` (Williams
    1949; period k = len(names) for even k, 2k for odd k), so over a period each configuration takes
    each place in the cycle once and follows each other configuration within a cycle equally often
    (a step's position and its predecessor balanced). Row r of even k: the base row
    [0, 1, k-1, 2, k-2, ...] plus r (mod k); odd k: rows k..2k-1 are rows 0..k-1 reversed.
    k = 2: [a, b], [b, a]; k = 4: [a, b, d, c], [b, c, a, d], [c, d, b, a], [d, a, c, b]."""
    k = len(names)
    base = [0]
    for j in range(1, k):
        base.append((j + 1) // 2 if j % 2 else k - j // 2)
    r = cycle % (k if k % 2 == 0 else 2 * k)
    row = [(x + r % k) % k for x in base]
    if r >= k:
        row.reverse()
    return [names[i] for i in row]


def interleaved_steps(runs: dict, cycles: int):
    """Steps of several configurations of one mesh and model, interleaved (s17alt): cycle c runs
    one step of every configuration, in `cycle_order(list(runs), c)` order, so the steps of one
    cycle see the same minute of host pace. `runs`: name -> (runner, tokens_MBS, targets_MBS).
    Yields (cycle, position in the cycle, name, StepTimeline) after each step. The weights are not
    updated between steps (no optimizer), so each step's loss and gradients are the ones that
    configuration's step has when timed on its own."""
    names = list(runs)
    for c in range(cycles):
        for pos, name in enumerate(cycle_order(names, c)):
            runner, tokens, targets = runs[name]
            yield c, pos, name, runner.step(tokens, targets)


def on_shared_axis(timelines: list[StepTimeline]) -> list[StepTimeline]:
    """The ranks' timelines of one step with times from the earliest rank's start (the offset of
    each rank: its host clock at its start mark minus the earliest)."""
    t0 = min(t.host_start_s for t in timelines)
    out = []
    for t in timelines:
        off = t.host_start_s - t0
        ops = [OpRecord(o.op_index, o.kind, o.microbatch, o.chunk, o.name, o.start_s + off, o.end_s + off,
                        o.host_start_s + off, o.host_end_s + off) for o in t.ops]
        marks = [(label, layer, host_s + off, gpu_s + off, main) for label, layer, host_s, gpu_s, main in t.marks]
        out.append(StepTimeline(t.rank, t.pp_rank, t.dp_rank, t.host_start_s - t0, t.loss, ops, marks))
    return out
