"""Failures -> goodput: interruption rates by cause, Young/Daly checkpoint interval, ETTR.

Model (Kokolis et al., arXiv:2410.21680, as transcribed in the hardware catalog's reliability
section): a job of N GPUs sees interruptions at rate lambda = N x r (r per GPU-second). Each one
costs the detection and restart time u0 plus, on average, half a checkpoint interval of lost work;
every checkpoint blocks training for its write time w. The expected effective-training-time ratio

    ETTR = (1 - lambda (u0 + dt/2)) / (1 + w/dt)

is maximised near the Young/Daly interval dt* = sqrt(2 w / lambda) = sqrt(2 w MTBF).
Goodput-adjusted GPU-hours = ideal GPU-hours / ETTR.
"""

from __future__ import annotations

import functools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.units import SECONDS_PER_HOUR
from twin.costs.flops import param_counts


@functools.cache
def failure_catalog() -> dict:
    with resources.files("twin.data").joinpath("failures.toml").open("rb") as fh:
        return tomllib.load(fh)


@dataclass(frozen=True)
class CauseRate:
    component: str
    category: str
    rate_per_gpu_hour: float


def cause_rates(catalog: str, rate_scale: float = 1.0) -> list[CauseRate]:
    """Interruption rate per GPU-hour for each cause of a catalog entry."""
    table = failure_catalog()
    if catalog not in table:
        raise ScenarioError("failures.catalog", catalog, "one of " + ", ".join(sorted(table)))
    entry = table[catalog]
    exposure_gpu_hours = entry["num_gpus"] * entry["hours"]
    return [CauseRate(comp, cat, rate_scale * count / exposure_gpu_hours) for comp, cat, count in entry["causes"]]


@dataclass(frozen=True)
class Goodput:
    rate_per_gpu_hour: float        # all causes
    job_mtbf_s: float               # mean time between interruptions of the whole job
    checkpoint_write_s: float
    checkpoint_interval_s: float
    interval_rule: str              # "young_daly" or "given"
    restart_overhead_s: float       # detection + restart
    ettr_frac: float                # effective training time ratio (goodput fraction)
    expected_interruptions: float   # over the ideal wall time
    by_category: dict               # category -> rate per GPU-hour

    def to_json(self) -> dict:
        return dict(self.__dict__)


def goodput(spec, num_gpus: int, num_params: float, num_nodes: int, ideal_wall_s: float = 0.0) -> Goodput:
    """ETTR of a job of `num_gpus` under the FailureSpec `spec`."""
    causes = cause_rates(spec.catalog, spec.rate_scale)
    rate = sum(c.rate_per_gpu_hour for c in causes)
    by_cat: dict[str, float] = {}
    for c in causes:
        by_cat[c.category] = by_cat.get(c.category, 0.0) + c.rate_per_gpu_hour
    lam_per_s = rate * num_gpus / SECONDS_PER_HOUR
    write_s = spec.checkpoint_bytes_per_param * num_params / (spec.checkpoint_write_bytes_per_s_per_node * max(num_nodes, 1))
    u0 = spec.detection_s + spec.restart_s
    if lam_per_s <= 0:
        mtbf = math.inf
        dt = spec.checkpoint_interval_s or math.inf
        ettr = 1.0 / (1.0 + write_s / dt) if math.isfinite(dt) else 1.0
        rule = "given" if spec.checkpoint_interval_s else "young_daly"
    else:
        mtbf = 1.0 / lam_per_s
        if spec.checkpoint_interval_s > 0:
            dt, rule = spec.checkpoint_interval_s, "given"
        else:
            dt, rule = math.sqrt(2.0 * max(write_s, 1e-9) * mtbf), "young_daly"
        ettr = (1.0 - lam_per_s * (u0 + dt / 2.0)) / (1.0 + write_s / dt)
    if ettr <= 0:
        raise InfeasiblePlan(
            f"no progress: the job of {num_gpus} GPUs is interrupted every {mtbf:.0f} s on average, "
            f"less than restart {u0:.0f} s + half a checkpoint interval {dt / 2:.0f} s",
            {"job_mtbf_s": mtbf, "restart_overhead_s": u0, "checkpoint_interval_s": dt})
    return Goodput(rate, mtbf, write_s, dt, rule, u0, ettr, ideal_wall_s / ettr / mtbf if math.isfinite(mtbf) else 0.0, by_cat)


def checkpointed_params(model) -> float:
    """Parameters a checkpoint holds: the model's total and its MTP modules'."""
    pc = param_counts(model)
    return float(pc["total_params"] + pc["mtp_params"])


def job_goodput(spec, model, num_gpus: int, gpus_per_node: int, ideal_wall_s: float = 0.0) -> Goodput | None:
    """The goodput of a training job of `model` on `num_gpus` GPUs under the FailureSpec `spec`, or
    None where the failure model is off (ETTR 1). The one place `twin replay` (each stage) and
    `twin plan` (each candidate) take a run's expected failure downtime from (s23ettr)."""
    if not spec.enabled:
        return None
    num_nodes = -(-num_gpus // gpus_per_node)
    return goodput(spec, num_gpus, checkpointed_params(model), num_nodes, ideal_wall_s)
