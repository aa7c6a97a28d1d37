import os
import sys
import tempfile

import pytest

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
