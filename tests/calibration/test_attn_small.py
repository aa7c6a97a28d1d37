"""The attention curve's tail term (SeqCurve.rows_half, s12mla), when the fit takes it on
(calibration.fit.seq_fields), and calibration.attn_small's comparison pieces and adoption rule."""

import dataclasses
import json

import pandas as pd
import pytest

from calibration import attn_small as ats
from calibration.fit import ROWS_SPAN_MIN, SEQ_FIELDS, seq_fields
from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import SeqCurve, default_profile, profile_from_json
from twin.core.specs import get_gpu


def _attn(batch, seq, heads):
    return Op("attn_core", OpKind.ATTENTION, "attn", batch=batch, seq_len=seq, heads=heads, qk_dim=192, v_dim=128,
              causal=True, precision="bf16")


def test_tail_term_slows_calls_of_few_head_rows_only():
    c = SeqCurve(0.6, 500.0, 20000.0)
    assert c.eff(4096) == pytest.approx(SeqCurve(0.6, 500.0).eff(4096))   # no head-rows given: a large call
    assert c.eff(4096, 16 * 4096) < c.eff(4096, 64 * 4096) < c.eff(4096, 1024 * 4096) < SeqCurve(0.6, 500.0).eff(4096)
    gpu, base = get_gpu("h100"), default_profile()
    tail = dataclasses.replace(base, attention={d: dataclasses.replace(c, rows_half=20000.0) for d, c in base.attention.items()})
    for d in ("fwd", "bwd"):
        # without the term, time per batch is the same at batch 1 and 4; with it, batch 1 is slower per batch
        assert compute.attention_time_s(_attn(4, 4096, 16), d, gpu, base) == pytest.approx(
            4 * compute.attention_time_s(_attn(1, 4096, 16), d, gpu, base) - 3 * base.launch_s)
        one = compute.attention_time_s(_attn(1, 4096, 16), d, gpu, tail) - tail.launch_s
        four = compute.attention_time_s(_attn(4, 4096, 16), d, gpu, tail) - tail.launch_s
        assert one > four / 4 * 1.1


def test_tail_term_survives_json_and_old_profiles_read_as_without_it():
    prof = default_profile()
    prof = dataclasses.replace(prof, attention={"fwd": SeqCurve(0.6, 500.0, 1234.0), "bwd": SeqCurve(0.5, 900.0)})
    back = profile_from_json(json.loads(json.dumps(prof.to_json())))
    assert back.attention["fwd"].rows_half == 1234.0 and back.attention["bwd"].rows_half == 0.0
    data = prof.to_json()
    data["attention"] = {d: {"e_max": c.e_max, "s_half": c.s_half} for d, c in prof.attention.items()}
    assert profile_from_json(data).attention["fwd"].rows_half == 0.0
    # the FA2 curves and the sustained-load curves keep the term
    assert back.with_attention_kernel("fa2").attention["fwd"].rows_half == 1234.0
    assert back.under_sustained_load().attention["fwd"].rows_half == 1234.0


def _attn_rows(shapes):
    return pd.DataFrame([dict(bench="attn_fwd", batch=b, seq_len=s, num_heads=h) for h, b, s in shapes])


def test_fit_takes_the_tail_term_only_where_head_rows_span_widely():
    first_grid = [(16, 16384 // s, s) for s in (1024, 2048, 3072, 6144, 8192)] + \
                 [(128, max(1, 8192 // s), s) for s in (1024, 2048, 3072, 8192, 16384)]
    assert seq_fields(_attn_rows(first_grid)) == SEQ_FIELDS
    small = first_grid + [(16, 1, 2048), (16, 2, 1024)]
    rows = _attn_rows(small)
    assert (rows.batch * rows.num_heads * rows.seq_len).agg(["max", "min"]).pipe(lambda m: m["max"] / m["min"]) >= ROWS_SPAN_MIN
    assert seq_fields(rows) == (*SEQ_FIELDS, "rows_half")
    assert seq_fields(_attn_rows(small[:3] + [(16, 1, 2048)])) == SEQ_FIELDS   # too few points for three


def test_consistency_and_layout_pair_the_same_shapes():
    base = dict(qk_head_dim=192, v_head_dim=128)
    old = pd.DataFrame([dict(bench="attn_bwd", batch=4, seq_len=4096, num_heads=16, time_s=2.0e-3, **base),
                        dict(bench="attn_fwd", batch=16, seq_len=1024, num_heads=16, time_s=2.0e-4, **base)])
    new = pd.DataFrame([dict(bench="attn_bwd", batch=4, seq_len=4096, num_heads=16, time_s=2.1e-3, **base),
                        dict(bench="attn_bwd", batch=1, seq_len=4096, num_heads=16, time_s=6.2e-4, **base)])
    both = ats.consistency(new, old)
    assert len(both) == 1 and both.ratio.iloc[0] == pytest.approx(1.05)
    lay = pd.DataFrame([dict(bench="attn_bwd", batch=1, seq_len=4096, num_heads=16, time_s=6.4e-4, layout="bshd_mla", **base)])
    r = ats.layout_ratios(lay, new)
    assert len(r) == 1 and r.ratio.iloc[0] == pytest.approx(6.4 / 6.2)


def test_adoption_rule():
    before = {"kernels": (0.0283, 0.0807), "mla_layer": (0.031, 0.152), "moe_layer": (0.028, 0.071),
              "decode": (0.033, 0.092)}
    good = {"kernels": (0.0280, 0.0800), "mla_layer": (0.030, 0.09), "moe_layer": (0.03, 0.08), "decode": (0.033, 0.092)}
    assert ats.judge(before, good, "h100", consistent=True) == []
    assert ats.judge(before, good, "h100", consistent=False)
    assert ats.judge(before, {**good, "kernels": (0.0284, 0.0800)}, "h100", True)
    assert ats.judge(before, {**good, "moe_layer": (0.03, 0.101)}, "h100", True)
    assert ats.judge(before, {**good, "mla_layer": (0.02, 0.153)}, "h100", True)


def test_append_rows_keeps_the_committed_bytes(tmp_path):
    dst, src = tmp_path / "attention.csv", tmp_path / "new.csv"
    dst.write_text("bench,time_s\nattn_fwd,4.29497e+10\n")
    src.write_text("bench,time_s\nattn_bwd,0.000141411\n")
    ats.append_rows(src, dst)
    assert dst.read_text() == "bench,time_s\nattn_fwd,4.29497e+10\nattn_bwd,0.000141411\n"
    src.write_text("bench,other\nx,1\n")
    with pytest.raises(ValueError):
        ats.append_rows(src, dst)


def _full_round(core, small, scale=1.0):
    """An S12MLA_FULL=1 attention.csv frame: attn_small's rows, then attn_first's (the core shapes)."""
    rows = [dict(bench=b, batch=bt, seq_len=s, num_heads=h, qk_head_dim=192, v_head_dim=128, time_s=t * scale)
            for (h, bt, s, t) in small + core for b in ("attn_fwd", "attn_bwd")]
    return pd.DataFrame(rows)


def test_second_rule_splits_rounds_and_checks_repeatability():
    core = [(16, 4, 4096, 1e-3), (128, 1, 8192, 2e-3)]
    small = [(16, 1, 4096, 3e-4)]
    r1 = _full_round(core, small)
    shapes = ats.core_shapes(_full_round(core, []))
    small1, first1 = ats.split_rounds(r1, shapes)
    assert len(small1) == 2 and len(first1) == 4 and set(first1["num_heads"]) == {16, 128}
    with pytest.raises(ValueError):
        ats.split_rounds(_full_round(core[:1], small), shapes)      # attn_first cut short
    assert ats.repeatability(r1, _full_round(core, small, 1.01))["repeatable"]
    far = ats.repeatability(r1, _full_round(core, small, 1.05))
    assert not far["repeatable"] and far["median_abs"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        ats.repeatability(r1, r1.iloc[::-1].reset_index(drop=True))


def test_second_rule_replaces_only_the_core_lines():
    committed = "bench,x\nattn_fwd,1\nmla_layer_fwd,2\nattn_bwd,3\nmla_layer_bwd,4"
    campaign = "bench,x\nattn_fwd,5\nattn_bwd,6\n"
    assert ats.replace_core_lines(committed, campaign) == "bench,x\nmla_layer_fwd,2\nmla_layer_bwd,4\nattn_fwd,5\nattn_bwd,6\n"
    with pytest.raises(ValueError):
        ats.replace_core_lines(committed, "bench,y\nattn_fwd,5\n")
