"""calibration.dense_dropout (s11drop): attention dropout's measured slowdown and the block check,
on small hand-made records in the campaign's columns."""

import csv
import json

import pytest

from calibration import dense_dropout as dd
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS

SHAPE = dict(block="attention", model="megatron-gpt-1.7b", tp=1, batch=1, seq_len=4096, hidden_size=2048,
             num_heads=16, head_dim=128, ffn=8192, precision="bf16", split="fit")


def _write(root, rows):
    d = root / "h100"
    d.mkdir(parents=True)
    cols = SHAPE_COLS["dense_dropout"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    with (d / "dense_dropout.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _attn(backend, ran, p, fwd_s, fwd_bwd_s, **kw):
    base = {**SHAPE, **kw, "sdpa_backend": backend, "sdpa_ran": ran, "attention_dropout": p, "hidden_dropout": 0}
    return [{**base, "bench": "attn_fwd", "time_s": fwd_s}, {**base, "bench": "attn_fwd_bwd", "time_s": fwd_bwd_s}]


def test_ratios_per_kernel_from_the_fit_rows_where_the_backend_really_ran(tmp_path):
    rows = (_attn("flash", "flash", 0, 1e-3, 4e-3) + _attn("flash", "flash", 0.1, 1.5e-3, 5.5e-3)
            # cuDNN forced but torch could not run it with dropout: no row at 0.1 (not run) -> no entry
            + _attn("cudnn", "cudnn", 0, 0.6e-3, 2.4e-3)
            # a held-out shape never enters the fit
            + _attn("flash", "flash", 0, 1e-3, 4e-3, model="megatron-gpt-7.1b", split="holdout")
            + _attn("flash", "flash", 0.1, 9e-3, 9e-2, model="megatron-gpt-7.1b", split="holdout"))
    _write(tmp_path, rows)
    terms = dd.attention_dropout_terms("h100", tmp_path)
    assert set(terms) == {"fa2"}
    assert terms["fa2"]["fwd"] == pytest.approx(1.5)
    assert terms["fa2"]["bwd"] == pytest.approx((5.5e-3 - 1.5e-3) / (4e-3 - 1e-3))


def test_write_profile_terms_keeps_every_other_key(tmp_path):
    _write(tmp_path, _attn("cudnn", "cudnn", 0, 1e-3, 4e-3) + _attn("cudnn", "cudnn", 0.1, 1.2e-3, 4.6e-3))
    prof_dir = tmp_path / "profiles"
    prof_dir.mkdir()
    (prof_dir / "h100.json").write_text(json.dumps({"gpu": "h100", "eager": {}, "provenance": {"x": 1}}))
    terms = dd.write_profile_terms("h100", tmp_path, prof_dir)
    data = json.loads((prof_dir / "h100.json").read_text())
    assert list(data) == ["gpu", "eager", "attention_dropout", "attention_dropout_prob_s", "provenance"]
    assert data["attention_dropout"] == terms and terms["cudnn"]["fwd"] == pytest.approx(1.2)
    # s28mlm2: the same rows as seconds a drawn probability (16 heads x 4096^2 / 2 causal pairs)
    n = 16 * 4096 * 4096 / 2
    assert data["attention_dropout_prob_s"]["cudnn"]["fwd"] == pytest.approx(0.2e-3 / n)
    assert data["attention_dropout_prob_s"]["cudnn"]["bwd"] == pytest.approx(((4.6e-3 - 1.2e-3) - (4e-3 - 1e-3)) / n)


def test_block_check_sets_the_measured_cost_beside_the_twins(tmp_path):
    blk = {**SHAPE, "block": "gpt", "bench": "block_fwd_bwd", "sdpa_backend": "auto"}
    rows = [{**blk, "sdpa_ran": "flash", "attention_dropout": 0, "hidden_dropout": 0, "time_s": 3.0e-3},
            {**blk, "sdpa_ran": "flash", "attention_dropout": 0.1, "hidden_dropout": 0.1, "time_s": 3.6e-3},
            {**blk, "sdpa_ran": "flash", "attention_dropout": 0, "hidden_dropout": 0.1, "time_s": 3.1e-3}]
    rows += _attn("flash", "flash", 0, 1e-3, 4e-3) + _attn("flash", "flash", 0.1, 1.5e-3, 5.5e-3)
    _write(tmp_path, rows)
    prof = dd.fitted_profile("h100")
    prof = type(prof)(**{**prof.__dict__, "attention_dropout": dd.attention_dropout_terms("h100", tmp_path)})
    (rec,) = dd.check("h100", tmp_path, prof)
    assert rec["measured_dropout_s"] == pytest.approx(0.6e-3)
    assert rec["measured_hidden_only_s"] == pytest.approx(0.1e-3)
    assert rec["twin_attention_s"] > 0 and rec["twin_hidden_s"] > 0
    assert rec["twin_dropout_s"] == pytest.approx(rec["twin_attention_s"] + rec["twin_hidden_s"])
