"""Model configurations for real/: the twin's named catalog (`twin/data/models.toml`).

`twin.core.specs` is pure standard library (no torch, no simpy), so real/ reads the same frozen
`ModelSpec` the twin uses, on CPU and on the GPU image alike: one catalog, one set of names.
"""

from __future__ import annotations

import dataclasses

from twin.core.specs import ModelSpec, get_model


def get_spec(name: str) -> ModelSpec:
    """The named model spec from the catalog (`twin model --list` shows the names)."""
    return get_model(name)


def replace(spec: ModelSpec, **changes) -> ModelSpec:
    """A variant of a spec (sweeps make variants this way)."""
    return dataclasses.replace(spec, **changes)
