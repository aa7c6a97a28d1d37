"""The GRPO stage's step: rollout generation on the serving twin, the extra forward passes and the
policy update on the training twin, in seconds of the whole cluster.

Co-located RL (one pool of GPUs switches between generating and training, as DeepSeek's and verl's):

    GRPO step = rollout_s / steps_per_rollout                      (generation, serving twin)
              + update_s x (1 + forward_frac x extra forwards)    (reference / old-policy / reward)
    update_s  = training step time x GRPO tokens per step / (seq_len x global_batch_seqs)

Rollout: one rollout's outputs (prompts x samples x steps_per_rollout) are spread evenly over
num_gpus / rollout_gpus serving instances (EP over rollout_gpus GPUs, DP attention, continuous
batching, KV admission with preemption); all are submitted at once and the rollout ends when the
last output is done, so the longest generations set its length (the straggler tail GRPO waits
for). One instance is simulated (they are alike); lengths are lognormal with the stage's mean and
CV, clipped at gen_len_max. The request simulation is twin.serving.simulate on a serving scenario
built from the training scenario's model and GPU.
"""

from __future__ import annotations

import math

import numpy as np

from twin.core.errors import InfeasiblePlan
from twin.core.run_specs import GrpoSpec
from twin.core.scenario import Scenario, ServeScenario
from twin.core.serve_specs import ServeSpec, TrafficSpec
from twin.core.specs import ClusterSpec
from twin.serving.simulate import simulate
from twin.serving.workload import from_records


def rollout_scenario(sc: Scenario, g: GrpoSpec) -> ServeScenario:
    """The serving scenario one rollout instance runs."""
    m = sc.model
    slots = m.num_routed_experts if m.is_moe else 0
    ep = g.rollout_gpus
    if m.is_moe and slots % ep:
        raise InfeasiblePlan(f"rollout_gpus = {ep} does not divide the {slots} routed experts of {m.name}", {})
    serve = ServeSpec(tp=1, ep=ep, dp_attention=True, input_len=g.prompt_len, output_len=max(1, round(g.gen_len_mean)),
                      num_microbatches=2 if ep > sc.gpu.gpus_per_node else 1, disaggregated=False,
                      mtp_draft_tokens=g.rollout_mtp_draft_tokens)
    cluster = ClusterSpec(gpu=sc.cluster.gpu, num_gpus=ep)
    return ServeScenario(name=f"{sc.name}-rollout", model=m, cluster=cluster, serve=serve, traffic=TrafficSpec())


def generation_lengths(g: GrpoSpec, n: int) -> np.ndarray:
    rng = np.random.default_rng(g.seed)
    if g.gen_len_cv == 0:
        x = np.full(n, g.gen_len_mean)
    else:
        sigma2 = math.log1p(g.gen_len_cv ** 2)
        x = rng.lognormal(math.log(g.gen_len_mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return np.clip(np.rint(x), 1, g.gen_len_max).astype(np.int64)


def grpo_step(sc: Scenario, g: GrpoSpec, train_step_s: float, stage_tokens_per_step: float) -> dict:
    """Seconds of one GRPO step on the stage's cluster, by part, and what the rollout simulation saw."""
    num_gpus = sc.cluster.num_gpus
    if num_gpus % g.rollout_gpus:
        raise InfeasiblePlan(f"grpo.rollout_gpus = {g.rollout_gpus} does not divide the stage's {num_gpus} GPUs", {})
    instances = num_gpus // g.rollout_gpus
    outputs = g.outputs_per_step * g.steps_per_rollout
    per_instance = -(-outputs // instances)
    rs = rollout_scenario(sc, g)
    gen = generation_lengths(g, per_instance)
    reqs = from_records(np.zeros(per_instance), np.full(per_instance, g.prompt_len), gen)
    sim = simulate(rs, requests=reqs)
    rollout_s = float(np.nanmax(sim.requests["finish_s"]))
    update_s = train_step_s * g.tokens_per_step / stage_tokens_per_step
    passes = int(g.reference_forward) + int(g.old_policy_forward) + int(g.reward_model_forward)
    forward_s = update_s * g.forward_frac * passes
    return {"rollout_s": rollout_s / g.steps_per_rollout, "update_s": update_s, "forward_s": forward_s,
            "step_s": rollout_s / g.steps_per_rollout + update_s + forward_s,
            "rollout_instances": instances, "rollout_requests_per_instance": per_instance,
            "rollout_makespan_s": rollout_s, "rollout_mean_gen_len": float(gen.mean()),
            "rollout_output_tokens_per_s_per_gpu": sim.output_tokens_total / rollout_s / g.rollout_gpus,
            "rollout_preemptions": sim.preemptions}
