import json
from pathlib import Path

import twin
from twin.api import result_schemas
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
