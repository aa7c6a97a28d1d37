"""Starting and stopping a pytest process's fork server (tests/fork_server.py) for the campaigns' CPU
dry runs: started where the collected tests run campaigns (tests/conftest.py), named to them by
TWIN_FORK_SERVER in the environment they pass on (tests/torchrun_forked_python reads it). Standard
library only: importing this module imports no torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = Path(__file__).resolve().parent / "fork_server.py"


class ForkService:
    """One server process: its socket in a folder of its own, its stdin the pipe whose closing ends it
    (so it ends with this process however this process ends)."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="twin-fork-")   # short: a socket's path has ~100 bytes
        self.path = os.path.join(self.folder, "server.sock")
        # not waited for: a client that comes before the server listens runs the interpreter itself
        self.process = subprocess.Popen([sys.executable, str(SERVER), self.path], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=os.environ.copy())

    def wait_ready(self) -> bool:
        """Whether the server said it accepts clients (clients that come earlier run the interpreter
        themselves)."""
        return self.process.stdout.readline().strip() == b"ready"

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
