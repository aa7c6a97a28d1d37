"""Where a search's or sweep's candidates run: a local process pool (default), or Dask distributed.

`run(fn, items, ...)` yields `fn(item)` for every item as results arrive (in completion order),
so callers can stream them to disk. Executors:
- `workers=1`: in this process (tests, tiny searches);
- a local process pool (`workers` processes, default the CPU count). Its workers never outlive
  the run: each asks the kernel to kill it when the process that started it dies
  (PR_SET_PDEATHSIG, Linux) and, everywhere, watches its parent and exits when it is gone; each
  sits in its own process group, so a Ctrl-C at the terminal reaches only the parent, which then
  terminates them. They are forked, so they share what the parent has already memoised (block
  costs, schedules).
- `dask="local"`: a Dask LocalCluster of `workers` processes on the loopback interface, closed
  with the run; `dask="tcp://HOST:PORT"`: the scheduler at that address (`pip install -e .[dask]`).

An exception `fn` raises in a worker reaches the caller. One that cannot be rebuilt from its pickle
(an exception class whose __init__ takes other arguments than it passes to Exception) is sent as a
WorkerError naming its type, message and traceback: multiprocessing's result thread dies on such a
pickle and the run then waits forever (until s20ux).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator

from twin.core.errors import ScenarioError

PARENT_POLL_S = 0.5   # how often a worker checks that its parent is still there
REASON_CHARS = 240   # a lost Dask run's reason, cut so that its refusal stays one line
_PR_SET_PDEATHSIG = 1


def _orphan_guard(parent_pid: int) -> None:
    """Worker initializer: die with the parent, and leave the terminal's process group."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:   # the parent died before the guard was set
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class WorkerError(RuntimeError):
    """An exception raised in a worker that could not travel back as itself (its text says what it was)."""


def _travels(exc: BaseException) -> bool:
    """Whether `exc` survives the pickle round trip a result makes from a worker to the parent."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


def _guarded(fn: Callable, item):
    """fn(item) in a worker; an exception that would not unpickle in the parent becomes a WorkerError."""
    try:
        return fn(item)
    except Exception as exc:
        if _travels(exc):
            raise
        raise WorkerError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}\n"
                          + "".join(traceback.format_exception(exc))) from None


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def run(fn: Callable, items: Iterable, workers: int | None = None, dask: str | None = None,
        chunksize: int = 1) -> Iterator:
    """fn(item) for every item, yielded as each finishes. `fn` must be a module-level function
    (it is pickled to the workers)."""
    items = list(items)
    if not items:
        return
    if dask:
        yield from _run_dask(functools.partial(_guarded, fn), items, workers, dask)
        return
    workers = min(workers or default_workers(), len(items))
    if workers == 1:
        yield from map(fn, items)
        return
    fn = functools.partial(_guarded, fn)
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(workers, initializer=_orphan_guard, initargs=(os.getpid(),))
    try:
        yield from pool.imap_unordered(fn, items, chunksize=chunksize)
        pool.close()
        pool.join()
    finally:
        pool.terminate()   # an error, Ctrl-C or a consumer that stopped early: no worker survives


# the schemes a Dask client connects to a scheduler of another process over (distributed.comm's backends)
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
DASK_ADDRESS = "'local' or a Dask scheduler's address [SCHEME://]HOST:PORT, e.g. tcp://HOST:8786"


def check_dask_address(address: str) -> None:
    """Refuse a --dask value that no scheduler could have, before any work (s27walk: `--dask bogus` screened
    every candidate behind a progress bar, then Dask said 'missing port number'). Whether a scheduler answers
    there is known only on connecting (_run_dask)."""
    if address == "local":
        return
    scheme, sep, rest = address.rpartition("://")
    host, colon, port = rest.rpartition(":")
    if sep and scheme not in DASK_SCHEMES:
        raise ScenarioError("--dask", address, f"{DASK_ADDRESS}; SCHEME one of {', '.join(DASK_SCHEMES)}")
    if not colon or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ScenarioError("--dask", address, f"{DASK_ADDRESS}; PORT 1-65535")


DASK_CONNECT_TIMEOUT_S = 5.0      # `--dask-connect-timeout`'s default: a scheduler on a LAN answers in milliseconds
TCP_SCHEMES = ("tcp", "tls", "ws", "wss")   # those a TCP connection reaches (ucx does not)


def probe_dask_address(address: str, timeout_s: float = DASK_CONNECT_TIMEOUT_S) -> None:
    """Refuse a --dask address where nothing accepts a TCP connection within `timeout_s`, before any work (s27walk
    round 2: an address where nothing answered was refused only on connecting, after the screen, after Dask's own
    30 s). A service that accepts but is not Dask's scheduler is still refused on connecting (_run_dask)."""
    scheme, sep, rest = address.rpartition("://")
    if address == "local" or (sep and scheme not in TCP_SCHEMES):
        return
    host, _, port = rest.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        why = f"no answer within {timeout_s:g} s" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise ScenarioError("--dask", address, f"'local' or the address of a running Dask scheduler, e.g. tcp://HOST:8786 "
                            f"(nothing accepts a connection there: {why}; --dask-connect-timeout S waits longer)") from None


def _run_dask(fn: Callable, items: list, workers: int | None, address: str) -> Iterator:
    # a missing extra or a scheduler that does not answer is the user's input, named as --dask (exit
    # 2), not a traceback (until s20ux)
    try:
        # lazy: dask is an optional extra that only `--dask` needs
        from dask.distributed import Client, KilledWorker, LocalCluster, as_completed
    except ImportError as exc:
        raise ScenarioError("--dask", address, f"Dask distributed installed (pip install 'moe-twin[dask]'; {exc})") from None

    with contextlib.ExitStack() as stack:
        # the client's own log of a lost scheduler (its reconnect attempts' tracebacks on stderr): the refusal below
        # says it in one line
        log = logging.getLogger("distributed.client")
        stack.callback(log.setLevel, log.level)
        log.setLevel(logging.CRITICAL)
        if address == "local":
            cluster = stack.enter_context(LocalCluster(n_workers=workers or min(2, default_workers()), threads_per_worker=1,
                                                       processes=True, host="127.0.0.1", dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(address))
            # unreachable, not an address Dask reads, or another service answering there: its reply read as Dask's
            # frames asked numpy for exabytes (a MemoryError traceback until s26walk)
            except (OSError, ValueError, TypeError, MemoryError, EOFError) as exc:
                why = ("the service there does not speak Dask's protocol" if isinstance(exc, (MemoryError, EOFError))
                       else f"{type(exc).__name__}: {exc}")
                raise ScenarioError("--dask", address, f"'local' or the address of a running Dask scheduler, "
                                    f"e.g. tcp://HOST:8786 ({why})") from None
        futures = client.map(fn, items, pure=False)
        done = 0
        try:
            for fut in as_completed(futures):
                result = fut.result()
                done += 1
                yield result
        # the scheduler (or the connection to it) went away mid-run, or a task killed worker after worker: Dask's
        # traceback until s28prod (a sweep point's own exception is its row and never reaches here)
        except (concurrent.futures.CancelledError, OSError, KilledWorker) as exc:
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:REASON_CHARS]
            raise ScenarioError("--dask", address, f"a Dask cluster that runs the whole job (it stopped after {done} of "
                                f"{len(items)} tasks: {why}); with --out, the rows done are kept and a re-run into it resumes") from None
