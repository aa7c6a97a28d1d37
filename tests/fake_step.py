"""A fast analytic stand-in for the step twin, shared by the replay and report tests."""

from __future__ import annotations

from twin.core.errors import InfeasiblePlan
from twin.costs.flops import train_flops_per_token
from twin.training.results import Perturb, StepResult
from twin.sim.pipeline import Event, PipelineResult


def fake_step(scenario, profile=None, perturb=Perturb(), record_events=True):
    """Analytic step: (n + pp - 1) slots of max(compute, comm) per micro-batch; OOM above 64K tokens per TP rank."""
    w, p, g = scenario.workload, scenario.plan, scenario.gpu
    if w.seq_len * p.micro_batch_seqs / p.tp > 65536:
        raise InfeasiblePlan(f"fake OOM: {w.seq_len * p.micro_batch_seqs // p.tp} tokens per rank", {"activations": 1e11})
    n = scenario.num_microbatches
    fpt = train_flops_per_token(scenario.model, w.seq_len, w.causal)
    mb_tokens = p.micro_batch_seqs * w.seq_len
    t_comp = mb_tokens * fpt / (p.pp * p.tp) / (g.peak_bf16_flops_per_s * 0.5 * perturb.compute_eff_scale)
    t_comm = 0.8 * t_comp * w.routing_imbalance / perturb.link_bw_scale
    slot = max(t_comp, t_comm)
    pipe = (n + p.pp - 1) * slot
    step = pipe + 0.2
    events = []
    for r in range(p.pp):
        for i in range(min(n, 4)):
            s0 = (r + i) * slot
            events.append(Event(r, "compute", "mlp", "F", i, 0, s0, s0 + t_comp))
            events.append(Event(r, "comm", "dispatch", "F", i, 0, s0, s0 + t_comm))
    idle = tuple((p.pp - 1) * slot for _ in range(p.pp))
    pl = PipelineResult(pipe, events, tuple(pipe - i for i in idle), idle, max(idle), (1,) * p.pp, ("compute", "comm"))
    tokens = w.tokens_per_step
    flops = tokens * fpt
    return StepResult(schedule=p.schedule, step_time_s=step, pipeline_time_s=pipe, bubble_frac=max(idle) / pipe, exposed_comm_frac=0.0,
                      tokens_per_step=tokens, tokens_per_s_per_gpu=tokens / step / scenario.cluster.num_gpus,
                      model_flops_per_step=flops, mfu_frac=flops / (step * scenario.cluster.num_gpus * g.peak_bf16_flops_per_s),
                      memory_per_gpu_bytes=60e9, memory_breakdown_bytes={"weights": 30e9}, memory_capacity_bytes=g.hbm_bytes,
                      op_time_s={"mlp": t_comp * n}, num_gpus=scenario.cluster.num_gpus, num_microbatches=n, pipeline=pl)


