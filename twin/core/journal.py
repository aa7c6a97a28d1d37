"""An append-only journal of result rows (JSON lines) that survives being killed at any point.

A sweep appends each row as it arrives, flushed and fsynced, so a run killed with SIGKILL loses at
most the row being written. Reading back (`read_rows`) drops a last line cut short by the kill and
truncates the file to the last whole row, so appends after a resume stay well formed; rows are
keyed by their candidate id, the first row of an id winning, so nothing is ever counted twice.

`clean_stale_tmp` removes what an interrupted run left beside its output: the staging directories
and files of twin.core.atomic (`.NAME.*.tmp`), which a kill leaves behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

ID_KEY = "candidate_id"


def read_rows(path: str | Path) -> dict[str, dict]:
    """candidate id -> row, of every whole line of the journal (missing file: none)."""
    rows: dict[str, dict] = {}
    for ident, row in iter_rows(path):
        rows.setdefault(ident, row)
    return rows


def iter_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(candidate id, row) of every whole line of the journal, in order, read a line at a time (a
    plan search's journal of the default space is ~45 MB: read whole, it and its rows as dicts
    peaked at ~270 MB before s21ux). Once read to its end, a last line cut by a kill is dropped
    from the file, so appends start on a new line."""
    path = Path(path)
    if not path.exists():
        return
    good_end = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break   # the kill cut the last row
            good_end += len(line)
            try:
                row = json.loads(line)
            except ValueError:
                continue    # a line garbled by a crash mid-write (never produced by append_row itself)
            if isinstance(row, dict) and ID_KEY in row:
                yield row[ID_KEY], row
    if good_end < path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_end)


class Journal:
    """Append rows, one JSON line each, durable before `append` returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")

    def append(self, row: dict) -> None:
        self.append_many([row])

    def append_many(self, rows: list[dict]) -> None:
        """Several rows, durable together (one fsync: a plan search's screen journals batches of
        hundreds of rows, each a millisecond's work)."""
        self._fh.write(b"".join(json.dumps(row, separators=(",", ":"), allow_nan=False).encode() + b"\n" for row in rows))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def clean_stale_tmp(out_dir: str | Path) -> list[Path]:
    """Remove `.NAME.*.tmp` staging left beside `out_dir` and inside it by an interrupted run
    (twin.core.atomic names its temporaries so). Returns what was removed."""
    out_dir = Path(out_dir)
    removed = []
    for folder, prefix in ((out_dir.parent, f".{out_dir.name}."), (out_dir, ".")):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(prefix) and p.name.endswith(".tmp"):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed
