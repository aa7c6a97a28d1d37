"""What balancing buys: V3 step time and run GPU-hours under balanced, skewed and bias-balanced
expert loads.

Cases (each a LoadModel carried to the scenario's experts and EP placement by twin.moe.placement):
  balanced                    the twin's default (DeepSeek's profile is balanced)
  measured_no_bias            real/ bench-small run without bias update, sorted share curve
                              carried to the scenario's expert count
  measured_bias_<rate>        the recorded runs with the bias update
  zipf_fit / dirichlet_fit    parametric skews fitted to the no-bias run
  zipf_fit_bias_gamma<g>      the dynamic model: zipf_fit affinity + simulated bias update
The straggler penalty is step time / balanced - 1; GPU-hours lost = extra step seconds x
pre-training steps x GPUs / 3600. Memory is not checked (skewed rows enlarge the all-to-all
buffers; an OOM under skew is reported as a flag, not raised).
"""

from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.moe.load import LoadModel, fit_measured, recorded_rates, simulate_bias_update, read_expert_load, max_over_mean
from twin.moe.placement import scenario_layer_loads
from twin.training.results import Perturb
from twin.training.step import simulate_step

GAMMAS = (0.0, 1e-4, 1e-3, 1e-2)

# the GPU whose recorded expert loads (twin/data/expert_load/<gpu>.csv) the measured cases replay
LOADS_GPU = "h200"


def pretrain_steps(sc) -> float:
    """Optimizer steps of the pre-training stage (first stage named 'pretrain', else the first
    stage; tokens / tokens per step at full batch, the batch ramp ignored), or 1 without stages."""
    stages = list(getattr(sc.run, "stages", ()) or ())
    st = next((s for s in stages if s.name == "pretrain"), stages[0] if stages else None)
    if st is None:
        return 1.0
    if st.tokens:
        return st.tokens / (st.seq_len * st.global_batch_seqs)
    return float(st.steps)


def load_cases(gpu: str = LOADS_GPU, gamma: float = 1e-3, seed: int = 0) -> dict[str, LoadModel]:
    fit = fit_measured(gpu)
    cases = {"balanced": LoadModel("balanced"),
             "measured_no_bias": LoadModel("measured", seed=seed, measured_gpu=gpu, bias_update_rate=0.0)}
    for rate in recorded_rates(gpu):
        if rate > 0:
            cases[f"measured_bias_{rate:g}"] = LoadModel("measured", seed=seed, measured_gpu=gpu, bias_update_rate=rate)
    cases["zipf_fit"] = LoadModel("zipf", round(fit["zipf_s"], 3), seed=seed)
    cases["dirichlet_fit"] = LoadModel("dirichlet", round(fit["dirichlet_alpha"], 3), seed=seed)
    cases[f"zipf_fit_bias_gamma{gamma:g}"] = LoadModel("dynamic", round(fit["zipf_s"], 3), gamma=gamma, steps=200, seed=seed)
    return cases


def step_under_load(sc, model: LoadModel, profile=None) -> dict:
    loads = scenario_layer_loads(sc, model)
    res = simulate_step(sc, profile, perturb=Perturb(routing_imbalance=loads if isinstance(loads, float) else tuple(loads)), record_events=False, check_memory=False)
    moe = [l for l in loads if not isinstance(l, float)]
    oom = res.memory_per_gpu_bytes > res.memory_capacity_bytes
    return {"step_time_s": res.step_time_s, "mfu_frac": res.mfu_frac,
            "rank_max_over_mean": float(np.mean([l.rows_frac for l in moe])) if moe else 1.0,
            "ib_max_over_balanced": float(np.mean([l.ib_frac for l in moe])) if moe else 1.0,
            "memory_per_gpu_bytes": res.memory_per_gpu_bytes, "out_of_memory": bool(oom)}


def imbalance_decay(num_experts: int, top_k: int, ep: int, base_s: float, gammas=GAMMAS, steps: int = 200,
                    tokens_per_step: int = 4096, seed: int = 0) -> dict:
    """Rank max/mean per step of the simulated bias update for each gamma (contiguous placement)."""
    out = {}
    for g in gammas:
        run = simulate_bias_update(num_experts, top_k, base_s, g, steps, tokens_per_step, seed=seed)
        out[f"{g:g}"] = run.rank_imbalance_S(ep).tolist()
    return out


def measured_decay(gpu: str = LOADS_GPU) -> dict:
    """Per-step expert max/mean (mean over layers) of each recorded run."""
    return {f"{r:g}": max_over_mean(read_expert_load(gpu, r)).mean(axis=1).tolist() for r in recorded_rates(gpu)}


def run_balance(scenario, gpu: str = LOADS_GPU, gamma: float = 1e-3, progress: bool = False) -> dict:
    """Step time and pre-training GPU-hours under each load case (unit-suffixed keys)."""
    sc = scenario
    if sc.model.num_routed_experts == 0:   # a dense model ended in an IndexError traceback (until s21walk)
        raise ScenarioError("model.num_routed_experts", 0, f"> 0: `twin balance` weighs the expert load of an MoE model "
                            f"({sc.model.name} is dense)")
    steps = pretrain_steps(sc)
    n = sc.cluster.num_gpus
    fit = fit_measured(gpu)
    cases = {}
    base = None
    load_models = load_cases(gpu, gamma)
    bar = tqdm(total=len(load_models) + 1, desc="balance", unit="case", file=sys.stderr, disable=not progress)
    for name, model in load_models.items():
        bar.update(1)
        try:
            r = step_under_load(sc, model)
        except InfeasiblePlan as exc:
            cases[name] = {"infeasible": str(exc)}
            continue
        if name == "balanced":
            base = r["step_time_s"]
        r["straggler_penalty_frac"] = r["step_time_s"] / base - 1.0
        r["gpu_hours_lost"] = (r["step_time_s"] - base) * steps * n / 3600.0
        r["usd_lost"] = r["gpu_hours_lost"] * sc.cluster.price_usd_per_gpu_hour
        cases[name] = r
    m = sc.model
    decay = imbalance_decay(m.num_routed_experts, m.top_k, sc.plan.ep, fit["zipf_s"])
    bar.update(1)
    bar.close()
    result = {
        "scenario": sc.name, "num_gpus": n, "pretrain_steps": steps,
        "balanced_step_time_s": base,
        "fit": fit,
        "cases": cases,
        "decay_simulated": {"num_experts": m.num_routed_experts, "top_k": m.top_k, "ep": sc.plan.ep,
                            "base_zipf_s": fit["zipf_s"],
                            "rank_max_over_mean_by_gamma": decay},
        "decay_measured_expert_max_over_mean_by_rate": measured_decay(gpu),
    }
    return result
