"""Sections decode_gemm and decode_drift (issue 13, s8dec): the absorbed MLA's batched GEMMs as
real/model.py runs them, and decode steps with the GPU's state per step; the code path
real/campaigns/s8dec.sh runs, on the CPU with tiny shapes."""

import csv

import pandas as pd
import torch

from calibration.split import is_held_out
from real.bench import decode_gemm as dg
from real.bench.records import Recorder
from real.bench.timing import Deadline, Timer
from real.configs import get_spec
from real.model import MLA, building
from real.telemetry import Telemetry


def test_align_elems_is_the_largest_common_power_of_two_up_to_8():
    assert dg.align_elems(1025) == 1 and dg.align_elems(1026) == 2 and dg.align_elems(1028) == 4
    assert dg.align_elems(1032) == 8 and dg.align_elems(1032, 512) == 8 and dg.align_elems(1032, 1030) == 2


def test_gemm_shapes_are_the_einsums_batched_gemms():
    # V3: H 128, P 128, R 64, C 512, O 128; B 4 sequences over L 1025 positions
    assert dg.gemm_shape("scores_latent", 4, 1025, 128, 128, 64, 512, 128) == (4, 128, 1025, 512)
    assert dg.gemm_shape("p_c", 4, 1025, 128, 128, 64, 512, 128) == (4, 128, 512, 1025)
    assert dg.gemm_shape("q_abs", 4, 1025, 128, 128, 64, 512, 128) == (128, 4, 512, 128)


def test_the_operands_attend_as_the_model_does():
    torch.manual_seed(0)
    spec = get_spec("tiny")
    with building(torch.device("cpu")):
        mla = MLA(spec)
    B, L = 3, 11
    x = dg.AbsorbedOperands(spec, B, L, torch.device("cpu"))
    with torch.no_grad():
        mla.wkv_b_WC.copy_(x.wkv_b_WC)
        ref = mla._attend_absorbed(x.q_nope_BSHP, x.q_pe_BSHR, x.c_BLC, x.kpe_BLR, L - 1)
    # the cache is a [:B, :L] slice of a longer buffer, as real/model.py slices its MLACache
    assert x.c_BLC.stride(0) == (L + 8) * spec.kv_lora_rank
    torch.testing.assert_close(x.attend(mla.softmax_scale, L - 1), ref)


def test_kernels_fall_in_the_range_that_holds_their_midpoint():
    ranges = [("a", 0.0, 10.0), ("b", 10.0, 20.0)]
    kernels = [("k2", 12.0, 1.0), ("k1", 2.0, 3.0), ("k3", 4.0, 1.0), ("stray", 30.0, 1.0)]
    assert dg.kernels_by_range(ranges, kernels) == {"a": [("k1", 3.0), ("k3", 1.0)], "b": [("k2", 1.0)]}


def test_kernel_columns_name_the_longest_kernel_and_split_k():
    cols = dg.kernel_columns([("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_splitK_TNT", 5.0),
                              ("void cublasLt::splitKreduce_kernel<32, 16>", 1.0),
                              ("Memcpy DtoD (Device -> Device)", 2.0),
                              ("void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>", 0.5)])
    assert cols["kernels"] == 4 and cols["kernel"].startswith("nvjet") and cols["split_k"] is True
    assert abs(cols["kernel_s"] - 8.5e-6) < 1e-12
    assert cols["gemm_kernels"] == 2 and abs(cols["gemm_kernel_s"] - 6e-6) < 1e-12   # the copies left out
    assert dg.is_gemm_kernel("void cutlass::Kernel2<cutlass_75_tensorop_bf16_s1688gemm_bf16_128x128_tn_align1>")
    assert dg.kernel_columns([])["kernels"] == ""


def test_campaign_split_is_calibration_split():
    for B, L in [(256, 1025), (16, 1025), (192, 1032), (8, 1041), (8, 4097), (1, 513)]:
        row = {"bench": "decode_bmm", "batch": B, "cache_len": L}
        assert is_held_out(row) == dg.is_holdout(B, L), (B, L)
    assert is_held_out({"bench": "decode_linear", "batch": 16, "cache_len": ""})
    assert not is_held_out({"bench": "decode_linear", "batch": 32, "cache_len": ""})
    assert is_held_out({"bench": "decode_elementwise", "batch": 32, "cache_len": 1041})


def test_linear_shapes_cover_the_decode_step_projections():
    w = dict((name, (n, k)) for name, n, k in dg.linear_shapes(get_spec("v3-slice-2l")))
    assert w["wq_a"] == (1536, 7168) and w["wkv_a"] == (576, 7168) and w["head"][1] == 7168
    assert "w13" in w and "gate" in w and "shared_w13" in w


def _run(section, tmp_path):
    env = {"fp8_blockwise_kernel": False, "gpu_name": "cpu"}
    rec = Recorder(tmp_path, env)
    timer = Timer(torch.device("cpu"), Telemetry(), 0.0, max_reps=2, warmup=1)
    deadline = Deadline(120.0)
    deadline.start(1.0)
    section(rec, timer, torch.device("cpu"), deadline, True, env)
    rec.close()


def test_quick_decode_gemm_writes_every_op_with_its_split(tmp_path):
    _run(dg.bench_decode_gemm, tmp_path)
    rows = pd.read_csv(tmp_path / "decode_gemm.csv")
    bmm = rows[rows.bench == "decode_bmm"]
    assert set(bmm.op) == set(dg.OPS) and set(rows[rows.bench == "decode_linear"].op) == {"linear"}
    # q_abs and o_v once per batch (no cache length), the cache GEMMs at every length
    assert len(bmm[bmm.op == "q_abs"]) == len(dg.QUICK_CASES["tiny"])
    assert len(bmm[bmm.op == "p_c"]) == len(dg.QUICK_CASES["tiny"]) * len(dg.QUICK_CACHE_LENS)
    assert (rows.time_s > 0).all() and set(rows.split) <= {"fit", "holdout"}
    assert set(bmm[bmm.op == "scores_latent"].align_elems) == {1, 8}    # L 9 and 16
    ew = rows[rows.bench == "decode_elementwise"]
    assert set(ew.op) == {"add", "float", "masked_fill", "scale", "softmax", "to_bf16"}
    assert set(ew.batch) == {3} and set(ew.cache_len) == {16} and (ew.bytes > 0).all()


def test_quick_decode_drift_writes_a_row_per_step(tmp_path):
    _run(dg.bench_decode_drift, tmp_path)
    rows = list(csv.DictReader((tmp_path / "decode_drift.csv").open()))
    assert {r["condition"] for r in rows} == set(dg.CONDITIONS)
    per_round = len(rows) / len(dg.CONDITIONS)
    assert per_round == 6 - 1                      # quick: G 6 -> 5 steps a round
    assert all(float(r["time_s"]) > 0 and float(r["host_s"]) > 0 and float(r["host_cpu_s"]) >= 0 for r in rows)
    assert [int(r["cache_len"]) for r in rows[:3]] == [17, 18, 19]   # quick: P 16


def test_telemetry_reads_the_gpu_cuda_sees():
    # NVML numbers every GPU of the host; CUDA device i is the i-th one CUDA_VISIBLE_DEVICES lists
    from real.telemetry import nvml_handle_spec
    assert nvml_handle_spec(0, "3") == ("index", 3)
    assert nvml_handle_spec(1, "2,5") == ("index", 5)
    assert nvml_handle_spec(0, None) == ("index", 0) and nvml_handle_spec(2, "") == ("index", 2)
    assert nvml_handle_spec(0, "GPU-1a2b") == ("uuid", "GPU-1a2b")
