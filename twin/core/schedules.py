"""Pipeline-parallel schedules as per-rank programs of ops (pure: no simpy).

A schedule says *what* each pipeline rank runs and in which order; the SimPy engine in
`twin.sim.pipeline` decides *when*, from op costs and the dataflow methods below.

Op kinds (one chunk of one micro-batch each):
    F   forward
    BW  full backward (input grad + weight grad)
    B   input-grad-only backward; its weight grad runs later as a separate W op
    W   weight-grad part of an earlier B (zero-bubble split)
    FB  a forward and a backward of two different (micro-batch, chunk)s issued as one
        mutually overlapped pair (DualPipe's overlapped chunk pair)

Schedules:
    1f1b       one-forward-one-backward (PipeDream-flush / Megatron)
    zb1p       ZB-H1 of Qi et al. 2023 ("Zero Bubble Pipeline Parallelism"): 1F1B with the
               backward split into B and W, rank r deferring r W passes to fill the cooldown
    dualpipe   DeepSeek-V3's bidirectional schedule (two model copies, both directions)
    dualpipev  DualPipe "cut in half" (one copy, V-shaped: rank r holds stages r and 2PP-1-r)
    interleaved-1f1b
               Megatron-LM's interleaved 1F1B (Narayanan et al. 2021, "Efficient Large-Scale
               Language Model Training on GPU Clusters", §2.2): each rank holds V model chunks
               (`plan.virtual_stages`), rank r computing stages r, r+PP, ..., r+(V-1)PP; micro-batches
               run in groups of PP through one chunk before moving to the next

`num_microbatches` counts all micro-batches of a step. For DualPipe that is both directions
together, exactly like the reference's `num_chunks`: micro-batches 0..N/2-1 travel the forward
direction (chunk 0, rank 0 -> PP-1), N/2..N-1 the reverse one (chunk 1, rank PP-1 -> 0).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twin.core.errors import ScenarioError

OP_KINDS = ("F", "B", "W", "BW", "FB")


@dataclass(frozen=True)
class PipeOp:
    """One op of a rank's program. For FB, (microbatch, chunk) is the forward part and
    (b_microbatch, b_chunk) the backward part; b_split says the backward is input-only."""

    kind: str                  # one of OP_KINDS
    microbatch: int
    chunk: int = 0
    b_microbatch: int | None = None
    b_chunk: int | None = None
    b_split: bool = False

    @property
    def forward_part(self) -> tuple[int, int] | None:
        """(microbatch, chunk) whose forward this op computes, if any."""
        return (self.microbatch, self.chunk) if self.kind in ("F", "FB") else None

    @property
    def backward_part(self) -> tuple[int, int] | None:
        """(microbatch, chunk) whose input-grad backward (B or BW) this op computes, if any."""
        if self.kind in ("B", "BW"):
            return (self.microbatch, self.chunk)
        if self.kind == "FB":
            return (self.b_microbatch, self.b_chunk)
        return None

    def __str__(self) -> str:
        if self.kind == "FB":
            back = "B" if self.b_split else "BW"
            return f"F{self.microbatch}.{self.chunk}&{back}{self.b_microbatch}.{self.b_chunk}"
        return f"{self.kind}{self.microbatch}.{self.chunk}"


class Layout:
    """How model stages sit on pipeline ranks: which stage a (rank, chunk) computes, and which
    chunks a micro-batch passes through. Schedules differ in their programs and share layouts."""

    num_chunks = 1

    def num_model_stages(self, pp: int) -> int:
        return pp

    def stage_of(self, pp: int, rank: int, chunk: int) -> int:
        if chunk == 0:
            return rank
        raise ValueError(f"one chunk per rank, not chunk {chunk}")

    def chunks_of(self, num_microbatches: int, microbatch: int) -> tuple[int, ...]:
        return (0,)

    def rank_of_stage(self, pp: int, stage: int, like_chunk: int) -> tuple[int, int]:
        return (stage, 0)


class Bidirectional(Layout):
    """DualPipe: two full model copies, chunk 0 flowing rank 0 -> PP-1 and chunk 1 back; the first
    half of the micro-batches travels chunk 0, the second half chunk 1."""

    num_chunks = 2

    def stage_of(self, pp: int, rank: int, chunk: int) -> int:
        return rank if chunk == 0 else pp - 1 - rank

    def chunks_of(self, num_microbatches: int, microbatch: int) -> tuple[int, ...]:
        return (0,) if microbatch < num_microbatches // 2 else (1,)

    def rank_of_stage(self, pp: int, stage: int, like_chunk: int) -> tuple[int, int]:
        return (stage, 0) if like_chunk == 0 else (pp - 1 - stage, 1)


class VShape(Layout):
    """DualPipeV: one copy cut into 2PP stages, rank r holding stages r and 2PP-1-r; every
    micro-batch passes down chunk 0 and back up chunk 1."""

    num_chunks = 2

    def num_model_stages(self, pp: int) -> int:
        return 2 * pp

    def stage_of(self, pp: int, rank: int, chunk: int) -> int:
        return rank if chunk == 0 else 2 * pp - 1 - rank

    def chunks_of(self, num_microbatches: int, microbatch: int) -> tuple[int, ...]:
        return (0, 1)

    def rank_of_stage(self, pp: int, stage: int, like_chunk: int) -> tuple[int, int]:
        return (stage, 0) if stage < pp else (2 * pp - 1 - stage, 1)


class Interleaved(Layout):
    """Megatron's interleaved layout: PP*V model stages, rank r holding stages r + v*PP for its
    chunks v = 0..V-1; every micro-batch passes through every chunk, rank PP-1's chunk v feeding rank
    0's chunk v+1."""

    def __init__(self, virtual_stages: int):
        self.num_chunks = virtual_stages

    def num_model_stages(self, pp: int) -> int:
        return pp * self.num_chunks

    def stage_of(self, pp: int, rank: int, chunk: int) -> int:
        return chunk * pp + rank

    def chunks_of(self, num_microbatches: int, microbatch: int) -> tuple[int, ...]:
        return tuple(range(self.num_chunks))

    def rank_of_stage(self, pp: int, stage: int, like_chunk: int) -> tuple[int, int]:
        return (stage % pp, stage // pp)


@dataclass(frozen=True)
class Schedule:
    """Per-rank programs plus the model-stage layout that defines the dataflow."""

    name: str
    num_ranks: int
    num_microbatches: int
    programs: tuple[tuple[PipeOp, ...], ...]
    layout: Layout

    @property
    def num_chunks(self) -> int:
        return self.layout.num_chunks

    @property
    def num_model_stages(self) -> int:
        """Equal model stages: PP for 1F1B/ZB1P/DualPipe (DualPipe holds two copies), 2PP for
        DualPipeV, PP*V for interleaved 1F1B."""
        return self.layout.num_model_stages(self.num_ranks)

    def stage_of(self, rank: int, chunk: int) -> int:
        """The model stage (0 = first layers) that `rank` computes for `chunk`."""
        return self.layout.stage_of(self.num_ranks, rank, chunk)

    def chunks_of(self, microbatch: int) -> tuple[int, ...]:
        """The chunks a micro-batch passes through (on every rank)."""
        return self.layout.chunks_of(self.num_microbatches, microbatch)

    def forward_upstream(self, rank: int, chunk: int) -> tuple[int, int] | None:
        """(rank, chunk) whose forward output feeds this forward; None at the first stage."""
        stage = self.stage_of(rank, chunk)
        if stage == 0:
            return None
        return self.layout.rank_of_stage(self.num_ranks, stage - 1, chunk)

    def backward_upstream(self, rank: int, chunk: int) -> tuple[int, int] | None:
        """(rank, chunk) whose input-grad is this backward's output-grad; None at the last
        stage, whose backward starts from the loss of its own forward. (DualPipe's two copies
        each end at stage PP-1.)"""
        stage = self.stage_of(rank, chunk)
        if stage == self.num_model_stages - 1:
            return None
        return self.layout.rank_of_stage(self.num_ranks, stage + 1, chunk)


# --------------------------------------------------------------------------------------------
# builders


def _check_int(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(field, value, f"an integer >= {minimum}")
    return value


def _any_count(pp: int, n: int) -> None:
    return None


def _dualpipe_counts(pp: int, n: int) -> None:
    if pp % 2:
        raise ScenarioError("plan.pp", pp, "an even number of ranks for dualpipe")
    if n % 2 or n < 2 * pp:
        raise ScenarioError("plan.num_microbatches", n,
                            f"an even number >= 2*pp = {2 * pp} for dualpipe (both directions together)")


def _dualpipev_counts(pp: int, n: int) -> None:
    if n < 2 * pp:
        raise ScenarioError("plan.num_microbatches", n, f">= 2*pp = {2 * pp} for dualpipev")


def check_virtual_stages(name: str, virtual_stages: int, source: str | None = None) -> int:
    """Virtual stages (model chunks per rank) that schedule `name` can run: >= 2 for
    interleaved-1f1b (with one it is plain 1f1b), exactly 1 for every other schedule."""
    v = _check_int("plan.virtual_stages", virtual_stages, 1)
    if name in SCHEDULES and SCHEDULES[name].virtual and v < 2:
        raise ScenarioError("plan.virtual_stages", v, f">= 2 for schedule {name!r} (with 1 chunk per rank use '1f1b')", source)
    if name in SCHEDULES and not SCHEDULES[name].virtual and v != 1:
        raise ScenarioError("plan.virtual_stages", v,
                            f"1 for schedule {name!r}; virtual stages need plan.schedule = "
                            + " or ".join(repr(n) for n, e in SCHEDULES.items() if e.virtual), source)
    return v


def backwards_per_copy(schedule: "Schedule") -> dict[int, float]:
    """{model stage: the backwards (B, BW or an FB's backward) one copy of it runs in a step}, the
    mean over its copies (a copy = one rank's chunk holding the stage). 1F1B / ZB1P / DualPipeV: n;
    DualPipe: n / 2 (PP2, n = 4: rank 0 runs micro-batches 0, 1 on stage 0 and 2, 3 on stage 1).
    (calibration.pipeline's since s17pair; here since s26unify, so the twin's step counts real/'s
    gradient accumulation as calibration.pipeline does.)"""
    counts: dict[tuple[int, int], int] = {}
    for rank, program in enumerate(schedule.programs):
        for op in program:
            part = op.backward_part
            if part is not None:
                counts[rank, part[1]] = counts.get((rank, part[1]), 0) + 1
    by_stage: dict[int, list[int]] = {}
    for (rank, chunk), c in counts.items():
        by_stage.setdefault(schedule.stage_of(rank, chunk), []).append(c)
    return {s: sum(c) / len(c) for s, c in by_stage.items()}


def build_schedule(name: str, num_ranks: int, num_microbatches: int, virtual_stages: int = 1) -> Schedule:
    """Build the per-rank programs of schedule `name` for `num_ranks` pipeline ranks (with
    `virtual_stages` model chunks per rank where the schedule interleaves them). A schedule is
    immutable, so the last ones built are kept (a scenario check and its step build the same one)."""
    return _build_schedule(name, num_ranks, num_microbatches, virtual_stages)


@functools.lru_cache(maxsize=256)
def _build_schedule(name: str, num_ranks: int, num_microbatches: int, virtual_stages: int) -> Schedule:
    if name not in SCHEDULES:
        raise ScenarioError("plan.schedule", name, "one of " + ", ".join(SCHEDULES))
    entry = SCHEDULES[name]
    pp = _check_int("plan.pp", num_ranks, 1)
    n = _check_int("plan.num_microbatches", num_microbatches, 1)
    v = check_virtual_stages(name, virtual_stages)
    if entry.virtual:
        entry.check_counts(pp, n)
        programs = tuple(tuple(_interleaved(rank, pp, n, v)) for rank in range(pp))
        return Schedule(name, pp, n, programs, Interleaved(v))
    entry.check_counts(pp, n)
    programs = tuple(tuple(entry.program(rank, pp, n)) for rank in range(pp))
    return Schedule(name, pp, n, programs, entry.layout)


def num_stages(name: str, pp: int, virtual_stages: int = 1) -> int:
    """Model stages that schedule `name` cuts the layers into on `pp` ranks."""
    entry = SCHEDULES[name]
    return pp * virtual_stages if entry.virtual else entry.layout.num_model_stages(pp)


def _one_f_one_b(rank: int, pp: int, n: int) -> list[PipeOp]:
    """Warm-up forwards, then steady 1F1B, then cooldown backwards."""
    warmup = min(pp - rank - 1, n)
    ops = [PipeOp("F", m) for m in range(warmup)]
    for i in range(n - warmup):  # steady state: F(warmup+i), BW(i)
        ops += [PipeOp("F", warmup + i), PipeOp("BW", i)]
    ops += [PipeOp("BW", m) for m in range(n - warmup, n)]  # cooldown
    return ops


def _zb1p(rank: int, pp: int, n: int) -> list[PipeOp]:
    """ZB-H1: 1F1B order with B = input grad only; rank r keeps r weight passes pending
    (so every rank holds 1F1B's activations) and runs them in the cooldown bubbles.

    Sections (counts for rank r, as in the ZB-H1 definition):
        F    : pp - r - 1 warm-up forwards
        FB   : r steady iterations F, B (W deferred)
        FBW  : steady iterations F, B, W until all forwards are issued
        BW   : cooldown B, W
        W    : the r deferred weight passes
    """
    ops: list[PipeOp] = []
    f = b = w = 0
    for _ in range(min(pp - rank - 1, n)):
        ops.append(PipeOp("F", f))
        f += 1
    for _ in range(min(rank, n - f)):
        ops += [PipeOp("F", f), PipeOp("B", b)]
        f += 1
        b += 1
    while f < n:
        ops += [PipeOp("F", f), PipeOp("B", b), PipeOp("W", w)]
        f, b, w = f + 1, b + 1, w + 1
    while b < n:
        ops += [PipeOp("B", b), PipeOp("W", w)]
        b, w = b + 1, w + 1
    while w < n:
        ops.append(PipeOp("W", w))
        w += 1
    return ops


class _DualProgram:
    """Issues one rank's DualPipe/DualPipeV ops the way the reference's helpers do.

    `phase` is the reference's local phase; `flip` maps it to our chunk (DualPipe's second-half
    ranks see phase 0 as the reverse direction). Micro-batch ids come from per-chunk counters
    like the reference's current_f_chunk_id / current_b_chunk_id, and weight passes pop a FIFO
    of deferred backwards like its WeightGradStore.
    """

    def __init__(self, flip: int, mb_offset: tuple[int, int]):
        self.flip = flip
        self.mb_offset = mb_offset
        self.next_f = [0, 0]
        self.next_b = [0, 0]
        self.deferred_w: deque[tuple[int, int]] = deque()
        self.ops: list[PipeOp] = []

    def _take(self, counter: list[int], phase: int) -> tuple[int, int]:
        chunk = phase ^ self.flip
        mb = self.mb_offset[chunk] + counter[chunk]
        counter[chunk] += 1
        return mb, chunk

    def forward(self, phase: int) -> None:
        mb, chunk = self._take(self.next_f, phase)
        self.ops.append(PipeOp("F", mb, chunk))

    def backward(self, phase: int, zero_bubble: bool = False) -> None:
        mb, chunk = self._take(self.next_b, phase)
        if zero_bubble:
            self.deferred_w.append((mb, chunk))
        self.ops.append(PipeOp("B" if zero_bubble else "BW", mb, chunk))

    def forward_backward(self, f_phase: int, b_phase: int) -> None:
        mb, chunk = self._take(self.next_f, f_phase)
        b_mb, b_chunk = self._take(self.next_b, b_phase)
        self.ops.append(PipeOp("FB", mb, chunk, b_mb, b_chunk, b_split=False))

    def weight(self) -> None:
        mb, chunk = self.deferred_w.popleft()
        self.ops.append(PipeOp("W", mb, chunk))


def _dual_phases(p: _DualProgram, pos: int, num_pos: int, per_chunk: int, is_turn: bool) -> None:
    """The eight phases of the reference's DualPipe(V) step(), with their closed-form counts.

    pos: the rank's distance from the start of its half (DualPipe: half_rank; DualPipeV: rank).
    num_pos: ranks per half (DualPipe: PP/2; DualPipeV: PP).
    per_chunk: micro-batches per chunk (DualPipe: N/2 per direction; DualPipeV: N).
    is_turn: the rank where the two chunks meet (DualPipe's middle ranks, DualPipeV's last
        rank); its first main-step pair is issued as two separate ops, not overlapped.
    """
    # Step 1: nF0
    for _ in range((num_pos - pos - 1) * 2):
        p.forward(0)
    # Step 2: nF0F1
    for _ in range(pos + 1):
        p.forward(0)
        p.forward(1)
    # Step 3: nB1W1F1 (zero bubble: each B's weight pass runs right after it)
    for _ in range(num_pos - pos - 1):
        p.backward(1, zero_bubble=True)
        p.weight()
        p.forward(1)
    # Step 4 (main step): nF0B1F1B0, as overlapped pairs
    for i in range(per_chunk - 2 * num_pos + pos + 1):
        if i == 0 and is_turn:
            p.forward(0)
            p.backward(1)
        else:
            p.forward_backward(0, 1)
        p.forward_backward(1, 0)
    # Step 5: nB1F1B0
    for _ in range(num_pos - pos - 1):
        p.backward(1)
        p.forward_backward(1, 0)
    # Step 6: nB1B0 (the second half of these backwards defer their weight passes)
    step_6 = pos + 1
    zero_bubble = False
    for i in range(step_6):
        if i == step_6 // 2 and pos % 2 == 1:
            zero_bubble = True
        p.backward(1, zero_bubble)
        if i == step_6 // 2 and pos % 2 == 0:
            zero_bubble = True
        p.backward(0, zero_bubble)
    # Step 7: nWB0 (zero bubble)
    for _ in range(num_pos - pos - 1):
        p.weight()
        p.backward(0, zero_bubble=True)
    # Step 8: nW
    for _ in range(pos + 1):
        p.weight()
    assert not p.deferred_w, "every deferred weight pass must be issued"


def _interleaved_counts(pp: int, n: int) -> None:
    if n % pp:
        raise ScenarioError("plan.num_microbatches", n,
                            f"a multiple of pp = {pp} for interleaved-1f1b (micro-batches run in groups of pp through each chunk)")


def _interleaved(rank: int, pp: int, n: int, v: int) -> list[PipeOp]:
    """Megatron-LM's interleaved 1F1B (megatron/core/pipeline_parallel/schedules.py,
    forward_backward_pipelining_with_interleaving, micro-batch group size PP), as three phases:

        warm-up   (PP - r - 1) * 2 + (V - 1) * PP forwards (all N*V if fewer)
        steady    one forward, one backward, until the forwards run out
        cooldown  the remaining backwards

    The k-th forward of a rank computes chunk (k mod PP*V) // PP of micro-batch
    (k // (PP*V)) * PP + k mod PP; the k-th backward the same micro-batch in chunk
    V - 1 - (k mod PP*V) // PP, so chunks are entered in order going down and left in reverse
    going back up.
    """
    total = n * v
    group = pp * v

    def forward(k: int) -> PipeOp:
        return PipeOp("F", (k // group) * pp + k % pp, (k % group) // pp)

    def backward(k: int) -> PipeOp:
        return PipeOp("BW", (k // group) * pp + k % pp, v - 1 - (k % group) // pp)

    warmup = min((pp - rank - 1) * 2 + (v - 1) * pp, total)
    ops = [forward(k) for k in range(warmup)]
    for k in range(total - warmup):
        ops += [forward(warmup + k), backward(k)]
    ops += [backward(k) for k in range(total - warmup, total)]
    return ops


def _dualpipe(rank: int, pp: int, n: int) -> list[PipeOp]:
    half_ranks, half_n = pp // 2, n // 2
    second_half = int(rank >= half_ranks)
    pos = min(rank, pp - 1 - rank)
    prog = _DualProgram(flip=second_half, mb_offset=(0, half_n))
    is_middle = rank in (half_ranks - 1, half_ranks)
    _dual_phases(prog, pos, half_ranks, half_n, is_middle)
    return prog.ops


def _dualpipev(rank: int, pp: int, n: int) -> list[PipeOp]:
    prog = _DualProgram(flip=0, mb_offset=(0, 0))
    _dual_phases(prog, rank, pp, n, rank == pp - 1)
    return prog.ops


# --------------------------------------------------------------------------------------------
# the registry: adding a schedule is one entry here


@dataclass(frozen=True)
class ScheduleEntry:
    program: Callable[[int, int, int], list[PipeOp]] | None   # (rank, pp, num_microbatches) -> ops; None: virtual (_interleaved)
    layout: Layout
    check_counts: Callable[[int, int], None]           # raises ScenarioError for (pp, n) it can't run
    # the closed-form bubble for pp ranks from a stage's op times (F, B, W, F&B) and the virtual
    # stages V (the DualPipe paper's table; Megatron's interleaved schedule), and its text
    bubble_s: Callable[[int, float, float, float, float, int], float]
    bubble_formula: str
    summary: str
    virtual: bool = False   # holds plan.virtual_stages chunks per rank (layout Interleaved(V))


SCHEDULES: dict[str, ScheduleEntry] = {
    "1f1b": ScheduleEntry(_one_f_one_b, Layout(), _any_count,
                          lambda pp, f, b, w, fb, v=1: (pp - 1) * (f + b), "(PP-1)(F+B)",
                          "one-forward-one-backward (PipeDream-flush / Megatron)"),
    "zb1p": ScheduleEntry(_zb1p, Layout(), _any_count,
                          lambda pp, f, b, w, fb, v=1: (pp - 1) * (f + b - 2 * w), "(PP-1)(F+B-2W)",
                          "ZB-H1 zero-bubble 1F1B: backward split into B and W"),
    "dualpipe": ScheduleEntry(_dualpipe, Bidirectional(), _dualpipe_counts,
                              lambda pp, f, b, w, fb, v=1: (pp / 2 - 1) * (fb + b - 3 * w), "(PP/2-1)(F&B+B-3W)",
                              "DeepSeek-V3's bidirectional DualPipe"),
    # PP = 2*pp model stages, so PP/2 - 1 = pp - 1
    "dualpipev": ScheduleEntry(_dualpipev, VShape(), _dualpipev_counts,
                               lambda pp, f, b, w, fb, v=1: (pp - 1) * (fb + b - 3 * w), "(PP/2-1)(F&B+B-3W), PP = 2*pp stages",
                               "DualPipe cut in half (V-shaped)"),
    # F, B: a whole stage's times (its V chunks take F/V and B/V each); Narayanan et al. 2021 §2.2.2
    "interleaved-1f1b": ScheduleEntry(None, Layout(), _interleaved_counts,
                                      lambda pp, f, b, w, fb, v=1: (pp - 1) * (f + b) / v, "(PP-1)(F+B)/V",
                                      "Megatron-LM's interleaved 1F1B: V model chunks per rank", virtual=True),
}
SCHEDULE_NAMES = tuple(SCHEDULES)


# --------------------------------------------------------------------------------------------
# torch.distributed.pipelining's runtime of multi-stage schedules (plan.pp_runtime 'torch_pipelining')


def torch_time_steps(pp: int, num_microbatches: int, virtual_stages: int) -> tuple[tuple[PipeOp | None, ...], ...]:
    """Per rank, the time-step table (`pipeline_order`) of PyTorch's ScheduleInterleaved1F1B as at
    the nightly torchtitan's tables ran (1963fc8, 2024-12; torch/distributed/pipelining/schedules.py
    ScheduleInterleaved1F1B._calculate_single_rank_operations and _get_1f1b_rank_ops, our
    transcription): an op or None (an idle step) per step.

        pre-padding  r idle steps
        warm-up      (V-1) * mb_per_round + 2 (PP-1-r) forwards (all N V if fewer), then
                     (V PP + 2 (PP-1-r)) - (warm-up + r) idle steps
        1F1B         one forward, one backward per op
        cooldown     an idle step and a backward per op
        post-padding PP-1-r idle steps

    mb_per_round = N // max(1, N // PP); the k-th forward enters chunk (k // mb_per_round) mod V,
    the k-th backward chunk V-1 - (k // mb_per_round) mod V, each chunk counting its micro-batches
    in order. Ops are the twin's (chunk c of rank r is model stage c PP + r, as torch's 'loop'
    stage ids; backwards are full backwards, BW)."""
    rounds = max(1, num_microbatches // pp)
    per_round = num_microbatches // rounds
    total_ops = virtual_stages * num_microbatches
    table = []
    for rank in range(pp):
        warmup = min((virtual_stages - 1) * per_round + 2 * (pp - 1 - rank), total_ops)
        fwd_bwd = total_ops - warmup
        post_warmup = (virtual_stages * pp + 2 * (pp - 1 - rank)) - (warmup + rank)
        next_f = [0] * virtual_stages
        next_b = [0] * virtual_stages

        def forward(k: int) -> PipeOp:
            chunk = (k // per_round) % virtual_stages
            next_f[chunk] += 1
            return PipeOp("F", next_f[chunk] - 1, chunk)

        def backward(k: int) -> PipeOp:
            chunk = virtual_stages - 1 - ((k - warmup) // per_round) % virtual_stages
            next_b[chunk] += 1
            return PipeOp("BW", next_b[chunk] - 1, chunk)

        steps: list[PipeOp | None] = [None] * rank
        for k in range(warmup + fwd_bwd + warmup):   # cooldown ops = warm-up ops
            if k < warmup:
                steps.append(forward(k))
                if k == warmup - 1:
                    steps += [None] * post_warmup
            elif k < warmup + fwd_bwd:
                steps += [forward(k), backward(k)]
            else:
                steps += [None, backward(k)]
        steps += [None] * (pp - 1 - rank)
        table.append(tuple(steps))
    return tuple(table)


def torch_lockstep_needs(schedule: Schedule) -> tuple[tuple[tuple, ...], ...]:
    """Per rank and op of `schedule`'s programs, the inputs PyTorch's PipelineScheduleMulti
    runtime adds to the dataflow (twin.sim.pipeline._dependencies' format: (0 forward / 1 backward
    done table, its key (rank, micro-batch, chunk), the rank the transfer comes from, "F" or "B")).

    torch's _step_microbatches (as at 1963fc8) walks the time-step table (torch_time_steps): after
    each step's compute a rank issues ONE batch_isend_irecv of its own send (a forward's output to
    the next stage's rank, a backward's input gradient to the previous stage's) and the receives
    matching its neighbours' ops at the same step, and waits on it before its next step. A NCCL
    group ends when all its transfers do, a transfer starting once both ends have launched theirs:
    so a rank's next op waits, for every step since its previous op, for each neighbour it exchanges
    with at that step to finish that step's op (a neighbour idle at the step: its latest op before
    it), and for its own op of the step, each plus the transfer. Approximation: an idle neighbour's
    own batch waits are not chained further."""
    if schedule.name != "interleaved-1f1b":
        raise ValueError(f"torch's multi-stage runtime is modelled for interleaved-1f1b, not {schedule.name!r}")
    pp, v = schedule.num_ranks, schedule.num_chunks
    table = torch_time_steps(pp, schedule.num_microbatches, v)
    for rank in range(pp):
        if tuple(op for op in table[rank] if op is not None) != schedule.programs[rank]:
            raise ValueError(f"rank {rank}: torch's time steps run another op order than the schedule's program")
    last_stage = schedule.num_model_stages - 1

    def done_key(rank: int, op: PipeOp) -> tuple[int, tuple[int, int, int]]:
        return (0 if op.kind == "F" else 1), (rank, op.microbatch, op.chunk)

    def latest(rank: int, step: int) -> PipeOp | None:
        return next((table[rank][t] for t in range(min(step, len(table[rank]) - 1), -1, -1)
                     if table[rank][t] is not None), None)

    def sends_to(rank: int, op: PipeOp) -> tuple[int, str] | None:
        """(receiving rank, message kind) of an op's output, None at the pipeline's ends."""
        stage = schedule.stage_of(rank, op.chunk)
        if op.kind == "F":
            return None if stage == last_stage else ((stage + 1) % pp, "F")
        return None if stage == 0 else ((stage - 1) % pp, "B")

    def exchanges(rank: int, step: int) -> list[tuple]:
        """The inputs of the rank's batch at `step`: each partner's op (or latest op) and the
        rank's own op, each with the transfer between them."""
        needs = []
        own = table[rank][step] if step < len(table[rank]) else None
        partners = []
        if own is not None and (to := sends_to(rank, own)) is not None:
            partners.append((to[0], to[1]))
        for other in {(rank - 1) % pp, (rank + 1) % pp} - {rank}:
            op = table[other][step] if step < len(table[other]) else None
            if op is not None and (to := sends_to(other, op)) is not None and to[0] == rank:
                partners.append((other, to[1]))
        for other, kind in partners:
            op = table[other][step] if step < len(table[other]) else None
            op = op if op is not None else latest(other, step)
            if op is not None:
                needs.append((*done_key(other, op), other, kind))
            if own is not None:
                needs.append((*done_key(rank, own), other, kind))
        return needs

    out = []
    for rank in range(pp):
        rows, pending = [], []
        for step, op in enumerate(table[rank]):
            if op is not None:
                rows.append(tuple(pending))
                pending = []
            pending += exchanges(rank, step)
        out.append(tuple(rows))
    return tuple(out)
