"""Deterministic test inputs computed once per test run, shared by the pytest-xdist workers.

A session fixture or a functools.cache runs once per worker process: with `make test`'s two workers
an input that tests on both workers need (validate() on the committed records, the synthetic H100
fit) was computed twice, a minute or more of CI's two cores each. `computed(name, fn)` computes it
in the first worker that asks, under a file lock, and the other worker reads the pickled value
back; a worker that asks while the first computes waits for it. Without xdist (a plain `pytest`),
or before tests/conftest.py has named the run's folder, it just calls fn.
Import this module as `tests.once` everywhere (one module, one folder).
"""

from __future__ import annotations

import fcntl
import os
import pickle
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

# the test run's temp folder that every worker shares (set by tests/conftest.py under xdist)
RUN_DIR: Path | None = None


def computed(name: str, fn: Callable[[], T]) -> T:
    """fn(), computed by one worker of this test run and unpickled by the others."""
    if RUN_DIR is None:
        return fn()
    path = RUN_DIR / f"once-{name}.pickle"
    with open(RUN_DIR / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes, also if fn raises
        if path.exists():
            return pickle.loads(path.read_bytes())
        value = fn()
        part = path.with_suffix(".part")
        part.write_bytes(pickle.dumps(value))
        os.replace(part, path)
        return value
