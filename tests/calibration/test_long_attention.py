"""calibration/long_attention.py: the twin's cost of a long_attn row (campaign s24long) and the rule's class
verdicts (docs/notes/s24long_rule.md) on hand-made rows."""

import math
import re

import pandas as pd
import pytest

from calibration import long_attention as la
from calibration.predict import gpu_spec
from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import load_profile


@pytest.fixture(scope="module")
def h100():
    return gpu_spec("h100"), load_profile("h100")


def _row(**kw):
    base = dict(model="405b-tp8", num_heads=16, num_kv_heads=1, head_dim=128, q_len=4096, kv_len=65536,
                mask="lower_right", phase="fwd_bwd", split="fit")
    return pd.Series({**base, **kw})


def test_row_is_the_training_steps_op_plus_repeat_kv(h100):
    gpu, profile = h100
    fa2 = profile.with_attention_kernel("fa2")
    op = Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=4096, heads=16, qk_dim=128, v_dim=128,
            causal=True, precision="bf16", kv_len=65536)
    # repeat_kv: 2 tensors x 65,536 keys x (1 + 16) heads x 128 x 2 B, forward and backward
    copy = 2 * compute.memory_time_s(2 * 65536 * 17 * 128 * 2, gpu, fa2)
    want = compute.attention_time_s(op, "fwd", gpu, fa2) + compute.attention_time_s(op, "bwd", gpu, fa2) + copy
    assert la.row_s(_row(), gpu, fa2) == pytest.approx(want, rel=1e-12)
    # without repeated heads no copy; a non-causal call costs its whole rectangle (more pairs than the masked one)
    assert la.row_s(_row(num_kv_heads=16), gpu, fa2) == pytest.approx(want - copy, rel=1e-12)
    assert la.row_s(_row(mask="none"), gpu, fa2) > la.row_s(_row(), gpu, fa2)
    # a batch of 2 is one Op of batch 2 and twice the copy
    op2 = Op("attn_core", OpKind.ATTENTION, "attn", batch=2, seq_len=4096, heads=16, qk_dim=128, v_dim=128,
             causal=True, precision="bf16", kv_len=65536)
    want2 = (compute.attention_time_s(op2, "fwd", gpu, fa2) + compute.attention_time_s(op2, "bwd", gpu, fa2)
             + 2 * compute.memory_time_s(2 * 2 * 65536 * 17 * 128 * 2, gpu, fa2))
    assert la.row_s(_row(batch=2), gpu, fa2) == pytest.approx(want2, rel=1e-12)


def test_call_classes():
    assert la.call_class(_row()) == "few_queries"                                    # 65,536 >= 8 x 4,096
    assert la.call_class(_row(q_len=32768, kv_len=16384, mask="none")) == "few_heads"  # 16 < 32 heads
    assert la.call_class(_row(num_heads=32, num_kv_heads=8, q_len=32768, kv_len=32768, mask="causal")) == ""


def _cmp(fit_ratios, held_ratios):
    """Rows of one class whose measured / twin ratios are given (twin 1 s each)."""
    rows = [dict(phase="fwd_bwd", cls="few_heads", split="fit", time_s=r, twin_s=1.0) for r in fit_ratios]
    rows += [dict(phase="fwd_bwd", cls="few_heads", split="holdout", time_s=r, twin_s=1.0) for r in held_ratios]
    df = pd.DataFrame(rows)
    df["err"] = df["twin_s"] / df["time_s"] - 1
    return df


def test_class_verdict_adopts_a_shift_that_predicts_the_held_out_rows():
    v = la.class_verdict(_cmp([1.10, 1.12], [1.09, 1.13]), "few_heads")
    assert v["ratio"] == pytest.approx(1.11) and v["shift"] and v["held_within"] and v["held_better"] and v["adopt"]
    # held out under 1.11 / 1.09 - 1 = +1.8% and 1.11 / 1.13 - 1 = -1.8%
    assert v["held_err_after"] == pytest.approx([1.11 / 1.09 - 1, 1.11 / 1.13 - 1])


def test_class_verdict_refuses_mixed_sides_small_shifts_and_missed_held_out_rows():
    assert not la.class_verdict(_cmp([1.20, 0.95], [1.1]), "few_heads")["adopt"]      # fitting rows on both sides
    assert not la.class_verdict(_cmp([1.03, 1.04], [1.03]), "few_heads")["adopt"]     # within 5%: no shift
    assert not la.class_verdict(_cmp([1.10, 1.12], [1.30]), "few_heads")["adopt"]     # held out +17% off after
    assert la.class_verdict(_cmp([], [1.1]), "few_heads") == {"class": "few_heads", "fit_rows": 0, "adopt": False,
                                                                "why": "no fitting row"}


def test_case_rows_two_phases_a_case():
    df = la.case_rows([("t", 4, 1, 16, 64, 32, "none", "x", "fit", 2)])
    assert list(df["phase"]) == ["fwd", "fwd_bwd"] and set(df["split"]) == {"fit"} and set(df["batch"]) == {2}


def test_main_refuses_an_unknown_gpu(tmp_path, capsys):
    assert la.main([str(tmp_path), "--gpu", "h999"]) == 2
    assert re.search(r"--gpu 'h999': no committed profile h999.json \(one of: .*h100", capsys.readouterr().err)


def test_main_names_a_missing_file(tmp_path, capsys):
    assert la.main([str(tmp_path)]) == 2
    assert "long_attn.csv" in capsys.readouterr().err


def test_tie_error():
    df = pd.DataFrame([dict(model="8b", q_len=32768, mask="causal", phase="fwd_bwd", time_s=0.098)])
    assert la.tie_error(df, 0.0933056) == pytest.approx(0.098 / 0.0933056 - 1)
    assert la.tie_error(df.iloc[:0], 0.0933056) is None
    assert not math.isnan(la.CP_CHUNKS_8B_32K_FWD_BWD_S)


def test_the_adopted_switches_follow_the_committed_records():
    """docs/notes/s24long_rule.md judged on run 1 (calibration/measurements/h100/long_attn.csv): few_queries
    adopted at its fitting ratio, few_heads not (no shift)."""
    cmp = la.compare(la.load_rows("calibration/measurements/h100"), gpu_spec("h100"), la.committed_profile("h100"))
    assert la.tie_error(cmp, la.CP_CHUNKS_8B_32K_FWD_BWD_S) == pytest.approx(0.005, abs=0.005)   # T0 holds
    fq, fh = la.class_verdict(cmp, "few_queries"), la.class_verdict(cmp, "few_heads")
    assert fq["adopt"] and compute.ADOPT_FA2_FEW_QUERIES_FACTOR
    assert compute.FA2_SHAPE_TIME_FACTOR["few_queries"] == pytest.approx(fq["ratio"], abs=5e-4)
    assert not fh["adopt"] and not compute.ADOPT_FA2_FEW_HEADS_FACTOR
    assert compute.FA2_SHAPE_TIME_FACTOR["few_heads"] == 1.0


def test_run_2_reproduces_the_few_queries_shift_under_amendment_2():
    """Amendment 2 (docs/notes/s24long_rule.md): run 2 (a fresh H100, calibration/measurements/h100/s24long_run2)
    keeps few_queries on only if its own fitting ratio shifts and its held-out 4K x 68K call is within 5% under run
    1's factor; few_heads judged on run 2 with its batch-16 row: no shift, not adopted."""
    gpu, profile = gpu_spec("h100"), la.committed_profile("h100")
    rows = la.load_rows("calibration/measurements/h100/s24long_run2")
    base, live = la.compare(rows, gpu, profile), la.compare(rows, gpu, profile, shape_factor=True)
    fq = la.class_verdict(base, "few_queries")
    assert fq["shift"]
    held = live[(live["cls"] == "few_queries") & (live["split"] == "holdout") & (live["phase"] == "fwd_bwd")]
    assert len(held) == 1 and abs(float(held["err"].iloc[0])) <= la.HELD_OUT_TOL
    fh = la.class_verdict(base, "few_heads")
    assert not fh["shift"] and not fh["adopt"]
    assert 16 in set(base[base["cls"] == "few_heads"]["batch"])   # criterion (e)'s row is there
