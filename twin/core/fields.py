"""Declarative spec fields: one place holds each field's unit, default, allowed range and meaning.

Every scenario section is a frozen dataclass whose fields are declared with `spec_field`. The
strict loader (twin.core.scenario) checks types and ranges from this metadata, and docs/scenario.md is
generated from it, so the documentation cannot drift from the code.

Numbers are finite: NaN and infinity are refused in every field (none gives them a meaning). Every
count and size has an upper bound (`le`) and every list a length limit (`max_items`), generous for
real clusters but small enough that a typo cannot start hours of simulation or a huge allocation.
`check_value` applies the same rules to a command-line option.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from twin.core.errors import ScenarioError

_MISSING = dataclasses.MISSING


def spec_field(
    default: Any = _MISSING,
    *,
    unit: str = "",
    doc: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple | None = None,
    max_items: int | None = None,
    default_factory: Any = _MISSING,
) -> Any:
    """A dataclass field with the metadata the loader and the docs need. For a list field, `ge`,
    `gt`, `le` and `choices` apply to each item and `max_items` bounds its length."""
    meta = {"unit": unit, "doc": doc, "ge": ge, "gt": gt, "le": le, "choices": choices, "max_items": max_items}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def number_text(x: float) -> str:
    """A bound as text: whole numbers with thousands separators (1,000,000), others as %g."""
    if float(x).is_integer() and abs(x) < 1e16:
        return f"{int(x):,}"
    return f"{x:g}"


def _bounds_text(m: dict, type_name: str) -> str:
    if m.get("choices"):
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    parts = []
    if m.get("ge") is not None:
        parts.append(f">= {number_text(m['ge'])}")
    if m.get("gt") is not None:
        parts.append(f"> {number_text(m['gt'])}")
    if m.get("le") is not None:
        parts.append(f"<= {number_text(m['le'])}")
    return type_name + (" " + " and ".join(parts) if parts else "")


def allowed_text(f: dataclasses.Field, type_name: str) -> str:
    """Human-readable description of what a field accepts, e.g. 'integer >= 1 and <= 1,000'; a
    list field adds its length limit."""
    text = _bounds_text(f.metadata, type_name)
    if f.metadata.get("max_items") is not None:
        text += f"; at most {f.metadata['max_items']:,} entries"
    return text


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:   # a list field's items
        return _type_name(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _type_name(next(a for a in typing.get_args(tp) if a is not type(None)))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, path: str, f: dataclasses.Field, source: str | None) -> Any:
    """Check a TOML value against a field type; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], path, f, source)
    if origin is tuple:
        (item_tp, *_) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ScenarioError(path, value, f"a list of {_type_name(item_tp)}", source)
        limit = f.metadata.get("max_items")
        if limit is not None and len(value) > limit:   # before building the items: a huge list stops here
            raise ScenarioError(path, value, f"a list of at most {limit:,} entries (got {len(value):,})", source)
        return tuple(_coerce(v, item_tp, f"{path}[{i}]", f, source) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(path, value, _bounds_text(f.metadata, "number"), source)
        try:
            return float(value)
        except OverflowError:   # an integer beyond any float (only the Python API can pass one)
            raise ScenarioError(path, value, _bounds_text(f.metadata, "finite number"), source) from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(path, value, _bounds_text(f.metadata, "integer"), source)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ScenarioError(path, value, "true or false", source)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ScenarioError(path, value, _bounds_text(f.metadata, "string"), source)
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, source)
    return value


def _check_range(value: Any, f: dataclasses.Field, path: str, type_name: str, source: str | None) -> None:
    if value is None:
        return
    if isinstance(value, tuple):   # a list field: every item within the field's range
        for i, item in enumerate(value):
            _check_range(item, f, f"{path}[{i}]", type_name, source)
        return
    _check_bounds(value, f.metadata, path, type_name, source)


def _check_bounds(value: Any, m: dict, path: str, type_name: str, source: str | None) -> None:
    ok = True
    if m.get("choices") is not None:
        ok = value in m["choices"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):   # NaN, inf, -inf
            raise ScenarioError(path, value, _bounds_text(m, "finite " + type_name), source)
        if m.get("ge") is not None and not value >= m["ge"]:
            ok = False
        if m.get("gt") is not None and not value > m["gt"]:
            ok = False
        if m.get("le") is not None and not value <= m["le"]:
            ok = False
    if not ok:
        raise ScenarioError(path, value, _bounds_text(m, type_name), source)


def check_value(option: str, value: Any, *, integer: bool = False, ge: float | None = None,
                gt: float | None = None, le: float | None = None, like: tuple[type, str] | None = None) -> Any:
    """Check one command-line number like a scenario field: finite, within [ge/gt, le]; the error
    names the option (`--seq-len`). `like=(SpecClass, "field")` takes the bounds of that field,
    e.g. `--seq-len` is checked exactly like workload.seq_len."""
    m = {"ge": ge, "gt": gt, "le": le}
    if like is not None:
        fld = {x.name: x for x in dataclasses.fields(like[0])}[like[1]]
        m = {k: fld.metadata.get(k) for k in ("ge", "gt", "le", "choices")}
    type_name = "integer" if integer else "number"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ScenarioError(option, value, _bounds_text(m, type_name))
    _check_bounds(value, m, option, type_name, None)
    return value


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict:
    """typing.get_type_hints(cls), resolved once a class (s33pack: it evaluates every string annotation again on each
    call, ~0.5 s of a validation's 1,500 catalog look-ups); build only reads the dict."""
    return typing.get_type_hints(cls)


def build(cls: type, data: Any, path: str, source: str | None = None) -> Any:
    """Build a frozen spec dataclass from a TOML table, strictly.

    Unknown keys, wrong types and out-of-range values raise ScenarioError naming the dotted path.
    """
    if not isinstance(data, dict):
        raise ScenarioError(path, data, "a table", source)
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ScenarioError(f"{path}.{unknown[0]}", data[unknown[0]], "known keys: " + ", ".join(sorted(fields)), source)
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name not in data:
            if f.default is _MISSING and f.default_factory is _MISSING:
                raise ScenarioError(sub, "<missing>", "a required " + _type_name(hints[name]), source)
            continue
        value = _coerce(data[name], hints[name], sub, f, source)
        _check_range(value, f, sub, _type_name(hints[name]), source)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(path, source)
    return obj


def to_dict(obj: Any) -> Any:
    """A spec as plain TOML/JSON-able data (the resolved scenario written beside every output)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
