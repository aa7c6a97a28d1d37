"""Typed results to JSON, in one place, and their JSON schemas (docs/results/*.schema.json).

Every product returns a frozen dataclass with unit-suffixed fields. `to_json` turns one into plain
JSON values: nested results become objects, tuples become arrays, numpy scalars become Python
numbers, and non-finite floats become null (JSON has no Infinity or NaN). A field declared with
`metadata={"json": False}` (a simulator's event log, say) stays out of the JSON.

`json_schema` derives a JSON Schema (draft 2020-12) from the same dataclass annotations, so the
schema documents exactly what `to_json` writes.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def to_json(obj: Any) -> Any:
    """Plain JSON values (dict, list, str, int, float, bool, None) of a result."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("json", True)}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_json(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _schema_of(tp: Any, defs: dict) -> dict:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(a, defs) for a in typing.get_args(tp)]}
    if tp is type(None):
        return {"type": "null"}
    if tp is Any or tp is object:
        return {}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": ["number", "null"]}   # non-finite floats are written as null
    if tp is str:
        return {"type": "string"}
    if origin in (tuple, list) or tp in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return {"type": "array", "items": _schema_of(args[0], defs) if args else {}}
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        return {"type": "object", "additionalProperties": _schema_of(args[1], defs) if args else {}}
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}          # placeholder: recursive results terminate
            defs[tp.__name__] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    raise TypeError(f"no JSON schema for the annotation {tp!r}")


def _object_schema(cls: type, defs: dict) -> dict:
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("json", True):
            continue
        prop = _schema_of(hints[f.name], defs)
        doc = f.metadata.get("doc")
        if doc:
            prop = {**prop, "description": doc}
        props[f.name] = prop
        required.append(f.name)
    out = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    return out


def json_schema(cls: type) -> dict:
    """The JSON Schema of what `to_json` writes for a result dataclass `cls`."""
    defs: dict = {}
    root = _object_schema(cls, defs)
    schema = {"$schema": SCHEMA_DIALECT, "title": cls.__name__, **root}
    if defs:
        schema["$defs"] = dict(sorted(defs.items()))
    return schema
