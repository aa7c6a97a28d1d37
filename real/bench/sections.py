"""The campaign's sections: their names in run order and each one's share of the time budget.

Torch-free on purpose: the twin's CLI (`twin calibrate`) lists the sections without torch.
real/bench/cli.py binds each name to its function.
"""

SECTION_SHARES = {  # name -> share of the time budget
    "gemm": 0.12, "grouped": 0.12, "memory": 0.03,
    "attention": 0.1, "moe": 0.25, "train": 0.2,
    "serve": 0.12, "expert_load": 0.06,
    "power": 0.2,  # not in the default list: --only power
    "sustained": 0.5,  # not in the default list: --only sustained
    "kernels": 0.3,  # not in the default list: --only kernels
    "grouped_wgrad": 0.12, "grouped_small": 0.1,
    "topk": 0.03,
    "fp8_stack": 0.15,
    "sm_reserve": 0.15,
    "ep": 0.5,  # under torchrun with >= 2 ranks: --only ep
    "nccl": 1.0,  # under torchrun with >= 2 ranks: --only nccl
    "parallel_blocks": 1.0,  # under torchrun with >= 2 ranks: --only parallel_blocks
    "cp_allgather": 1.0,  # under torchrun: the all-gather CP rows of parallel_blocks (+ references)
    "cp_ring": 1.0,  # under torchrun: the ring CP rows of parallel_blocks, alone
    "tp_blocks": 1.0,  # under torchrun: the TP rows of parallel_blocks, alone
    "cp_blocks": 1.0,  # under torchrun: the CP rows of parallel_blocks (both kinds + references)
    "host_dispatch": 1.0,  # not in the default list: --only host_dispatch (issue 13's layer bias)
    "wgrad_accum": 0.05,  # not in the default list: --only wgrad_accum (the pipeline's expert dW accumulation)
    "torch_cp": 1.0,  # under torchrun: PyTorch's own context parallelism (real/bench/torch_cp.py)
    "cp_chunks": 1.0,  # not in the default list: --only cp_chunks (one GPU: the calls CP is made of)
    "tp_traces": 1.0,  # under torchrun: Chrome traces of TP blocks (REAL_BENCH_TRACE_CASES), no rows
    "tp_grouped": 0.25,  # not in the default list: --only tp_grouped (the TP2 MoE blocks' half-width expert GEMMs)
    "host_bound": 1.0,  # not in the default list: --only host_bound (host-bound records beside their host calibration)
    "decode_gemm": 0.68,  # not in the default list: --only decode_gemm (the absorbed MLA's batched GEMMs)
    "decode_drift": 0.32,  # not in the default list: --only decode_drift (decode steps with NVML per step)
    "mla_host": 1.0,  # not in the default list: --only mla_host (MLA host time per kernel by op class, s8mla)
    "mla_paired": 1.0,  # not in the default list: --only mla_paired (each MLA record beside its own host probe, s9mla)
    "async_tp": 1.0,  # under torchrun: torch's micro-pipelined TP ops beside their parts (real/bench/async_tp.py)
    "tt_linears": 1.0,  # not in the default list: --only tt_linears (torchtitan's TP8 Llama linears, BF16 and FP8)
    "async_tp_405b": 1.0,  # under torchrun: the async_tp ops at the 405B TP8 shapes, chunk 4,096 rows (s10atp)
    "async_tp_mlm": 1.0,  # under torchrun: the async_tp ops at Megatron's TP8 ring_exchange GEMMs, chunk 512 rows (s27mlm)
    "atp_parts": 1.0,  # not in the default list: --only atp_parts (one GPU: partial-sum reductions, chunk GEMMs; s10atp)
    "torch_cp_scaling": 1.0,  # not in the default list: one process (CP1) or torchrun (CP = W), 32K tokens a rank (s10cp)
    "tp_beside": 1.0,  # under torchrun: a TP GEMM with an NCCL collective beside it on a second stream (s11tpo)
    "cp_sustained": 1.0,  # not in the default list: one GPU, an 8B CP rank's flash calls held at the power limit (s11cp8b)
    "fa2_sustained": 1.0,  # not in the default list: one GPU, FA2 fwd/bwd per call length held at the power limit (s11fa2)
    "attn_small": 1.0,  # not in the default list: one GPU, SDPA at the MLA records' small calls and around them (s12mla)
    "attn_first": 1.0,  # not in the default list: one GPU, attention.csv's first grid of SDPA calls again (s12mla)
    "duty_sweep": 1.0,  # not in the default list: one GPU, a GEMM and FA2 at duty cycles under the power limit (s14tt)
    "cp_traces": 1.0,  # under torchrun: real/cp.py's CP blocks with host marks and per-kernel traces per rank (s13cp)
    "ep_kernels": 1.0,  # under torchrun: the EP MoE layer's fitting sizes, its kernels per rank, its grouped GEMMs alone (s14epl)
    "gemm_in_layer": 1.0,  # not in the default list: one GPU, MoE/MLA layers' aten calls in the layer and alone (s14gl)
    "memory_alone": 1.0,  # not in the default list: one GPU, fitting-split swiglu / quantization / gather kernels alone (s15gl2)
    "copy_load": 1.0,  # not in the default list: one GPU, GEMMs and FA2 beside copy-engine traffic at the power limit (s15tt)
    "power_activity": 1.0,  # not in the default list: one GPU, a GEMM on data of different activity at duty cycles (s22tt)
    "cp_block": 1.0,  # not in the default list: one process (CP1) or torchrun (CP = W), a compiled full-AC Llama block (s17cp)
    "ep_fresh": 1.0,  # under torchrun: the EP MoE layer at shapes no record holds, timed and profiled per rank (s21ep2)
    "host_input": 1.0,  # not in the default list: one GPU, serve rows and host calibration each beside a host probe (s21host)
    "train_trace": 1.0,  # not in the default list: one GPU, train steps timed and under torch.profiler (s33train)
    "host_steps": 1.0,  # not in the default list: one GPU, every timed serve step and fitting repetition beside its own probe (s21host2)
    "step_probe": 1.0,  # not in the default list: one GPU, host-speed probe candidates beside eager steps (s24probe)
    "step_probe_each": 1.0,  # not in the default list: one GPU, a rotating-kind probe right before each eager step (s24probe)
    "ep_models": 1.0,  # under torchrun: the EP MoE layer of the Qwen / mixtral slices, timed and profiled per rank (s22epq)
    "mlm_sustained": 1.0,  # not in the default list: one GPU, Megatron's TP8 GEMMs whole and chunked, its TP8 block held at the power limit (s24mlm)
    "mlm_chunks": 1.0,  # not in the default list: one GPU, mlm_sustained's chunked GEMMs again, forwards in F.linear's layout, paired order (s24mlm round 2)
    "long_attn": 1.0,  # not in the default list: one GPU, flash at the long-context published rows' call shapes (s24long)
}
SECTION_NAMES = tuple(SECTION_SHARES)
OPT_IN_SECTIONS = ("power", "ep", "sustained", "kernels", "nccl", "parallel_blocks", "cp_allgather", "cp_ring",
                   "tp_blocks", "cp_blocks", "host_dispatch", "wgrad_accum", "host_bound",
                   "torch_cp", "cp_chunks", "tp_traces", "tp_grouped", "decode_gemm",
                   "decode_drift", "mla_host", "mla_paired", "async_tp", "tt_linears", "async_tp_405b", "async_tp_mlm", "atp_parts",
                   "torch_cp_scaling", "tp_beside", "cp_sustained", "fa2_sustained", "attn_small",
                   "attn_first", "cp_traces", "ep_kernels", "duty_sweep", "gemm_in_layer", "memory_alone",
                   "copy_load", "power_activity", "cp_block", "host_input", "ep_fresh", "host_steps", "train_trace", "step_probe", "step_probe_each", "ep_models", "mlm_sustained", "mlm_chunks", "long_attn")  # run only when named in --only
MULTI_GPU_SECTIONS = ("ep", "nccl", "parallel_blocks", "cp_allgather", "cp_ring", "tp_blocks", "cp_blocks",
                      "torch_cp", "tp_traces", "async_tp", "async_tp_405b", "async_tp_mlm", "tp_beside", "cp_traces", "ep_kernels",
                      "ep_fresh", "ep_models")  # torchrun, >= 2 ranks only
DEFAULT_SECTIONS = tuple(s for s in SECTION_NAMES if s not in OPT_IN_SECTIONS)
