"""One results table (a row per candidate) as CSV and Parquet bytes.

Rows are flat dicts of scalars (str, int, float, bool, None); nested dicts are flattened with
dotted keys (`plan.tp`). Parquet goes through pyarrow (pinned in the `parquet` and `test` extras);
the columns keep their types (int64, double, bool, string), so a reader gets numbers, not text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable


def flatten(row: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def columns_of(rows: list[dict], first: tuple[str, ...] = ()) -> list[str]:
    """`first` (those present), then every other key in order of first appearance."""
    seen = {k: None for k in first if any(k in r for r in rows)}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def parquet_files(name: str, rows: list[dict], columns: list[str]) -> dict[str, bytes]:
    """{name: Parquet bytes}, or nothing where pyarrow is not installed (the `parquet` extra):
    the CSV beside it holds the same table."""
    try:
        return {name: to_parquet(rows, columns)}
    except ImportError:
        return {}


def to_parquet(rows: list[dict], columns: list[str]) -> bytes:
    """Parquet bytes of the table. pyarrow is imported here only: a heavy optional dependency
    (pip install -e .[parquet]) that only writing a table needs."""
    # lazy: pyarrow is a heavy optional extra that only writing a Parquet table needs
    import pyarrow as pa
    # lazy: as above
    import pyarrow.parquet as pq

    data = {c: [_scalar(r.get(c)) for r in rows] for c in columns}
    table = pa.table({c: _array(pa, v) for c, v in data.items()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _scalar(v):
    return v.item() if hasattr(v, "item") else v


def _array(pa, values: list):
    """A column typed by its values: bool, int64, double (ints and floats mixed), else string."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


# --- the same table, streamed: for tables too large to hold as dicts and text at once (a plan
# search's every candidate); the rows come from a callable that yields them afresh for each pass


def stream_columns(rows: Iterable[dict], first: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """columns_of's columns, and each column's Parquet kind as _array types it (bool, int64,
    double, string), in one pass over the rows."""
    present_first: set = set()
    seen: dict[str, None] = {}
    kinds: dict[str, set] = {}
    for r in rows:
        for k, v in r.items():
            if k in first:
                present_first.add(k)
            seen.setdefault(k, None)
            v = _scalar(v)
            if v is not None:
                kinds.setdefault(k, set()).add("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                                               else "float" if isinstance(v, float) else "other")
    columns = [k for k in first if k in present_first] + [k for k in seen if k not in present_first]
    return columns, {c: _kind(kinds.get(c, set())) for c in columns}


def _kind(found: set) -> str:
    if found == {"bool"}:
        return "bool"
    if found == {"int"}:
        return "int64"
    if found and found <= {"int", "float"}:
        return "double"
    return "string"


def write_csv(path, rows: Iterable[dict], columns: list[str]) -> None:
    """to_csv's bytes, written row by row."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def write_parquet(path, rows: Callable[[], Iterable[dict]], columns: list[str], kinds: dict[str, str],
                  batch_rows: int = 8192) -> bool:
    """to_parquet's table (the same columns, types and values), written `batch_rows` at a time (a
    row group each). False where pyarrow is not installed (the `parquet` extra)."""
    try:
        # lazy: pyarrow is a heavy optional extra that only writing a Parquet table needs
        import pyarrow as pa
        # lazy: as above
        import pyarrow.parquet as pq
    except ImportError:
        return False
    types = {"bool": pa.bool_(), "int64": pa.int64(), "double": pa.float64(), "string": pa.string()}
    schema = pa.schema([(c, types[kinds[c]]) for c in columns])

    def column(values: list, kind: str):
        if kind == "double":
            values = [None if v is None else float(v) for v in values]
        elif kind == "string":
            values = [None if v is None else str(v) for v in values]
        return pa.array(values, types[kind])

    def flush(batch: list[dict], writer) -> None:
        data = [column([_scalar(r.get(c)) for r in batch], kinds[c]) for c in columns]
        writer.write_table(pa.Table.from_arrays(data, schema=schema))

    with pq.ParquetWriter(str(path), schema) as writer:
        batch: list[dict] = []
        for r in rows():
            batch.append(r)
            if len(batch) >= batch_rows:
                flush(batch, writer)
                batch = []
        if batch or not columns:
            flush(batch, writer)
    return True
