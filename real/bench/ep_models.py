"""Section ep_models (s22epq, issue 13): the EP2 MoE layer of the Qwen-shaped slices (many small
experts), timed as ep.csv's rows are and profiled per rank, beside mixtral's (few wide experts).

Why: every PP2 x EP2 step of the two Qwen slices is under-predicted (s21pp4b: qwen2moe F +4 ms an op
at stage 0 on ~19 ms, with balanced routing; qwen3moe 2-3 ms; mixtral ~1 ms; docs/notes/s22pp4j_rule.md),
as are s20epnew's 2xH100 EP2 steps (qwen2moe -8%, qwen3moe -5%, mixtral -2%). The excess sits inside the
EP ops (F and B carry the all-to-alls; W is priced right), and no committed record profiles an EP
layer of these shapes: every kernel-level EP2 record is v3-slice-1l's (s14epl, s21ep2). This section
measures, per model slice at the pipelines' micro-batch (4,096 tokens a rank), one EP2 layer with
real/model.py's MoE and real/ep.py's dispatch / combine (the pipelines' code path):
  ep          dispatch and combine alone, the layer forward and backward in BF16 and FP8 (CUDA events,
              10 reps, host marks: the host interval per call, where .tolist() syncs pace it)
  ep_kernels  the same layer calls under the torch profiler on both ranks (each kernel's seconds, its
              seconds beside an NCCL kernel, the NVML SM clock): sorts, gathers, scatters, index_add,
              the count exchange, per-expert loops, grouped GEMMs on 30 / 64 local experts.
Skewed cases (skew 1) give the backward grouped GEMMs on uneven rows (R's backward, s14epl's open item).
Every case is split `fit` (diagnostic: no pipeline or ep.csv row is read or timed here).
Every row carries GPU name, clocks, torch/CUDA/NCCL versions (Recorder's env columns)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from real.bench.ep import HostMarks
from real.bench.ep_fresh import measure_case
from real.bench.nccl import distributed_env
from real.bench.records import log
from real.bench.timing import Timer
from real.configs import get_spec

# (model slice, tokens a rank, skew), in run order: the Qwen2 slice first (the largest unexplained
# excess), mixtral as the control whose EP ops the twin prices within ~1 ms, then the skewed cases
MODEL_CASES = (("qwen2moe-mla-slice", 4096, 0.0), ("qwen3moe-mla-slice", 4096, 0.0),
               ("mixtral-mla-slice", 4096, 0.0), ("qwen3moe-mla-slice", 4096, 1.0),
               ("qwen2moe-mla-slice", 4096, 1.0))
QUICK_CASES = (("tiny", 32, 1.0),)


def bench_ep_models(rec, timer, dev, deadline, quick, env):
    """See the module docstring. Fixed repetition counts so every rank issues the same collectives;
    rank 0 writes ep.csv (dispatch, combine, layer rows) and ep_kernels.csv."""
    distributed_env(env, dev)
    marks = HostMarks()
    group = dist.group.WORLD
    t = Timer(dev, timer.tel, 0.0, warmup=3)
    reps = 3 if quick else 10
    gen = torch.Generator().manual_seed(dist.get_rank())
    for name, T, skew in (QUICK_CASES if quick else MODEL_CASES):
        if deadline.over():
            log("ep_models: budget spent")
            return
        spec = get_spec(name)
        measure_case(rec, marks, t, spec, (T, skew, "fit"), dev, gen, group, env, reps)
        log(f"ep_models {name} T={T} skew={skew:g}: done")
