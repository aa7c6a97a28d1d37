"""TransformerEngine's userbuffers TP overlap (Megatron-LM --tp-comm-overlap): timelines. Pure.

What Megatron-LM core_r0.8.0 runs (megatron/training/initialize.py _initialize_tp_communicators:
ub_cfgs = {} unless --tp-comm-overlap-cfg is given, so every layer takes TransformerEngine's
defaults) with TransformerEngine v1.8 (2024-07, transformer_engine/pytorch/module/base.py
initialize_ub, add_ub's defaults num_sm=16, cga_size=2, set_sm_margin=0, use_ce=True, aggregate=0,
atomic_gemm=0; num_splits=4 for 'pipeline'; v1.7 alike), with sequence parallelism (Megatron asserts
it for --tp-comm-overlap):

- ring_exchange (qkv_fprop, fc1_fprop; proj_dgrad, fc2_dgrad): the all-gather of the GEMM's input
  pipelined with the GEMM split into tp chunks of m/tp rows (UbufP2PCommOverlap.split_overlap_ag);
  the P2P transfers run on the copy engine (use_ce), so no SM is taken from the GEMM. In the
  backward the output gradient is first copied into the userbuffer (linear.py / layernorm_mlp.py
  _grad_output_preprocess: copy_input_to_ubuf); in the forward the layer norm writes its output
  straight into it.
- pipeline (proj_fprop, fc2_fprop): the GEMM split into num_splits = 4 chunks of m/4 rows; after
  each chunk a userbuffers reduce-scatter kernel on num_sm = 16 SMs (UbufCommOverlap.split_overlap_rs)
  runs beside the next chunk. The GEMM is launched for every SM (set_sm_margin 0: _math_sms =
  multiProcessorCount), so while that kernel runs the GEMM shares the GPU with it, not told.
- bulk (qkv_dgrad, fc1_dgrad; qkv_wgrad, fc1_wgrad): in the backward of a layer-norm linear, the
  all-gather of its saved (sequence-sharded) input, copied into the userbuffer first
  (layernorm_linear.py: copy_input_to_ubuf(ln_out, 1)), runs on 16 SMs beside the input-gradient
  GEMM (the weight gradient needs the whole input); then the reduce-scatter of that input gradient
  runs on 16 SMs beside the weight-gradient GEMM (UbufCommOverlap.bulk_overlap).

A GEMM beside a kernel holding SMs it was not told of runs at the measured `untold` slowdown
(Profile.sm_reserve, calibration/sm_reserve.py, mode spin) for the time the two overlap; the
communication kernel's own slowdown beside the GEMM (the holder's) is not charged.
"""

from __future__ import annotations

TE_PIPELINE_SPLITS = 4   # add_ub: num_splits=4 if method == "pipeline" (TE v1.8 base.py initialize_ub)
TE_COMM_SMS = 16         # add_ub: num_sm=16 for the pipeline and bulk kernels (TE v1.8)
# the TP collective at each point of a part (twin.training.step._tp_kinds) -> TransformerEngine's method
TE_METHODS = {"in_fwd": "ring_exchange", "out_fwd": "pipeline", "out_bwd": "ring_exchange", "in_bwd": "bulk"}


def gemm_beside_window_s(gemm_s: float, start_s: float, end_s: float, slowdown: float) -> float:
    """Duration of a GEMM of `gemm_s` seconds (alone on the GPU) that starts at 0 while a kernel
    holding SMs runs over [start_s, end_s] (seconds from the GEMM's start): inside that window the
    GEMM progresses at 1 / slowdown of its rate."""
    if slowdown < 1.0:
        raise ValueError(f"slowdown must be >= 1 (got {slowdown})")
    start_s = max(0.0, start_s)
    if end_s <= start_s or gemm_s <= start_s:
        return gemm_s
    before = start_s
    window = end_s - start_s
    left = gemm_s - before
    if left * slowdown <= window:
        return before + left * slowdown
    return before + window + (left - window / slowdown)


def pipelined_reduce_scatter_s(chunk_gemm_s: float, chunk_comm_s: float, splits: int, slowdown: float) -> tuple[float, float]:
    """TE's 'pipeline' overlap: `splits` GEMM chunks of `chunk_gemm_s` each on the compute stream;
    the reduce-scatter of chunk i (`chunk_comm_s`, on the communication stream, one after another)
    starts once chunk i is computed and runs beside chunk i+1, which it slows by `slowdown` while
    both run. Returns (seconds until the last chunk is computed, seconds until the last chunk's
    reduce-scatter is done), from the first chunk's start."""
    if splits < 1:
        raise ValueError(f"splits must be >= 1 (got {splits})")
    gemm_end, comm_end = chunk_gemm_s, 0.0
    for _ in range(1, splits):
        # chunk i-1's reduce-scatter starts once it is computed and the one before is done; the
        # communication stream is then busy from chunk i's start (an earlier reduce-scatter still
        # running, or this one starting) until this one ends
        comm_end = max(gemm_end, comm_end) + chunk_comm_s
        gemm_end += gemm_beside_window_s(chunk_gemm_s, 0.0, comm_end - gemm_end, slowdown)
    comm_end = max(gemm_end, comm_end) + chunk_comm_s    # the last chunk's, with nothing beside it
    return gemm_end, comm_end


def bulk_overlap_s(gemm_s: float, comm_s: float, slowdown: float) -> tuple[float, float]:
    """TE's 'bulk' overlap: a collective of `comm_s` and a GEMM of `gemm_s` (alone) start together
    (the collective does not depend on the GEMM). Returns (the GEMM's seconds beside it, the
    seconds the collective runs past the GEMM's end: exposed)."""
    gemm_end = gemm_beside_window_s(gemm_s, 0.0, comm_s, slowdown)
    return gemm_end, max(0.0, comm_s - gemm_end)


def shared_gpu_s(gemm_s: float, comm_s: float, gemm_slowdown: float, comm_slowdown: float) -> tuple[float, float]:
    """A GEMM of `gemm_s` and a communication of `comm_s` (each alone on the GPU) that start together
    and share it: while both run, the GEMM progresses at 1 / gemm_slowdown of its rate and the
    communication at 1 / comm_slowdown of its own; the one left runs at full rate. Returns (the
    GEMM's end, the communication's end), in seconds from the start. With comm_slowdown 1 the GEMM's
    end is bulk_overlap_s's (ADOPT_TP_TRAFFIC_MEASURED, docs/notes/s30mlm_rule.md)."""
    if gemm_slowdown < 1.0 or comm_slowdown < 1.0:
        raise ValueError(f"slowdowns must be >= 1 (got {gemm_slowdown}, {comm_slowdown})")
    if gemm_s <= 0.0 or comm_s <= 0.0:
        return max(0.0, gemm_s), max(0.0, comm_s)
    if gemm_s * gemm_slowdown <= comm_s * comm_slowdown:   # the GEMM ends first
        t = gemm_s * gemm_slowdown
        return t, comm_s + t * (1.0 - 1.0 / comm_slowdown)
    t = comm_s * comm_slowdown
    return gemm_s + t * (1.0 - 1.0 / gemm_slowdown), t


def pipelined_reduce_scatter_shared_s(chunk_gemm_s: float, chunk_comm_s: float, splits: int,
                                      gemm_slowdown: float, comm_slowdown: float) -> tuple[float, float]:
    """pipelined_reduce_scatter_s with the reduce-scatter slowed too: `splits` GEMM chunks back to back
    on the compute stream; chunk i's reduce-scatter starts once chunk i is computed and the one before
    is done; while a GEMM chunk and a reduce-scatter run together the GEMM progresses at
    1 / gemm_slowdown and the reduce-scatter at 1 / comm_slowdown of its rate. Returns (seconds until
    the last chunk is computed, until the last reduce-scatter is done). With comm_slowdown 1 it equals
    pipelined_reduce_scatter_s (tests/twin/costs/test_tp_overlap.py)."""
    if splits < 1:
        raise ValueError(f"splits must be >= 1 (got {splits})")
    if gemm_slowdown < 1.0 or comm_slowdown < 1.0:
        raise ValueError(f"slowdowns must be >= 1 (got {gemm_slowdown}, {comm_slowdown})")
    t, gemm_end = 0.0, 0.0
    computed = sent = 0                       # chunks computed, reduce-scatters done
    g_left, c_left = chunk_gemm_s, chunk_comm_s
    while sent < splits:
        g_on, c_on = computed < splits, sent < computed
        both = g_on and c_on
        rg, rc = (1.0 / gemm_slowdown, 1.0 / comm_slowdown) if both else (1.0, 1.0)
        dt = min(g_left / rg if g_on else float("inf"), c_left / rc if c_on else float("inf"))
        t += dt
        if g_on:
            g_left -= dt * rg
            if g_left <= 1e-12 * max(chunk_gemm_s, 1e-30):
                computed, gemm_end, g_left = computed + 1, t, chunk_gemm_s
        if c_on:
            c_left -= dt * rc
            if c_left <= 1e-12 * max(chunk_comm_s, 1e-30):
                sent, c_left = sent + 1, chunk_comm_s
    return gemm_end, t
