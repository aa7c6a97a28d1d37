"""Context parallelism's pure costs on one rank, used by the training step (twin/training/step.py):
the attention calls of Llama 3's all-gather CP (plan.cp_kind 'allgather', allgather_attention_calls)
and PyTorch's experimental context parallelism as torchtitan runs it (plan.cp_kind
'torch_allgather'): the costs of one attention pass on one rank, used also by the calibration of
the measured CP blocks (calibration/torch_cp.py).

torch/distributed/tensor/experimental/_attention.py, _templated_ring_attention and its backward,
rotate method 'allgather', load-balanced causal sharding (torchtitan utils.create_context_parallel_ctx
@ 9dec370). A pass runs cp attention calls of equal work (1/cp of the core each). Forward: the K/V
all-gather is issued before the first call and awaited at the second. Backward: the K/V all-gather
again behind the first call; after every call the FP32 dK/dV accumulated so far goes to the next
rank (_AllToAllRotater), awaited after the next call, the last one at once. Around the calls, eager
kernels (the merger and accumulators convert to FP32, convert_to_f32 = True), in bytes per element
of the rank's attention output (q) and of its K/V (kv), counted from the code:
forward, the first call's output to FP32 (6) and the final cast back (6); each later call's output
to FP32 6, out - block_out 12, x sigmoid 8, out - that 12 (32.5 on average over the ranks, half of
whose later calls take half the queries and then copy the whole FP32 output back together with
torch.cat); K/V made contiguous once and concatenated for each send, 4 each.
Backward: FP32 zeros for dq, dK, dV (4) and the final casts (6); per call, dq += (10, with the
half-and-cat calls 11.5 on average) and dK, dV += (11.5) and concatenated in FP32 for the send (8)
and the K/V concatenated (4).
"""

from __future__ import annotations

import dataclasses

from twin.costs import compute
from twin.costs.flops import Op
from twin.costs.profile import Profile
from twin.core.specs import GPUSpec

TORCH_CP_FWD_BYTES = {"q_fixed": 12.0, "q_per_later_call": 32.5, "kv_per_call": 4.0}
TORCH_CP_BWD_BYTES = {"q_fixed": 10.0, "q_per_call": 11.5, "kv_fixed": 10.0, "kv_per_call": 23.5}
TORCH_CP_LAUNCHES_PER_CALL = {"fwd": 6, "bwd": 8}
# Those kernels' measured time over their bytes at the streaming bandwidth (and launches): PyTorch's
# own CP2 of a Llama-3.1-8B attention block on 2x H100, 16K-128K positions, flash and cuDNN, both
# rotate methods (calibration/measurements/h100x2/torch_cp_kernels.csv, campaign s8cp), the slowest
# rank's copy/elementwise/fill/reduce kernels per phase less the repeat_kv copy, over
# torch_cp_merge_s at factor 1: the median of the 24 fitting (row, phase) ratios, 1.47-1.77
# (calibration.torch_cp.merge_time_factor). They are strided and broadcast kernels (FP32 merges
# against an unsqueezed log-sum-exp, copies of transposed K/V, torch.cat of chunks).
TORCH_CP_MERGE_TIME_FACTOR = 1.66
# The same merges and accumulations traced into a torch.compile(fullgraph=True) block (torchtitan's
# apply_compile @ 9dec370 compiles every TransformerBlock, plan.kernels 'fused_blocks'): Inductor
# fuses them into few Triton kernels, measured per phase as the eager factor is, over the same bytes
# (calibration.torch_cp.compiled_merge_time_factors): PyTorch's CP2 of the Llama-3.1-8B attention
# core at 32K positions a rank, flash, allgather, compiled, on 4x H100 (campaign s10cpc,
# calibration/measurements/h100x4/torch_cp_scaling/torch_cp_kernels_compiled_cp2.csv; CP4 held out).
TORCH_CP_COMPILED_MERGE_TIME_FACTOR = {"fwd": 0.26, "bwd": 0.59}
# Compiled, the backward handler's K/V all-gather (kv_rotater in _templated_ring_attention_backward)
# and the forward's are one functional collective of the same torch.cat of K/V: AOTAutograd's
# joint-graph CSE merges them, so the backward reads the forward's gathered K/V (saved, or gathered
# once more by the recomputed forward under full AC) and runs only its cp dK/dV hand-overs. Seen in
# s10cpc's compiled traces (h100x4/torch_cp_scaling: per repetition one AllGather in the forward, cp
# SendRecv and no all-gather in the backward); under full AC (s17cp, h200x4/cp_block) one all-gather,
# the recomputation's. Adopted by docs/notes/s17cp_rule.md part C.
ADOPT_COMPILED_CP_ONE_GATHER = True
# Compiled, every rank traces its own graph (the load-balanced ring branches on the rank), Inductor places
# each graph's waited-at-issue collectives on its own, and every collective meets all ranks: a block pays,
# interval by interval, the slowest rank's work since the last meeting (s17cp's CP4 block: one rank
# gathers K/V before its diagonal call, the others after). Per CP degree and pass, the seconds lost in a
# chain of blocks over the pass's attention-core seconds, from each rank's compiled schedule replayed in
# lock step (calibration/cp_schedule.py schedule_fracs; campaign s27cp, 2x H200, torch 2.11: cp 2 from real
# NCCL traces, cp 4 and 8 from each rank's schedule compiled on a fake process group,
# calibration/measurements/h200x2/s27cp/; the figures of calibration/s27cp_judgement.json, 4 decimals).
# At CP8 two ranks' backward graphs (4 and 6) put all eight dK/dV hand-overs after their eight backward
# calls where the others interleave them: the others stall ~0.49 s a block. Adopted by
# docs/notes/s27cp_rule.md (C1-C4 and its guards held).
ADOPT_COMPILED_CP_SCHEDULE_WAIT = True
COMPILED_CP_SCHEDULE_WAIT_FRAC: dict[int, dict[str, float]] = {
    2: {"fwd": 0.0002, "bwd": 0.0025}, 4: {"fwd": 0.0341, "bwd": 0.0403}, 8: {"fwd": 0.0138, "bwd": 0.8573}}
# The same fractions from a block's own compiled schedule, keyed by (model name, TP degree): the block a
# rank runs. s27cp measured the 8B block (TP 1) and the twin gave its fractions to every torch_allgather row,
# the 405B TP 8 rows of torchtitan's Table 6 included. Candidate of docs/notes/s29cp_rule.md: the 405B TP 8
# slice's own (16 heads, one K/V head repeated, FFN 6656; campaign s29cp on a fake process group as s27cp's;
# calibration.cp_schedule.judge_s29cp), used where the switch is on and the block has them; a block without
# its own keeps COMPILED_CP_SCHEDULE_WAIT_FRAC. Empty until the rule's records exist.
# Judged (calibration/s29cp_judgement.json): not adopted (C4 and P1-P3 failed; the slice defers its hand-overs at
# CP4 where the 8B block does not); left empty.
ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK = False
COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK: dict[tuple[str, int], dict[int, dict[str, float]]] = {}
# Round 2 (docs/notes/s29cp2_rule.md): the same, from the block compiled with Float8 (tensorwise) linears, as
# every torchtitan CP row ran it (Table 2 and Table 6: torch.compile + Float8), for a plan whose GEMMs run FP8;
# keyed (model name, TP degree): the 8B block (TP 1) and the 405B TP 8 slice (campaign s29cp2,
# calibration.cp_schedule.judge_s29cp2). Judged (calibration/s29cp2_judgement.json): not adopted (P1: the published
# median 7.12% -> 7.66%; the Float8 blocks' CP4 ranks agree, their CP8 ranks disagree as the BF16 8B block's);
# left empty.
ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK = False
COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK: dict[tuple[str, int], dict[int, dict[str, float]]] = {}


def torch_cp_merge_s(cp: int, q_elems: float, kv_elems: float, backward: bool, gpu: GPUSpec,
                     profile: Profile, time_factor: float = TORCH_CP_MERGE_TIME_FACTOR) -> float:
    """Seconds of the eager FP32 merge and accumulation kernels around one pass on this rank:
    q_elems the rank's attention output elements, kv_elems its K/V chunk's elements (K and V);
    their bytes at the streaming bandwidth plus launches, times the measured `time_factor`."""
    if backward:
        b = TORCH_CP_BWD_BYTES
        nbytes = q_elems * (b["q_fixed"] + b["q_per_call"] * cp) + kv_elems * (b["kv_fixed"] + b["kv_per_call"] * cp)
    else:
        b = TORCH_CP_FWD_BYTES
        nbytes = q_elems * (b["q_fixed"] + b["q_per_later_call"] * (cp - 1)) + kv_elems * b["kv_per_call"] * cp
    launches = TORCH_CP_LAUNCHES_PER_CALL["bwd" if backward else "fwd"] * cp
    return time_factor * (compute.memory_time_s(nbytes, gpu, profile) + (launches - 1) * profile.launch_s)


def torch_cp_exposed_s(cp: int, core_s: float, gather_s: float, pass_s: float, backward: bool,
                       compiled: bool = False, block: tuple | None = None) -> float:
    """Communication of one pass not hidden behind its attention calls (each 1/cp of `core_s`): the
    K/V all-gather (`gather_s`) beyond the first call; in the backward also each FP32 dK/dV
    hand-over (`pass_s`) beyond the call after it, and the last one whole.
    `compiled`: the pass traced into a torch.compile(fullgraph=True) block, where every collective
    is waited at issue, so all of them are exposed: traced, a functional collective's result is
    waited at once (torch/distributed/_functional_collectives.py, _maybe_wrap_tensor: wait_tensor
    when _are_we_tracing()), and Inductor moves no wait later in a training graph (its comm
    reordering, reorder_for_compute_comm_overlap, is off by default since pytorch/pytorch#108091;
    reorder_for_locality runs only on inference graphs). Measured (campaign s10cpc, 4x H100): the
    NCCL time of every rank and phase all exposed. With ADOPT_COMPILED_CP_ONE_GATHER the compiled
    backward runs no all-gather of its own (its `gather_s` not charged). With
    ADOPT_COMPILED_CP_SCHEDULE_WAIT the compiled pass adds its ranks' meeting loss
    (`compiled_schedule_wait_s`; `block` the rank's (model name, TP degree, GEMM precision))."""
    if compiled:
        wait = compiled_schedule_wait_s(cp, core_s, backward, block)
        if backward:
            return (0.0 if ADOPT_COMPILED_CP_ONE_GATHER else gather_s) + cp * pass_s + wait
        return gather_s + wait
    call_s = core_s / cp
    exposed = max(0.0, gather_s - call_s)
    if backward:
        exposed += (cp - 1) * max(0.0, pass_s - call_s) + pass_s
    return exposed


def compiled_schedule_wait_s(cp: int, core_s: float, backward: bool, block: tuple | None = None) -> float:
    """Seconds one compiled pass loses to its ranks meeting at their own graphs' collectives:
    COMPILED_CP_SCHEDULE_WAIT_FRAC[cp] of the pass ('fwd', the recomputed forward too, or 'bwd') times
    its attention-core seconds `core_s`; 0 with the switch off or at a CP degree never measured.
    `block` (model name, TP degree[, GEMM precision]): with ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK and precision
    'fp8', the Float8 block's own fractions where COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK has them; else,
    with ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK, the block's own where COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK has them."""
    if not ADOPT_COMPILED_CP_SCHEDULE_WAIT:
        return 0.0
    table = COMPILED_CP_SCHEDULE_WAIT_FRAC
    key = tuple(block[:2]) if block else None
    fp8 = bool(block) and len(block) > 2 and block[2] == "fp8"
    if fp8 and ADOPT_CP_SCHEDULE_WAIT_FP8_BLOCK and key in COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK:
        table = COMPILED_CP_SCHEDULE_WAIT_FRAC_FP8_BY_BLOCK[key]
    elif ADOPT_CP_SCHEDULE_WAIT_OWN_BLOCK and key in COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK:
        table = COMPILED_CP_SCHEDULE_WAIT_FRAC_BY_BLOCK[key]
    return table.get(cp, {}).get("bwd" if backward else "fwd", 0.0) * core_s


def allgather_attention_calls(core: Op, cp: int) -> list[Op]:
    """The attention calls of one rank under Llama 3's all-gather context parallelism (plan.cp_kind
    'allgather'; Llama 3 paper, arXiv 2407.21783 section 3.3.2, "Context parallelism for long
    sequences"): the sequence is cut into 2 cp chunks of c positions, rank i holds chunks i and
    2cp-1-i, all-gathers K and V, and attends each of its query chunks to every key before it.
    Chunk j (0-based) is a call of c queries over (j+1)c keys, causal at its end
    (Op.kv_len; flops.attention_pairs). Every rank has the same pairs (c x 2cp c in all), but not
    the same key lengths: under the twin's attention curve, e_max / (1 + s_half / L), a rank's time
    is its pairs over e_max plus s_half x pairs / L summed over its calls, largest for the rank
    whose two key lengths are the most alike, rank cp-1 (chunks cp-1 and cp: keys cp c and
    (cp+1) c). That rank sets the pace (the ranks meet at every layer's all-gather), so its calls
    are returned. `core` is the self-attention core of one rank's seq_len / cp positions (two
    chunks), as attention_ops builds it."""
    c = core.seq_len // 2
    return [dataclasses.replace(core, seq_len=c, kv_len=cp * c, causal=True),
            dataclasses.replace(core, seq_len=c, kv_len=(cp + 1) * c, causal=True)]
