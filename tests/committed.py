"""`twin validate` on the committed records (calibration/measurements/), computed once per test
process and shared by the tests that judge its figures (test_validate, test_whole_runs,
test_serve_load_targets, test_golden).

One validate() predicts every committed record, pipeline and serving load run: minutes on CI's two
cores, and it is deterministic, so each test judging its own copy only repeated it (and under
pytest-xdist one worker computes it for both: tests/once.py). Import this
module as `tests.committed` everywhere (one module, one cache). `twin validate` itself still runs
end to end in tests/test_readme.py (in process, this validate() shared); tests/test_wheel.py runs sections of it
with the installed wheel. The command's judged sections that a test module also judges (SHARED_JUDGED) are
shared the same way (judged()).
"""

from __future__ import annotations

import copy
import functools

from calibration import records as rec
from calibration.validate import validate
from calibration.validate_sections import JUDGED
from tests import once


@functools.cache
def _validation() -> dict:
    return once.computed("committed_validation", validate)   # one worker of an xdist run computes it


def validation() -> dict:
    """validate()'s result on the committed records, a fresh copy for each caller (a test that
    edits it cannot change what the next one judges)."""
    return copy.deepcopy(_validation())


# `twin validate`'s judged sections (calibration.validate_sections.JUDGED) that a test module judges as well as
# tests/test_readme.py's run of the command: prereg_s21host2 (tests/calibration/test_step_host.py, ~5 s of CPU)
# and prereg_s22host (tests/calibration/test_synced_steps.py, ~2 s), each computed twice a run before s26fitvec;
# prereg_s28pp4 (tests/calibration/test_s28pp4_judgement.py, ~0.5 s; s28pp4r3)
SHARED_JUDGED = ("prereg_s21host2", "prereg_s22host", "prereg_s28pp4")


@functools.cache
def _judged(key: str) -> dict:
    (judged_,) = [j for j in JUDGED if j.key == key]   # as imported here: tests/test_readme.py patches the module's
    return once.computed(f"judged_{key}", lambda: judged_.compute(rec.MEASUREMENTS_DIR))


def judged(key: str) -> dict:
    """The judged section `key` of SHARED_JUDGED on the committed records as `twin validate` computes it, once a
    test run (tests/once.py), a fresh copy for each caller."""
    if key not in SHARED_JUDGED:
        raise KeyError(f"{key}: not one of SHARED_JUDGED {SHARED_JUDGED}")
    return copy.deepcopy(_judged(key))
