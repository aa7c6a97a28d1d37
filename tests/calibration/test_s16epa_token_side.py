"""s16epa (docs/notes/s16epa_rule.md): the sorts and row gathers real/ runs in the EP2 MoE forward,
from the profiler's kernel records of the fitting split, against the ones the twin's EP forward op
list (calibration.whole_step.ep_moe_ops) names with and without A (ADOPT_EP_LOCAL_EXPERTS_ONLY)."""

import dataclasses
import json

import pytest

import calibration.whole_step as ws
from calibration import ep_layer_kernels as elk
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import Eager, gpu_spec, timed_window_s
from calibration.records_io import read_csv
from twin.core.specs import get_model
from twin.costs.profile import profile_from_json

EP_FOLDERS = ("h200x2/s14epl_20261127_0248", "h100x2/s14epl_20261127_0151")
EP_KEYS = ["bench", "precision", "tokens_per_rank", "skew", "rank"]
SPEC = dataclasses.replace(get_model("v3-slice-1l"), num_routed_experts=32)
T, WORLD = 2048, 2
N = T * SPEC.top_k        # rows sent; balanced EP2: every rank also receives N rows
ROW_BYTES = 2 * N * SPEC.hidden_size * 2      # a row gather of N BF16 rows: read and write


@pytest.fixture(scope="module")
def h200():
    prof = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    return ws.with_measured_collectives(prof, rec.MEASUREMENTS_DIR / "h200x2"), gpu_spec("h200")


@pytest.mark.parametrize("folder", EP_FOLDERS)
def test_profiled_ep_forward_runs_four_sorts_and_five_row_gathers(folder):
    """real/model.py MoE.routed with an ep_group: dispatch's two argsorts and two row gathers,
    expert_ffn's y_NpD[pos] gather, combine's two argsorts and two row gathers; no sort of its own."""
    counts = elk.token_side_counts(read_csv(rec.MEASUREMENTS_DIR / folder / "ep_kernels.csv"), EP_KEYS)
    fwd, bwd = counts[counts["bench"] == "moe_layer_ep_fwd"], counts[counts["bench"] == "moe_layer_ep_bwd"]
    assert len(fwd) == len(bwd) == 16                 # 2 precisions x 2 sizes x 2 skews x 2 ranks
    assert (fwd["argsorts"] == 4).all() and (fwd["row_gathers"] == 5).all()
    assert (fwd["index_copy"] == 1).all() and (fwd["nccl"] == 3).all()
    # the backward: five index_puts (the local layer's three, the received rows' two permutations)
    assert (bwd["index_put"] == 5).all() and (bwd["row_gathers"] == 1).all() and (bwd["nccl"] == 2).all()


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_profiled_one_gpu_forward_sorts_its_own_rows(gpu):
    """Without EP, MoE.routed's own argsort and un-sort: two sorts and three row gathers."""
    k = read_csv(rec.MEASUREMENTS_DIR / gpu / "kernels.csv")
    k = k[k["config"].astype(str).str.startswith("moe_layer") & k["config"].astype(str).str.endswith("fwd")]
    counts = elk.token_side_counts(k, ["config", "precision"])
    assert len(counts) >= 12
    assert (counts["argsorts"] == 2).all() and (counts["row_gathers"] == 3).all() and (counts["index_copy"] == 1).all()


def _twin_forward_counts(monkeypatch, local_only: bool, prof, gpu) -> dict:
    """The twin's EP forward op list: its argsorts (Eager.argsort calls) and its N-row gathers
    (Eager.gather of a row gather's bytes, index_copy included)."""
    seen = {"argsorts": 0, "row_gathers": 0}
    argsort, gather = Eager.argsort, Eager.gather

    def spy_argsort(self, elems, passes=True):
        seen["argsorts"] += 1
        return argsort(self, elems, passes)

    def spy_gather(self, bytes_, kernels=1):
        seen["row_gathers"] += bytes_ == pytest.approx(ROW_BYTES)
        return gather(self, bytes_, kernels)

    monkeypatch.setattr(Eager, "argsort", spy_argsort)
    monkeypatch.setattr(Eager, "gather", spy_gather)
    monkeypatch.setattr(ws, "ADOPT_EP_LOCAL_EXPERTS_ONLY", local_only)
    f, b = ws.ep_moe_ops(SPEC, T, WORLD, float(N), "bf16", gpu, prof)
    monkeypatch.setattr(Eager, "argsort", argsort)
    monkeypatch.setattr(Eager, "gather", gather)
    return {**seen, "fwd_s": timed_window_s([], f.ops), "bwd_ops": b.ops}


def test_twin_ep_forward_names_real_ops_only_with_a(monkeypatch, h200):
    prof, gpu = h200
    with_a = _twin_forward_counts(monkeypatch, True, prof, gpu)
    without = _twin_forward_counts(monkeypatch, False, prof, gpu)
    # with A: the profiled EP forward's 4 argsorts and 5 row gathers + index_copy
    assert (with_a["argsorts"], with_a["row_gathers"]) == (4, 5 + 1)
    # without A: the one-GPU layer's sort and un-sort on top (2 argsorts, 2 row gathers)
    assert (without["argsorts"], without["row_gathers"]) == (6, 7 + 1)
    assert with_a["fwd_s"] < without["fwd_s"]
    assert with_a["bwd_ops"] == without["bwd_ops"]       # A leaves the backward alone
