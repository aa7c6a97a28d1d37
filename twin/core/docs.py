"""Generates docs/scenario.md from the spec dataclasses' field metadata (one source of truth)."""

from __future__ import annotations

import dataclasses
import typing

from twin.core.fields import allowed_text
from twin.core.scenario import MAX_TOML_DEPTH, SECTIONS, STEP_TASK_LIMIT, TASKS_PER_BLOCK
from twin.core.specs import ModelSpec

INTRO = """# Scenario reference

A scenario is a TOML file with the tables below. Loading is strict: an unknown key, a wrong type,
a value out of range, or a plan whose degrees don't fit the cluster stops the command with one line
naming the field, the value and what is allowed (exit status 2). Any field can be overridden on the
command line with `--set section.field=value` (the value is read as TOML: `--set plan.pp=8`,
`--set cluster.gpu=h200`, `--set plan.schedule=1f1b`). `twin docs` regenerates this page.

`[model]` takes `name = "<catalog model>"` (see `twin model --list`) and optionally any field below
to override it; a name that is not in the catalog defines a model inline and then needs every
required field. Every output directory holds the resolved scenario it was computed from.

Derived quantities: data-parallel degree `dp = cluster.num_gpus / (plan.tp * plan.cp * plan.pp)`;
micro-batches per step `workload.global_batch_seqs / (dp * plan.micro_batch_seqs)`.

Limits. Every number must be finite (`inf` and `nan` are refused). Every count and size has an
upper bound and every list a maximum length (the "allowed" column): far beyond any real model or
cluster, but small enough that a typo cannot start hours of simulation. A training step is also
bounded as a whole: the step twin simulates about `plan.pp x micro-batches per pipeline x passes
x blocks per stage x {tasks}` tasks (passes: 2 for `dualpipev`, `plan.virtual_stages` for
`interleaved-1f1b`, else 1; blocks per stage: `ceil(model.num_layers / stages) +
model.num_mtp_modules`), and a scenario above {limit:,} tasks is
refused, naming `workload.global_batch_seqs` or `model.num_layers` with the numbers (the default
V3 step: 16 x 120 x 1 x 5 x 16 = 153,600). TOML nested deeper than {depth} levels is refused
before it is read.
""".format(tasks=TASKS_PER_BLOCK, limit=STEP_TASK_LIMIT, depth=MAX_TOML_DEPTH)


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "list of " + _type_name(typing.get_args(tp)[0])
    if origin is not None:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return f"table ({tp.__name__})"
    return {int: "integer", float: "finite number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "`" + repr(f.default).replace("'", '"') + "`"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "`" + (f"{len(value)} entries" if isinstance(value, tuple) else repr(value)) + "`"
    return "required"


def _inner_dataclass(tp) -> tuple[type | None, bool]:
    """(the dataclass a field's type holds, whether as a list of tables): tuple[StageSpec, ...] ->
    (StageSpec, True), GrpoSpec | None -> (GrpoSpec, False), int -> (None, False)."""
    args = [a for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(tp) is tuple:
        return (args[0], True) if args and dataclasses.is_dataclass(args[0]) else (None, False)
    if dataclasses.is_dataclass(tp):
        return tp, False
    inner = [a for a in args if dataclasses.is_dataclass(a)]
    return (inner[0], False) if inner else (None, False)


def section_table(name: str, cls, level: int = 2, array: bool = False) -> str:
    """The reference of one table (`[name]`, or `[[name]]` for a list of tables) and of the tables its
    fields hold, one heading level down ([[run.stages]], [run.stages.grpo]: the GRPO table's fields were
    not documented until s21walk)."""
    hints = typing.get_type_hints(cls)
    title = f"[[{name}]]" if array else f"[{name}]"
    summary = " ".join(line.strip() for line in (cls.__doc__ or "").strip().split("\n\n")[0].splitlines())
    rows = [f"{'#' * level} {title}\n", summary + "\n",
            "| key | unit | default | allowed | meaning |", "|---|---|---|---|---|"]
    nested = []
    for f in dataclasses.fields(cls):
        if not f.init or "doc" not in f.metadata:
            continue
        tp = hints[f.name]
        rows.append(f"| `{f.name}` | {f.metadata.get('unit') or '-'} | {_default(f)} | "
                    f"{allowed_text(f, _type_name(tp))} | {f.metadata['doc']} |")
        inner, is_list = _inner_dataclass(tp)
        if inner is not None:
            nested.append((f"{name}.{f.name}", inner, is_list))
    text = "\n".join(rows) + "\n"
    for sub_name, sub_cls, is_list in nested:
        text += "\n" + section_table(sub_name, sub_cls, level + 1, is_list)
    return text


def scenario_reference() -> str:
    parts = [INTRO, section_table("model", ModelSpec)]
    parts += [section_table(name, cls) for name, cls in SECTIONS.items()]
    return "\n".join(parts)
