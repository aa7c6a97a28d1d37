"""s31pub (docs/notes/s31pub_rule.md): the committed judgement of campaign s31pub (the 8B rows' step at 2 x 8,192,
eager / compiled / compiled + Float8, one H200) and a live recompute of its step criteria from the committed records
under the live twin, so neither can go stale (~3 s; the published rows under the candidate are the judge's and
tests/calibration/test_published_runs.py's, not re-run here)."""

import math
from pathlib import Path

from calibration import compiled_step
from calibration import records as rec
from calibration.records_io import read_json
from twin.costs import compute

JUDGEMENT = Path(__file__).resolve().parents[2] / "calibration" / "s31pub_judgement.json"


def test_the_verdict_is_the_rules_and_the_switch_follows_it():
    res = read_json(JUDGEMENT)
    assert res["gpu_name"] == "NVIDIA H200" and res["layers"] == 16
    assert all(res["criteria"][k] for k in ("F1", "F2", "P1", "P2", "P3", "G1", "G2")) and res["adopt"] is True
    assert compute.ADOPT_COMPILED_ELEMENTWISE_EFF is True
    assert math.isclose(res["ratio"], compute.COMPILED_ELEMENTWISE_RATIO, rel_tol=1e-12)
    off, on = res["published_off"]["summary"], res["published_on"]["summary"]
    assert on["median_abs_rel_error"] < 0.05 < off["median_abs_rel_error"]          # 6.97% -> 4.31%
    assert (off["num_within_row_target"], on["num_within_row_target"]) == (25, 27)
    assert res["guards"]["sections_changed"] == ["published_runs"] and not res["guards"]["rows_moved_outside"]


def test_the_step_criteria_recomputed_from_the_records():
    """Live: the measured steps from the committed records, the twin's steps off and on at this tree. The eager step
    is predicted within 1% (it has no compiled block: the switch cannot touch it); the compile gain the twin gives
    off sits above the measured one by more than F1's margin, and on comes closer, as do both compiled steps."""
    res = read_json(JUDGEMENT)
    folder = rec.records_root() / "h200" / "s31pub"
    meas = compiled_step.measured(folder)
    pred = {part: {on: compiled_step.predicted_step_s(row, "h200", 16, on) for on in (False, True)}
            for part, row in compiled_step.PARTS.items()}
    for part in compiled_step.PARTS:
        assert math.isclose(meas[part]["measured_s"], res["steps"][part]["measured_s"], rel_tol=1e-12)
        assert meas[part]["steps_ok"] == [1, 2, 3, 4, 5, 6] and meas[part]["alloc_retries"] == 0
    m = {p: meas[p]["measured_s"] for p in meas}
    assert pred["step_eager"][True] == pred["step_eager"][False]
    assert abs(pred["step_eager"][True] / m["step_eager"] - 1) < 0.01
    gain = {on: pred["step_eager"][on] / pred["step_compile"][on] for on in (False, True)}
    g_meas = m["step_eager"] / m["step_compile"]
    assert g_meas <= gain[False] - compiled_step.F1_MARGIN                              # F1
    assert abs(gain[True] - g_meas) < abs(gain[False] - g_meas)                         # F2, the gain
    for part in ("step_compile", "step_fp8"):                                           # F2, the compiled steps
        assert abs(pred[part][True] / m[part] - 1) < abs(pred[part][False] / m[part] - 1), part
