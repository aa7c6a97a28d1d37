"""`python -m torch.distributed.run` for the campaigns' CPU dry runs, its ranks forked from one process.

torchrun starts an agent (an interpreter that imports torch) and a fresh interpreter per rank that
imports torch again and, at its end, finalises a torch-sized heap: about 2.5 s of CPU a rank and 2 s
an agent before any rank does its work, most of a dry run's cost on CI's two cores (s13pp's three
four-rank parts: 63 s of CPU under torchrun, 25 s forked). Here one interpreter imports torch,
forks the ranks, and each runs the same module (or script) with the same arguments and the
environment torchrun gives a rank (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT, the TORCHELASTIC_* and ROLE_/GROUP_ variables; tests/real/test_torchrun_forked.py
compares it with torchrun's), in the folder it was started in, with that folder first on sys.path
as `python -m` puts it. As torchrun's agent does, this process hosts the ranks' TCPStore (the
ranks connect to it as clients: TORCHELASTIC_USE_AGENT_STORE), on a port it holds from before the
fork, so no other process can take the port in between, on the address MASTER_ADDR names first.
A SIGTERM, SIGINT or SIGHUP to it is passed on to the ranks, as torchrun's agent ends its workers.
The command line is read by torchrun's own parser: an option it does not know fails as it would
under torchrun, and one this stand-in does not implement (several nodes, restarts, redirects) is
refused with exit 2, never ignored.

A rank ends as torchrun's does on the outside (its exit status; the run's status is 1 if any rank
failed, whose siblings are then terminated) but inside it runs its atexit handlers, collects its
garbage and leaves by os._exit, as tests/real/conftest.py's forked mp.spawn ranks do: rows a
campaign writes must be flushed as they go (the campaign brief asks it), not left to interpreter
finalisation. Run by tests/torchrun_forked_python, the interpreter the dry-run tests hand a campaign
as PY/PYTHON; it imports torch and the standard library only.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import os
import runpy
import signal
import socket
import sys
import traceback
import uuid

import torch.distributed   # torch imported once here, inherited by every forked rank
from torch.distributed.run import get_args_parser

# options of torchrun this stand-in implements; every other one must keep its default
IMPLEMENTED = {"nproc_per_node", "standalone", "module", "training_script", "training_script_args"}


def unsupported(args) -> list[str]:
    """The options given that differ from torchrun's defaults and are not IMPLEMENTED."""
    defaults = vars(get_args_parser().parse_args(["x"]))
    return sorted(k for k, v in vars(args).items() if k not in IMPLEMENTED and v != defaults.get(k))


def rank_env(local_rank: int, world: int, port: int, run_id: str, signals: str) -> dict[str, str]:
    """What torchrun puts in a rank's environment on one node (torch 2.13: launcher/api.py and
    elastic/agent/server/local_elastic_agent.py's _start_workers), except TORCHELASTIC_ERROR_FILE
    (for @record, which real/ does not use)."""
    return {
        "RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "GROUP_RANK": "0",
        "ROLE_RANK": str(local_rank), "ROLE_NAME": "default", "LOCAL_WORLD_SIZE": str(world),
        "WORLD_SIZE": str(world), "GROUP_WORLD_SIZE": "1", "ROLE_WORLD_SIZE": str(world),
        "MASTER_ADDR": "localhost", "MASTER_PORT": str(port), "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0", "TORCHELASTIC_RUN_ID": run_id,
        "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_SIGNALS_TO_HANDLE": signals,
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
    }


def _store_socket() -> socket.socket:
    """A listening socket for the ranks' store on a port the OS picks (held, never closed and reopened),
    on the first address MASTER_ADDR ("localhost", as torchrun names it) resolves to that can be bound:
    the one a rank's TCPStore client tries first (::1 before 127.0.0.1 on hosts that list both)."""
    error = OSError("localhost resolves to no address")
    for family, kind, proto, _, address in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM):
        s = socket.socket(family, kind, proto)
        try:
            s.bind(address[:2])
        except OSError as exc:   # e.g. ::1 listed where IPv6 is off
            s.close()
            error = exc
            continue
        s.listen(128)
        return s
    raise error


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)   # sys.exit("message"), as the interpreter reports it
    return 1


def _run_rank(args, env: dict[str, str], store_socket: socket.socket) -> None:
    """In the forked child: run the module or script as __main__, then leave with its status."""
    store_socket.close()   # the parent's; the rank connects to the store as a client
    os.environ.update(env)
    sys.argv = [args.training_script, *args.training_script_args]
    code = 0
    try:
        if args.module:
            runpy.run_module(args.training_script, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(args.training_script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        gc.collect()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _forward_to(pids: list[int]):
    """A handler for the signals that end this process: it ends the ranks too, as torchrun's agent does
    (a `timeout` signals the whole process group, but a signal sent to this process alone would
    otherwise leave the ranks running, holding the caller's pipes open)."""
    def forward(signum, frame):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)   # this process ends as the signal would have ended it
    return forward


def _wait(pids: list[int]) -> int:
    """Each rank's end; the first failure terminates the ranks still running. The run's status."""
    status, running = 0, set(pids)
    while running:
        pid, wait_status = os.wait()
        running.discard(pid)
        if os.waitstatus_to_exitcode(wait_status) != 0 and status == 0:
            status = 1
            for other in running:
                try:
                    os.kill(other, signal.SIGTERM)
                except ProcessLookupError:
                    pass
    return status


def main(argv: list[str]) -> int:
    args = get_args_parser().parse_args(argv)
    refused = unsupported(args)
    if refused:
        print(f"torchrun_forked: {', '.join(refused)} not implemented (run the real torchrun)", file=sys.stderr)
        return 2
    world = int(args.nproc_per_node)
    if "OMP_NUM_THREADS" not in os.environ and world > 1:
        os.environ["OMP_NUM_THREADS"] = "1"   # torchrun's default for several ranks
    # a rank's sys.path[0] as `python -m module` (the folder it starts in) or `python script` sets it
    sys.path[0] = os.getcwd() if args.module else os.path.dirname(os.path.abspath(args.training_script))
    sock, run_id = _store_socket(), str(uuid.uuid4())
    host, port = sock.getsockname()[:2]
    gc.freeze()   # the inherited heap stays out of the ranks' collections (no copy-on-write of it)
    pids = []
    for local_rank in range(world):
        pid = os.fork()
        if pid == 0:
            _run_rank(args, rank_env(local_rank, world, port, run_id, args.signals_to_handle), sock)
        pids.append(pid)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):   # after the forks: the ranks keep the defaults
        signal.signal(signum, _forward_to(pids))
    # the store's server thread starts after the forks (a fork copies no thread); ranks retry until it is up
    store = torch.distributed.TCPStore(host, port, world_size=world, is_master=True,
                                       master_listen_fd=sock.detach(), wait_for_workers=False,
                                       timeout=datetime.timedelta(seconds=900))
    status = _wait(pids)
    del store
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
