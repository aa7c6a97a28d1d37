import json
from pathlib import Path

import twin
from twin.api import result_schemas
from twin.cli.main import main
from twin.core.docs import scenario_reference
from twin.core.results import to_json


def test_scenario_reference_is_up_to_date():
    """docs/scenario.md is generated from the spec metadata; regenerate with `twin docs --out docs/scenario.md`."""
    committed = (Path(__file__).parents[2] / "docs" / "scenario.md").read_text()
    assert committed == scenario_reference()


def test_every_field_documented_with_unit_or_choices():
    text = scenario_reference()
    for key in ("num_gpus", "comm_sms", "max_nodes_per_token", "routing_imbalance", "optimizer_bytes_per_param"):
        assert f"`{key}`" in text


def _documented_tables(text: str) -> dict[str, set[str]]:
    """docs/scenario.md's headings ([model], [[run.stages]], [run.stages.grpo]) -> the keys of their tables."""
    tables, current = {}, None
    for line in text.splitlines():
        if line.startswith("#") and "[" in line:
            current = line.split(" ", 1)[1].strip("[]")
            tables[current] = set()
        elif current and line.startswith("| `"):
            tables[current].add(line.split("`")[1])
    return tables


def test_every_table_a_scenario_takes_is_documented_field_by_field():
    """Every field of every table, nested ones included: [run.stages.grpo]'s 14 fields had no reference
    (only `grpo | table (GrpoSpec)`) and three tables' summaries stopped mid-sentence until s21walk."""
    import dataclasses
    import typing
    from twin.core.docs import _inner_dataclass
    from twin.core.scenario import SECTIONS
    from twin.core.specs import ModelSpec
    tables = _documented_tables(scenario_reference())
    expected = {}

    def walk(name, cls):
        documented = [f for f in dataclasses.fields(cls) if f.init and "doc" in f.metadata]
        expected[name] = {f.name for f in documented}
        hints = typing.get_type_hints(cls)
        for f in documented:
            inner, _ = _inner_dataclass(hints[f.name])
            if inner is not None:
                walk(f"{name}.{f.name}", inner)
    for name, cls in {"model": ModelSpec, **SECTIONS}.items():
        walk(name, cls)
    assert "run.stages.grpo" in tables and {"rollout_gpus", "gen_len_mean", "prompts_per_step"} <= tables["run.stages.grpo"]
    assert tables == expected
    summaries = [line for line in scenario_reference().split("\n\n") if line and not line.startswith(("#", "|"))]
    assert all(s.rstrip().endswith((".", ")", ":")) for s in summaries[1:]), [s[-60:] for s in summaries if not s.rstrip().endswith((".", ")", ":"))]


def test_result_schemas_are_up_to_date():
    """docs/results/*.schema.json are generated from the result dataclasses; regenerate with
    `twin docs --schemas docs/results`."""
    folder = Path(__file__).parents[2] / "docs" / "results"
    schemas = result_schemas()
    assert sorted(p.name for p in folder.glob("*.schema.json")) == sorted(schemas)
    for name, schema in schemas.items():
        assert json.loads((folder / name).read_text()) == schema, name


def test_results_validate_against_their_schemas(tmp_path):
    # what to_json writes for a real result has exactly the schema's keys, recursively
    sc = twin.load_scenario(overrides=["model.num_layers=8", "plan.pp=2", "cluster.num_gpus=128",
                                       "workload.global_batch_seqs=256"])
    step = to_json(twin.simulate_step(sc))
    schema = result_schemas()["step.schema.json"]
    assert set(step) == set(schema["properties"]) == set(schema["required"])
    serve = to_json(twin.serve(twin.load_scenario(kind="serving")))
    schema = result_schemas()["serve.schema.json"]
    assert set(serve) == set(schema["properties"])
    assert set(serve["sweep"][0]) == set(schema["$defs"]["SweepPoint"]["properties"])
    assert json.loads(json.dumps(serve, allow_nan=False)) == serve   # finite: valid JSON
    # and every value, at every depth, has its schema's type (the analytic prefill's per-group
    # seconds are a table: declared a number until s19ux2)
    assert schema_errors(step, result_schemas()["step.schema.json"]) == []
    assert schema_errors(serve, schema) == []
    # simulate_load's result (the API's recorded-load replay) has a schema too (none until s19ux2)
    sc = twin.load_scenario(kind="serving")
    load = to_json(twin.simulate_load(sc, arrival_s=[0.0, 0.1], input_len=[100, 200], output_len=[10, 20]))
    assert schema_errors(load, result_schemas()["load.schema.json"]) == []


# --- a JSON Schema check of the keywords json_schema and step_command_schema write (type, const,
# properties, required, additionalProperties, items, anyOf, $ref); the jsonschema package is not a dependency

JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _has_type(value, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int)
    if name == "number":
        return isinstance(value, (int, float))
    return isinstance(value, JSON_TYPES[name])


def schema_errors(value, schema: dict, root: dict | None = None, path: str = "$") -> list[str]:
    root = schema if root is None else root
    if "$ref" in schema:
        return schema_errors(value, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root, path)
    if "anyOf" in schema:
        branches = [schema_errors(value, s, root, path) for s in schema["anyOf"]]
        return [] if any(not b for b in branches) else [f"{path}: no anyOf branch: " + "; ".join(b[0] for b in branches)]
    if "const" in schema and value != schema["const"]:
        return [f"{path}: {value!r} is not {schema['const']!r}"]
    types = schema.get("type")
    if types is not None and not any(_has_type(value, t) for t in ([types] if isinstance(types, str) else types)):
        return [f"{path}: {str(value)[:60]!r} is not {types}"]
    errors = []
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", {})
        errors += [f"{path}: missing {k}" for k in schema.get("required", ()) if k not in value]
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], root, f"{path}.{k}")
            elif extra is False:
                errors.append(f"{path}: unexpected key {k}")
            else:
                errors += schema_errors(v, extra, root, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errors += schema_errors(v, schema["items"], root, f"{path}[{i}]")
    return errors


def test_schema_errors_sees_a_wrong_value():
    schema = result_schemas()["step.schema.json"]
    assert schema_errors({"feasible": True}, schema)[:1] == ["$: missing schedule"]
    assert schema_errors([], schema) == ["$: '[]' is not object"]


def test_step_command_json_validates_against_its_schema(tmp_path):
    """`twin step --json` writes the step result with `feasible` and `scenario` beside it (and, for a
    plan that does not fit, the reason instead): step.schema.json refused both until s19ux2."""
    schema = result_schemas()["step_command.schema.json"]
    small = ["--set", "model.num_layers=8", "--set", "plan.pp=2", "--set", "cluster.num_gpus=128",
             "--set", "workload.global_batch_seqs=256"]
    assert main(["step", *small, "--json", str(tmp_path / "ran.json")]) == 0
    ran = json.loads((tmp_path / "ran.json").read_text())
    assert ran["feasible"] is True and schema_errors(ran, schema) == []
    assert schema_errors(ran, result_schemas()["step.schema.json"]) != []   # the bare result's schema is not it
    assert main(["step", *small, "--set", "plan.micro_batch_seqs=4", "--set", "workload.global_batch_seqs=1024",
                 "--set", "workload.seq_len=65536", "--json", str(tmp_path / "oom.json")]) == 3
    oom = json.loads((tmp_path / "oom.json").read_text())
    assert oom["feasible"] is False and schema_errors(oom, schema) == []


def test_model_and_schedule_json_validate_against_their_schemas(tmp_path):
    """`twin model --json` and `twin schedule --json` had no schema until s19ux2: every catalog model,
    and schedules with and without the note on a bubble that differs from the formula."""
    from twin.core.specs import model_names
    schema = result_schemas()["model_command.schema.json"]
    for name in model_names():
        assert main(["model", name, "--json", str(tmp_path / "m.json")]) == 0
        assert schema_errors(json.loads((tmp_path / "m.json").read_text()), schema) == [], name
    schema = result_schemas()["schedule_command.schema.json"]
    notes = []
    for args in (["dualpipe", "--pp", "4", "--microbatches", "8"], ["dualpipe", "--pp", "4", "--microbatches", "8", "--b", "3", "--w", "0.5"],
                 ["interleaved-1f1b", "--pp", "2", "--microbatches", "4", "--virtual-stages", "2"]):
        assert main(["schedule", *args, "--json", str(tmp_path / "s.json")]) == 0
        out = json.loads((tmp_path / "s.json").read_text())
        assert schema_errors(out, schema) == [], args
        notes.append("note" in out)
    assert notes == [False, True, False]   # non-canonical op times: the note, checked by the schema too


def test_balance_json_validates_against_its_schema(tmp_path):
    """`twin balance --json` had no published schema until s21walk (docs/results/balance_command.schema.json)."""
    schema = result_schemas()["balance_command.schema.json"]
    tiny = ["--set", 'model.name="tiny"', "--set", "cluster.num_gpus=8", "--set", "plan.pp=2", "--set", "plan.ep=4",
            "--set", "workload.seq_len=512", "--set", "workload.global_batch_seqs=32", "--quiet"]
    # with its report too: EP4 on 8-GPU nodes made the report's EPLB node count 0, a ZeroDivisionError after
    # the whole computation (until s21walk)
    assert main(["balance", *tiny, "--json", str(tmp_path / "b.json"), "--out", str(tmp_path / "report")]) == 0
    out = json.loads((tmp_path / "b.json").read_text())
    assert schema_errors(out, schema) == []
    assert (tmp_path / "b.scenario.resolved.toml").is_file()   # beside the JSON (none until s21walk)
    assert (tmp_path / "report" / "report.html").is_file()
    # a case whose step cannot run carries its reason, and the schema says so; a stray key is refused
    out["cases"]["zipf_fit"] = {"infeasible": "out of memory"}
    assert schema_errors(out, schema) == []
    out["cases"]["balanced"]["bogus"] = 1
    assert schema_errors(out, schema) != []


def test_serve_command_json_validates_against_its_schema(tmp_path, capsys):
    """`twin serve --json` on a deployment that cannot run wrote nothing (exit 3) until s21walk; now, as
    `twin step`, `feasible` false with the reason (serve_command.schema.json holds both shapes)."""
    schema = result_schemas()["serve_command.schema.json"]
    assert main(["serve", "--quiet", "--requests", "20", "--json", str(tmp_path / "ran.json")]) == 0
    ran = json.loads((tmp_path / "ran.json").read_text())
    assert schema_errors(ran, schema) == [] and "feasible" not in ran
    assert main(["serve", "--quiet", "--set", "cluster.gpu=h100", "--json", str(tmp_path / "oom.json")]) == 3
    oom = json.loads((tmp_path / "oom.json").read_text())
    assert oom["feasible"] is False and "H100" in oom["reason"] and schema_errors(oom, schema) == []
    assert oom["scenario"]["cluster"]["gpu"] == "h100"
    assert schema_errors(oom, result_schemas()["serve.schema.json"]) != []   # the bare result's schema is not it


def test_docs_writes_the_reference_and_the_schemas_when_both_are_asked(tmp_path):
    """`twin docs --schemas DIR --out FILE` wrote the schemas and dropped the reference until s21walk."""
    assert main(["docs", "--schemas", str(tmp_path / "schemas"), "--out", str(tmp_path / "scenario.md")]) == 0
    assert (tmp_path / "scenario.md").read_text() == scenario_reference()
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == sorted(result_schemas())
