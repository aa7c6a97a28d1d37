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
