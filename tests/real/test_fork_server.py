"""tests/fork_server.py with tests/fork_client.py, what the campaigns' dry runs start their torch processes
through: the runner sees what `python [-u] SCRIPT ARGS` would (argv, sys.path[0], __name__, folder,
environment, umask, niceness, CPU affinity, stdin, stdout, stderr, buffering) and its caller gets that
interpreter's exit status or traceback; it was forked from the server (its parent is not the caller); a
signal to the client reaches the runner and the client ends by it; a client killed outright takes its
runner along; a request whose start-up environment differs runs the interpreter itself; the runner ends
as the interpreter does (open files flushed, atexit handlers, threads joined)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fork_service import ForkService

CLIENT = str(Path(__file__).resolve().parents[1] / "fork_client.py")

PROBE = """
import json, os, sys, time
umask = os.umask(0)
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "cwd": os.getcwd(), "umask": umask,
                  "probe": os.environ.get("PROBE"), "stdin": sys.stdin.read(), "parent": os.getppid(),
                  "write_through": sys.stdout.write_through, "path": [p for p in sys.path if "extra" in p],
                  "nice": os.nice(0), "cpus": sorted(os.sched_getaffinity(0)),
                  "inductor_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise ValueError("probe")
if sys.argv[1] == "sleep":
    sys.stdout.flush()
    open("runner.pid", "w").write(str(os.getpid()))
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def server():
    service = ForkService()
    assert service.wait_ready()
    yield service
    service.stop()


def _env(server, folder, **extra):
    pythonpath = [str(folder / "extra"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # -u alone says it here
    return {**env, "TWIN_FORK_SERVER": server.path, "PROBE": "p1", "PYTHONPATH": os.pathsep.join(pythonpath),
            "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"), **extra}   # set in a pytest process that compiled


def _client(folder, unbuffered, *args):
    return [sys.executable, "-S", CLIENT, sys.executable, "1" if unbuffered else "0", str(folder / "probe.py"), *args]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_the_runner_is_what_the_interpreter_would_be(server, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    for unbuffered in (False, True):
        for arg, status in (("3", 3), ("raise", 1)):
            env = _env(server, tmp_path)
            cpu = min(os.sched_getaffinity(0))
            nice = ["nice", "-n", "3", "taskset", "-c", str(cpu)]   # as a caller may start it
            plain = subprocess.run([*nice, sys.executable, *(["-u"] if unbuffered else []), str(tmp_path / "probe.py"),
                                    arg], cwd=tmp_path, env=env, input="in", capture_output=True, text=True, timeout=60)
            forked = subprocess.run([*nice, *_client(tmp_path, unbuffered, arg)], cwd=tmp_path, env=env, input="in",
                                    capture_output=True, text=True, timeout=60)
            assert plain.returncode == forked.returncode == status, forked.stderr[-2000:]
            want, got = json.loads(plain.stdout), json.loads(forked.stdout)
            assert want["parent"] == os.getpid() != got["parent"]   # forked from the server, not started here
            assert {**got, "parent": None} == {**want, "parent": None}
            assert want["argv"] == [str(tmp_path / "probe.py"), arg] and want["stdin"] == "in"
            assert want["write_through"] is unbuffered and want["path"] == [str(tmp_path / "extra")]
            assert want["nice"] == os.nice(0) + 3 and want["cpus"] == [cpu]
            assert "to stderr" in forked.stderr
            if arg == "raise":
                assert "ValueError: probe" in plain.stderr and "ValueError: probe" in forked.stderr


def test_a_request_whose_start_up_environment_differs_runs_the_interpreter_itself(server, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    env = _env(server, tmp_path, PYTHONHASHSEED="12345")   # read as an interpreter starts: the server's cannot serve
    done = subprocess.run(_client(tmp_path, False, "0"), cwd=tmp_path, env=env, input="",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout)["parent"] == os.getpid()


@pytest.mark.parametrize("end", ["terminate", "kill"])
def test_a_signal_to_the_client_ends_the_runner(server, tmp_path, end):
    """A `timeout` signals the client (SIGTERM, then SIGKILL): the runner must end either way."""
    (tmp_path / "probe.py").write_text(PROBE)
    client = subprocess.Popen(_client(tmp_path, False, "sleep"), cwd=tmp_path, env=_env(server, tmp_path),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "runner.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)   # the pid written in full
        runner = int((tmp_path / "runner.pid").read_text())
        getattr(client, end)()
        want = -signal.SIGTERM if end == "terminate" else -signal.SIGKILL
        assert client.wait(timeout=30) == want
        deadline = time.monotonic() + 20
        while _running(runner) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(runner)
    finally:
        client.kill()


ENDING = """
import atexit, os, sys, threading, time, weakref
open("parent.txt", "w").write(str(os.getppid()))
class Gone: pass
gone = Gone()
sys.proxies = [weakref.proxy(gone)]   # dead below, alive to the end: the end's walk of the heap meets it
del gone
kept = open("unclosed.txt", "w")   # never closed: teardown would flush it
kept.write("row\\n")
atexit.register(lambda: open("atexit.txt", "w").write("ran"))
threading.Thread(target=lambda: (time.sleep(0.3), open("thread.txt", "w").write("done"))).start()
sys.exit(sys.argv[1])
"""


def test_the_runner_ends_as_the_interpreter_ends(server, tmp_path):
    """Without its heap's teardown, still: a file left open is flushed, atexit handlers run, a thread that
    is not a daemon is waited for, and sys.exit("message") prints the message and gives status 1."""
    (tmp_path / "probe.py").write_text(ENDING)
    done = subprocess.run(_client(tmp_path, False, "stopped"), cwd=tmp_path, env=_env(server, tmp_path),
                          input="", capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == "stopped"
    assert int((tmp_path / "parent.txt").read_text()) != os.getpid()   # forked from the server
    written = [(tmp_path / f).read_text() for f in ("unclosed.txt", "atexit.txt", "thread.txt")]
    assert written == ["row\n", "ran", "done"]
