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

`num_microbatches` counts all micro-batches of a step. For DualPipe that is both directions
together, exactly like the reference's `num_chunks`: micro-batches 0..N/2-1 travel the forward
direction (chunk 0, rank 0 -> PP-1), N/2..N-1 the reverse one (chunk 1, rank PP-1 -> 0).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from twin.errors import ScenarioError

SCHEDULES = ("1f1b", "zb1p", "dualpipe", "dualpipev")

OP_KINDS = ("F", "B", "W", "BW", "FB")


@dataclass(frozen=True)
class PipeOp:
    """One op of a rank's program. For FB, (microbatch, chunk) is the forward part and
    (b_microbatch, b_chunk) the backward part; b_split says the backward is input-only."""

    kind: str
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


@dataclass(frozen=True)
class Schedule:
    """Per-rank programs plus the model-stage layout that defines the dataflow."""

    name: str
    num_ranks: int
    num_microbatches: int
    num_chunks: int
    programs: tuple[tuple[PipeOp, ...], ...]

    @property
    def num_model_stages(self) -> int:
        """Equal model stages: PP for 1F1B/ZB1P/DualPipe (DualPipe holds two copies), 2PP for DualPipeV."""
        return 2 * self.num_ranks if self.name == "dualpipev" else self.num_ranks

    def stage_of(self, rank: int, chunk: int) -> int:
        """The model stage (0 = first layers) that `rank` computes for `chunk`."""
        if chunk == 0:
            return rank
        if self.name == "dualpipe":
            return self.num_ranks - 1 - rank
        if self.name == "dualpipev":
            return 2 * self.num_ranks - 1 - rank
        raise ValueError(f"{self.name} has one chunk per rank, not chunk {chunk}")

    def chunks_of(self, microbatch: int) -> tuple[int, ...]:
        """The chunks a micro-batch passes through (on every rank)."""
        if self.name == "dualpipe":
            return (0,) if microbatch < self.num_microbatches // 2 else (1,)
        if self.name == "dualpipev":
            return (0, 1)
        return (0,)

    def _rank_of_stage(self, stage: int, like_chunk: int) -> tuple[int, int]:
        pp = self.num_ranks
        if self.name == "dualpipe":  # each chunk is a full model copy with its own direction
            return (stage, 0) if like_chunk == 0 else (pp - 1 - stage, 1)
        if self.name == "dualpipev":
            return (stage, 0) if stage < pp else (2 * pp - 1 - stage, 1)
        return (stage, 0)

    def forward_upstream(self, rank: int, chunk: int) -> tuple[int, int] | None:
        """(rank, chunk) whose forward output feeds this forward; None at the first stage."""
        stage = self.stage_of(rank, chunk)
        if stage == 0:
            return None
        return self._rank_of_stage(stage - 1, chunk)

    def backward_upstream(self, rank: int, chunk: int) -> tuple[int, int] | None:
        """(rank, chunk) whose input-grad is this backward's output-grad; None at the last
        stage, whose backward starts from the loss of its own forward."""
        stage = self.stage_of(rank, chunk)
        last = (self.num_model_stages if self.name == "dualpipev" else self.num_ranks) - 1
        if stage == last:
            return None
        return self._rank_of_stage(stage + 1, chunk)


# --------------------------------------------------------------------------------------------
# builders


def _check_int(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(field, value, f"an integer >= {minimum}")
    return value


def build_schedule(name: str, num_ranks: int, num_microbatches: int) -> Schedule:
    """Build the per-rank programs of schedule `name` for `num_ranks` pipeline ranks."""
    if name not in SCHEDULES:
        raise ScenarioError("plan.schedule", name, "one of " + ", ".join(SCHEDULES))
    pp = _check_int("plan.pp", num_ranks, 1)
    n = _check_int("plan.num_microbatches", num_microbatches, 1)
    if name == "dualpipe":
        if pp % 2:
            raise ScenarioError("plan.pp", pp, "an even number of ranks for dualpipe")
        if n % 2 or n < 2 * pp:
            raise ScenarioError(
                "plan.num_microbatches", n,
                f"an even number >= 2*pp = {2 * pp} for dualpipe (both directions together)")
    if name == "dualpipev" and n < 2 * pp:
        raise ScenarioError("plan.num_microbatches", n, f">= 2*pp = {2 * pp} for dualpipev")

    build = {"1f1b": _one_f_one_b, "zb1p": _zb1p,
             "dualpipe": _dualpipe, "dualpipev": _dualpipev}[name]
    programs = tuple(tuple(build(rank, pp, n)) for rank in range(pp))
    num_chunks = 2 if name in ("dualpipe", "dualpipev") else 1
    return Schedule(name, pp, n, num_chunks, programs)


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
