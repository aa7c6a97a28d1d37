"""Efficiency profiles: how close each kernel class gets to the GPU's peaks, as data.

A profile is JSON (calibration/profiles/<gpu>.json, written by `twin fit`) holding curve parameters:

  gemm / grouped_gemm, per precision:
      eff(m, n, k) = e_max / (1 + m_half/m + n_half/n + k_half/k)
    (saturation in each GEMM dimension: small dimensions under-fill the 128-wide tiles and the
    132 SMs; m is rows per group for grouped GEMMs)
  attention, per direction (fwd, bwd):
      eff(s) = e_max / (1 + s_half/s)
  memory: fraction of HBM bandwidth reached by bandwidth-bound kernels (e_mem)
  launch_s: fixed per-kernel overhead

Until a calibrated profile exists for a GPU, `default_profile()` is used: its numbers come from
published kernel tables (sources inline) and are flagged as uncalibrated in every output.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources


@dataclass(frozen=True)
class GemmCurve:
    e_max: float
    m_half: float = 0.0
    n_half: float = 0.0
    k_half: float = 0.0

    def eff(self, m: float, n: float, k: float) -> float:
        return self.e_max / (1.0 + self.m_half / max(m, 1) + self.n_half / max(n, 1) + self.k_half / max(k, 1))


@dataclass(frozen=True)
class SeqCurve:
    e_max: float
    s_half: float = 0.0

    def eff(self, seq_len: float) -> float:
        return self.e_max / (1.0 + self.s_half / max(seq_len, 1))


@dataclass(frozen=True)
class Profile:
    gpu: str
    gemm: dict            # precision -> GemmCurve
    grouped_gemm: dict    # precision -> GemmCurve
    attention: dict       # "fwd"/"bwd" -> SeqCurve
    memory_eff: float
    launch_s: float
    calibrated: bool
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        return {
            "gpu": self.gpu,
            "calibrated": self.calibrated,
            "gemm": {p: vars(c) for p, c in self.gemm.items()},
            "grouped_gemm": {p: vars(c) for p, c in self.grouped_gemm.items()},
            "attention": {d: vars(c) for d, c in self.attention.items()},
            "memory_eff": self.memory_eff,
            "launch_s": self.launch_s,
            "provenance": self.provenance,
        }

    def scaled(self, compute: float = 1.0, memory: float = 1.0) -> "Profile":
        """A variant with every compute efficiency (and/or the memory efficiency) scaled: the hook
        for sensitivity and Monte Carlo analysis."""
        def g(c: GemmCurve) -> GemmCurve:
            return GemmCurve(c.e_max * compute, c.m_half, c.n_half, c.k_half)
        return Profile(
            self.gpu,
            {p: g(c) for p, c in self.gemm.items()},
            {p: g(c) for p, c in self.grouped_gemm.items()},
            {d: SeqCurve(c.e_max * compute, c.s_half) for d, c in self.attention.items()},
            min(1.0, self.memory_eff * memory), self.launch_s, self.calibrated, self.provenance)


def profile_from_json(data: dict) -> Profile:
    return Profile(
        gpu=data["gpu"],
        gemm={p: GemmCurve(**c) for p, c in data["gemm"].items()},
        grouped_gemm={p: GemmCurve(**c) for p, c in data["grouped_gemm"].items()},
        attention={d: SeqCurve(**c) for d, c in data["attention"].items()},
        memory_eff=data["memory_eff"],
        launch_s=data["launch_s"],
        calibrated=data.get("calibrated", True),
        provenance=data.get("provenance", {}),
    )


@functools.cache
def default_profile() -> Profile:
    """Uncalibrated fallback from published tables (see twin/data/default_profile.json)."""
    with resources.files("twin.data").joinpath("default_profile.json").open() as fh:
        return profile_from_json(json.load(fh))


@functools.cache
def load_profile(gpu_profile_name: str) -> Profile:
    """The calibrated profile for a GPU type (GPUSpec.calibrated_as), else the default."""
    try:
        path = resources.files("calibration").joinpath("profiles", f"{gpu_profile_name}.json")
        if path.is_file():
            with path.open() as fh:
                return profile_from_json(json.load(fh))
    except ModuleNotFoundError:
        pass
    return default_profile()
