"""The scenario loader fuzzed field by field (hypothesis): every key docs/scenario.md documents, in a
file or through --set, set to malformed values (non-finite, huge, wrongly typed, nested, unicode,
raw TOML text); the loader either returns a scenario or raises one ScenarioError naming a field, in
one line, never another exception, never a hang.

The fields come from the reference itself (docs/scenario.md, generated from the specs), so a field
added to a spec is fuzzed as soon as it is documented. Only the loader runs (no simulation): a few
hundred inputs take seconds. tests/test_fuzz_cli.py fuzzes whole commands.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from twin.core.errors import ScenarioError
from twin.core.scenario import PLAN, SERVING, TRAINING, load_scenario

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("fuzz_cli_loader", ROOT / "benchmarks" / "fuzz_cli.py")
fuzz = sys.modules["fuzz_cli_loader"] = importlib.util.module_from_spec(_spec)   # dataclasses look their module up
_spec.loader.exec_module(fuzz)

# one line, naming the field: "FIELD[ in SOURCE]: got VALUE; allowed: TEXT" (the CLI prints it after "error: ")
# the value's source: "in FILE" (or "in FILE with --set ..."), or "(--set KEY=VALUE)" where the override gave it (s27walk)
NAMED = re.compile(r"^(?P<field>[A-Za-z_<-][\w.\[\]<>-]*)(?: in .+?| \(--set .+?\))?: got .*; allowed: .+$", re.S)


def documented_keys() -> list[tuple[str, str]]:
    """(table, key) for every row of docs/scenario.md: ('plan', 'pp'), ('run.stages', 'seq_len'),
    ('run.stages.grpo', 'rollout_gpus')."""
    out, table = [], None
    for line in (ROOT / "docs" / "scenario.md").read_text().splitlines():
        if line.startswith("#") and "[" in line:
            table = line.split(" ", 1)[1].strip("[]")
        elif table and line.startswith("| `"):
            out.append((table, line.split("`")[1]))
    return out


KEYS = documented_keys()
SERVING_TABLES = ("serve", "traffic")


def base_for(table: str) -> tuple[dict, str]:
    """A small valid scenario that has `table`, and its kind."""
    if table.split(".")[0] in SERVING_TABLES:
        return json.loads(json.dumps(fuzz.TINY_SERVE)), SERVING
    if table == "search":
        return json.loads(json.dumps(fuzz.TINY_PLAN)), PLAN
    raw = json.loads(json.dumps(fuzz.TINY_REPLAY))
    if table == "run.stages.grpo":
        raw["run"]["stages"][0]["grpo"] = {"rollout_gpus": 8}
    return raw, TRAINING


def put(raw: dict, table: str, key: str, value) -> None:
    node = raw
    for part in table.split("."):
        node = node.setdefault(part, {})
        if isinstance(node, list):   # run.stages: its first stage
            node = node[0]
    node[key] = value


VALUES = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, -1, 1, 2, 3, 2**31, 2**63 - 1, -(2**63), 10**7 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["", "x" * 5000, "h800", "dualpipe", "fp8", "\u00e9\u4e2d\U0001f600", "inf", "1e9"]),
    st.lists(st.one_of(st.integers(-10, 10**6), st.text(max_size=5), st.floats()), max_size=70),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=3),
    st.dates(min_value=datetime.date(1970, 1, 1)),
)
# raw TOML text after `--set key=` (read as TOML, else as a bare string)
RAW_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(
    ["[[[", "{a=", "1e999", "nan", "-inf", "0x10", "1_000", "'unterminated", "[1, 'a']", "{a = {b = 1}}",
     "1979-05-27T07:32:00Z", "true", "[" * 40 + "]" * 40, "9" * 5000, "\"\\u0000\""]))


def _load(raw: dict, kind: str, overrides: list[str], tmp: Path):
    path = tmp / "s.toml"
    path.write_text(fuzz.toml_text(raw), encoding="utf-8")
    return load_scenario(path, overrides, kind)


def _assert_refused_well(exc: ScenarioError) -> None:
    text = str(exc)
    assert "\n" not in text.strip() or text.count("\n") <= 1, text[:300]
    assert NAMED.match(text), text[:300]


@pytest.mark.timeout(300)
@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from(KEYS), value=VALUES, how=st.sampled_from(["file", "set"]))
def test_every_documented_field_loads_or_is_refused_by_name(tmp_path, field, value, how):
    table, key = field
    raw, kind = base_for(table)
    overrides = []
    if how == "set" and "stages" not in table:
        overrides.append(f"{table}.{key}={fuzz.toml_value(value)}")
    else:
        put(raw, table, key, value)
    try:
        _load(raw, kind, overrides, tmp_path)
    except ScenarioError as exc:
        _assert_refused_well(exc)


@pytest.mark.timeout(300)
@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(field=st.sampled_from([k for k in KEYS if "stages" not in k[0]]), text=RAW_TEXT)
def test_raw_override_text_loads_or_is_refused_by_name(tmp_path, field, text):
    table, key = field
    raw, kind = base_for(table)
    try:
        _load(raw, kind, [f"{table}.{key}={text}"], tmp_path)
    except ScenarioError as exc:
        _assert_refused_well(exc)


def test_the_reference_lists_every_table():
    tables = {t for t, _ in KEYS}
    assert {"model", "cluster", "plan", "workload", "run", "run.stages", "run.stages.grpo", "serve", "traffic",
            "search"} <= tables and len(KEYS) > 200
