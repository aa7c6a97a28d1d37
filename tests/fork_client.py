"""`python [-u] SCRIPT ARGS` through the fork server of tests/fork_server.py (whose docstring says why):
run by tests/torchrun_forked_python in place of the interpreter for its two torch-importing forms,
with argv `PYTHON UNBUFFERED SCRIPT ARGS...` (UNBUFFERED "1" for -u, else "0").

It connects to the server at $TWIN_FORK_SERVER, sends the request and its stdin, stdout and stderr,
passes on the signals it receives (RELAYED) while the runner runs, and ends as the runner ended: its
exit status, or killed by the signal that killed it. Where there is no server, it cannot be reached or
it refuses the request, it runs the interpreter itself (os.execv), as tests/torchrun_forked_python did
before. Standard library only (it starts in ~20 ms).
"""

import json
import os
import signal
import socket
import struct
import sys

RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
HEADER = struct.Struct("!Q")


def _plain(python: str, unbuffered: bool, script: str, args: list[str]):
    os.execv(python, [python, *(["-u"] if unbuffered else []), script, *args])


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _lines(conn: socket.socket):
    pending = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line.decode() for line in lines)


def main(argv: list[str]) -> int:
    python, unbuffered, script, args = argv[0], argv[1] == "1", argv[2], argv[3:]
    path = os.environ.get("TWIN_FORK_SERVER", "")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        _plain(python, unbuffered, script, args)
    umask = os.umask(0)
    os.umask(umask)
    sent = [fd for fd in (0, 1, 2) if _is_open(fd)]   # a caller may start it with one closed
    request = json.dumps({"python": python, "fds": sent, "unbuffered": unbuffered, "script": os.path.abspath(script),
                          "args": args, "cwd": os.getcwd(), "umask": umask, "env": dict(os.environ),
                          "nice": os.nice(0), "cpus": sorted(os.sched_getaffinity(0))}).encode()
    try:
        socket.send_fds(conn, [HEADER.pack(len(request))], sent)
        conn.sendall(request)
    except OSError:   # the server ended meanwhile
        _plain(python, unbuffered, script, args)
    # from here on a signal is passed on (one that comes before the runner exists, once it does: the
    # manager reads it then); before, it ends this process as usual and the manager stops reading
    for signum in RELAYED:
        signal.signal(signum, lambda s, frame: conn.sendall(f"{s}\n".encode()))
    for line in _lines(conn):
        word, _, rest = line.partition(" ")
        if word == "refused":
            conn.close()
            _plain(python, unbuffered, script, args)
        if word == "status":
            status = int(rest)
            if os.WIFSIGNALED(status):
                signum = os.WTERMSIG(status)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return os.waitstatus_to_exitcode(status)
    print("fork_client: the fork server ended before the run did", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
