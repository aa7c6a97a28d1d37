"""Money, power, energy and carbon of a replayed run. Pure functions of (time, utilisation, specs).

Power model (per GPU, utilisation-weighted between idle and busy power):
    P_gpu  = TDP x (idle_frac + (busy_frac - idle_frac) x util),  util = 1 - bubble_frac
    P_it   = num_gpus x P_gpu + num_nodes x node_overhead_w
    E      = P_it x PUE x wall time
Defaults (energy section): busy = TDP (FP8 training is power-capped: the FlashMLA deep dive reports
H800 clocks throttled to ~1,600 MHz under load), idle = 15% of TDP (assumption), node overhead =
DGX H100's ~10.2 kW max minus 8 x 700 W (datasheet; an upper bound), PUE = 1.58 (Uptime 2023
industry average). No NVML measurements exist in calibration/measurements yet; when they do, they
replace the two fractions.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.units import JOULES_PER_KWH, SECONDS_PER_HOUR


@dataclass(frozen=True)
class Energy:
    gpu_power_w: float          # average per GPU
    it_power_w: float           # GPUs + node overhead, whole job
    facility_power_w: float     # x PUE
    energy_kwh: float
    carbon_kg: float | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def gpu_power_w(tdp_w: float, util_frac: float, energy) -> float:
    util = min(max(util_frac, 0.0), 1.0)
    return tdp_w * (energy.gpu_idle_power_frac + (energy.gpu_busy_power_frac - energy.gpu_idle_power_frac) * util)


def energy_of(wall_s: float, num_gpus: int, gpus_per_node: int, tdp_w: float, util_frac: float, energy, pue: float | None = None) -> Energy:
    """Energy of `num_gpus` GPUs running `wall_s` seconds at compute utilisation `util_frac`."""
    pue = energy.pue if pue is None else pue
    p_gpu = gpu_power_w(tdp_w, util_frac, energy)
    num_nodes = -(-num_gpus // gpus_per_node)
    p_it = num_gpus * p_gpu + num_nodes * energy.node_overhead_w
    p_fac = p_it * pue
    kwh = p_fac * wall_s / JOULES_PER_KWH
    carbon = kwh * energy.carbon_kg_per_kwh if energy.carbon_kg_per_kwh > 0 else None
    return Energy(p_gpu, p_it, p_fac, kwh, carbon)


def rental_cost_usd(gpu_hours: float, price_usd_per_gpu_hour: float) -> float:
    return gpu_hours * price_usd_per_gpu_hour


def electricity_cost_usd(energy_kwh: float, usd_per_kwh: float) -> float:
    return energy_kwh * usd_per_kwh


def gpu_hours(wall_s: float, num_gpus: int) -> float:
    return wall_s * num_gpus / SECONDS_PER_HOUR
