"""Model configurations for real/: the twin's named catalog (`twin/data/models.toml`).

`get_spec(name)` returns the twin's frozen `ModelSpec` when the twin is importable, and
otherwise a field-compatible `CatalogSpec` read straight from the same TOML file (so `real/` runs
on a GPU image without the twin's dependencies). Both expose the same attribute names.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

MODELS_TOML = Path(__file__).resolve().parent.parent / "twin" / "data" / "models.toml"


@dataclass(frozen=True)
class CatalogSpec:
    """Field-for-field stand-in for `twin.models.ModelSpec` (defaults mirror the catalog's)."""

    name: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    num_heads: int
    attention: str = "mla"
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    intermediate_size: int = 0
    num_dense_layers: int = 0
    num_routed_experts: int = 0
    num_shared_experts: int = 0
    moe_intermediate_size: int = 0
    top_k: int = 0
    num_expert_groups: int = 1
    top_k_groups: int = 1
    route_scale: float = 1.0
    num_mtp_modules: int = 0
    tie_embeddings: bool = False


def _from_toml(name: str) -> CatalogSpec:
    with open(MODELS_TOML, "rb") as f:
        models = tomllib.load(f)["models"]
    if name not in models:
        raise KeyError(f"unknown model {name!r} in {MODELS_TOML}; known: {sorted(models)}")
    fields = {f.name for f in dataclasses.fields(CatalogSpec)}
    unknown = set(models[name]) - fields
    if unknown:
        raise KeyError(f"unknown keys {sorted(unknown)} for model {name!r} in {MODELS_TOML}")
    return CatalogSpec(name=name, **models[name])


def get_spec(name: str):
    """The named model spec from the twin (`twin.models` or `twin.specs`), else the TOML entry."""
    try:
        from twin.models import get_model  # pure stdlib in the twin; no torch, no simpy
    except ImportError:
        try:
            from twin.specs import get_model
        except ImportError:
            return _from_toml(name)
    return get_model(name)


def replace(spec, **changes):
    """`dataclasses.replace` for either spec type (sweeps make variants this way)."""
    return dataclasses.replace(spec, **changes)
