"""twin.serving.timing.ADOPT_LAYER_SCALED_ENGINE (docs/notes/s21srvnew2_rule.md): under the switch a model of L
layers pays the one-GPU tables' launch terms times L / ENGINE_FIT_LAYERS; the tables' own model (v3-slice-2l, every
committed load run) is untouched either way, and off every model pays them as fitted."""

import pytest

from twin.core.specs import get_model, serve_engines
from twin.serving import timing

TABLE = serve_engines()["real-serve-h100-ep1"]


@pytest.fixture
def switch(monkeypatch):
    def set_to(on: bool):
        monkeypatch.setattr(timing, "ADOPT_LAYER_SCALED_ENGINE", on)
    return set_to


def test_on_scales_only_the_launch_terms_by_layers(switch):
    switch(True)
    one = timing.layer_scaled_engine(TABLE, get_model("mixtral-mla-slice").num_layers)   # 1 layer of the table's 2
    for k, v in TABLE.items():
        want = v * 0.5 if k in timing.LAYER_SCALED_TERMS else v
        assert one[k] == pytest.approx(want) if isinstance(v, float) else one[k] == v
    assert one["eager_iteration_s"] < TABLE["eager_iteration_s"] and one["iteration_s"] == TABLE["iteration_s"]


def test_the_tables_own_model_is_untouched_either_way(switch):
    layers = get_model("v3-slice-2l").num_layers
    assert layers == timing.ENGINE_FIT_LAYERS
    for on in (False, True):
        switch(on)
        assert timing.layer_scaled_engine(TABLE, layers) is TABLE


def test_off_every_model_pays_the_terms_as_fitted(switch):
    switch(False)
    for model in ("mixtral-mla-slice", "qwen3moe-mla-slice", "v3-slice-2l"):
        assert timing.layer_scaled_engine(TABLE, get_model(model).num_layers) is TABLE
