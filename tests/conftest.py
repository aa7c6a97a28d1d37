import os
import tempfile

import pytest

from twin.core.scenario import load_scenario

# Hypothesis keeps its example database and constants cache in ./.hypothesis/, the checkout when
# pytest runs from it: the suite writes nothing there. One folder in the temp dir instead, kept
# between runs (failing examples replay) and shared by the xdist workers (Hypothesis writes it
# atomically). Set here, before any test module is imported; a value already set wins.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "moe-twin-hypothesis"))


@pytest.fixture(scope="session")
def v3():
    """The embedded default: DeepSeek-V3 pre-training on 2,048 H800."""
    return load_scenario()
