"""torch's fused async-TP ops paying part of their collective beside a long GEMM
(twin.training.step.ADOPT_ATP_FUSED_EXCESS, ATP_FUSED_EXCESS_FRAC; docs/notes/s20tt_rule.md), both
settings, and the fraction's fit from measured fused ops (calibration.async_tp.fused_excess_frac)."""

import statistics

import pandas as pd
import pytest

from calibration import async_tp
from calibration.async_tp import fused_excess_frac, fused_excess_shares
from calibration.predict import gpu_spec
from calibration.records import MEASUREMENTS_DIR
from calibration.records_io import read_csv
from twin.costs.profile import fitted_profile
from twin.training import step as step_mod
from tests.twin.training.test_step_parallel import scenario, step

# TP 4 at 16K tokens a sequence, collectives fused as torch's async TP fuses them
ASYNC = dict(tp=4, sequence_parallel=True, tp_comm_overlap=True, tp_overlap_kind="torch_async_tp")


def _run(monkeypatch, adopt: bool, frac: float, seq_len: int = 16384, **plan):
    monkeypatch.setattr(step_mod, "ADOPT_ATP_FUSED_EXCESS", adopt)
    monkeypatch.setattr(step_mod, "ATP_FUSED_EXCESS_FRAC", frac)
    monkeypatch.setattr(step_mod, "_PREPARED", {})   # costs built under another fraction are kept there
    return step(scenario(seq_len=seq_len, **plan))


def _fused_comm_s(r) -> float:
    # the collectives torch's pass fuses: every all-gather, the forward reduce-scatter
    return sum(r.op_time_s.get(k, 0.0) for k in ("tp_all_gather", "tp_all_gather_bwd", "tp_reduce_scatter"))


def test_off_the_fraction_changes_nothing(monkeypatch):
    base = _run(monkeypatch, False, 0.0, **ASYNC)
    other = _run(monkeypatch, False, 0.5, **ASYNC)
    assert other.step_time_s == base.step_time_s and other.op_time_s == base.op_time_s


def test_on_each_fused_op_pays_at_least_its_share_of_the_collective(monkeypatch):
    base = _run(monkeypatch, False, 0.0, **ASYNC)
    whole = _run(monkeypatch, False, 0.0, tp=4, sequence_parallel=True)   # no overlap: every collective whole
    floor = _run(monkeypatch, True, 0.9, **ASYNC)
    # the premise: the ring model hides part of the fused collectives here (0.64 of them exposed)
    assert _fused_comm_s(base) < 0.9 * _fused_comm_s(whole)
    # on: each fused op exposes max(ring, 0.9 x its collective), so the sum is at least 0.9 x the
    # whole collectives and the ring's exposure, and never more than the collectives whole
    assert _fused_comm_s(floor) >= max(0.9 * _fused_comm_s(whole), _fused_comm_s(base)) * (1 - 1e-9)
    assert _fused_comm_s(floor) <= _fused_comm_s(whole) * (1 + 1e-9)
    # the unfused input-gradient reduce-scatter waits whole either way
    assert floor.op_time_s["tp_reduce_scatter_bwd"] == pytest.approx(base.op_time_s["tp_reduce_scatter_bwd"])
    assert floor.step_time_s > base.step_time_s
    # a zero fraction is the ring model itself
    assert _run(monkeypatch, True, 0.0, **ASYNC).step_time_s == pytest.approx(base.step_time_s, rel=1e-12)


def test_other_overlap_kinds_are_untouched(monkeypatch):
    for kind in ("te_userbuffers", "ideal"):
        plan = {**ASYNC, "tp_overlap_kind": kind}
        assert _run(monkeypatch, True, 0.5, **plan).step_time_s == _run(monkeypatch, False, 0.5, **plan).step_time_s


def _records(rows):
    cols = ["shape_tag", "kind", "op", "world_size", "split", "status", "time_s"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_the_fraction_is_the_median_excess_of_the_fitting_long_gemm_rows():
    # a: all-gather, GEMM 4 ms > collective 1 ms, fused 4.3 ms: 0.3 of the collective beyond the GEMM
    # b: reduce-scatter, GEMM 4 ms, collective 2 ms, reduction 0.5 ms, fused 4.7 ms: (4.7 - 4 - 0.5) / 2 = 0.1
    # c: all-gather whose collective is the longer (left out of the fit), d: a held-out row (left out)
    rows = [("a", "all_gather", op, 2, "fit", "ok", t) for op, t in (("mm", 4.0), ("collective", 1.0), ("fused", 4.3))]
    rows += [("b", "reduce_scatter", op, 2, "fit", "ok", t)
             for op, t in (("mm", 4.0), ("collective", 2.0), ("reduce", 0.5), ("fused", 4.7))]
    rows += [("c", "all_gather", op, 2, "fit", "ok", t) for op, t in (("mm", 1.0), ("collective", 2.0), ("fused", 2.0))]
    rows += [("d", "all_gather", op, 2, "holdout", "ok", t) for op, t in (("mm", 4.0), ("collective", 1.0), ("fused", 5.0))]
    rows += [("e", "all_gather", "fused", 2, "fit", "unavailable", float("nan"))]   # not timed: no row
    recs = _records(rows)
    shares = fused_excess_shares(recs).set_index("shape_tag")
    assert list(shares.index) == ["a", "b", "c", "d"]
    assert shares.loc["a", "excess"] == pytest.approx(0.3) and shares.loc["b", "excess"] == pytest.approx(0.1)
    assert shares.loc["c", "excess"] == pytest.approx(0.5) and not shares.loc["c", "long_gemm"]   # (2 - 1) / 2
    assert fused_excess_frac(recs) == pytest.approx(0.2)   # median of a and b
    assert fused_excess_frac(recs[recs["split"] == "holdout"]) is None


@pytest.mark.parametrize("folder, gpu, gpu_name", [("h100x2", "h100", "NVIDIA H100 80GB HBM3"),
                                                   ("h200x2", "h200", "NVIDIA H200")])
def test_the_committed_rows_bear_the_floor_out(folder, gpu, gpu_name):
    """Campaign s20tt's rows (2xH100: the rule's fit; 2xH200: its check only): the fraction comes
    from the two long-GEMM fitting rows, and on the held-out long-GEMM rows the floor brings the
    twin's excess share nearer the measured one (H1)."""
    recs = read_csv(MEASUREMENTS_DIR / folder / async_tp.S20TT_RECORDS)
    assert set(recs["gpu_name"]) == {gpu_name} and (recs["status"] == "ok").all()
    shares = fused_excess_shares(recs)
    fit = shares[(shares["split"] == "fit") & shares["long_gemm"]]
    assert sorted(fit["shape_tag"]) == ["llama3.1-70b/w1", "llama3.1-70b/w2"]
    f = fused_excess_frac(recs)
    assert 0.0 < f < 1.0
    spec, profile = gpu_spec(gpu), fitted_profile(gpu)
    off, on = [], []
    for r in shares[(shares["split"] == "holdout") & shares["long_gemm"]].itertuples(index=False):
        g = recs[(recs["shape_tag"] == r.shape_tag) & (recs["kind"] == r.kind)].iloc[0]
        shape = (int(g["m"]), int(g["n"]), int(g["k"]), int(g["world_size"]))
        tw = {op: async_tp.predict_op(r.kind, op, *shape, spec, profile) for op in ("mm", "collective", "fused", "reduce")}
        twin_excess = (tw["fused"] - tw["mm"] - (tw["reduce"] if r.kind == "reduce_scatter" else 0.0)) / tw["collective"]
        off.append(abs(r.excess - twin_excess))
        on.append(abs(r.excess - max(twin_excess, f)))
    assert len(off) >= 4 and statistics.median(on) < statistics.median(off)


def test_the_adopted_fraction_is_the_h100_rows_fit():
    """docs/notes/s20tt_rule.md (outcome s21tth): adopted, with f fitted on the H100 rows alone."""
    recs = read_csv(MEASUREMENTS_DIR / "h100x2" / async_tp.S20TT_RECORDS)
    assert step_mod.ADOPT_ATP_FUSED_EXCESS
    assert step_mod.ATP_FUSED_EXCESS_FRAC == pytest.approx(fused_excess_frac(recs), rel=1e-12)
