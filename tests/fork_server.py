"""A fork server for the campaigns' CPU dry runs: `python -u tests/torchrun_forked.py ARGS` and
`python tests/python_frozen.py MODULE ARGS` (what tests/torchrun_forked_python runs for
`-m torch.distributed.run` and `-m real.*`) forked from one interpreter that imported torch once.

Every such process used to import torch afresh: ~1.4 s of CPU of the ~1.6-4 s a dry-run part costs on
CI's two cores (s11srv2's shape part: 1.2 of its 1.4 s), ~150 processes a suite. This server, started
once per pytest worker (tests/fork_service.py), imports torch, and torch._inductor with dynamo (which
torch.profiler's first start imports: ~1.3 s more of CPU in every process or rank that profiles, most
benches do), freezes its heap (gc.freeze, as python_frozen.py does) and waits on a Unix socket. A
client (tests/fork_client.py, standard library only, started in place of the interpreter) sends its
argv, folder, environment, umask, niceness, CPU affinity and its stdin, stdout and stderr
(SCM_RIGHTS); the server forks a manager for it, which forks the runner:

- the runner becomes what `python [-u] SCRIPT ARGS` would be: the client's three descriptors as 0-2
  (sys.stdin/stdout/stderr made afresh on them, unbuffered where -u or PYTHONUNBUFFERED says so), its
  folder, umask, niceness, CPU affinity and environment (os.environ, so the C library's getenv sees it too), sys.argv,
  sys.path as that interpreter's ([script folder] + PYTHONPATH + the interpreter's own), signals at
  their defaults, a process group of its own; then it runs the script as __main__ (runpy.run_path) and
  ends as the interpreter does (the status of a SystemExit, or the traceback and status 1 of an
  uncaught exception; non-daemon threads joined, atexit handlers run, open files flushed) but without
  tearing the heap down (_leave);
- the manager waits for it and sends the client its wait status; a signal the client receives
  (SIGTERM from a `timeout`, SIGINT, SIGHUP, ...) it passes on to the runner's process group; if the
  client vanishes (SIGKILL) the group is killed.
The client exits with the runner's status (or by the same signal), so its caller sees what the
interpreter would have given.

A request is refused (the client then runs the interpreter itself, as before) when the client's
interpreter is not this one or when an environment variable read while an interpreter starts or torch
loads differs from the server's (IMPORT_TIME: OpenMP's thread count is read when libgomp loads, the
PYTHON* flags when the interpreter starts, TORCH*_ settings as torch's modules load): what was set up
before the fork must be what the client would have had. Preloaded modules differ from a fresh
interpreter's only in when they were imported: a runner's module that imports them finds them loaded
(real/fp8.py then registers its Function with dynamo at once, as it does where dynamo came first).
Imports torch and the standard library only.
"""

from __future__ import annotations

import atexit
import gc
import io
import json
import os
import re
import runpy
import select
import signal
import socket
import struct
import sys
import threading

SERVER_ENV = dict(os.environ)   # as the server started, before torch's modules add to it

import torch  # noqa: F401  (imported once, inherited by every runner)
import torch._inductor  # noqa: F401  (torch.profiler's first start imports it, and dynamo: ~1.3 s of CPU)
import torch.distributed  # noqa: F401  (tests/torchrun_forked.py's imports)
import torch.distributed.run  # noqa: F401
import torch.profiler  # noqa: F401

# environment variables read as an interpreter starts (PYTHONxxx: the interpreter's own, no underscore;
# a campaign's PYTHON is a command) or torch's libraries and modules load (OpenMP's, torch's, dynamo's
# and inductor's configuration): a request whose values differ from the server's is refused
# (PYTHONUNBUFFERED, PYTHONPATH and PYTHONDONTWRITEBYTECODE are applied per request; inductor reads
# TORCHINDUCTOR_CACHE_DIR each time it needs its cache, and sets it in a pytest process that compiled)
IMPORT_TIME = re.compile(r"PYTHON[A-Z0-9]+|(OMP|KMP|GOMP|MKL|OPENBLAS|LD|MALLOC|GLIBC|TORCH\w*|PYTORCH\w*)_\w*")
PER_REQUEST = {"PYTHONUNBUFFERED", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "TORCHINDUCTOR_CACHE_DIR"}
RELAYED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
HEADER = struct.Struct("!Q")   # the request's JSON length, sent with the three descriptors


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if IMPORT_TIME.fullmatch(k) and k not in PER_REQUEST}


def pythonpath_entries(env: dict[str, str]) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


LOG_PATH = os.environ.get("TWIN_FORK_SERVER_LOG", "")
STDIO_ENCODING = sys.stdout.encoding if sys.stdout else "utf-8"   # PYTHONIOENCODING or the locale's, as for a client
# the interpreter's own sys.path (standard library, site-packages, .pth additions): sys.path less the
# script's folder and the server's PYTHONPATH entries
BASE_PATH = [p for p in sys.path[1:] if p not in set(pythonpath_entries(SERVER_ENV))]
gc.freeze()


def refusal(request: dict) -> str:
    """Why this server cannot stand in for the request's interpreter ('' where it can)."""
    if os.path.realpath(request["python"]) != os.path.realpath(sys.executable):
        return f"interpreter {request['python']} is not {sys.executable}"
    want, have = import_time_env(request["env"]), import_time_env(SERVER_ENV)
    differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    return f"environment differs: {', '.join(differ)}" if differ else ""


def _std_streams(unbuffered: bool, open_fds: list[int]) -> None:
    """sys.stdin/stdout/stderr made afresh on descriptors 0-2, as an interpreter starting makes them
    (None for a descriptor that is closed)."""
    encoding = STDIO_ENCODING
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if fd not in open_fds:
            setattr(sys, name, None)
            setattr(sys, f"__{name}__", None)
            continue
        raw = io.FileIO(fd, "w", closefd=False)
        buffered = raw if unbuffered else io.BufferedWriter(raw)
        stream = io.TextIOWrapper(buffered, encoding=encoding, errors="backslashreplace" if fd == 2 else "strict",
                                  line_buffering=fd == 2 or raw.isatty(), write_through=unbuffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    stdin = None
    if 0 in open_fds:
        stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=encoding)
    sys.stdin = sys.__stdin__ = stdin


def _become_runner(request: dict, fds: list[int], keep_closed: list[socket.socket]) -> None:
    """In the runner: become `python [-u] SCRIPT ARGS`, run it and end (never returns)."""
    os.setpgid(0, 0)
    for s in keep_closed:
        s.close()
    for target in (0, 1, 2):   # the client's descriptors as they were: open on its files, or closed
        if target in request["fds"]:
            fd = fds[request["fds"].index(target)]
            os.dup2(fd, target)
            os.close(fd)
        else:
            os.close(target)
    for signum in RELAYED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # Python's own, as at start-up
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    if request["nice"] > os.nice(0):   # a caller's `nice` (a runner can only be made nicer)
        os.nice(request["nice"] - os.nice(0))
    try:
        os.sched_setaffinity(0, request["cpus"])   # a caller's `taskset`
    except OSError:   # a CPU this process may not use (another cpuset): the server's set, as before
        pass
    os.environ.clear()
    os.environ.update(request["env"])   # without what the preloads set (TORCHINDUCTOR_CACHE_DIR: set again when used)
    script, args = request["script"], request["args"]
    _std_streams(request["unbuffered"] or bool(request["env"].get("PYTHONUNBUFFERED")), request["fds"])
    sys.path[:] = [os.path.dirname(os.path.abspath(script)), *pythonpath_entries(request["env"]), *BASE_PATH]
    sys.argv = [script, *args]
    sys.dont_write_bytecode = bool(request["env"].get("PYTHONDONTWRITEBYTECODE"))
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:   # as the interpreter ends on one: killed by SIGINT
        sys.excepthook(*sys.exc_info())
        code = -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())   # the traceback the interpreter prints
        code = 1
    _leave(code)


def _exit_code(exc: SystemExit) -> int:
    """The status the interpreter gives a SystemExit (a message is printed, status 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _leave(code: int) -> None:
    """End the runner as the interpreter ends, less its heap's teardown (~0.35 s of CPU a process with
    torch and inductor loaded, nothing a caller sees): wait for the threads that are not daemons, run the
    atexit handlers, flush every file still open for writing (teardown would close them: a row written
    to a file the module never closed reaches the disk either way) and the standard streams, then
    os._exit with the status. (tests/torchrun_forked.py's ranks end the same way, less the flush.)"""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for obj in gc.get_objects():
        if issubclass(type(obj), io.IOBase):   # type(), not isinstance: a dead weakref.proxy raises on __class__
            try:
                if not obj.closed and obj.writable():
                    obj.flush()
            except Exception:   # as teardown's closing does, an error of one file is ignored (and the rest flushed)
                pass
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("the client closed the connection")
        data += chunk
    return data


def _relay(conn: socket.socket, pgid: int, done: threading.Event) -> None:
    """The client's signals to the runner's process group; the group killed if the client vanishes."""
    pending = b""
    while True:
        chunk = conn.recv(64)
        if not chunk:
            if not done.is_set():
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                os.killpg(pgid, int(line))
            except ProcessLookupError:
                pass


def _manage(conn: socket.socket, listener: socket.socket) -> None:
    """In the manager (a fork of the server, one per client): read the request, fork the runner,
    relay signals, send the runner's wait status."""
    listener.close()
    try:
        msg, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
        request = json.loads(_read_exactly(conn, HEADER.unpack(msg)[0]))
    except (EOFError, OSError, ValueError, struct.error):   # the client ended before its request was in
        os._exit(1)
    if len(fds) != len(request["fds"]):
        os._exit(1)
    reason = refusal(request)
    if reason:
        _log(f"refused {reason}: {request['script']} {' '.join(request['args'])[:200]}")
        conn.sendall(f"refused {reason}\n".encode())
        os._exit(0)
    pid = os.fork()
    if pid == 0:
        _become_runner(request, fds, [conn])
    for fd in fds:
        os.close(fd)
    try:
        os.setpgid(pid, pid)
    except (PermissionError, ProcessLookupError):   # the runner made its group itself (or already ended)
        pass
    conn.sendall(b"started\n")
    done = threading.Event()
    threading.Thread(target=_relay, args=(conn, pid, done), daemon=True).start()
    _, status, usage = os.wait4(pid, 0)
    done.set()
    _log(f"ran {usage.ru_utime + usage.ru_stime:.2f} s CPU status {status}: {request['script']} "
         f"{' '.join(request['args'])[:200]}")
    conn.sendall(f"status {status}\n".encode())
    os._exit(0)


def _log(line: str) -> None:
    """A line of TWIN_FORK_SERVER_LOG (a file the server was started with; none: nothing kept), e.g.
    to count the requests served and refused."""
    if LOG_PATH:
        with open(LOG_PATH, "a") as f:
            f.write(line + "\n")


def _reap() -> None:
    """Collect the managers that ended (their CPU, and their runners', counts as this process's
    children's, so the pytest process that started the server accounts for it)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(path: str, parent_fd: int) -> None:
    """Accept clients on the Unix socket at `path` until `parent_fd` (the starter's pipe) closes."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([listener, parent_fd], [], [], 1.0)
        _reap()
        if parent_fd in readable and not os.read(parent_fd, 1):
            break
        if listener in readable:
            conn, _ = listener.accept()
            if os.fork() == 0:
                _manage(conn, listener)   # never returns, in the manager or in its runner
            conn.close()
    listener.close()
    os.unlink(path)


if __name__ == "__main__":
    serve(sys.argv[1], sys.stdin.fileno())
