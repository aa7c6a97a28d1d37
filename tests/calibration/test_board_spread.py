"""calibration.board_spread (docs/notes/s29mlm_rule.md) on made-up boards whose figures are worked out here: the
held window choice (elapsed >= 15 s), the cv (ddof 1) and the rule's C0; and C1-C3 from given errors."""

import csv
import math

import pytest

from calibration import board_spread as bs
from calibration.records_io import read_json
from real.bench.board_spread import COLUMNS


def _write(folder, board, held_ms, power_w, mlm_held_ms):
    # each case: a burst row, then held windows at 5, 10 (dropped: < 15 s) and 20, 25 s; flops 1e12 a call
    with (folder / f"board_spread_{board}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for case, t_ms in (("ref", held_ms), ("mlm", mlm_held_ms)):
            base = {"campaign": "s29mlm", "board": board, "case": case, "flops": 1e12, "gpu_name": "NVIDIA H200",
                    "power_limit_w": 700.0, "sm_clock_mhz": 1500.0}
            w.writerow({**base, "phase": "burst", "window": 0, "elapsed_s": 0.0, "time_s": 1e-3, "power_w": 300.0})
            for i, el in enumerate((5.0, 10.0, 20.0, 25.0), start=1):
                t = 9e-3 if el < 15 else t_ms * 1e-3   # the early windows would spoil the figure if kept
                w.writerow({**base, "phase": "held", "window": i, "elapsed_s": el, "time_s": t, "power_w": power_w})


def test_cv_and_c0_from_the_boards_held_windows(tmp_path):
    # held times 1.00, 1.02, 0.98 ms -> rates 1000, 980.4, 1020.4 TF/s: cv = stdev / mean
    for b, t, m in (("gpu0", 1.00, 2.00), ("gpu1", 1.02, 2.03), ("gpu2", 0.98, 1.97)):
        _write(tmp_path, b, t, 698.0, m)
    res = bs.judge(tmp_path)
    rates = [1e12 / (t * 1e-3) for t in (1.00, 1.02, 0.98)]
    want = math.sqrt(sum((r - sum(rates) / 3) ** 2 for r in rates) / 2) / (sum(rates) / 3)
    assert res["board_held_rate_cv"] == pytest.approx(want, rel=1e-9)
    assert res["per_board"]["gpu0"]["ref"]["held_windows"] == 2
    assert res["C0"]["boards"] == 3 and res["C0"]["all_capped"] and res["C0"]["holds"]


def test_c0_fails_on_two_boards_or_an_uncapped_board(tmp_path):
    _write(tmp_path, "gpu0", 1.00, 698.0, 2.00)
    _write(tmp_path, "gpu1", 1.02, 600.0, 2.03)   # 600 W < 0.95 x 700 W: the cap did not hold
    c0 = bs.judge(tmp_path)["C0"]
    assert not c0["enough_boards"] and not c0["all_capped"] and not c0["holds"]


def test_criteria_from_errors():
    off = {k: 0.12 for k in bs.NAMED_ROWS} | {"a": -0.09, "b": 0.05}
    on = {k: 0.09 for k in bs.NAMED_ROWS} | {"a": -0.11, "b": 0.03}
    c = bs.criteria({"off": off, "on": on})
    assert c["C2_left_10pct"] == ["a"] and not c["C2"] and c["C3"]


def test_guards_tell_tensor_counts_from_the_timing_derived_queue():
    def validation(act, queue, fits=True, other=1):
        row = {"id": "r", "memory_fits": fits, "memory_breakdown_bytes": {"activations": act, "grad_queue": queue}}
        return {"published_runs": {"rows": [row]}, "gpus": other, "inputs": {"git_commit": str(other)}}
    off = validation(10.0, 2.0)
    assert bs.guards(off, validation(10.0, 1.0))["G1"]                     # only the queue moved: allowed
    assert bs.guards(off, validation(11.0, 2.0))["tensor_counts_moved"] == ["r"]
    assert not bs.guards(off, validation(10.0, 2.0, fits=False))["G1"]
    assert bs.guards(off, validation(10.0, 2.0, other=2))["sections_changed"] == ["gpus"]   # inputs ignored


def test_the_committed_judgement_and_the_twin_hold_the_records_figure():
    # calibration/s29mlm_judgement.json, written by `python -m calibration.board_spread --guards OFF ON --json ...`;
    # the live recompute is the spread only (the published rows under both settings cost ~10 s: the JSON holds them)
    from pathlib import Path

    from twin.costs import board_pace
    from twin.training import step
    judged = read_json(Path(bs.__file__).resolve().parent / "s29mlm_judgement.json")["cards"][0]
    live = bs.judge(bs.fresh_dirs()[0])
    assert live["board_held_rate_cv"] == pytest.approx(judged["board_held_rate_cv"], rel=1e-12)
    assert board_pace.BOARD_HELD_RATE_CV == pytest.approx(live["board_held_rate_cv"], rel=1e-12)
    assert live["C0"]["holds"] and judged["guards"]["G1"]
    c = judged["criteria"]
    assert (c["median_off"], c["within_off"]) == (pytest.approx(bs.OFF_MEDIAN, abs=5e-5), bs.OFF_WITHIN)
    assert c["C1"] and c["C2"] and c["C3"] and judged["adopt"]
    assert step.ADOPT_SLOWEST_BOARD_PACE is judged["adopt"]
