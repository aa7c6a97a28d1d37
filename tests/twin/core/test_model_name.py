"""A [model] name outside the catalog, without the fields of an inline model, is refused naming
model.name and the catalog (until s22walk: "model.num_layers: got '<missing>'", as if the user had
meant to define a model inline)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.core.errors import ScenarioError
from twin.core.scenario import SERVING, TRAINING, from_dict, load_scenario, read_raw
from twin.core.specs import _catalog

CATALOG = set(_catalog("models.toml")["models"])
BASES = {kind: read_raw(None, kind) for kind in (TRAINING, SERVING)}


@settings(max_examples=40, deadline=None)
@given(name=st.text(min_size=1, max_size=20).filter(lambda s: s not in CATALOG),
       kind=st.sampled_from([TRAINING, SERVING]))
def test_unknown_name_names_the_field_and_the_catalog(name, kind):
    raw, source = BASES[kind]
    with pytest.raises(ScenarioError) as err:
        from_dict({**raw, "model": {"name": name}}, source, kind)
    assert err.value.field == "model.name" and "deepseek-v3" in str(err.value) and "model.num_layers" in str(err.value)


def test_an_inline_model_still_loads():
    sc = load_scenario(overrides=["model.name='mine'", "model.num_layers=2", "model.hidden_size=256", "model.vocab_size=1000",
                                  "model.num_heads=4", "model.attention='gqa'", "model.num_kv_heads=4", "model.head_dim=64", "model.num_dense_layers=2", "model.intermediate_size=512", "cluster.num_gpus=8", "plan.pp=1", "plan.ep=1", "plan.comm_sms=0", "plan.schedule='1f1b'"])
    assert sc.model.name == "mine" and sc.model.num_layers == 2
