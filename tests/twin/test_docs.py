from pathlib import Path

from twin.core.docs import scenario_reference


def test_scenario_reference_is_up_to_date():
    """docs/scenario.md is generated from the spec metadata; regenerate with `twin docs --out docs/scenario.md`."""
    committed = (Path(__file__).parents[2] / "docs" / "scenario.md").read_text()
    assert committed == scenario_reference()


def test_every_field_documented_with_unit_or_choices():
    text = scenario_reference()
    for key in ("num_gpus", "comm_sms", "max_nodes_per_token", "routing_imbalance", "optimizer_bytes_per_param"):
        assert f"`{key}`" in text
