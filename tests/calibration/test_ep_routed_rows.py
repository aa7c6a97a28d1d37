"""s14epl term R (calibration.pipeline.ADOPT_EP_ROUTED_ROWS, docs/notes/s14epl_rule.md): an EP step's
MoE layer runs the most loaded EP rank's measured rows per local expert (pipeline_routing.csv), not
an even split; and the flag's two settings on the committed 2xH200 records."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from twin.core.specs import get_model
from twin.costs.profile import profile_from_json

CFG = dict(model="v2-lite-slice", schedule="1f1b", pp=1, ep=2, num_microbatches=2, micro_batch_seqs=1, seq_len=4,
           precision="bf16")


def _routing(per_rank: dict[int, list[float]], layer: int = 1) -> pd.DataFrame:
    return pd.DataFrame([dict(CFG, rank=r, chunk=0, stage=0, layer=layer, expert=e, tokens_per_step=t, split="fit")
                         for r, tokens in per_rank.items() for e, t in enumerate(tokens)])


def test_rows_are_the_most_loaded_ranks_per_expert_scaled_to_one_microbatch():
    # 4 experts over 2 EP ranks (rank 0: experts 0-1, rank 1: 2-3); 2 micro-batches of 4 tokens, top-2:
    # the step routes 2 x 2 x 4 x 2 = 32 rows; experts 0-1 receive 20 of them
    routing = _routing({0: [6, 4, 3, 3], 1: [6, 4, 3, 3]})
    rows = pipe.ep_layer_rows(routing, pd.Series(CFG), top_k=2)
    assert set(rows) == {1}
    np.testing.assert_allclose(rows[1], [6.0, 4.0])          # 12 + 8 of 32 rows -> 6 + 4 of a micro-batch's 16
    assert pipe.ep_layer_rows(routing, pd.Series({**CFG, "ep": 1}), top_k=2) == {}
    assert pipe.ep_layer_rows(routing, pd.Series({**CFG, "seq_len": 8}), top_k=2) == {}   # another configuration
    assert pipe.ep_layer_rows(pd.DataFrame(), pd.Series(CFG), top_k=2) == {}


def test_uneven_rows_pad_more_tiles_than_an_even_split():
    """Balanced rows sitting on whole row tiles: any spread of the same rows pads every expert."""
    spec = dataclasses.replace(get_model("v2-lite-slice"), num_layers=2, num_mtp_modules=0)
    prof = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    gpu, T = gpu_spec("h200"), 4096
    El = spec.num_routed_experts // 2
    even = np.full(El, T * spec.top_k / El)                  # 768 rows = 6 tiles of 128 each
    spread = even + np.tile([40.0, -40.0], El // 2)           # the same rows, unevenly
    base = pipe.stage_ops(spec, range(2), True, True, 1, T, "bf16", gpu, prof, ep=2)
    same = pipe.stage_ops(spec, range(2), True, True, 1, T, "bf16", gpu, prof, ep=2, ep_rows={1: even})
    uneven = pipe.stage_ops(spec, range(2), True, True, 1, T, "bf16", gpu, prof, ep=2, ep_rows={1: spread})
    assert same.f == base.f and same.b == base.b
    gg = lambda o, k: o.components[k].get("grouped_gemm", 0.0)
    assert gg(uneven, "F") > gg(base, "F") and gg(uneven, "B") > gg(base, "B")


@pytest.mark.parametrize("adopted", [False, True])
def test_the_flag_reads_the_folders_routing_only_when_adopted(monkeypatch, adopted):
    monkeypatch.setattr(pipe, "ADOPT_EP_ROUTED_ROWS", adopted)
    seen = []
    real = pipe.ep_layer_rows
    monkeypatch.setattr(pipe, "ep_layer_rows", lambda routing, row, top_k: seen.append(len(routing)) or real(routing, row, top_k))
    prof = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    cases = pipe.predict_folder(rec.MEASUREMENTS_DIR / "h200x2", "h200", prof)
    ep_cases = [c for c in cases if int(c["row"]["ep"]) > 1]
    assert ep_cases and seen
    assert (max(seen) > 0) == adopted                        # the routing records read only when adopted
