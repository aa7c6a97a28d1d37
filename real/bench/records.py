"""What a campaign writes: one CSV per family, its columns, and the console log.

Torch-free, so the column schema and ENERGY_MIN_WINDOW_S can be read without a GPU image
(benchmarks/real_blank_short_power.py applies the same power rule to recorded files).
Every row: the shape columns of its family (SHAPE_COLS), the timing statistics (STAT_COLS; not
for expert_load) and the environment (ENV_COLS).
"""

from __future__ import annotations

import csv
import datetime
import math
import time
from pathlib import Path

# NVML's energy counter advances in ~0.1 s steps: timed loops shorter than this leave power_w and
# energy_j empty (real/bench/timing.py Timer)
ENERGY_MIN_WINDOW_S = 0.5  # shortest timed loop whose NVML energy delta we trust
NO_STAT_FAMILIES = ("expert_load", "host_probe", "serve_steps", "serve_kernels", "host_probes", "probe_steps",
                    "step_after", "train_kernels")   # rows that time nothing themselves
STAT_COLS = ["time_s", "time_p10_s", "time_p90_s", "reps", "timing", "flops", "bytes",
             "achieved_flops_per_s", "achieved_bytes_per_s"]
ENV_COLS = ["gpu_name", "sm_clock_mhz", "mem_clock_mhz", "power_w", "energy_j",
            "torch_version", "cuda_version", "timestamp_utc"]
# multi-GPU families also carry the NCCL version and the number of GPUs of the run
DIST_ENV_COLS = ["nccl_version", "num_gpus"]
# (and the one-GPU dense_block families, whose campaign records the NCCL version as every row must)
DIST_FAMILIES = {"nccl", "parallel_blocks", "collective_host", "torch_cp", "torch_cp_kernels", "torch_cp_timeline",
                 "dense_block", "dense_kernels", "async_tp", "tp_beside", "dense_dropout",
                 "dense_dropout_kernels", "ep", "ep_kernels", "ep_grouped"}
SHAPE_COLS = {
    # (s33train) real/bench/train_trace.py: whole train steps timed (mode timed) and profiled (cuda_only, with_host:
    # the step's GPU span, kernel sum, busy union, gap), and each profiled step's GPU activities
    "train_trace_steps": ["model", "batch", "seq_len", "precision", "mode", "step", "kernels", "gpu_span_s",
                          "kernel_sum_s", "busy_s", "gap_s"],
    "train_kernels": ["model", "batch", "seq_len", "precision", "mode", "step", "index", "kernel", "kind", "category",
                      "stream", "phase", "start_us", "end_us", "launch_us"],
    "gemm": ["bench", "m", "n", "k", "groups", "tokens_per_group", "precision", "shape_tag"],
    "attention": ["bench", "model", "batch", "seq_len", "num_heads", "qk_head_dim", "v_head_dim",
                  "causal", "precision"],
    # real/bench/attention.py section attn_small (s12mla): SDPA in the operand layout real/'s MLA hands it
    "attention_layout": ["bench", "model", "batch", "seq_len", "num_heads", "qk_head_dim", "v_head_dim",
                         "causal", "precision", "layout"],
    "memory": ["bench", "op", "tokens", "width", "bytes_moved"],
    # real/bench/memory.py section memory_alone (s15gl2): fitting-split memory kernels timed alone
    "memory_alone": ["bench", "op", "tokens", "width", "bytes_moved", "split"],
    "moe_layer": ["bench", "model", "hidden_size", "moe_intermediate_size", "tokens",
                  "num_experts", "top_k", "num_shared_experts", "skew", "max_expert_tokens",
                  "mean_expert_tokens", "tokens_per_expert", "precision"],
    "model": ["bench", "model", "batch", "seq_len", "prompt_len", "gen_len", "precision",
              "tokens_per_s", "mfu", "peak_memory_bytes", "loss"],
    # (s21host) the host probe taken right before a model.csv prefill/decode row (bench, model, batch,
    # lengths, precision) or a host_dispatch row (config, phase, precision): real/bench/whole_model.py probe_row
    "host_probe": ["bench", "model", "batch", "prompt_len", "gen_len", "config", "phase", "precision",
                   "probe_window_s", "host_probe_launch_s", "host_probe_launch_p50_s"],
    # (s21host2) real/bench/host_steps.py: one row per timed step of a prefill/decode record or repetition of a
    # host_dispatch row, with the probe taken right before it (block probed; NaN for a control step)
    "serve_steps": ["bench", "model", "batch", "prompt_len", "gen_len", "config", "phase", "precision", "step",
                    "block", "cache_len", "probe_window_s", "host_probe_launch_s", "step_s", "host_s"],
    # (s24probe) real/bench/step_probe.py: one row per host-speed probe candidate per probe set (set k taken after
    # the k-th case's steps; set 0 before the first): host seconds per unit, its mean over the window and median
    "host_probes": ["set", "where", "candidate", "window_s", "host_s_per_unit", "host_s_per_unit_p50"],
    # (s24probe candidate 2) real/bench/step_probe.py step_probe_each: one row per timed step, the probe of kind `kind`
    # taken right before it (host seconds per unit, the kind's mean over its window), the step's event and host seconds
    # (s25host2) real/bench/host_steps.py under REAL_BENCH_STEP_AFTER_PROBE: the launch probe taken right after each
    # timed step or fitting repetition (the device synchronised), keyed as its serve_steps row
    "step_after": ["bench", "model", "batch", "prompt_len", "gen_len", "config", "phase", "precision", "step", "block",
                   "probe_window_s", "host_probe_after_s"],
    "probe_steps": ["bench", "model", "batch", "prompt_len", "step", "kind", "probe_window_s", "probe_s_per_unit",
                    "step_s", "host_s"],
    # (s21host2) the kernels (torch profiler) and non-view aten ops of one cached decode step after a record
    "serve_kernels": ["bench", "model", "batch", "prompt_len", "gen_len", "precision", "cache_len", "kernels",
                      "aten_ops"],
    "power": ["bench", "config", "precision"],
    "sustained": ["bench", "config", "precision", "phase", "window", "elapsed_s", "temperature_c"],
    # real/bench/duty_sweep.py (s14tt): a kernel run a fraction of the time at our power limit; duty_frac
    # measured by CUDA events, clock_event_reasons NVML's bitmask (0x4: software power cap)
    "duty_sweep": ["bench", "kernel", "precision", "duty_target", "window", "elapsed_s", "temperature_c",
                   "duty_frac", "period_s", "calls_per_period", "clock_event_reasons"],
    # real/bench/copy_load.py (s15tt): a kernel beside copy-engine traffic at our power limit
    "copy_load": ["bench", "kernel", "precision", "copy_streams", "window", "elapsed_s", "temperature_c",
                  "copies_per_period", "calls_per_period", "copy_bytes_per_s", "clock_event_reasons"],
    "kernels": ["bench", "config", "precision", "kernel", "calls"],
    "step_kernels": ["bench", "config", "precision", "profiled", "kernel", "calls"],
    # real/bench/dense_block.py (s8dense): one GPU's dense block (its TP slice) and its kernels
    "dense_block": ["bench", "block", "model", "tp", "batch", "seq_len", "hidden_size", "num_heads", "num_kv_heads",
                    "head_dim", "ffn", "vocab", "sdpa_backend", "gqa", "compiled", "precision", "split", "host_s"],
    "dense_kernels": ["bench", "phase", "block", "model", "tp", "batch", "seq_len", "hidden_size", "num_heads",
                      "num_kv_heads", "head_dim", "ffn", "vocab", "sdpa_backend", "gqa", "compiled", "precision",
                      "split", "kernel", "calls"],
    # real/bench/dense_dropout.py (s11drop): Megatron's GPT block with its dropout (attention /
    # hidden probabilities) beside none; sdpa_ran: the attention kernel family the profile saw
    "dense_dropout": ["bench", "block", "model", "tp", "batch", "seq_len", "hidden_size", "num_heads", "head_dim",
                      "ffn", "attention_dropout", "hidden_dropout", "sdpa_backend", "sdpa_ran", "precision", "split",
                      "host_s"],
    "dense_dropout_kernels": ["bench", "model", "tp", "attention_dropout", "hidden_dropout", "sdpa_backend",
                              "sdpa_ran", "kernel", "calls"],
    # host_s (s12ep): median host seconds from a timed call's start to its return (real/bench/ep.py
    # HostMarks); split: every ep row is held out
    "ep": ["bench", "world_size", "tokens_per_rank", "num_experts", "top_k", "hidden_size", "skew",
           "max_rank_rows", "bytes_per_rank", "precision", "host_s", "split"],
    # real/bench/ep_kernels.py (s14epl): the EP layer's profiled kernels per rank (nccl_overlap_s: of
    # time_s, the seconds an NCCL kernel ran beside it on the same GPU; sampled_sm_clock_mhz: NVML's
    # median while the profiled calls ran) and its forward grouped GEMMs alone (rows: received rows)
    "ep_kernels": ["bench", "world_size", "tokens_per_rank", "num_experts", "top_k", "hidden_size", "skew",
                   "max_rank_rows", "bytes_per_rank", "precision", "split", "rank", "kernel", "calls",
                   "nccl_overlap_s", "sampled_sm_clock_mhz"],
    "ep_grouped": ["bench", "world_size", "tokens_per_rank", "num_experts", "top_k", "hidden_size", "skew",
                   "max_rank_rows", "bytes_per_rank", "precision", "rank", "rows", "sampled_sm_clock_mhz",
                   "profiled_kernel_s", "profiled_sm_clock_mhz"],
    # real/bench/gemm_in_layer.py (s14gl): one-GPU layers eagerly (gl_layer) and their aten calls in the
    # layer (gl_ops where=layer, profiler) beside the same calls alone (alone_burst, alone_graph), with clocks
    "gl_layer": ["bench", "layer", "model", "config", "precision", "split", "direction", "sampled_sm_clock_mhz"],
    "gl_ops": ["bench", "layer", "model", "config", "precision", "split", "direction", "where", "op", "op_class",
               "input_shapes", "calls", "sampled_sm_clock_mhz"],
    "fp8_stack": ["bench", "op", "m", "n", "k", "precision", "out_dtype", "bytes_moved"],
    "sm_reserve": ["bench", "mode", "reserved_sms", "m", "n", "k", "precision", "trial", "time_solo_s",
                   "replays_inside", "gemm_start_s", "holder_s", "holder_solo_s", "holder_bytes", "holder_covered"],
    # profiled: "phase" = kernels of the phase alone (records before 2026-11-26 04:00 also hold the
    # phase's setup: a backward's forward, an optimizer's forward and backward)
    "host_dispatch": ["bench", "config", "phase", "model", "batch", "seq_len", "tokens", "num_experts", "precision",
                      "split", "profiled", "host_s", "kernels", "kernel_s", "aten_ops", "aten_views"],
    # real/bench/mla_host.py probes: host seconds per kernel of a chain of n_ops small ops by dispatch class
    "host_class": ["bench", "op", "n_ops", "phase", "dim", "split", "profiled", "host_s", "kernels", "kernel_s",
                   "aten_ops", "aten_views"],
    # real/bench/mla_paired.py (s9mla): probes, the fitting MLA host rows and the MLA layer records
    # of one process, each with its round and the probe block (`pair`) taken right before it
    "mla_paired": ["bench", "round", "pair", "op", "n_ops", "phase", "config", "model", "batch", "seq_len",
                   "num_heads", "qk_head_dim", "v_head_dim", "causal", "precision", "split", "profiled",
                   "host_s", "kernels", "kernel_s", "aten_ops", "aten_views"],
    "wgrad_accum": ["bench", "op", "shape_tag", "num_experts", "n", "k", "elements", "bytes_moved", "precision"],
    "expert_load": ["bench", "model", "step", "layer", "bias_update_rate", "num_experts",
                    "max_over_mean", "tokens_per_expert"],
    "nccl": ["bench", "op", "message_bytes", "world_size", "dtype", "calls_per_window", "bus_factor",
             "algbw_bytes_per_s", "busbw_bytes_per_s", "split"],
    "parallel_blocks": ["bench", "block", "model", "tp", "cp", "cp_kind", "sequence_parallel", "tokens", "seq_len",
                        "batch", "hidden_size", "num_heads", "qk_head_dim", "v_head_dim", "num_experts",
                        "top_k", "moe_intermediate_size", "skew", "precision", "attn_kernel",
                        "comm_time_s", "comm_detail", "host_time_s", "split",
                        # the host probe beside the row (REAL_BENCH_HOST_PROBE_S; empty where off)
                        "probe_launch_before_s", "probe_launch_after_s", "probe_launch_s",
                        "round"],   # REAL_BENCH_ROUNDS > 1: the round (0, 1, ...); empty otherwise
    # real/bench/decode_gemm.py (s8dec): the absorbed MLA's batched GEMMs, and decode steps with
    # the GPU's and the host's state per step
    "decode_gemm": ["bench", "op", "weight", "model", "batch", "cache_len", "num_heads", "batch_count", "m", "n", "k",
                    "align_elems", "split", "kernels", "kernel", "kernel_names", "kernel_s", "gemm_kernels",
                    "gemm_kernel_s", "split_k"],
    "decode_drift": ["bench", "model", "batch", "prompt_len", "gen_len", "round", "condition", "step", "cache_len",
                     "host_s", "host_cpu_s", "power_now_w", "temperature_c", "pstate", "clock_event_reasons", "cpu_clock_mhz",
                     "load_avg_1m", "split"],
    # real/bench/parallel_blocks.py bench_collective_host: host seconds to issue one call (time_s)
    "collective_host": ["bench", "op", "tokens", "hidden_size", "calls", "split",
                        "probe_launch_before_s", "probe_launch_after_s", "probe_launch_s"],
    # real/bench/torch_cp.py: PyTorch's own context parallelism (two GPUs) and, one GPU, the
    # attention calls it is made of
    "torch_cp": ["bench", "model", "cp", "rotate_method", "sdpa_backend", "load_balance", "seq_len", "local_len", "num_heads",
                 "num_kv_heads", "head_dim", "kv_repeat", "causal", "precision", "sdpa_kernel", "host_time_s",
                 "split"],
    "torch_cp_kernels": ["bench", "model", "cp", "rotate_method", "sdpa_backend", "load_balance", "seq_len", "local_len",
                         "num_heads", "num_kv_heads", "head_dim", "kv_repeat", "causal", "precision", "split",
                         "rank", "phase", "category", "kernel", "calls"],
    "torch_cp_timeline": ["bench", "model", "cp", "rotate_method", "sdpa_backend", "load_balance", "seq_len", "local_len",
                          "num_heads", "num_kv_heads", "head_dim", "kv_repeat", "causal", "precision", "split",
                          "rank", "phase", "span_s", "compute_s", "nccl_s", "nccl_exposed_s", "idle_s",
                          "sdpa_calls"],
    # real/bench/async_tp.py (s9tt): torch's micro-pipelined TP ops beside the parts they are made of
    "async_tp": ["bench", "shape_tag", "kind", "op", "m", "n", "k", "world_size", "precision", "status", "detail", "split"],
    # real/bench/async_tp.py section atp_parts (s10atp): the fused ops' reductions and chunk GEMMs alone, one GPU
    "atp_parts": ["bench", "shape_tag", "op", "m", "n", "k", "world_size", "chunks", "layout", "precision", "split"],
    # real/bench/tp_beside.py (s11tpo): a TP GEMM with an NCCL collective beside it on a second stream
    "tp_beside": ["bench", "shape_tag", "kind", "op", "m", "n", "k", "coll_m", "coll_n", "world_size", "nccl_channels",
                  "collective_repeats", "precision", "status", "split"],
    "cp_chunks": ["bench", "model", "sdpa_backend", "kernel", "phase", "num_heads", "num_kv_heads", "qk_head_dim", "v_head_dim",
                  "q_len", "kv_len", "causal", "kv_repeat", "source_seq_len", "precision", "host_time_s", "split"],
    # real/bench/long_attention.py (s24long): flash at the long-context published rows' per-GPU call shapes
    "long_attn": ["bench", "model", "sdpa_backend", "kernel", "phase", "batch", "num_heads", "num_kv_heads", "head_dim", "q_len",
                  "kv_len", "mask", "kv_repeat", "row_for", "precision", "host_time_s", "split"],
}

# real/pipeline/bench.py (torchrun -m real.pipeline): whole pipeline / expert-parallel steps and
# every op of every rank, on one time axis per step (agreed with the twin's pipeline validation)
PIPELINE_STEP_COLS = ["bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches",
                      "micro_batch_seqs", "seq_len", "precision", "num_layers", "time_s", "time_p10_s",
                      "time_p90_s", "reps", "tokens_per_s", "loss", "split", *ENV_COLS, "nccl_version"]
# host_start_s / host_end_s (s9ep): when the rank's host began and finished issuing the op, on the
# step's shared axis (real/pipeline/engine.py OpRecord), so the host's dispatch rate is measured in
# the very steps that are timed; split: the configuration's (fit | holdout), as its pipeline_step row
# real/pipeline/bench.py --interleave (s17alt): one row per timed step of configurations stepped in
# turn (cycle c: one step of each, in row c of a Williams design); pair_key names the cycle (layout, micro-
# batches, cycle): steps sharing it ran within one cycle, at the same host pace; position: the step's
# place in its cycle; step_index: its place among all timed steps of the layout and count
PIPELINE_INTERLEAVED_COLS = ["bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches",
                             "micro_batch_seqs", "seq_len", "precision", "num_layers", "pair_key", "cycle",
                             "position", "step_index", "time_s", "loss", "split", "gpu_name", "sm_clock_mhz",
                             "mem_clock_mhz", "torch_version", "cuda_version", "timestamp_utc", "nccl_version"]
# s18probe: the host-pace probe between interleaved cycles (real/pipeline/hostpace.py), one row per probe,
# cycle and rank; `cycle` is the cycle the probe precedes, `duration_s` the probe's own host time
PIPELINE_HOST_PROBE_COLS = ["bench", "model", "pp", "ep", "dp", "num_gpus", "num_microbatches", "cycle", "rank",
                            "pp_rank", "probe", "calls", "us_per_call", "us_per_call_p50", "stream_blocked",
                            "duration_s", "split", "gpu_name", "sm_clock_mhz", "mem_clock_mhz", "torch_version",
                            "cuda_version", "nccl_version", "timestamp_utc"]
# real/pipeline/bench.py --pace-sampler (s26eprate round 2): one row per sample of the companion thread
# (real/pipeline/hostpace.PaceSampler) during a timed step: t_s on the step's shared axis (pipeline_ops.csv's
# host_start_s / host_end_s), the sample's wall seconds; duty = the rank's sample walls over the step's wall.
PIPELINE_HOST_PACE_COLS = ["bench", "model", "pp", "ep", "dp", "num_gpus", "num_microbatches", "rep", "rank",
                           "t_s", "sample_s", "loops", "duty", "split", "gpu_name", "sm_clock_mhz", "mem_clock_mhz",
                           "torch_version", "cuda_version", "nccl_version", "timestamp_utc"]
PIPELINE_OPS_COLS = ["model", "schedule", "pp", "ep", "num_microbatches", "micro_batch_seqs", "seq_len",
                     "precision", "rep", "rank", "op_index", "kind", "microbatch", "chunk", "start_s",
                     "end_s", "host_start_s", "host_end_s", "split", "gpu_name", "timestamp_utc"]
# real/pipeline/bench.py --host-marks (s13ep): real/ep.py's host marks in the EP steps, one row per
# mark (real/ep.py MARK_SEGMENTS: the segment of host work it starts), in the compute op that holds
# it; host_s / gpu_s (its CUDA event, events mode) on pipeline_ops.csv's axis; thread main|autograd
EP_HOST_MARKS_COLS = ["model", "schedule", "pp", "ep", "num_microbatches", "micro_batch_seqs", "seq_len",
                      "precision", "rep", "rank", "op_index", "kind", "microbatch", "layer", "mark", "thread",
                      "host_s", "gpu_s", "split", "gpu_name", "timestamp_utc"]
# real/pipeline/bench.py (s10pp): the routed tokens of each rank's MoE gates over the timed steps
# (Gate.tokens_per_expert_E: this rank's tokens to each of the E experts), per step
PIPELINE_ROUTING_COLS = ["model", "schedule", "pp", "ep", "num_microbatches", "micro_batch_seqs", "seq_len",
                         "precision", "rank", "chunk", "stage", "layer", "expert", "tokens_per_step", "split",
                         "gpu_name", "timestamp_utc"]
# real/pipeline/probe.py (s7pipe): each op's stream marks beside the host's issue marks, and the
# kernels each op launched (one profiled step)
_PROBE_COLS = ["model", "schedule", "pp", "ep", "num_microbatches", "micro_batch_seqs", "seq_len", "precision",
               "split"]
PIPELINE_HOST_COLS = [*_PROBE_COLS, "rep", "rank", "op_index", "kind", "microbatch", "chunk", "start_s", "end_s",
                      "host_start_s", "host_end_s", *ENV_COLS, *DIST_ENV_COLS]
PIPELINE_OP_KERNELS_COLS = [*_PROBE_COLS, "rank", "op_index", "kind", "microbatch", "chunk", "kernel", "calls",
                            "time_s", *ENV_COLS, *DIST_ENV_COLS]
# real/pipeline/probe.py --kernel-events (s12ep2): the profiled step's every GPU activity (kernel,
# memcpy, memset) with its stream and start/end, and every op's host range (event=op_host), in us
# on the rank's profiler axis (profiler_t0_ns: that axis's zero on the host's clock, shared by the
# ranks of one host); launch_us: the host start of the CPU op that launched it
PIPELINE_KERNEL_EVENTS_COLS = [*_PROBE_COLS, "rank", "op_index", "kind", "microbatch", "chunk", "event", "name",
                               "stream", "start_us", "end_us", "launch_us", "profiler_t0_ns", *ENV_COLS,
                               *DIST_ENV_COLS]


# (s33train) families whose rows also carry the power limit, the driver and the NCCL version (env.json's keys)
HOST_ENV_FAMILIES = {"train_trace_steps", "train_kernels"}
HOST_ENV_COLS = ["power_limit_w", "driver_version", "nccl_version"]


def env_cols(family: str) -> list[str]:
    """The environment columns of a family's rows."""
    return (ENV_COLS + (DIST_ENV_COLS if family in DIST_FAMILIES else [])
            + (HOST_ENV_COLS if family in HOST_ENV_FAMILIES else []))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Recorder:
    """Appends rows to DIR/<family>.csv (header first), flushing each row."""

    def __init__(self, out_dir: Path, env: dict):
        self.out_dir, self.env, self.files = out_dir, env, {}

    def row(self, family: str, **values) -> None:
        if family not in self.files:
            f = open(self.out_dir / f"{family}.csv", "w", newline="")
            cols = SHAPE_COLS[family] + ([] if family in NO_STAT_FAMILIES else STAT_COLS) + env_cols(family)
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="raise")
            w.writeheader()
            self.files[family] = (f, w)
        f, w = self.files[family]
        row = {k: self.env.get(k, "") for k in env_cols(family)}
        row["timestamp_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        row.update(values)
        w.writerow({k: _fmt(v) for k, v in row.items()})
        f.flush()

    def close(self):
        for f, _ in self.files.values():
            f.close()


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


class NoRecorder:
    """Ranks other than 0 of a torchrun world record nothing."""

    def row(self, *args, **kwargs):
        pass

    def close(self):
        pass
