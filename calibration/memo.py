"""Work shared within one validation: a result computed once and served again to the next caller
that asks for it with the same arguments, only while a `sharing()` block is open.

calibration.validate opens one around the whole of validate(): several judgements predict the same
folder (the ranking and the idle judgements both predict s15rank's rounds) and every 4-GPU folder
carries the EP host terms of the 2-GPU folder beside it (calibration.pipeline.carried_ep_terms: its
host rates solved again for each). Nothing changes the records, the profiles or a module's switches
while one validation runs, so a result is a function of its arguments there; outside a block (a test
that flips an ADOPT_ switch between two calls) nothing is kept. A kept result is handed out as a deep
copy: a caller that edits what it got cannot change what the next one gets. (s23ci) The serving host-speed
references' inputs (serve_engine_fit.all_scales, ep_levels) are memoised too: a caller comparing the
references' variants opens a block where none of the switches they read changes.
"""

from __future__ import annotations

import copy
import functools
import inspect
import pickle
from pathlib import Path

from twin.core.scoped import BlockStore

_KEPT = BlockStore()     # the open block's results


def sharing():
    """Results of `memoised` functions are kept until the outermost block ends (nested blocks share it)."""
    return _KEPT.block()


def _canonical(value):
    """A path as its resolved text (one folder reached two ways is one key); anything else as given."""
    return str(Path(value).resolve()) if isinstance(value, Path) else value


def call_key(fn, args: tuple, kwargs: dict) -> bytes:
    """The call's arguments, defaults filled in, as bytes: pickle writes what the value holds (a
    profile's every field, a dict's items in order), so two calls share a key only where their
    arguments hold the same values. Two equal values written differently (a dict's items in another
    order) only miss the kept result."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return pickle.dumps((fn.__module__, fn.__qualname__, [(k, _canonical(v)) for k, v in bound.arguments.items()]),
                        protocol=pickle.HIGHEST_PROTOCOL)


def memoised(fn):
    """`fn` (a pure function of its arguments and the committed records) computed once per argument
    values inside a sharing() block; called through as before outside one."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        kept = _KEPT.kept
        if kept is None:
            return fn(*args, **kwargs)
        key = call_key(fn, args, kwargs)
        if key in kept:
            return copy.deepcopy(kept[key])
        result = fn(*args, **kwargs)
        kept[key] = copy.deepcopy(result)
        return result
    return wrapper
