"""TCP ports for the gloo rendezvous of the multi-process tests, safe under pytest-xdist.

Asking the OS for port 0 and closing the socket leaves a window in which another process can take
that port: a second xdist worker asking the OS the same way, or the ephemeral ports gloo's own
connections bind. Here each xdist worker draws from its own block of ports below the OS's
ephemeral range, so neither can hand out the same port, and a counter keeps two calls in one test
(a store and a second store) apart. Ports a process outside the suite holds are skipped (bind
check). torchrun runs (`--standalone`) need none of this: their agent binds port 0 and keeps it.
"""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

BLOCK_PORTS = 400          # ports per xdist worker; a whole run uses a few dozen
FIRST_PORT = 20_000        # below Linux's default ephemeral range (32768-60999)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _worker_index() -> int:
    """0 for a plain run, N for xdist worker gwN."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


_drawn = itertools.count()


def free_port() -> int:
    """A port on 127.0.0.1 free now, from this worker's block, not handed out before in this process."""
    first = FIRST_PORT + _worker_index() * BLOCK_PORTS
    if first + BLOCK_PORTS > _ephemeral_low():
        raise RuntimeError(f"xdist worker block {first}-{first + BLOCK_PORTS} reaches the ephemeral "
                           f"range (starts at {_ephemeral_low()}): run fewer workers")
    # start where the process id points, so two plain (non-xdist) runs side by side rarely meet
    start = os.getpid() % BLOCK_PORTS
    for _ in range(BLOCK_PORTS):
        port = first + (start + next(_drawn)) % BLOCK_PORTS
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + BLOCK_PORTS}")
