"""benchmarks/mlm_dp_bound.py (s17mlm): the lower bound on a one-stage Megatron row's step from the
data-parallel traffic core_r0.8.0 cannot hide, and the twin's simulated step against it."""

import importlib.util
from pathlib import Path

import pytest

from calibration import published_runs as pr


def _bound_module():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mlm_dp_bound.py"
    spec = importlib.util.spec_from_file_location("mlm_dp_bound", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bound_is_the_gather_then_the_compute_then_the_reduce_scatter():
    b = _bound_module()
    # 4 micro-batches: the first forward waits for the gather (0.168 > 0.058), three (F + B) pairs,
    # then the last backward beside the reduce-scatter, which is longer: 0.168 + 0.597 + 0.335
    assert b.dp_bound_s(0.058, 0.141, 4, 0.168, 0.335) == pytest.approx(1.100)
    # one micro-batch whose forward outlasts the gather and backward the reduce-scatter: its compute
    assert b.dp_bound_s(0.230, 0.526, 1, 0.168, 0.335) == pytest.approx(0.756)
    # the memset before the gather and a compute scale of 2 (F 0.116, B 0.282)
    assert b.dp_bound_s(0.058, 0.141, 4, 0.168, 0.335, 2.0, 0.005) == pytest.approx(0.005 + 0.168 + 3 * 0.398 + 0.335)


def test_the_speed_to_reach_a_step_inverts_the_bound():
    b = _bound_module()
    s = b.speed_to_reach(0.058, 0.141, 4, 0.168, 0.335, 0.9)
    assert b.dp_bound_s(0.058, 0.141, 4, 0.168, 0.335, s) == pytest.approx(0.9, rel=1e-9)
    # below the communication alone no compute speed reaches the step
    assert b.speed_to_reach(0.058, 0.141, 4, 0.168, 0.335, 0.4) == 0.0


@pytest.mark.parametrize("row_id", ["mlm-gpt-16b", "mlm-gpt-32b"])
def test_the_twin_s_step_respects_the_bound_its_own_costs_give(row_id, monkeypatch):
    """The simulator may not hide more of the parameter gather or the reduce-scatter than the code
    allows (the gather chained into the first forward, the reduce-scatter in the last backward); at
    one sequence a micro-batch (the rows' reading before s28mlm's, whose four sequences make one
    micro-batch a step: tests/calibration/test_mlm_sc21_micro_batch.py)."""
    monkeypatch.setattr(pr, "ADOPT_MLM_SC21_MICRO_BATCH", False)
    run = next(r for r in pr.load_runs()[0] if r.id == row_id)
    r = _bound_module().row_bound(run)
    assert r["m"] == 4
    assert r["bound_s"] <= r["step_s"] + 1e-9
    assert r["rs_s"] > r["bwd_s"]   # the reduce-scatter outlasts a backward at one sequence a micro-batch
