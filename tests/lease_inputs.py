"""The committed lease folders' pricing inputs (prereg.two_gpu_inputs: the fitted profile, the folder's solved host
rates, its EP terms) that s28pp4's and s28pp42's test modules price with, computed once per test run and handed to
each module as a fresh copy of the `cache` dict calibration.lease_probe / lease_probe2.inputs_of fill.

Four modules priced them, each afresh (tests/calibration/test_lease_probe.py, test_lease_probe2.py with its item-1
row on `h200x4`, test_s28pp4_judgement.py, test_s28pp42_judgement.py): `h200x4`'s base ~1.7 s of CPU, its F4 setting
~1.5 s more, `h200x2`'s ~0.8 s (s28pp4r3). They are functions of the committed records and the switches as committed, as
a module-scoped fixture's were; under pytest-xdist one worker computes them for both (tests/once.py). Import this
module as `tests.lease_inputs` everywhere (one module, one cache).
"""

from __future__ import annotations

import copy
import functools

from calibration import lease_probe as lp
from calibration import lease_probe2 as l2
from calibration import memo
from tests import once


def _x4() -> dict:
    c: dict = {}
    # F4's inputs are base's with the pooled key added (prereg.two_gpu_inputs): inside one sharing() block the
    # folder's host rates (pipeline.measured_host_s, which reads neither s28pp4 switch) are solved once for both
    with memo.sharing():
        lp.inputs_of("base", cache=c)
        lp.inputs_of("F4", cache=c)
    return c


def _x2() -> dict:
    c: dict = {}
    l2.inputs_of("P", 30e-6, cache=c)   # the folder's inputs ("h200") and its own EP forward rate ("h200:ref")
    return c


@functools.cache
def _computed(name: str) -> dict:
    return once.computed(f"lease_inputs_{name}", {"x4": _x4, "x2": _x2}[name])


def x4_cache() -> dict:
    """lease_probe.inputs_of's cache, filled for `h200x4` under base and F4: a fresh copy for each caller."""
    return copy.deepcopy(_computed("x4"))


def x2_cache() -> dict:
    """lease_probe2.inputs_of's cache, filled for `h200x2` (its inputs and reference rate): a fresh copy."""
    return copy.deepcopy(_computed("x2"))
