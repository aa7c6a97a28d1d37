"""s13pp's candidate host terms (docs/notes/s13pp_rule.md; flags in calibration.pipeline, off unless
adopted): F, a GPU's first op of a step issued at `first_op` times the host rate of its later
forwards of the same stage (first_op_ratios), and R, the forwards' host rate solved per stage role
(first / middle / last). On synthetic host marks and on the committed 4xH100 records."""

from pathlib import Path

import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration.fit import PROFILES_DIR
from calibration.validate import load_fitted_profile
from calibration.whole_step import with_measured_collectives

FOLDER = Path(__file__).resolve().parents[2] / "calibration/measurements/h100x4"
# the s9ep records the terms were measured on (h100x4/ until s13pp4 replaced them with the 4xH100 run of
# 2026-11-27 00:18, whose own host marks are the validation folder's since)
S9EP = FOLDER / "s9ep_20261126_1206"


def _marks(first_host_s: float, lead_first_s: float = 0.0) -> pd.DataFrame:
    """One 1F1B step of PP2 (4 micro-batches) on rank 0: forwards of stage 0, the first one's host
    interval `first_host_s`, the later ones 10 ms; a backward between them."""
    rows = []
    t = 0.0
    for k, (kind, mb, host_s) in enumerate([("F", 0, first_host_s), ("F", 1, 0.010), ("BW", 0, 0.02),
                                            ("F", 2, 0.010), ("F", 3, 0.012)]):
        lead = lead_first_s if k == 0 else 0.0
        rows.append(dict(model="m", schedule="1f1b", pp=2, ep=1, num_microbatches=4, micro_batch_seqs=1,
                         seq_len=16, precision="bf16", rep=0, rank=0, op_index=k, kind=kind, microbatch=mb,
                         chunk=0, host_start_s=t, host_end_s=t + host_s, start_s=t + lead,
                         end_s=t + lead + host_s, split="fit"))
        t += host_s + 0.001
    return pd.DataFrame(rows)


def test_first_op_ratio_is_the_first_forward_over_the_later_ones_of_its_stage():
    # the later forwards' median host interval is 10 ms: a first one of 12 ms gives 1.2
    assert pipe.first_op_ratios(_marks(0.012)) == [pytest.approx(1.2)]
    # a first op the host began well ahead of the GPU times a queue, not the issue: no ratio
    assert pipe.first_op_ratios(_marks(0.012, lead_first_s=0.01)) == []
    # EP-only steps (one stage) give none: the term is the pipeline's
    assert pipe.first_op_ratios(_marks(0.012).assign(pp=1)) == []


def test_stage_roles():
    assert [pipe.stage_role(s, 4) for s in range(4)] == ["first", "middle", "middle", "last"]
    assert [pipe.stage_role(s, 2) for s in range(2)] == ["first", "last"]


def _rates(monkeypatch, first: bool, role: bool) -> dict:
    monkeypatch.setattr(pipe, "ADOPT_FIRST_OP_HOST", first)
    monkeypatch.setattr(pipe, "ADOPT_STAGE_ROLE_HOST_RATE", role)
    prof, _ = load_fitted_profile("h100", None, PROFILES_DIR)
    prof = with_measured_collectives(prof, S9EP)
    return pipe.host_rates(pipe.host_marks(S9EP), S9EP, "h100", prof, pipe.measured_accumulate(S9EP, "h100"))


def test_terms_enter_the_rates_only_when_adopted(monkeypatch):
    off = _rates(monkeypatch, False, False)
    assert "first_op" not in off and not any("@" in k for k in off)
    on = _rates(monkeypatch, True, True)
    assert {k: v for k, v in on.items() if k in off} == pytest.approx(off)
    # 4xH100 (s9ep): the first forward of a step issues slower than the later ones; the middle
    # stages' forwards (DualPipeV's rank 1) faster than the embedding stage's
    assert on["first_op"] > 1.0
    assert {"fwd@first", "fwd@middle", "fwd@last"} <= set(on)
    assert on["fwd@middle"] < on["fwd@first"]


def test_first_op_factor_lengthens_only_a_host_paced_first_op(monkeypatch):
    """The factor acts on each rank's first op: 1F1B stage 0's first forward (host level with the
    GPU after the barrier) grows, stage 1 (waiting for its input) starts later and idles more."""
    prof, _ = load_fitted_profile("h100", None, PROFILES_DIR)
    steps, _ = pipe.load(S9EP)
    row = steps[(steps["schedule"] == "1f1b") & (steps["num_microbatches"] == 4)].iloc[0]
    gpu = pipe.gpu_spec("h100")
    host = {"fwd": 30e-6, "bwd": 30e-6}
    base, _, _ = pipe.simulate_row(row, gpu, prof, None, host)
    slow, _, _ = pipe.simulate_row(row, gpu, prof, None, {**host, "first_op": 1.2})

    def first_span(result, rank):
        return min((s for s in result.op_spans if s[0] == rank), key=lambda s: s[2])

    b0, s0 = first_span(base, 0), first_span(slow, 0)
    assert s0[3] - s0[2] > b0[3] - b0[2]
    assert first_span(slow, 1)[2] > first_span(base, 1)[2]
    assert slow.idle_s[1] > base.idle_s[1]


def test_pinned_rule_reads_completeness_and_spread_from_the_records_alone():
    """Rule P (docs/notes/s13pp_rule.md) on the s10pp diagnostic run of 4xH100: its pinned part ran
    DualPipe and 1F1B at 8 on 1 and 3 timed steps and no fitting configuration, so it is incomplete
    (not adopted) whatever its spread; the spreads are each part's per-GPU max - min idle over its
    steps, median over GPUs and shared configurations."""
    folder = FOLDER / "s10pp_20261126_1439"
    got = pipe.pinned_rule(folder, folder / "pinned")
    assert got["shared"] == ["dualpipe n8", "1f1b n8"]
    assert got["complete"] is False and got["adopt"] is False
    _, ops = pipe.load(folder)
    steps, _ = pipe.load(folder)
    spreads = []
    for s in ("dualpipe", "1f1b"):
        row = steps[(steps["schedule"] == s) & (steps["num_microbatches"] == 8)].iloc[0]
        spreads += [max(v) - min(v) for v in pipe.measured_idle_by_rep_s(pipe.ops_of(row, ops)).values()]
    assert got["spread_unpinned_s"] == pytest.approx(float(pd.Series(spreads).median()))
    assert got["reproducible"] == (got["spread_pinned_s"] <= 0.5 * got["spread_unpinned_s"])


def test_committed_4xh200_layout_follows_rule_p():
    """h200x4/ holds the unpinned part of the s13pp run as validation records and its pinned part
    beside it: rule P did not adopt the pinned part (complete, but its per-GPU idle spread was not
    at most half the unpinned one's)."""
    folder = FOLDER.parent / "h200x4"
    got = pipe.pinned_rule(folder, folder / "pinned")
    assert got["complete"] is True
    assert got["adopt"] is False and got["spread_pinned_s"] > 0.5 * got["spread_unpinned_s"]
