import functools
import gc
import os
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fork_service import ForkService
from twin.core.scenario import load_scenario

# Hypothesis keeps its example database and constants cache in ./.hypothesis/, the checkout when
# pytest runs from it: the suite writes nothing there. One folder in the temp dir instead, kept
# between runs (failing examples replay) and shared by the xdist workers (Hypothesis writes it
# atomically). Set here, before any test module is imported; a value already set wins.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "moe-twin-hypothesis"))

# One OpenMP/BLAS thread per test process (and the subprocesses, gloo ranks and campaign dry runs it
# starts): `make test` runs two xdist workers on two cores, and torch's default of a thread per core
# in each worker put four spinning threads on two cores; the tiny tensors of the tests gain nothing
# from a second thread (tests/real/test_model.py ran twice as fast on one, alone on the machine).
# Set before any test module imports torch or numpy; a value already set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The interpreter tests/torchrun_forked_python runs (the PY/PYTHON of the campaigns' CPU dry runs,
# tests/campaigns.py): this one, with torch and the project installed.
os.environ["TWIN_TESTS_PYTHON"] = sys.executable


def pytest_collection_finish(session):
    """Everything alive once the tests are collected (the imported modules: torch, pandas, the
    project; the collected items) moves to the collector's permanent generation (gc.freeze), so a
    collection walks only what the tests create after it. real/bench/device.py's free_memory collects
    garbage between a bench's cases: in a test process holding ~10^6 imported objects each call cost
    ~0.25 s (tests/real/test_host_bound.py: 5 of its 11 s); the collector's own full collections
    during in-process simulations walk the same heap. Nothing is lost that the tests could see:
    frozen objects are still freed by reference counting, only cycles among objects alive at this
    point stay (module-level state, which lives to the end anyway), and a worker's forked ranks
    inherit the frozen heap as the forked torchrun stand-in's do (tests/torchrun_forked.py)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _one_computation_per_run(tmp_path_factory):
    """Under pytest-xdist, tests/once.py keeps its shared values in the run's temp folder (each
    worker's basetemp is a folder of it), so each is computed by one worker, not by both."""
    from tests import once
    if os.environ.get("PYTEST_XDIST_WORKER"):
        once.RUN_DIR = tmp_path_factory.getbasetemp().parent


@pytest.fixture(scope="session")
def v3():
    """The embedded default: DeepSeek-V3 pre-training on 2,048 H800."""
    return load_scenario()


# Tests that start processes which meet over TCP (gloo ranks, torchrun, a campaign's dry run) are run
# a second time when they fail, and the rerun is reported ("1 rerun" in the summary, R in the
# progress line). CI's stop 32 failed on one such test, s8cp's dry run, whose torchrun part wrote
# nothing, with no log kept; 10 stress runs of it beside two busy processes all passed. A regression
# fails both runs; a process start lost to the machine's load or its sockets does not fail the suite.
# The modules are recognised by what they call (below), so a new rank test is covered without a mark.
STARTS_RANKS = ("FORKED_PY", "torch.distributed.run", "mp.spawn", "real/campaigns/", "dry_run(")


@functools.lru_cache(maxsize=None)
def starts_ranks(module_path: str) -> bool:
    """Whether the test module at `module_path` starts processes that rendezvous (STARTS_RANKS)."""
    text = Path(module_path).read_text()
    return any(pattern in text for pattern in STARTS_RANKS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = getattr(item, "path", None)
        if path is not None and path.suffix == ".py" and starts_ranks(str(path)):
            item.add_marker(pytest.mark.flaky(reruns=1))
    _start_fork_service(items)


# The campaigns' CPU dry runs (tests/campaigns.py FORKED_PY) fork their torch-importing processes from
# one server per pytest process (tests/fork_server.py: ~1.4 s of CPU less a process, ~150 a suite),
# started where the collected tests run campaigns and named to them by TWIN_FORK_SERVER. A value
# already set wins (TWIN_FORK_SERVER= turns it off: every process starts its own interpreter).
RUNS_CAMPAIGNS = ("FORKED_PY", "dry_run(")
_fork_service = None


def _start_fork_service(items) -> None:
    global _fork_service
    if "TWIN_FORK_SERVER" in os.environ:
        return
    paths = {str(item.path) for item in items if getattr(item, "path", None) is not None and item.path.suffix == ".py"}
    if any(pattern in Path(p).read_text() for p in paths for pattern in RUNS_CAMPAIGNS):
        _fork_service = ForkService()
        os.environ["TWIN_FORK_SERVER"] = _fork_service.path


def pytest_unconfigure(config):
    if _fork_service is not None:
        os.environ.pop("TWIN_FORK_SERVER", None)
        _fork_service.stop()
