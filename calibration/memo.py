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
import sys
import types
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


def memoised(fn=None, *, copied=copy.deepcopy):
    """`fn` (a pure function of its arguments and the committed records) computed once per argument
    values inside a sharing() block; called through as before outside one. `copied` (s33pack): how a kept
    result is copied in and out, deepcopy unless the result's parts that callers may edit are known (a
    StageOps' op lists of immutable tuples: pipeline.stage_ops)."""
    if fn is None:
        return functools.partial(memoised, copied=copied)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        kept = _KEPT.kept
        if kept is None:
            return fn(*args, **kwargs)
        key = call_key(fn, args, kwargs)
        if key in kept:
            return copied(kept[key])
        result = fn(*args, **kwargs)
        kept[key] = copied(result)
        return result
    return wrapper


# ---------------------------------------------------------------------------------------------
# (s33pack) a key for work memoised across switch settings: the state of every loaded module of the twin's packages
# ---------------------------------------------------------------------------------------------

STATE_PACKAGES = ("twin.", "calibration.")
_SIMPLE = (bool, int, float, complex, str, bytes, type(None))


def module_state(packages: tuple[str, ...] = STATE_PACKAGES) -> tuple[tuple, list]:
    """(key, held): every module-level name of every loaded module of `packages` with its value as a key can hold it,
    module by module in sys.modules' sorted order: a number, text or None by value; a public upper-case name's tuple,
    frozenset, dict, list or set (a switch's or a constant table's value: ADOPT_* tuples, STAGE_KERNEL_SCALE) by its
    repr; anything else (a function, a class, an object, a private or lower-case container) by identity, the object
    added to `held` so that its id is not reused while a memo keeps the key. So a switch or constant set on a module
    (monkeypatch, a judge's `with` block), a table's item set, a function replaced or a scope's object swapped gives
    another key; a private container changed in place (a memo's own cache: _FIRST_MET_CACHE, records_io._PARSED)
    does not. A few ms over a test process's ~300 modules."""
    key, held = [], []
    for name in sorted(sys.modules):
        module = sys.modules[name]
        if module is None or not name.startswith(packages):
            continue
        items = []
        for k, v in vars(module).items():
            if k.startswith("__") or isinstance(v, types.ModuleType):
                continue
            if type(v) in _SIMPLE:
                items.append((k, v))
            elif k.isupper() and not k.startswith("_") and type(v) in (tuple, frozenset, dict, list, set):
                items.append((k, repr(v)))
            else:
                items.append((k, id(v)))
                held.append(v)
        key.append((name, tuple(items)))
    return tuple(key), held
