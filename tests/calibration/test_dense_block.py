"""calibration/dense_block.py: the twin's dense block for what real/dense.py ran, on records written
by hand (shapes of the s8dense campaign, times chosen so the expected figures are worked out)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from calibration import dense_block as db
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from twin.costs import compute
from twin.costs.flops import OpKind
from twin.costs.profile import FA2_OVER_CUDNN, PROFILES, fitted_profile, profile_from_json
from calibration.predict import gpu_spec

LLAMA_8B = dict(block="llama", model="llama3.1-8b", tp=1, hidden_size=4096, num_heads=32, num_kv_heads=8,
                head_dim=128, ffn=14336, vocab=128256, precision="bf16", split="fit", host_s=1e-3)


def _row(**kw):
    cols = SHAPE_COLS["dense_block"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    return {c: kw.get(c, "") for c in cols}


def _attention(backend, bench, t, seq=8192, batch=2):
    return _row(**{**LLAMA_8B, "block": "attention"}, bench=bench, batch=batch, seq_len=seq, sdpa_backend=backend,
                gqa="repeat_kv", compiled="no", time_s=t)


@pytest.fixture
def root(tmp_path):
    rows = [_row(**LLAMA_8B, bench="block_fwd_bwd", batch=2, seq_len=8192, sdpa_backend="flash", gqa="repeat_kv",
                 compiled="no", time_s=0.05),
            _row(**LLAMA_8B, bench="block_fwd", batch=2, seq_len=8192, sdpa_backend="efficient", gqa="repeat_kv",
                 compiled="no", time_s=0.02),
            # cuDNN forward 2 ms, backward 5 - 2 = 3 ms; flash 3 ms and 9 - 3 = 6 ms: 2/3 and 1/2 at 8K
            _attention("flash", "attn_fwd", 3e-3), _attention("flash", "attn_fwd_bwd", 9e-3),
            _attention("cudnn", "attn_fwd", 2e-3), _attention("cudnn", "attn_fwd_bwd", 5e-3),
            # at 16K: 0.5 and 0.5 -> medians 7/12 (fwd) and 1/2 (bwd)
            _attention("flash", "attn_fwd", 4e-3, 16384, 1), _attention("flash", "attn_fwd_bwd", 12e-3, 16384, 1),
            _attention("cudnn", "attn_fwd", 2e-3, 16384, 1), _attention("cudnn", "attn_fwd_bwd", 6e-3, 16384, 1)]
    d = tmp_path / "h100"
    d.mkdir()
    pd.DataFrame(rows).to_csv(d / db.BLOCK_FILE, index=False)
    key = dict(bench="block_fwd_bwd", phase="fwd_bwd", block="llama", model="llama3.1-8b", tp=1, batch=2, seq_len=8192,
               sdpa_backend="flash", gqa="repeat_kv", compiled="no")
    kernels = [{**key, "kernel": "nvjet_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "calls": 7, "time_s": 0.030},
               {**key, "kernel": "flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", "calls": 1, "time_s": 0.008},
               {**key, "kernel": "flash_fwd_kernel", "calls": 1, "time_s": 0.003},
               {**key, "kernel": "void at::native::vectorized_elementwise_kernel<4, ...>", "calls": 40, "time_s": 0.006}]
    pd.DataFrame(kernels).to_csv(d / db.KERNELS_FILE, index=False)
    return tmp_path


def test_kernel_classes_from_names():
    assert db.kernel_class("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_3") == "attention"
    assert db.kernel_class("fmha_cutlassB_bf16_aligned_64x64_k128_sm80") == "attention"
    assert db.kernel_class("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64") == "gemm"
    assert db.kernel_class("nvjet_tst_128x256_64x4_2x1_v_bz_coopB_TNT") == "gemm"
    assert db.kernel_class("void at::native::reduce_kernel<512, 1, ...>") == "elementwise"


def test_measured_fa2_over_cudnn_is_the_median_speed_ratio_per_direction(root):
    df = db.compare("h100", root)
    r = db.fa2_over_cudnn(df)
    assert r["num_shapes"] == 2
    assert r["fwd"] == pytest.approx((2 / 3 + 0.5) / 2) and r["bwd"] == pytest.approx(0.5)
    assert db.fa2_over_cudnn(df, split="holdout") == {}


def test_a_block_record_is_the_twin_ops_of_what_real_ran(root):
    df = db.compare("h100", root)
    blk = df[(df["bench"] == "block_fwd_bwd")].iloc[0]
    # the twin's eager Llama block: every op costed fwd + bwd_input + bwd_weight on the fitted profile with FA2
    spec, prof = gpu_spec("h100"), fitted_profile("h100").with_attention_kernel("fa2")
    row = pd.read_csv(root / "h100" / db.BLOCK_FILE, keep_default_na=False).iloc[0]
    ops = db.record_ops(row)
    # real/dense.py's Llama block: torchtitan's separate wq, wk, wv and w1, w3, their input gradients summed
    assert [op.name for op in ops] == ["attn_norm", "q_proj", "k_proj", "v_proj", "qkv_dgrad_sum", "rope", "repeat_kv",
                                       "attn_core", "o_proj", "residual_add", "ffn_norm", "ffn_gate", "ffn_up",
                                       "ffn_gate_up_dgrad_sum", "swiglu", "ffn_down", "residual_add"]
    assert ops[0].launches == 8   # torchtitan's eager RMSNorm: eight kernels forward (flops.EAGER_ELEMENTWISE)
    want = sum(compute.op_time_s(op, ph, "bf16", spec, prof) for op in ops for ph in ("fwd", "bwd_input", "bwd_weight"))
    assert blk["twin_s"] == pytest.approx(want) and blk["rel_error"] == pytest.approx(want / 0.05 - 1)
    core = next(op for op in ops if op.kind == OpKind.ATTENTION)
    assert blk["twin_attention_s"] == pytest.approx(compute.op_time_s(core, "fwd", "bf16", spec, prof)
                                                    + compute.op_time_s(core, "bwd_input", "bf16", spec, prof))
    # measured components from the kernels; idle = timed - kernel sum
    assert (blk["measured_gemm_s"], blk["measured_attention_s"], blk["measured_elementwise_s"]) == pytest.approx(
        (0.030, 0.011, 0.006))
    assert blk["measured_idle_s"] == pytest.approx(0.05 - 0.047) and blk["kernels"] == 49
    # the memory-efficient kernel has no twin curve: no prediction, not an error
    eff = df[df["sdpa_backend"] == "efficient"].iloc[0]
    assert eff["twin_s"] is None or pd.isna(eff["twin_s"])


def test_a_gpt_block_is_megatron_s_gelu_ffn_and_the_catalog_view_its_swiglu():
    row = pd.Series(dict(bench="block_fwd", block="gpt", model="megatron-gpt-1.7b", tp=1, batch=1, seq_len=4096,
                         hidden_size=2048, num_heads=16, num_kv_heads=16, head_dim=128, ffn=8192, vocab=131072,
                         sdpa_backend="flash", gqa="repeat_kv", compiled="no"))
    names = [op.name for op in db.record_ops(row)]
    assert "rope" not in names and "repeat_kv" not in names and names[-4:] == ["fc1", "gelu", "fc2", "residual_add"]
    cat = db.record_ops(row, catalog=True)
    gate_up = next(op for op in cat if op.name == "ffn_gate_up")
    # 8h/3 = 5461; learned positions as the catalog's Megatron specs hold them (s11drop): no RoPE
    assert (gate_up.n, gate_up.k) == (2 * 5461, 2048) and "rope" not in [op.name for op in cat]


def test_the_profile_takes_the_measured_fa2_speed_per_direction(root):
    terms = db.attention_kernel_terms("h100", root)
    assert terms == {"fa2": {"fwd": pytest.approx(7 / 12), "bwd": pytest.approx(0.5)}}
    assert db.attention_kernel_terms("h200", root) == {}   # no records: the FA3 paper's ratio stays
    prof = dataclasses.replace(fitted_profile("h100"), attention_kernels=terms)
    fa2 = prof.with_attention_kernel("fa2")
    assert fa2.attention["fwd"].e_max == pytest.approx(prof.attention["fwd"].e_max * 7 / 12)
    assert fa2.attention["bwd"].e_max == pytest.approx(prof.attention["bwd"].e_max * 0.5)
    assert profile_from_json(json.loads(json.dumps(prof.to_json()))).attention_kernels == terms
    bare = dataclasses.replace(prof, attention_kernels={}).with_attention_kernel("fa2")
    assert bare.attention["bwd"].e_max == pytest.approx(prof.attention["bwd"].e_max * FA2_OVER_CUDNN)


def test_writing_the_terms_into_a_profile_keeps_its_other_keys(root, tmp_path):
    src = Path(str(PROFILES)) / "h100.json"
    (tmp_path / "h100.json").write_text(src.read_text())
    before = json.loads(src.read_text())
    terms = db.write_dense_terms("h100", root, tmp_path)
    after = json.loads((tmp_path / "h100.json").read_text())
    assert after["attention_kernels"] == terms["attention_kernels"]
    assert list(after).index("attention_kernels") == list(after).index("eager") + 1
    assert {k: v for k, v in after.items() if k not in terms} == {k: v for k, v in before.items() if k not in terms}
