"""real/serve/opcount.py (docs/notes/s24pipe_rule.md): the engine's eager step counted by segment on CPU; the count
is structural (the same at the model's own widths and shrunk), solves into the table's structure, and the committed
twin/data/serve_eager_ops.toml is what the tool gives."""

import pytest
import torch

from real.configs import get_spec
from real.serve import opcount as oc
from twin.serving.pipeline import eager_ops

FEW = ((1, 16, 0), (2, 16, 0), (1, 16, 4))


def test_the_count_is_the_same_at_full_and_shrunk_widths():
    torch.set_num_threads(1)
    assert oc.count_model("bench-small", full=True, compositions=FEW) == oc.count_model("bench-small", compositions=FEW)


def test_the_committed_table_is_the_tools_count():
    torch.set_num_threads(1)
    for name in ("mixtral-mla-slice", "bench-small"):
        counted = oc.structure(get_spec(name), oc.count_model(name))
        assert {k: float(v) for k, v in counted.items()} == eager_ops(name)


def test_a_count_the_structure_cannot_give_is_refused():
    spec = get_spec("mixtral-mla-slice")
    counts = oc.count_model("mixtral-mla-slice")
    bad = dict(counts)
    key = next(k for k in bad if k[0] == 2 and k[2] == 0)
    extra = (3, 16, 0)
    bad[extra] = {**bad[key], "attn0": bad[key]["attn0"] + 1}
    with pytest.raises(ValueError, match="structure gives"):
        oc.structure(spec, bad)
