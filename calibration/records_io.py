"""Where a records CSV is on disk: `X.csv`, or `X.csv.gz` where only the gzipped copy is committed.

The tracked tree must stay small (the GPU tool copies at most 64 MiB of it), so record files over
~32 KB are committed gzipped (`gzip -n -9`, the `.csv` removed; calibration/measurements/README.md).
Every reader names the file it wants as `X.csv` and asks `resolve_csv` which file holds it;
`pandas.read_csv` reads either (it infers gzip from the `.gz` suffix) and `open_csv` opens either as
text for the csv module. A folder holding both keeps the plain `X.csv` (a fresh campaign's output
beside an older gzipped copy is the newer one).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import IO

import pandas as pd

GZ = ".gz"


def resolve_csv(path: Path | str) -> Path:
    """`path` (a name ending .csv) where it is a file, else its gzipped sibling `path.gz` where that
    is, else `path` unchanged (a reader's own 'missing file' handling then sees the name it asked)."""
    path = Path(path)
    if path.is_file():
        return path
    gz = path.with_name(path.name + GZ)
    return gz if gz.is_file() else path


def csv_exists(path: Path | str) -> bool:
    """Whether `path` or its gzipped sibling is a file."""
    return resolve_csv(path).is_file()


def open_csv(path: Path | str) -> IO[str]:
    """The CSV behind `path` (plain or gzipped, resolve_csv) opened as text for csv.reader."""
    path = resolve_csv(path)
    if path.name.endswith(GZ):
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def read_csv(path: Path | str, **kwargs) -> pd.DataFrame:
    """pandas.read_csv of the CSV behind `path` (plain or gzipped, resolve_csv)."""
    return pd.read_csv(resolve_csv(path), **kwargs)


def csv_bytes(path: Path | str) -> bytes:
    """The CSV's own bytes (a gzipped file's decompressed), the same whichever way it is committed."""
    path = resolve_csv(path)
    return gzip.decompress(path.read_bytes()) if path.name.endswith(GZ) else path.read_bytes()


def csv_sha256(path: Path | str) -> str:
    """sha256 of csv_bytes: a provenance hash that gzipping the file does not change."""
    return hashlib.sha256(csv_bytes(path)).hexdigest()


def glob_csv(folder: Path | str, pattern: str, recursive: bool = False) -> list[Path]:
    """Sorted CSVs of `folder` matching `pattern` (a glob ending .csv) plain or gzipped: a name
    present both ways counts once, as its plain file. `recursive`: rglob instead of glob."""
    folder = Path(folder)
    find = folder.rglob if recursive else folder.glob
    plain = set(find(pattern))
    gzipped = {p for p in find(pattern + GZ) if p.with_name(p.name[:-len(GZ)]) not in plain}
    return sorted(plain | gzipped, key=lambda p: p.with_name(csv_name(p)))   # the order plain names sort in


def read_csvs(folder: Path | str, pattern: str, recursive: bool = False) -> pd.DataFrame:
    """Every CSV of glob_csv(folder, pattern, recursive) in one frame, in that order (a fresh index);
    an empty frame where there is none (per-rank trace files, one file a rank or a round)."""
    frames = [read_csv(p) for p in glob_csv(folder, pattern, recursive)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def csv_name(path: Path | str) -> str:
    """The file's name as a reader knows it: `gemm.csv` for gemm.csv and for gemm.csv.gz."""
    name = Path(path).name
    return name[:-len(GZ)] if name.endswith(GZ) else name


def csv_stem(path: Path | str) -> str:
    """The name without .csv (and .gz): `gemm` for gemm.csv and for gemm.csv.gz."""
    name = csv_name(path)
    return name[:-len(".csv")] if name.endswith(".csv") else Path(name).stem
