"""A function of a heavy module, imported in a forked process while the command computes.

`twin replay` spends ~0.6 s importing its report's plotting stack (matplotlib) and ~1.5 s
simulating, much of it with a core to spare. `prepared("reports.replay_report", "write_report")`
forks a process that imports the module at once and then waits; `call(*args)` hands it the
arguments (pickled) and returns what the function returned, raising what it raised. Where fork is
not available it imports and calls here, in order.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import sys
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any


def _function(path: str):
    """'package.module.function' -> the function."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _serve(module: str, name: str, warm: str | None, warm_args: tuple, conn: Connection, other_end: Connection) -> None:
    other_end.close()   # the parent's end: once the parent is gone, recv() ends with EOFError
    try:
        func = getattr(importlib.import_module(module), name)
    except BaseException as exc:   # reported when called
        func, failure = None, exc
    if warm and func is not None:
        try:
            _function(warm)(*warm_args)
        except Exception as exc:   # work done ahead is an optimisation: the call still runs
            print(f"warning: {warm} failed ahead of {module}.{name} ({type(exc).__name__}: {exc})", file=sys.stderr)
    try:
        args = conn.recv()
    except (EOFError, OSError):
        return   # the parent finished without calling (an error, or nothing to write)
    try:
        if func is None:
            raise failure
        conn.send(("ok", func(*args)))
    except BaseException as exc:
        try:
            conn.send(("error", exc))
        except Exception:   # an exception that does not pickle: its text
            conn.send(("error", RuntimeError("".join(traceback.format_exception(exc)))))
    finally:
        conn.close()


class Prepared:
    """`module.name` in a process forked now; call(*args) runs it there once. `warm` names a
    function ('package.module.function') run there with `warm_args` after the import, before the
    call comes (work that needs only what is known now)."""

    def __init__(self, module: str, name: str, warm: str | None = None, warm_args: tuple = ()):
        self.module, self.name = module, name
        self._proc = self._conn = None
        if "fork" in mp.get_all_start_methods():
            ctx = mp.get_context("fork")
            self._conn, child_end = ctx.Pipe()
            # not a daemon: the function may start processes of its own (the report's plots)
            self._proc = ctx.Process(target=_serve, args=(module, name, warm, warm_args, child_end, self._conn), daemon=False)
            self._proc.start()
            child_end.close()

    def call(self, *args) -> Any:
        if self._proc is None:
            return getattr(importlib.import_module(self.module), self.name)(*args)
        try:
            self._conn.send(args)
            status, value = self._conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"the process preparing {self.module}.{self.name} ended without an answer "
                               f"(exit status {self._proc.exitcode})") from None
        finally:
            self.close(answered=True)
        if status == "error":
            raise value
        return value

    def close(self, answered: bool = False) -> None:
        """Release the process: joined once it has answered, else stopped (it is only importing
        or waiting)."""
        if self._proc is not None:
            self._conn.close()
            if not answered:
                self._proc.terminate()
            self._proc.join()
            self._proc = None


@contextlib.contextmanager
def prepared(module: str, name: str, enabled: bool = True, warm: str | None = None,
             warm_args: tuple = ()) -> Iterator[Prepared | None]:
    """A Prepared (None where not `enabled`), closed on the way out whatever happens."""
    p = Prepared(module, name, warm, warm_args) if enabled else None
    try:
        yield p
    finally:
        if p is not None:
            p.close()
