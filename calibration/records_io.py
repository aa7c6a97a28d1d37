"""Where a records CSV is on disk: `X.csv`, or a compressed copy `X.csv.xz` / `X.csv.gz` where only
that is committed.

The tracked tree must stay small (the GPU tool copies at most 64 MiB of tree and carry together), so
record files are committed compressed (calibration/measurements/README.md): xz since s25tree
(`pack_record`: LZMA2 `xz -9e`, about 30% smaller than `gzip -9` on these tables), gzip before (`gzip -n -9`;
a campaign's own `.gz` output is read as it is). Every reader names the file it wants as `X.csv` and
asks `resolve_csv` which file holds it; `pandas.read_csv` reads each form (it infers the codec from
the suffix) and `open_csv` opens each as text for the csv module. A folder holding the plain `X.csv`
beside a compressed copy reads the plain one (a fresh campaign's output is the newer one).

Chrome traces (`X.json`) follow the same rule (s30tree): the profilers and `twin trace` write `X.json` or
`X.json.gz` (what Perfetto opens), the tree commits them as `X.json.xz` (`pack_record`), and a reader names
the trace as it was written and opens it with `open_trace` / `load_trace` (`glob_traces` lists a folder's),
which find any of the three forms. Traces are not records a fit's manifest lists: they stay outside
`read_scope`.

`read_scope` (s26refit) watches and limits the readers for a while: which records `read_csv` / `open_csv`
read (`twin fit` writes them to its fit-input manifest), and, given a set of records, every other record
reads as absent (a refit from the manifest sees exactly the records the manifest names).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import hashlib
import json
import lzma
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pandas as pd

from twin.core import atomic

GZ = ".gz"
XZ = ".xz"
# The compressed forms a record may have, in the order resolve_csv prefers them (a record is committed
# in one form only: tests/calibration/test_records_io.py checks the tree).
PACKED_SUFFIXES = (XZ, GZ)


def unpacked_name(name: str) -> str:
    """`name` without a compressed form's suffix: `gemm.csv` for gemm.csv, gemm.csv.xz and gemm.csv.gz."""
    for suffix in PACKED_SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


@dataclasses.dataclass
class ReadScope:
    """What `read_scope` saw: `read`, the records read_csv / open_csv read; `refused`, records on disk a
    reader asked for (read or existence check) outside `allowed`. Records are named by record_key."""
    allowed: frozenset[str] | None
    read: set[str] = dataclasses.field(default_factory=set)
    refused: set[str] = dataclasses.field(default_factory=set)


_SCOPE: ReadScope | None = None


def record_key(path: Path | str) -> str:
    """A record's name in a ReadScope: the absolute path of its plain name (`.../h100/gemm.csv` for
    gemm.csv, gemm.csv.xz and gemm.csv.gz)."""
    path = Path(path)
    return os.path.abspath(path.with_name(unpacked_name(path.name)))


@contextlib.contextmanager
def read_scope(allowed: set[str] | frozenset[str] | None = None) -> Iterator[ReadScope]:
    """Within: every record read through read_csv / open_csv is added to the yielded scope's `read`.
    `allowed` (record_key names): the records readers may see; any other reads as absent (csv_exists
    False, glob_csv skips it, read_csv raises FileNotFoundError), and one on disk that a reader asked
    for is added to `refused`. Not nested: one scope at a time (a fit runs in one thread)."""
    global _SCOPE
    if _SCOPE is not None:
        raise RuntimeError("read_scope is already open")
    _SCOPE = ReadScope(None if allowed is None else frozenset(allowed))
    try:
        yield _SCOPE
    finally:
        _SCOPE = None


def _outside_scope(path: Path) -> bool:
    return _SCOPE is not None and _SCOPE.allowed is not None and record_key(path) not in _SCOPE.allowed


def resolve_csv(path: Path | str) -> Path:
    """`path` where it is a file, else the first of its plain name (`X.csv`) and that name's compressed
    siblings `X.csv.xz`, `X.csv.gz` that is one (so a reader that still names `X.csv.gz` finds a record
    recompressed as `X.csv.xz`), else `path` unchanged (a reader's own 'missing file' handling then sees
    the name it asked). Inside a read_scope that does not allow the record: a name no file has."""
    path = Path(path)
    if _outside_scope(path):
        found = _resolve(path)
        if found.is_file():
            _SCOPE.refused.add(record_key(path))
        return path.with_name(unpacked_name(path.name) + " (outside the read scope)")
    return _resolve(path)


def _resolve(path: Path) -> Path:
    if path.is_file():
        return path
    plain = path.with_name(unpacked_name(path.name))
    for candidate in (plain, *(plain.with_name(plain.name + suffix) for suffix in PACKED_SUFFIXES)):
        if candidate.is_file():
            return candidate
    return path


def csv_exists(path: Path | str) -> bool:
    """Whether `path`, its plain name or a compressed sibling is a file."""
    return resolve_csv(path).is_file()


def _note_read(path: Path) -> None:
    if _SCOPE is not None and path.is_file():
        _SCOPE.read.add(record_key(path))


def open_csv(path: Path | str) -> IO[str]:
    """The CSV behind `path` (plain or compressed, resolve_csv) opened as text for csv.reader."""
    path = resolve_csv(path)
    _note_read(path)
    if path.name.endswith(XZ):
        return lzma.open(path, "rt", newline="")
    if path.name.endswith(GZ):
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def read_csv(path: Path | str, **kwargs) -> pd.DataFrame:
    """pandas.read_csv of the CSV behind `path` (plain or compressed, resolve_csv). (s32ci) A file read before in this
    process, unchanged since (its size and modification time) and read with the same arguments, is served from
    _PARSED as a deep copy (a caller may edit what it gets) instead of being decompressed and parsed again: a
    validation or a test worker reads the same records many times."""
    path = resolve_csv(path)
    _note_read(path)
    key = _parsed_key(path, kwargs)
    if key is None:
        return pd.read_csv(path, **kwargs)
    kept = _PARSED.get(key)
    if kept is None:
        frame = pd.read_csv(path, **kwargs)
        _keep_parsed(key, frame)
        return frame
    _PARSED.move_to_end(key)
    return kept.copy(deep=True)


# (s32ci) parsed records kept per process: path, size, modification time and read_csv's arguments -> the frame; the
# least recently read dropped past PARSED_MAX_BYTES (the frames' own memory), a frame over a quarter of it not kept
PARSED_MAX_BYTES = 256 * 2 ** 20
PARSED_SETTLED_S = 2.0
_PARSED: collections.OrderedDict[tuple, pd.DataFrame] = collections.OrderedDict()
_PARSED_BYTES: dict[tuple, int] = {}


def _parsed_key(path: Path, kwargs: dict) -> tuple | None:
    """_PARSED's key of a read, or None where its arguments cannot name it (a callable: usecols=lambda ...; an
    unhashable value), the file is not there (pandas raises as before) or was written in the last
    PARSED_SETTLED_S (a file system's modification times are coarse, a few ms: two writes of one size that close
    could share one; a file kept was last written before the clock moved past it)."""
    if any(callable(v) and not isinstance(v, type) for v in kwargs.values()):
        return None
    try:
        st = path.stat()
        if not st.st_mtime < time.time() - PARSED_SETTLED_S:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns,
               tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items())))
        hash(key)
    except (OSError, TypeError):
        return None
    return key


def record_stamp(path: Path | str) -> tuple | None:
    """(s33pack) What names the record behind `path` for a memo of work on its rows: (the file resolve_csv reads, its
    size, its modification time in ns); None where no such key is safe: inside a read_scope (the scope must see each
    read), the file is not there, or it was written in the last PARSED_SETTLED_S (read_csv's own rule)."""
    if _SCOPE is not None:
        return None
    found = resolve_csv(path)
    try:
        st = found.stat()
    except OSError:
        return None
    if not st.st_mtime < time.time() - PARSED_SETTLED_S:
        return None
    return str(found.resolve()), st.st_size, st.st_mtime_ns


def _keep_parsed(key: tuple, frame: pd.DataFrame) -> None:
    size = int(frame.memory_usage(index=True, deep=False).sum())
    if size > PARSED_MAX_BYTES // 4:
        return
    _PARSED[key] = frame.copy(deep=True)
    _PARSED_BYTES[key] = size
    while sum(_PARSED_BYTES.values()) > PARSED_MAX_BYTES:
        old, _ = _PARSED.popitem(last=False)
        del _PARSED_BYTES[old]


def unpacked_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed where its name ends in a compressed form's suffix."""
    return decompressed(path.name, path.read_bytes())


def decompressed(name: str, data: bytes) -> bytes:
    """`data`, a file named `name`'s bytes (from disk or `git show`), decompressed where the name ends in a
    compressed form's suffix."""
    if name.endswith(XZ):
        return lzma.decompress(data, format=lzma.FORMAT_XZ)
    return gzip.decompress(data) if name.endswith(GZ) else data


def csv_bytes(path: Path | str) -> bytes:
    """The CSV's own bytes (a compressed file's decompressed), the same whichever way it is committed."""
    return unpacked_bytes(resolve_csv(path))


def csv_sha256(path: Path | str) -> str:
    """sha256 of csv_bytes: a provenance hash that compressing the file does not change."""
    return hashlib.sha256(csv_bytes(path)).hexdigest()


def _glob_packed(folder: Path | str, pattern: str, recursive: bool, scoped: bool) -> list[Path]:
    """Files of `folder` matching `pattern` (a glob naming the plain form) plain or compressed, each name
    once as _resolve reads it, in the order the plain names sort in; `scoped`: read_scope applies."""
    folder = Path(folder)
    find = folder.rglob if recursive else folder.glob
    found = set(find(pattern)).union(*(find(pattern + suffix) for suffix in PACKED_SUFFIXES))
    chosen = {_resolve(p.with_name(unpacked_name(p.name))) for p in found if not (scoped and _outside_scope(p))}
    return sorted(chosen, key=lambda p: p.with_name(unpacked_name(p.name)))


def glob_csv(folder: Path | str, pattern: str, recursive: bool = False) -> list[Path]:
    """Sorted CSVs of `folder` matching `pattern` (a glob ending .csv) plain or compressed: a name
    present more than one way counts once, as resolve_csv reads it. `recursive`: rglob instead of glob."""
    return _glob_packed(folder, pattern, recursive, scoped=True)


def read_csvs(folder: Path | str, pattern: str, recursive: bool = False) -> pd.DataFrame:
    """Every CSV of glob_csv(folder, pattern, recursive) in one frame, in that order (a fresh index);
    an empty frame where there is none (per-rank trace files, one file a rank or a round)."""
    frames = [read_csv(p) for p in glob_csv(folder, pattern, recursive)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# Chrome traces
# ---------------------------------------------------------------------------------------------

TRACE_SUFFIX = ".json"


def resolve_trace(path: Path | str) -> Path:
    """The file behind a Chrome trace's name: `path` where it is a file, else the first of `X.json`,
    `X.json.xz`, `X.json.gz` that is one (a reader naming the `X.json.gz` a profiler wrote finds the
    committed `X.json.xz`), else `path` unchanged (open_trace then raises FileNotFoundError naming it)."""
    return _resolve(Path(path))


def open_trace(path: Path | str) -> IO[str]:
    """The Chrome trace behind `path` (plain, .xz or .gz: resolve_trace) opened as text."""
    path = resolve_trace(path)
    if path.name.endswith(XZ):
        return lzma.open(path, "rt")
    if path.name.endswith(GZ):
        return gzip.open(path, "rt")
    return open(path)


def load_trace(path: Path | str):
    """json.load of the Chrome trace behind `path` (open_trace): a dict with traceEvents, or a bare list."""
    with open_trace(path) as f:
        return json.load(f)


def glob_traces(folder: Path | str, pattern: str, recursive: bool = False) -> list[Path]:
    """The Chrome traces of `folder` matching `pattern` (a glob ending .json), each trace once whichever
    forms it has on disk (as resolve_trace prefers them), in the order their plain names sort in."""
    return _glob_packed(folder, pattern, recursive, scoped=False)


def trace_name(path: Path | str) -> str:
    """A trace's plain name, the same however it is stored: `t.json` for t.json, t.json.xz and t.json.gz."""
    return unpacked_name(Path(path).name)


def is_chrome_trace(path: Path | str) -> bool:
    """Whether the file (plain or compressed) holds a Chrome trace: a JSON object with `traceEvents`
    (what torch.profiler, real/'s pipeline bench and `twin trace` write), not an env file or a profile."""
    try:
        obj = json.loads(unpacked_bytes(Path(path)))
    except (OSError, ValueError, EOFError, lzma.LZMAError):
        return False
    return isinstance(obj, dict) and "traceEvents" in obj


# ---------------------------------------------------------------------------------------------
# JSON records: judgements, fits and evidence under calibration/ (s33pack)
# ---------------------------------------------------------------------------------------------

# The JSON records a judge's own command writes beside its code (calibration/<lane>_judgement.json, _fit.json,
# _evidence.json, ...) are committed packed, X.json.xz (~10x smaller: 1.97 MB -> 0.2 MB in s33pack). Readers name
# them X.json and go through read_json / json_exists, which take X.json, X.json.xz or X.json.gz (resolve_json: a
# plain X.json, e.g. a judgement another branch wrote before the packing was merged, reads first); writers call
# write_json_text, which writes X.json.xz atomically and removes the other forms. Not packed: the pre-registrations
# under calibration/measurements/prereg/ (a registration's committed bytes are what its rule and notes cite and what
# a reviewer diffs: tree_size.PREREG), env files and profiles (read as plain JSON by twin/ and real/).
JSON_RECORD_DIR = Path(__file__).resolve().parent   # calibration/: where judges write their JSON records


def resolve_json(path: Path | str) -> Path:
    """The file behind a JSON record's name: `path` where it is a file, else the first of `X.json`, `X.json.xz`,
    `X.json.gz` that is one, else `path` unchanged (a reader's own 'missing file' handling sees the name it asked)."""
    return _resolve(Path(path))


def json_exists(path: Path | str) -> bool:
    """Whether the JSON record `path` names is on disk in any of its forms (resolve_json)."""
    return resolve_json(path).is_file()


def read_json_text(path: Path | str) -> str:
    """The JSON record's own text (a packed file's decompressed), the same whichever way it is stored; a missing
    record raises FileNotFoundError naming the name asked."""
    found = resolve_json(path)
    if not found.is_file():
        raise FileNotFoundError(f"{path}: no such JSON record (nor {Path(path).name}{XZ} / {GZ})")
    return unpacked_bytes(found).decode("utf-8")


def read_json(path: Path | str):
    """json.loads of the JSON record behind `path` (X.json, X.json.xz or X.json.gz: resolve_json)."""
    return json.loads(read_json_text(path))


def packed_json_name(path: Path | str) -> Path:
    """Where write_json_text puts the record named `path`: X.json.xz for X.json (and for X.json.xz / X.json.gz)."""
    path = Path(path)
    return path.with_name(unpacked_name(path.name) + XZ)


def write_json_text(path: Path | str, text: str) -> Path:
    """Write the JSON record named `path` (X.json) packed, as X.json.xz holding `text`'s UTF-8 bytes (xz_bytes:
    the same text gives the same bytes), atomically (a temporary sibling moved over it); then remove its other
    forms (a plain X.json or X.json.gz left from before), so one form is on disk. Returns the file written."""
    target = packed_json_name(path)
    atomic.write_bytes(target, xz_bytes(text.encode("utf-8")))
    plain = target.with_name(unpacked_name(target.name))
    for other in (plain, plain.with_name(plain.name + GZ)):
        if other.is_file():
            other.unlink()
    return target


def glob_json(folder: Path | str, pattern: str) -> list[Path]:
    """The JSON records of `folder` matching `pattern` (a glob ending .json), each once whichever forms it has on
    disk (as resolve_json prefers them), in the order their plain names sort in."""
    return _glob_packed(folder, pattern, recursive=False, scoped=False)


def json_record_name(path: Path | str) -> str:
    """A JSON record's plain name, the same however it is stored: `x.json` for x.json, x.json.xz and x.json.gz."""
    return unpacked_name(Path(path).name)


def csv_name(path: Path | str) -> str:
    """The file's name as a reader knows it: `gemm.csv` for gemm.csv, gemm.csv.xz and gemm.csv.gz."""
    return unpacked_name(Path(path).name)


def csv_stem(path: Path | str) -> str:
    """The name without .csv (and .xz or .gz): `gemm` for gemm.csv, gemm.csv.xz and gemm.csv.gz."""
    name = csv_name(path)
    return name[:-len(".csv")] if name.endswith(".csv") else Path(name).stem


# The largest LZMA2 dictionary xz_bytes uses (preset 9's): no committed table comes near it uncompressed
# except a few profiled-step kernel logs (~30 MB), which it still covers.
XZ_DICT_MAX_BYTES = 64 * 1024 * 1024
XZ_DICT_MIN_BYTES = 4096


def xz_bytes(data: bytes) -> bytes:
    """`data` as one .xz stream (CRC64), LZMA2 at preset 9-extreme (`xz -9e`: 8-13% smaller than plain -9 on
    the pipeline op and kernel-event tables, within 0.2% of it on serving iterations), the dictionary no
    larger than the data needs so a reader allocates no more; the .xz format holds no timestamp or name,
    so the bytes depend on the data (and liblzma) only."""
    dict_bytes = min(XZ_DICT_MAX_BYTES, max(XZ_DICT_MIN_BYTES, 1 << max(0, len(data) - 1).bit_length()))
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_bytes}]
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=filters)


# What pack_record takes (each plain or gzipped): CSV records, which every reader finds through
# resolve_csv, and a campaign's logs and host captures (.txt, .log), which no code reads (xzless shows
# them); Chrome traces (.json holding traceEvents), which readers open through open_trace; and (s33pack) the
# JSON records at the top of calibration/, which readers open through read_json. Not any other .json: env
# files and profiles are read as plain JSON, and pre-registrations keep their committed bytes.
PACKABLE_SUFFIXES = (".csv", ".txt", ".log", TRACE_SUFFIX)


def pack_problem(path: Path, json_record: bool = False) -> str | None:
    """Why pack_record would refuse `path` (a message naming it and what is allowed), or None. `json_record`: `path`
    is a JSON record (a judgement, fit or evidence file at the top of calibration/: JSON_RECORD_DIR), which packs
    whatever it holds; any other .json packs only as a Chrome trace."""
    allowed = ("allowed: " + ", ".join(f"X{s} or X{s}{GZ}" for s in PACKABLE_SUFFIXES)
               + f" ({TRACE_SUFFIX} a Chrome trace or a JSON record of calibration/)")
    if not path.is_file():
        return f"{path}: no such file ({allowed})"
    if path.name.endswith(XZ) or not unpacked_name(path.name).endswith(PACKABLE_SUFFIXES):
        return f"{path}: {path.name!r} cannot be packed ({allowed})"
    if unpacked_name(path.name).endswith(TRACE_SUFFIX) and not json_record and not is_chrome_trace(path):
        return f"{path}: {path.name!r} is not a Chrome trace (no traceEvents; {allowed})"
    target = path.with_name(unpacked_name(path.name) + XZ)
    if target.exists():
        return f"{path}: {target.name} is already there; merge the rows into one file first"
    return None


def pack_record(path: Path | str, json_record: bool = False) -> Path:
    """Replace the record `path` (X.csv or X.csv.gz, likewise .txt, .log, a Chrome trace's .json and, with
    `json_record`, a JSON record of calibration/) by X.csv.xz (X.json.xz, ...) holding the same bytes (checked by
    decompressing before the source is removed); returns the new file. Refuses what pack_problem names (ValueError
    with its message)."""
    path = Path(path)
    problem = pack_problem(path, json_record)
    if problem:
        raise ValueError(problem)
    target = path.with_name(unpacked_name(path.name) + XZ)
    data = unpacked_bytes(path)
    packed = xz_bytes(data)
    if lzma.decompress(packed, format=lzma.FORMAT_XZ) != data:   # never remove a record on a bad copy
        raise RuntimeError(f"{path}: the xz copy does not decompress to the record's bytes; nothing changed")
    target.write_bytes(packed)
    path.unlink()
    return target


def text_records(df: pd.DataFrame) -> list[dict]:
    """df.to_dict("records") of a frame of text columns (read_csv(..., dtype=str), .astype(str)): the same dicts,
    keys in column order, each cell the same str (a missing one the same float NaN), without pandas' per-cell
    iteration and boxing of Arrow strings (s32ci2: serve_engine_fit.design's iterations were ~7x slower that way).
    A frame with another column type, a string column whose missing value is not NaN (pd.NA: to_dict gives None)
    or repeated column names goes through to_dict itself."""
    cols = list(df.columns)
    if len(set(cols)) != len(cols) or not all(
            isinstance(t, pd.StringDtype) and isinstance(t.na_value, float) for t in df.dtypes):
        return df.to_dict("records")
    values = [df[c].to_numpy(dtype=object).tolist() for c in cols]
    return [dict(zip(cols, row)) for row in zip(*values)] if cols else [{} for _ in range(len(df))]
