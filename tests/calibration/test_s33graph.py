"""s33graph (docs/notes/s33graph.md): CUDA-graph decode replays taken apart by term and model. The committed
decomposition (calibration/s33graph_decomposition.json, `python -m calibration.s33graph record`) holds the figures the
note quotes; one fitting run's replays are recomputed live, so the file cannot go stale."""

import json
from pathlib import Path

import numpy as np
import pytest

from calibration import records as rec
from calibration import s33graph as sg
from twin.serving import timing

DECOMPOSITION = Path(sg.__file__).resolve().parent / "s33graph_decomposition.json"
T_V2 = "h200/s33loop/v2-lite-slice"      # set T, fitting / diagnostic records
T_V2_RUN = "t33-v2lite-closed-c8-b"


@pytest.fixture(scope="module")
def doc():
    return json.loads(DECOMPOSITION.read_text())


@pytest.fixture(scope="module")
def live():
    """Set T's v2-lite-slice runs' graph replays, priced in force now (about 1 s)."""
    root = Path(rec.records_root())
    return sg.replays(root, [root / T_V2], "fit")


def test_a_replays_price_is_kernels_floor_and_host_terms(live):
    """The twin's price of a v2-lite-slice replay: its kernels, the in-force floor for 780 - 403 = 377 captured
    operators at 495 ns (0.187 ms), the host-scaled iteration_s + loop_s, and a small rest (the gathered attention)."""
    assert timing.ADOPT_GRAPH_OP_FLOOR
    run = live[live.run_id == T_V2_RUN]
    assert len(run) > 500
    assert run.floor_s.iloc[0] == pytest.approx(377 * 4.949980536860869e-07, rel=1e-9)
    assert (run.rest_s >= 0).all() and run.rest_s.max() < 0.3e-3
    assert 0.4e-3 < run.fixed_s.iloc[0] < 1.0e-3
    assert np.allclose(run.kern_s + run.floor_s + run.fixed_s + run.rest_s, run.pred_s)


def test_the_committed_runs_figures_are_live(doc, live):
    committed = {(r["folder"], r["run_id"]): r for r in doc["fitting"]["runs"]}
    got = sg.summarise(live)["runs"]
    assert len(got) == 4
    for r in got:
        c = committed[(r["folder"], r["run_id"])]
        assert r["measured_over_twin"] == pytest.approx(c["measured_over_twin"], rel=1e-9)
        assert r["replays"] == c["replays"]


def test_four_layer_models_are_under_priced_one_layer_models_over(doc):
    """On the H200 fitting records the shortfall is not v2-lite-slice's alone: bench-small (also four layers, 847
    operators) is short as much; the one-layer models (v3-slice-1l, mixtral) and qwen2moe are over-priced. The in-force
    per-operator floor, fitted on 216-427 operators, does not reach the four-layer models."""
    m = doc["fitting"]["models"]
    for key in ("h200 v2-lite-slice", "h200 bench-small"):
        assert m[key]["layers"] == 4 and m[key]["measured_over_twin"] > 1.04
    for key in ("h200 v3-slice-1l", "h200 qwen2moe-mla-slice"):
        assert m[key]["measured_over_twin"] < 0.95
    # the same direction on the seen sets (a description) and on the H100 (no floor there)
    s = doc["seen"]["models"]
    assert s["h200 v2-lite-slice"]["measured_over_twin"] > 1.03 and s["h100 v2-lite-slice"]["measured_over_twin"] > 1.08
    assert s["h100 mixtral-mla-slice"]["measured_over_twin"] < 0.8


def test_the_ratio_falls_with_the_runs_host_factor(doc):
    """Across the fit model's fitting runs (v3-slice-2l: 30 H200 and 46 H100 runs) measured / twin falls as the run's
    launch probe reads the host slower: the replay's host-scaled fixed terms grow faster than its time. G (the terms x
    host factor^0.75, the H200 fitting records' exponent) is screened only: it loses checks on most seen sets."""
    for key in ("h200 v3-slice-2l", "h100 v3-slice-2l"):
        v = doc["fitting"]["models"][key]
        assert v["runs"] >= 20 and v["host_factor_slope"] < -0.1 and v["host_factor_corr"] < -0.3
    h200 = doc["host_gamma"]["h200"]
    assert h200["0.7"]["median_abs_rel_error"] < h200["1.0"]["median_abs_rel_error"]
    assert h200["1.0"]["run_slope"] < 0 < h200["0.5"]["run_slope"]
    allv = doc["screen"]["sets"]["all"]
    assert allv["G"][0] < allv["in force"][0] - 10


def test_the_refitted_floor_trades_mixtral_for_v2_lite(doc):
    """F (the floor refitted on every H200 fitting record, set T with it) is screened only: the seen sets pooled lose
    checks, v2-lite-slice's H200 runs gain and mixtral's lose; no rule, no switch."""
    ref = doc["refit"]
    assert ref["both"]["graph_op_floor_s"] > 1.5 * ref["s26start2_fit"]["graph_op_floor_s"]
    scr = doc["screen"]
    allv = scr["sets"]["all"]
    assert allv["F"][0] < allv["in force"][0]
    assert scr["models"]["h200 v2-lite-slice"]["F"][0] > scr["models"]["h200 v2-lite-slice"]["in force"][0]
    assert scr["models"]["h200 mixtral-mla-slice"]["F"][0] < scr["models"]["h200 mixtral-mla-slice"]["in force"][0]
    # whatever the host exponent of the fixed terms, a per-operator term refitted with it leaves the models apart
    # (mixtral-mla-slice, qwen2moe-mla-slice, v3-slice-1l: more than 8 points between the highest and lowest median)
    for v in doc["joint"].values():
        assert max(v["models"].values()) - min(v["models"].values()) > 0.08


@pytest.mark.xfail(strict=True, reason="issue 15: v2-lite-slice's graph replays priced short on the fitting records")
def test_v2_lite_replays_within_five_percent_on_set_t(live):
    ratio = float(np.median(live.ratio))
    print(f"set T v2-lite-slice graph replays: measured / twin {ratio:.3f} (median of {len(live)})")
    assert abs(ratio - 1) < 0.05


def test_folders_without_replays_exit_2_naming_the_folder(capsys):
    assert sg.main(["folders", "h200/no-such-registration"]) == 2
    assert "h200/no-such-registration" in capsys.readouterr().err
