"""What `twin fit` publishes into the twin's package data besides the profiles: the measured expert
loads the twin replays (`[moe] load_model = "measured"`), copied from the records so that an
installed twin carries them (twin/data/expert_load/<gpu>.csv). A test keeps the copies equal."""

from __future__ import annotations

from pathlib import Path

from calibration import records as rec
from calibration.records_io import csv_bytes, csv_exists
from twin.core.atomic import write_text
from twin.moe.load import EXPERT_LOADS


def expert_load_copy(gpu: str) -> Path:
    return Path(str(EXPERT_LOADS)) / f"{gpu}.csv"


def publish_expert_loads(gpu: str, root: Path | str | None = None) -> Path | None:
    """Copy <root>/<gpu>/expert_load.csv into the package data; None if the GPU has none."""
    root = rec.records_root() if root is None else root
    src = Path(root) / gpu / "expert_load.csv"
    if not csv_exists(src):
        return None
    dst = expert_load_copy(gpu)
    write_text(dst, csv_bytes(src).decode())
    return dst
