"""calibration.tp_traffic (docs/notes/s30mlm_rule.md) on made-up boards whose figures are worked out here: the
GEMM and traffic ratios, the medians over covered windows, the floor at 1, the rule's C0; C1-C3 from given errors;
G1 from given validations."""

import csv

import pytest

from calibration import tp_traffic as tt
from calibration.records_io import read_json
from real.bench.tp_traffic import COLUMNS


def _write(folder, rank, power_w=690.0, ce_covered=True):
    # one GEMM; alone windows 1.0 and 1.2 ms (mean 1.1); rs 1.21 ms (x1.1), ag 1.32 ms (x1.2), ce 1.045 ms (x0.95:
    # floored to 1); the traffic at 0.2 ms alone, 0.3 (rs), 0.25 (ag), 0.22 ms (ce) beside
    with (folder / f"tp_traffic_rank{rank}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        base = {"campaign": "s30mlm", "rank": rank, "board": f"gpu{rank}", "model": "177b", "gemm": "fc1_fprop",
                "status": "ok", "gpu_name": "NVIDIA H200", "power_w": power_w, "power_limit_w": 700.0,
                "traffic_time_alone_s": 0.2e-3}
        for rep, t in ((1, 1.0e-3), (2, 1.2e-3)):
            w.writerow({**base, "condition": "alone", "rep": rep, "gemm_time_s": t, "traffic_time_alone_s": ""})
        for kind, t, beside, covered in (("rs", 1.21e-3, 0.3e-3, True), ("ag", 1.32e-3, 0.25e-3, True),
                                         ("ce", 1.045e-3, 0.22e-3, ce_covered),
                                         ("rs", 9e-3, 9e-3, False)):   # not covered: never counted
            w.writerow({**base, "condition": kind, "rep": 1, "gemm_time_s": t, "traffic_time_beside_s": beside,
                        "covered": covered})


def test_figures_and_c0(tmp_path):
    for r in range(3):
        _write(tmp_path, r)
    res = tt.judge(tmp_path)
    # SM kernels: medians over rs and ag windows of every board: GEMM (1.1, 1.2) -> 1.15; traffic (1.5, 1.25) -> 1.375
    assert res["figures"]["sm_gemm"] == pytest.approx(1.15) and res["figures"]["sm_comm"] == pytest.approx(1.375)
    # copy engine: the GEMM 0.95 floored at 1 (raw kept), the traffic 1.1
    assert res["raw"]["ce_gemm"] == pytest.approx(0.95) and res["figures"]["ce_gemm"] == 1.0
    assert res["figures"]["ce_comm"] == pytest.approx(1.1)
    c0 = res["C0"]
    assert c0["boards"] == 3 and c0["all_capped"] and c0["covered"]["rs"] == pytest.approx(0.5)
    assert not c0["all_covered"] and not c0["holds"]   # rs: 3 of 6 windows covered < 75%


def test_c0_needs_three_capped_boards(tmp_path):
    _write(tmp_path, 0)
    _write(tmp_path, 1, power_w=600.0)   # 600 W < 0.90 x 700 W: not held
    c0 = tt.judge(tmp_path)["C0"]
    assert not c0["enough_boards"] and c0["capped"] == {"gpu0": True, "gpu1": False} and not c0["holds"]


def test_criteria_from_errors():
    off = {k: 0.12 for k in tt.NAMED_ROWS} | {"a": -0.09, "b": 0.05}
    on = {k: 0.09 for k in tt.NAMED_ROWS} | {"a": -0.11, "b": 0.03}
    c = tt.criteria({"off": off, "on": on})
    assert c["C2_left_10pct"] == ["a"] and not c["C2"] and c["C3"]
    assert c["named_mean_on"] == pytest.approx(0.09)


def test_guards_allow_only_the_te_rows_to_move():
    def validation(x, y, other=1):
        return {"published_runs": {"rows": [{"id": "te", "rel_error": x}, {"id": "tt", "rel_error": y}]},
                "gpus": other, "inputs": {"git_commit": str(other)}}
    off = validation(0.1, 0.2)
    assert tt.guards(off, validation(0.09, 0.2), {"te"})["G1"]
    assert tt.guards(off, validation(0.09, 0.19), {"te"})["rows_moved_outside"] == ["tt"]
    assert tt.guards(off, validation(0.1, 0.2, other=2), {"te"})["sections_changed"] == ["gpus"]   # inputs ignored


def test_round_2_inverts_the_shared_gpu_model():
    from twin.costs.tp_overlap import shared_gpu_s
    # the two worked cases of tests/twin/costs/test_tp_overlap.py, read back: GEMM 1.0, transfer 0.5 (the
    # transfer ends first) and GEMM 0.4, transfer 1.0 (the GEMM ends first), each slowed 1.5x / 2x
    for g, c in ((1.0, 0.5), (0.4, 1.0)):
        g_end, c_end = shared_gpu_s(g, c, 1.5, 2.0)
        assert tt.invert(g_end, c_end, g, c) == pytest.approx((1.5, 2.0))
    # a GEMM that made no progress while the transfer ran: capped
    assert tt.invert(2.0, 1.0, 1.0, 0.5) == (tt.SLOWDOWN_CAP, 2.0)


def _write2(folder, rank, power_w=690.0):
    from real.bench.tp_te_order import COLUMNS as COLUMNS2
    from twin.costs.tp_overlap import shared_gpu_s
    # GEMM alone 1.0 ms; rs / ag alone 0.5 ms, beside slowed (1.2, 3.0) / (1.4, 2.0); ce alone 2.0 ms, (1.05, 1.1)
    with (folder / f"tp_te_order_rank{rank}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS2)
        w.writeheader()
        base = {"campaign": "s30mlm2", "rank": rank, "board": f"gpu{rank}", "model": "177b", "gemm": "fc1_fprop",
                "status": "ok", "gpu_name": "NVIDIA H200", "power_limit_w": 700.0}
        alone = {"rs": 0.5e-3, "ag": 0.5e-3, "ce": 2.0e-3}
        for kind, c in alone.items():
            w.writerow({**base, "condition": f"{kind}_alone", "rep": 0, "traffic_end_s": c})
        w.writerow({**base, "condition": "alone", "rep": 1, "gemm_end_s": 1.0e-3, "power_w": power_w})
        for kind, (sg, sc) in (("rs", (1.2, 3.0)), ("ag", (1.4, 2.0)), ("ce", (1.05, 1.1))):
            g_end, c_end = shared_gpu_s(1.0e-3, alone[kind], sg, sc)
            w.writerow({**base, "condition": kind, "rep": 1, "gemm_end_s": g_end, "traffic_end_s": c_end})


def test_round_2_figures_and_c0(tmp_path):
    for r in range(3):
        _write2(tmp_path, r)
    res = tt.judge_any(tmp_path)
    assert res["round"] == 2 and res["C0"]["holds"]
    # SM kernels: medians over rs and ag of every board: GEMM (1.2, 1.4) -> 1.3, transfer (3.0, 2.0) -> 2.5
    assert res["figures"]["sm_gemm"] == pytest.approx(1.3) and res["figures"]["sm_comm"] == pytest.approx(2.5)
    assert res["figures"]["ce_gemm"] == pytest.approx(1.05) and res["figures"]["ce_comm"] == pytest.approx(1.1)


def test_round_3_keeps_the_sm_kernels_and_needs_two_boards(tmp_path):
    folder = tmp_path / "s30mlm3"
    folder.mkdir()
    for r in range(2):
        _write2(folder, r)
    res = tt.judge_any(folder)
    assert res["round"] == 3 and res["C0"]["holds"]   # two boards suffice here
    assert res["figures"] == {"sm_gemm": None, "sm_comm": 1.0, "ce_gemm": pytest.approx(1.05), "ce_comm": pytest.approx(1.1)}


def test_the_committed_judgement_and_the_twin_hold_round_3s_figures():
    # calibration/s30mlm_judgement.json, written by `python -m calibration.tp_traffic --guards OFF ON --json ...`;
    # the live recompute is round 3's figures and C0 from its records (the published rows under both settings cost
    # ~10 s: the JSON holds them)
    from pathlib import Path

    from twin.training import step
    cards = read_json(Path(tt.__file__).resolve().parent / "s30mlm_judgement.json")["cards"]
    judged = next(c for c in cards if c["round"] == 3)
    live = tt.judge_any(next(f for f in tt.fresh_dirs() if f.name == "s30mlm3"))
    assert (live["figures"]["sm_gemm"], live["figures"]["sm_comm"]) == (judged["figures"]["sm_gemm"], 1.0) == (None, 1.0)
    for k in ("ce_gemm", "ce_comm"):
        assert live["figures"][k] == pytest.approx(judged["figures"][k], rel=1e-12)
    assert live["C0"]["holds"]
    c = judged["criteria"]
    assert (c["median_off"], c["within_off"]) == (pytest.approx(tt.OFF_MEDIAN, abs=5e-5), tt.OFF_WITHIN)
    assert c["C1"] and c["C2"] and c["C3"] and judged["guards"]["G1"] and judged["adopt"]
    # rounds 1 and 2 gave no verdict (C0); the same records under round 2's four figures fail C2
    assert not any(x.get("adopt") for x in cards if x["round"] != 3)
    assert not judged["round2_reading"]["criteria"]["C2"]
    assert step.ADOPT_TP_TRAFFIC_MEASURED is judged["adopt"]
    assert (step.TE_SM_GEMM_SLOWDOWN, step.TE_SM_COMM_SLOWDOWN) == (None, 1.0)
    assert step.TE_CE_GEMM_SLOWDOWN == pytest.approx(live["figures"]["ce_gemm"], rel=1e-12)
    assert step.TE_CE_COMM_SLOWDOWN == live["figures"]["ce_comm"] == 1.0
