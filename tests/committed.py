"""`twin validate` on the committed records (calibration/measurements/), computed once per test
process and shared by the tests that judge its figures (test_validate, test_whole_runs,
test_serve_load_targets, test_golden).

One validate() predicts every committed record, pipeline and serving load run: minutes on CI's two
cores, and it is deterministic, so each test judging its own copy only repeated it (and under
pytest-xdist one worker computes it for both: tests/once.py). Import this
module as `tests.committed` everywhere (one module, one cache). `twin validate` itself still runs
end to end in tests/test_readme.py (in process, this validate() shared); tests/test_wheel.py runs sections of it
with the installed wheel.
"""

from __future__ import annotations

import copy
import functools

from calibration.validate import validate
from tests import once


@functools.cache
def _validation() -> dict:
    return once.computed("committed_validation", validate)   # one worker of an xdist run computes it


def validation() -> dict:
    """validate()'s result on the committed records, a fresh copy for each caller (a test that
    edits it cannot change what the next one judges)."""
    return copy.deepcopy(_validation())
