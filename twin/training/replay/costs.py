"""What a replayed run costs: GPU-hours, wall time, goodput, energy, rental cost, by stage, group
and in total, and the comparison with the published figures (twin/data/claims.toml: compared
against, never fitted)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from twin.core.scenario import Scenario
from twin.core.specs import training_claims
from twin.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR
from twin.training import costmodel, failures
from twin.training.replay.stages import StageRun


@dataclass(frozen=True)
class Inputs:
    """Post-processing inputs (no step simulation needed)."""

    failure_rate_scale: float = 1.0
    pue: float | None = None


def evaluate(sc: Scenario, runs: list[StageRun], time_scale: list[float] | None = None,
             inputs: Inputs = Inputs()) -> dict:
    """Stage and total figures of a replay; `time_scale[i]` multiplies stage i's wall time."""
    gpu = sc.gpu
    price = sc.cluster.price_usd_per_gpu_hour
    stages = []
    tot = dict(gpu_hours=0.0, gpu_hours_goodput=0.0, wall_s=0.0, wall_s_goodput=0.0, energy_kwh=0.0,
               energy_kwh_goodput=0.0, tokens=0.0)
    fspec = dataclasses.replace(sc.failures, rate_scale=sc.failures.rate_scale * inputs.failure_rate_scale)
    for i, r in enumerate(runs):
        st = r.plan.stage
        row = {"name": st.name, "group": st.label, "tokens": st.total_tokens, "seq_len": st.seq_len,
               "global_batch_seqs": st.global_batch_seqs, "feasible": r.feasible, "plan_note": r.plan.note,
               "source": st.source, "overhead_factor": st.overhead_factor, "ramp_note": r.ramp_note, "rl": r.rl}
        if not r.feasible:
            row.update(gpu_hours=None, gpu_hours_goodput=None, wall_days=None, steps=None)
            stages.append(row)
            continue
        s = r.plan.scenario
        n_gpus = s.cluster.num_gpus
        wall = r.wall_s * (time_scale[i] if time_scale else 1.0)
        gh = costmodel.gpu_hours(wall, n_gpus)
        gp = failures.job_goodput(fspec, sc.model, n_gpus, gpu.gpus_per_node, wall)
        ettr = gp.ettr_frac if gp else 1.0
        en = costmodel.energy_of(wall, n_gpus, gpu.gpus_per_node, gpu.tdp_w, r.util_frac, sc.energy, inputs.pue)
        full = r.full_step
        row.update(
            steps=r.steps, plan={k: getattr(s.plan, k) for k in ("tp", "cp", "pp", "ep", "micro_batch_seqs", "recompute", "schedule", "sequence_parallel")},
            dp=s.dp, num_gpus=n_gpus, step_time_s=full.step_time_s, bubble_frac=full.bubble_frac,
            memory_per_gpu_bytes=full.memory_per_gpu_bytes, wall_s=wall, wall_days=wall / SECONDS_PER_DAY,
            gpu_hours=gh, gpu_hours_goodput=gh / ettr, wall_days_goodput=wall / ettr / SECONDS_PER_DAY,
            ettr_frac=ettr, tokens_per_s_per_gpu=st.total_tokens / wall / n_gpus,
            mfu_frac=r.flops / (wall * n_gpus * gpu.peak_bf16_flops_per_s),
            cost_usd=costmodel.rental_cost_usd(gh, price), cost_usd_goodput=costmodel.rental_cost_usd(gh / ettr, price),
            energy_kwh=en.energy_kwh, energy_kwh_goodput=en.energy_kwh / ettr, gpu_power_w=en.gpu_power_w,
            facility_power_w=en.facility_power_w, carbon_kg=en.carbon_kg,
            goodput=gp.to_json() if gp else None,
        )
        stages.append(row)
        tot["gpu_hours"] += gh
        tot["gpu_hours_goodput"] += gh / ettr
        tot["wall_s"] += wall
        tot["wall_s_goodput"] += wall / ettr
        tot["energy_kwh"] += en.energy_kwh
        tot["energy_kwh_goodput"] += en.energy_kwh / ettr
        tot["tokens"] += st.total_tokens
    goodput_basis = sc.run.claims_basis == "goodput"
    out = {
        "stages": stages,
        "complete": all(r.feasible for r in runs),
        "total_gpu_hours_ideal": tot["gpu_hours"],
        "total_gpu_hours_goodput": tot["gpu_hours_goodput"],
        "total_gpu_hours": tot["gpu_hours_goodput"] if goodput_basis else tot["gpu_hours"],
        "total_wall_days": (tot["wall_s_goodput"] if goodput_basis else tot["wall_s"]) / SECONDS_PER_DAY,
        "total_wall_days_goodput": tot["wall_s_goodput"] / SECONDS_PER_DAY,
        "total_tokens": tot["tokens"],
        "price_usd_per_gpu_hour": price,
        "total_energy_kwh": tot["energy_kwh_goodput"] if goodput_basis else tot["energy_kwh"],
        "total_energy_kwh_goodput": tot["energy_kwh_goodput"],
    }
    out["total_cost_usd"] = costmodel.rental_cost_usd(out["total_gpu_hours"], price)
    out["total_cost_usd_goodput"] = costmodel.rental_cost_usd(out["total_gpu_hours_goodput"], price)
    out["electricity_cost_usd"] = costmodel.electricity_cost_usd(out["total_energy_kwh_goodput"], sc.cost.electricity_usd_per_kwh)
    out["total_carbon_kg"] = (out["total_energy_kwh_goodput"] * sc.energy.carbon_kg_per_kwh
                              if sc.energy.carbon_kg_per_kwh > 0 else None)
    out["groups"] = _groups(stages, goodput_basis, price)
    out["claims"] = compare_claims(out, sc)
    out["claims_describe_run"] = describes(sc)
    return out


def _groups(stages: list[dict], goodput_basis: bool, price: float) -> dict:
    groups: dict[str, dict] = {}
    for r in stages:
        g = groups.setdefault(r["group"], dict(gpu_hours=0.0, wall_s=0.0, tokens=0.0, flops_time=0.0, feasible=True, gpu_seconds=0.0))
        if not r["feasible"]:
            g["feasible"] = False
            continue
        gh = r["gpu_hours_goodput"] if goodput_basis else r["gpu_hours"]
        wall = gh * SECONDS_PER_HOUR / r["num_gpus"]
        g["gpu_hours"] += gh
        g["wall_s"] += wall
        g["tokens"] += r["tokens"]
        g["gpu_seconds"] += gh * SECONDS_PER_HOUR
        g["flops_time"] += r["mfu_frac"] * r["gpu_hours"] * SECONDS_PER_HOUR  # MFU weighted by ideal GPU-time
    for g in groups.values():
        g["cost_usd"] = g["gpu_hours"] * price
        g["wall_days"] = g["wall_s"] / SECONDS_PER_DAY
        g["gpu_hours_per_trillion"] = g["gpu_hours"] / (g["tokens"] / 1e12) if g["tokens"] else None
        g["days_per_trillion"] = g["wall_days"] / (g["tokens"] / 1e12) if g["tokens"] else None
        g["tokens_per_s_per_gpu"] = g["tokens"] / g["gpu_seconds"] if g["gpu_seconds"] else None
        flops_time = g.pop("flops_time")
        g["mfu_frac"] = flops_time / g["gpu_seconds"] if g["gpu_seconds"] else None
    return groups


def _predicted(claim: dict, out: dict) -> float | None:
    q = claim["quantity"]
    if q == "total_gpu_hours":
        return out["total_gpu_hours"] if out["complete"] else None
    if q == "total_cost_usd":
        return out["total_cost_usd"] if out["complete"] else None
    g = out["groups"].get(claim.get("group", ""))
    if g is None or not g["feasible"]:
        return None
    key = {"group_gpu_hours": "gpu_hours", "group_cost_usd": "cost_usd"}.get(q, q)
    return g.get(key)


# the run DeepSeek's published training figures describe (V3 report Table 1: DeepSeek-V3 on H800s)
PUBLISHED_RUN = {"model": "deepseek-v3", "gpu": "h800"}


def describes(sc: Scenario) -> bool:
    """Whether the published training figures describe this scenario's run (its model and GPU);
    for any other run they are context, and no error is computed against them."""
    return sc.model.name == PUBLISHED_RUN["model"] and sc.cluster.gpu == PUBLISHED_RUN["gpu"]


def compare_claims(out: dict, sc: Scenario) -> list[dict]:
    rows = []
    comparable = describes(sc)
    for c in training_claims():
        # a whole-run figure (V3's total) has no counterpart in a run of other stages (R1-Zero's RL)
        covered = set(c.get("covers", ())) <= set(out["groups"])
        pred = _predicted(c, out) if covered else None
        rows.append({"id": c["id"], "statement": c["statement"], "claimed": float(c["value"]), "predicted": pred,
                     "rel_error": (pred - c["value"]) / c["value"] if pred is not None and comparable else None,
                     "unit": c["unit"], "status": c["status"], "source": c["source"]})
    return rows
