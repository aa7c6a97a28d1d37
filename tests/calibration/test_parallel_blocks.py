"""calibration.parallel_blocks: the twin's prediction of the TP and CP blocks measured on two GPUs
(parallel_blocks.csv), and the profile's measured collectives (calibration.fit.collectives_terms).

The issue-14 target: held-out TP2 / CP2 block rows within 10% of the measured time, on each GPU
with two-GPU records (h200x2/, h100x2/), each predicted with its own GPU's profile and collectives."""

import dataclasses
import functools
import gzip

import pandas as pd
import pytest

from calibration import parallel_blocks as blocks
from calibration import predict
from calibration import records as rec
from calibration.records_io import glob_csv, glob_traces, open_csv, open_trace
from calibration.fit import collectives_terms
from calibration.predict import Eager, gpu_spec
from twin.costs import compute
from twin.costs.flops import Op, OpKind
from calibration.validate import load_fitted_profile

TARGET = 0.10
FOLDER = rec.MEASUREMENTS_DIR / "h200x2"
GPUS = ("h200", "h100")


def _profile(gpu: str):
    prof, _ = load_fitted_profile(gpu, None)   # as `twin validate` predicts the records
    if not prof.collectives:
        prof = dataclasses.replace(prof, collectives=collectives_terms(gpu)[0])
    return prof


@pytest.fixture(scope="module")
def h200():
    return _profile("h200")


def _row(**kw) -> dict:
    base = dict(bench="cp_block", block="attention", model="v2-lite-slice", tp=1, cp=2, sequence_parallel=False,
                tokens=16384, seq_len=16384, batch=1, hidden_size=2048, num_heads=16, qk_head_dim=192,
                v_head_dim=128, precision="bf16", cp_kind="ring", split="holdout", time_s=1e-3)
    base.update(kw)
    return base


@pytest.mark.parametrize("gpu", GPUS)
def test_collectives_come_from_the_two_gpu_sweep_with_their_source(gpu):
    fits, info = collectives_terms(gpu)
    assert {"all_reduce", "all_gather", "reduce_scatter", "send_recv"} <= set(fits)
    for op, entry in fits.items():
        assert entry["latency_s"] > 0 and entry["bus_bytes_per_s"] > 0
        assert f"{gpu}x2/nccl.csv" in entry["source"] and "held-out" in entry["source"]
    assert info["file"] == f"{gpu}x2/nccl.csv" and set(info["holdout"]) == set(fits)
    assert collectives_terms("no-such-gpu") == ({}, {})


@pytest.mark.parametrize("gpu", GPUS)
def test_committed_profile_carries_its_own_gpus_sweep(gpu):
    """twin/data/profiles/<gpu>.json holds the fit of <gpu>x2/nccl.csv as committed now (the file's
    hash and every op's terms: `python -m calibration.nccl --update` after a new sweep)."""
    from twin.costs.profile import fitted_profile
    fits, info = collectives_terms(gpu)
    prof = fitted_profile(gpu)
    assert prof.provenance["collectives"]["sha256"] == info["sha256"]
    assert prof.collectives == fits
    assert all(f"NVIDIA {gpu.upper()}" in e["source"] for e in fits.values())   # measured on this GPU


def test_tp_rows_charge_their_collectives(h200):
    gpu = gpu_spec("h200")
    row = dict(bench="tp_block", block="mla", model="v3-slice-1l", tp=2, cp=1, sequence_parallel=True,
               tokens=8192, seq_len=8192, num_experts=float("nan"), precision="bf16", skew=float("nan"))
    with_comm = blocks.predict_tp_row(row, gpu, h200)
    without = blocks.predict_tp_row(row, gpu, dataclasses.replace(h200, collectives={
        k: dict(v, bus_bytes_per_s=1e18, latency_s=0.0) for k, v in h200.collectives.items()}))
    # two all-gathers and two reduce-scatters of 8192 tokens: hundreds of microseconds on NVLink
    assert 1e-4 < with_comm - without < 2e-3
    tp1 = blocks.predict_tp_row(dict(row, tp=1, sequence_parallel=False), gpu, h200)
    assert with_comm < tp1   # half the heads per rank outweighs the collectives at 8K tokens


def test_host_bound_tp_rows_pay_the_measured_host_time_of_each_collective_call(h200, tmp_path):
    pd.DataFrame([dict(bench="collective_host", op=op, tokens=2048, hidden_size=2048, calls=20, split=split,
                       time_s=t) for op, split, t in (("all_gather", "fit", 1e-3), ("reduce_scatter", "fit", 1e-3),
                                                      ("all_reduce", "fit", 1e-3), ("all_reduce", "holdout", 9.0),
                                                      ("kernel", "fit", 3e-5))]).to_csv(
        tmp_path / blocks.COLLECTIVE_HOST_FILE, index=False)
    host = blocks.load_collective_host(tmp_path)
    assert host == {"all_gather": 1e-3, "reduce_scatter": 1e-3, "all_reduce": 1e-3, "kernel": 3e-5}
    assert blocks.load_collective_host(tmp_path / "none") == {}
    gpu = gpu_spec("h200")
    row = dict(bench="tp_block", block="mla", model="v2-lite-slice", tp=2, cp=1, sequence_parallel=True,
               tokens=2048, seq_len=2048, num_experts=float("nan"), precision="bf16", skew=float("nan"))
    with_host = blocks.predict_tp_row(row, gpu, h200, host)
    without = blocks.predict_tp_row(row, gpu, h200)
    # host-bound: four collectives (all-gather in, reduce-scatter out, and their backwards), each
    # issued in 1 ms instead of the layer's per-kernel host dispatch (tens of microseconds)
    eager = h200.eager["host_s"]
    want = 4e-3 - 2 * eager["fwd"] - 2 * eager["bwd"]
    assert with_host - without == pytest.approx(want, rel=0.05)
    big = dict(row, model="v3-slice-1l", tokens=8192, seq_len=8192)   # device-bound: the host hides
    assert blocks.predict_tp_row(big, gpu, h200, host) - blocks.predict_tp_row(big, gpu, h200) < 0.5 * want


def test_block_host_terms_come_from_the_fitting_rows_host_times(h200):
    gpu = gpu_spec("h200")

    def tp(block, tp_, sp, tokens, host_s, split="fit"):
        return dict(bench="tp_block", block=block, model="v2-lite-slice", tp=tp_, cp=1, sequence_parallel=sp,
                    tokens=tokens, seq_len=tokens, num_experts=64, precision="bf16", skew=0.0, split=split,
                    host_time_s=host_s, time_s=1.0)
    rows = pd.DataFrame([tp("mla", 1, False, 2048, 2e-3), tp("mla", 2, True, 2048, 3.2e-3),
                         tp("mla", 2, False, 2048, 2.4e-3), tp("mla", 2, False, 4096, 9.0, "holdout"),
                         tp("mla", 1, False, 4096, 1e-3, "holdout")])
    # (3.2 - 2.0) / 4 collectives and (2.4 - 2.0) / 2: median 0.25 ms; held-out rows unused
    assert blocks.block_collective_host_s(rows) == pytest.approx(2.5e-4)
    f, b = blocks.tp_block_ops(rows.iloc[0], gpu, h200)
    kernels = sum(1 for h, _ in f.ops + b.ops if h is not None)
    assert blocks.block_kernel_host_s(rows, gpu, h200) == {"mla": pytest.approx(2e-3 / kernels)}
    assert blocks.block_collective_host_s(rows.drop(columns="host_time_s")) is None


@pytest.mark.parametrize("name", GPUS)
def test_measured_block_terms_never_see_held_out_rows(name):
    """The host per kernel and per collective call and the CP terms come from fitting rows only:
    the held-out rows' times changed tenfold change none of them."""
    prof = _profile(name)
    gpu, rows = gpu_spec(name), blocks.load_block_rows(rec.MEASUREMENTS_DIR / f"{name}x2")
    skewed = rows.copy()
    held = skewed["split"] != "fit"
    skewed.loc[held, ["time_s", "host_time_s"]] *= 10
    cp = blocks.cp_block_terms(rows, gpu, prof, {})
    assert set(cp["host_per_op"]) == {"ring", "allgather"} and 1.0 < cp["offdiag_scale"] < 3.0
    assert blocks.cp_block_terms(skewed, gpu, prof, {}) == cp
    assert blocks.block_kernel_host_s(skewed, gpu, prof) == blocks.block_kernel_host_s(rows, gpu, prof)
    assert blocks.block_collective_host_s(skewed) == blocks.block_collective_host_s(rows)
    # the ring's Python issues each op slower than a kernel's dispatch
    assert min(cp["host_per_op"].values()) > max(blocks.block_kernel_host_s(rows, gpu, prof).values())


def test_cp_rows_predict_ring_and_allgather(h200):
    gpu = gpu_spec("h200")
    ring = blocks.predict_block_row(_row(), gpu, h200)
    gathered = blocks.predict_block_row(_row(cp_kind="allgather"), gpu, h200)
    whole = blocks.predict_block_row(_row(cp=1, cp_kind=""), gpu, h200)
    assert 0 < ring < whole and 0 < gathered < whole
    mla = blocks.predict_block_row(_row(block="mla"), gpu, h200)
    assert mla > ring   # the sublayer adds its projections
    with pytest.raises(ValueError, match="cp_kind 'tree'"):
        blocks.predict_block_row(_row(cp_kind="tree"), gpu, h200)


def test_block_rows_load_every_parallel_blocks_file(tmp_path):
    pd.DataFrame([_row(time_s=2e-3)]).to_csv(tmp_path / "parallel_blocks.csv", index=False)
    pd.DataFrame([_row(time_s=3e-3, cp_kind="allgather"), _row(time_s=0.0)]).to_csv(
        tmp_path / "parallel_blocks_cp.csv", index=False)
    assert sorted(blocks.load_block_rows(tmp_path)["time_s"]) == [2e-3, 3e-3]


# held-out block -> relative error when last run (twin / measured - 1): issue 14's 10% target is
# not met for these. Strict xfails: listed, never loosened, and the test fails the day one passes.
# Records: real/campaigns/s7cp.sh on 2xH200. v2-lite MoE at 4-8K tokens: the one-GPU reference
# block is itself 17-19% above the twin (whose one-GPU MoE layer records at 4-16K are within 4%), a
# device-side gap the TP rows inherit: the block's experts read h in place from the gathered
# [h | routing weights] rows, 2054 values wide for v2-lite (2-byte-aligned rows for cuBLAS; v3's
# 7176 are aligned); real/tp.py pads those rows to 16 bytes since the 07:02 UTC re-run (4K with SP: -17% -> -1%); at 2K with SP the block's measured host per collective
# (0.19 ms) is below the fitting rows' median (0.28 ms). v2-lite MLA at 4K without SP: host-bound,
# its host time per collective (0.55 ms) twice the fitting rows' median. CP2 blocks: since the H200's
# one-GPU chunk records (h200x2/cp_chunks.csv, real/campaigns/s8cp.sh on one H200, 2026-11-26 20:29
# UTC; s12h200) the off-diagonal blocks take their measured factor over the twin's costing (1.19,
# the fitting mla_block rows alone on one GPU) instead of the one inferred from the fitting CP2 rows
# (1.58): the held-out CP2 rows are then 8-22% too fast (before: -1.8..-11.7%), the CP2 rows spending
# ~0.4 of the off-diagonal block's time that the block alone does not (merges, NCCL beside the
# kernels, host: not yet measured apart).
# Since s8cp's two-GPU parts on the H200 (20:46 UTC; s12cp) real/cp.py's eager merges, casts and
# sliced copies take PyTorch CP's measured eager-kernel factor (parallel_blocks.cp_merge_factor,
# 2.02 on the H200): the held-out CP2 rows -2.6..-16.5% (from -8.3..-21.5%); what remains grows with
# the attention time and is largest on the host-heavy v2-lite rows (ring waits, host: not measured
# apart by any two-GPU trace of real/cp.py's blocks).
# s13cp's two-GPU traces (h200x2/s13cp/, calibration.cp_traces) show each repetition's host lead
# after time_reps' sync (0.5-1.9 ms idle before the first kernels): charging it (now ADOPT_*_REP_SYNC) takes the
# H200 to 15 of 20 within 10% but was not adopted (docs/notes/s13cp_rule.md: an H100 CP row and an
# H200 TP row that meet the target get more than a point worse); the figures below are unchanged.
# s14cp (docs/notes/s14cp_rule.md, adopted): the TP blocks' kernels at the per-component factors
# of the fitting traces (h200x2/traces_s8cp: the MoE block's memory-bound token side 1.39x the
# twin's costing, which does not shrink with TP, its grouped GEMMs 0.86x, which do): v2-lite MoE 8K
# -17.2 -> -7.4%, 8K SP -21.4 -> -12.6%, v3 MoE 4K -10.7 -> -4.1%, 4K SP -10.8 -> -4.7% (8 -> 11 of
# 20); the host-bound v2-lite rows (2K, 4K) do not move. s14cp's candidate O (adopted): the CP2
# rows' off-diagonal factor at their own s/2 (parallel_blocks.offdiag_by_shape: per head shape,
# linear in log2 s/2 over the fitting one-GPU block rows; 1.30-1.32 at the held-out 16K rows, where
# the single median was 1.19): v2-lite attention all-gather -10.2 -> -6.0%, ring -13.2 -> -8.9%,
# v2-lite MLA all-gather -14.2 -> -11.0%, ring -16.5 -> -13.2%, v3 MLA ring -10.5 -> -7.8% (11 -> 14).
# s14cp2's candidate H (the TP block's extra host per crossing + per call, ADOPT_CROSSING_HOST) failed
# its rule (docs/notes/s14cp2_rule.md): with it, MLA 4K -12.0 -> -5.3% and MoE 4K -15.0 -> -9.6%, but
# MoE 2K +4.2 -> +10.8% and the medians rise on both GPUs; off, the figures below are unchanged.
# s15cp (docs/notes/s15cp_rule.md): the host-bound v2-lite rows moved by up to 30% between two rounds
# a minute apart on one 2xH200 host (MoE 2K SP 4.00 / 5.19 ms, MLA 4K 2.96 / 3.81 ms), the records' own
# spread; the probe beside each row as an input (ADOPT_HOST_PROBE, candidate P) failed its rule and is
# off. s15cp2 (docs/notes/s15cp2_rule.md): the H200's block records are each configuration's fastest of
# three rotated rounds (real/campaigns/s15cp2.sh, 2026-11-27 04:33 UTC; every round in
# h200x2/s15cp2_rounds/, s15cp's round 1 in h200x2/s15cp_round1/, the s7cp records in
# h200x2/blocks_before_s15cp/): 14 of 20 as before, median / P90 6.3% / 13.4% (s7cp) -> 7.6% / 13.7%.
# With s15bw's index_put_ rate (adopted, docs/notes/s15bw_rule.md) the MoE 8K rows -11.1 -> -11.5% and
# 8K SP -15.6 -> -15.9% (H200), the H100's MoE 4K -14.3 -> -14.6%; counts unchanged. With s16rx's
# index_put_ radix passes (adopted, docs/notes/s16rx_rule.md) the H200's MoE 8K -11.5 -> -11.3% and 8K SP
# -15.9 -> -15.7%, the H100's MoE 4K -14.6 -> -14.0%; counts unchanged.
# s17tp (docs/notes/s17tp_rule.md, both adopted): every TP2 and CP2 row's repetition starts synchronised,
# as time_reps runs it (ADOPT_TP_REP_SYNC, ADOPT_CP_REP_SYNC; s13cp's candidates A/B, judged again on
# today's model and records): H200 MoE v2-lite 4K -14.4 -> -2.3%, 8K -11.2 -> -3.4%, 8K SP -15.7 ->
# -1.4%, CP2 MLA all-gather -10.6 -> -7.6%, ring -13.6 -> -10.8%; MoE 2K SP +11.0 -> +11.1% (host-bound,
# the sync adds the GPU's tail): 14 -> 18 of 20. H100: MoE v2-lite 4K -14.0 -> -3.7%, 4K SP -14.4 ->
# +5.2%, CP2 MLA ring -10.8 -> -9.4%, MLA v2-lite 4K SP -10.6 -> -10.3%: 16 -> 19 of 20.
# s18tpb (docs/notes/s18tpb_rule.md): candidate C (adopted) takes real/cp.py CPMLABlock's sublayer kernels
# at their fitting-trace factors (h200x2/s13cp: memory-bound 1.59x, GEMMs 0.91x over the twin's costing):
# CP2 MLA v2-lite ring -10.8 -> -9.2%, all-gather -7.6 -> -5.5%, v3 ring -8.7 -> -6.0%, all-gather -5.9 ->
# -3.2% (18 -> 19 of 20). MoE 2K SP is host-bound and its record one draw: six runs of it measure 4.00-5.56
# ms (1.39x), the twin's 5.14 ms inside them (-7.5..+28.6%). Candidate I (the bare expert-ids all-gather
# at its isolated host, ADOPT_IDS_GATHER_HOST) would take it to +6.6% but failed its rule (the H200's
# held-out median 3.30 -> 3.82%, 0.02 points past the 0.5 allowed): off.
NOT_MET = {
    "tp_block moe v2-lite-slice t2048 tp2 sp": +0.111,
}
# 2xH100 (h100x2/, real/campaigns/s7cp.sh on two H100s of a 4xH100 host, 2026-11-26 09:02 UTC),
# predicted with the H100 profile and its own sweep: the v2-lite MoE TP2 rows at 4-8K tokens fall
# short as on the H200 (their one-GPU references are within 4-8%); the v2-lite MLA TP2 block at 4K
# (here with SP, on the H200 without) and the v2-lite CP2 ring MLA sublayer miss by 10.5-10.6%.
# Host-bound v2-lite rows moved by up to 30% between this run and i14real.sh's first-pass rows a
# minute earlier on the host's other GPU pair (calibration/measurements/README.md).
# Since s12cp the CP part's eager ops take the H100's measured PyTorch-CP eager factor (1.66,
# h100x2/torch_cp_kernels.csv). Since s13cph the off-diagonal factor is measured on one H100 (h100/
# cp_chunks.csv, real/campaigns/s8cp.sh's one-GPU part on a one-H100 machine, 2026-11-26 23:34 UTC):
# 1.137, where it had been inferred from the fitting CP2 rows (1.22); every held-out CP2 row falls
# 2.0-2.9 points further short (before: -2.8..-14.2%, four not met; now -5.7..-16.2%, five).
# s14cp's candidate O (adopted; the factor at the row's s/2, 1.35 / 1.32 for v2-lite / v3 at 16K):
# v2-lite attention all-gather -12.3 -> -5.3%, ring -14.7 -> -7.7%, MLA all-gather -15.0 -> -9.7%,
# ring -16.2 -> -10.8%, v3 MLA ring -12.1 -> -7.3% (10 -> 14 of 20). Then s14cp's trace component
# factors from the H100's own fitting traces (h100x2/traces_s14cp, 2026-11-27 01:51 UTC; MoE
# memory-bound 1.25x, grouped GEMMs 0.87x): v2-lite MoE 4K -19.5 -> -14.3%, 8K -13.7 -> -6.5%, 8K SP
# -15.2 -> -8.5%, v3 MoE 4K / 4K SP -8.7 / -7.7 -> -4.1 / -3.4% (14 -> 16 of 20). s14cp2's candidate H
# (not adopted) would take MLA 4K SP -10.6 -> -13.1% and MoE 4K SP -14.4 -> -17.4% on the H100.
# s17tp's synchronised repetitions (adopted; figures above): 16 -> 19 of 20.
# s18tpb: the MLA v2-lite 4K SP row is host-bound (host_time_s 4.20 of 4.32 ms; the twin's host 3.86 ms);
# candidate I (not adopted) would take it to -7.9% (20 of 20); C does not move the H100 (no CP traces).
NOT_MET_H100 = {
    "tp_block mla v2-lite-slice t4096 tp2 sp": -0.103,
}
NOT_MET_BY_GPU = {"h200": NOT_MET, "h100": NOT_MET_H100}


@functools.cache
def _held_out_blocks(gpu: str) -> dict[str, float]:
    folder = rec.MEASUREMENTS_DIR / f"{gpu}x2"
    return {c["name"]: c["predicted_s"] / c["measured_s"] - 1 for c in blocks.predict_folder(folder, gpu, _profile(gpu))
            if c["held_out"] and int(c["row"]["tp"]) * int(c["row"]["cp"]) > 1}


def _block_params():
    import csv
    for gpu in GPUS:
        names = []
        for path in glob_csv(rec.MEASUREMENTS_DIR / f"{gpu}x2", "parallel_blocks*.csv"):
            with open_csv(path) as f:
                names += [blocks.block_name(r) for r in csv.DictReader(f)
                          if r["split"] == "holdout" and int(r["tp"]) * int(r["cp"]) > 1]
        not_met = NOT_MET_BY_GPU[gpu]
        for name in names:
            marks = ([pytest.mark.xfail(strict=True, reason=f"not met on {gpu}: {not_met[name]:+.0%} against 10% (issue 14 open)")]
                     if name in not_met else [])
            yield pytest.param(gpu, name, marks=marks, id=f"{gpu}-{name.replace(' ', '-')}")


def test_both_gpus_have_held_out_tp2_and_cp2_blocks():
    """Issue 14's check runs on each GPU: TP2 with and without SP (MLA and MoE) and CP2 attention."""
    for gpu in GPUS:
        names = set(_held_out_blocks(gpu))
        for kind in ("tp_block mla", "tp_block moe", "cp_block attention"):
            assert any(n.startswith(kind) and ("tp2" in n or "cp2" in n) for n in names), (gpu, kind)
        assert any(n.endswith("tp2 sp") for n in names), gpu


@pytest.mark.parametrize("gpu,name", list(_block_params()))
def test_held_out_tp2_and_cp2_block_within_target(gpu, name):
    err = _held_out_blocks(gpu)[name]
    assert abs(err) <= TARGET, f"{gpu} {name}: {err:+.1%} (target {TARGET:.0%})"


def test_offdiag_factor_measured_on_one_gpu_where_recorded(h200, tmp_path):
    """cp_chunks.csv (campaign s8cp) beside a two-GPU folder, or in its one-GPU sibling: the
    off-diagonal blocks' factor is their measured time over `_cp_blocks`' costing (fitting non-causal
    fwd_bwd rows only); none without the file."""
    gpu = gpu_spec("h200")
    two = tmp_path / "h200x2"
    two.mkdir()
    assert blocks.chunks_folder(two) is None and blocks.measured_offdiag_scale(two, gpu, h200) is None
    # a cp_chunks.csv of the Llama calls alone (as h100x2/'s) measures no block: not where they are
    pd.DataFrame([dict(bench="llama_chunk", time_s=1e-3, split="fit")]).to_csv(two / "cp_chunks.csv", index=False)
    assert blocks.chunks_folder(two) is None and blocks.measured_offdiag_scale(two, gpu, h200) is None
    row = dict(bench="mla_block", model="v2-lite-slice", sdpa_backend="", kernel="cudnn", phase="fwd_bwd",
               num_heads=16, num_kv_heads=16, qk_head_dim=192, v_head_dim=128, q_len=8192, kv_len=4096,
               causal=False, kv_repeat=False, source_seq_len=16384, split="fit")
    # the costing of one s x s/2 block: s/2 x s/2 unmasked on 2H heads, forward and backward
    op = Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=4096, heads=32, qk_dim=192,
                   v_dim=128, causal=False, precision="bf16")
    e = Eager(gpu, h200)
    e.attention(op, "fwd")
    e.attention(op, "bwd")
    costed = sum(g for _, g in e.ops)
    casts = 2 * compute.memory_time_s(8192 * 16 * 128 * (2 + 4), gpu, h200)
    (tmp_path / "h200").mkdir()
    pd.DataFrame([dict(row, time_s=1.5 * costed + casts), dict(row, time_s=9.0, split="holdout"),
                  dict(row, time_s=9.0, phase="fwd"), dict(row, time_s=9.0, causal=True)]).to_csv(
        tmp_path / "h200" / "cp_chunks.csv", index=False)
    assert blocks.chunks_folder(two) == tmp_path / "h200"
    assert blocks.measured_offdiag_scale(two, gpu, h200) == pytest.approx(1.5)


def test_h100_offdiag_factor_is_measured_on_one_h100():
    """The H100's off-diagonal factor comes from its one-GPU mla_block records (h100/cp_chunks.csv,
    s13cph), not from h100x2/cp_chunks.csv (Llama calls only) nor inferred from the CP2 rows."""
    h100x2 = rec.MEASUREMENTS_DIR / "h100x2"
    assert blocks.chunks_folder(h100x2) == rec.MEASUREMENTS_DIR / "h100"
    prof = _profile("h100")
    terms = blocks.folder_terms(h100x2, "h100", prof).cp_terms
    assert terms["offdiag_source"] == "cp_chunks.csv mla_block rows"
    assert terms["offdiag_scale"] == pytest.approx(blocks.measured_offdiag_scale(h100x2, gpu_spec("h100"), prof))
    assert 1.0 < terms["offdiag_scale"] < 1.5   # unmasked cuDNN blocks: slower than the causal curve


def test_cp_merge_factor_is_the_folders_pytorch_cp_eager_factor(h200, tmp_path):
    """The CP part's eager-op factor comes from the same two-GPU folder's torch_cp records (the
    H200's: s8cp, 2026-11-26 20:46 UTC), None where the folder has none."""
    from calibration import torch_cp
    gpu = gpu_spec("h200")
    assert blocks.cp_merge_factor(tmp_path, gpu, h200) is None
    got = blocks.cp_merge_factor(FOLDER, gpu, h200)
    assert got == pytest.approx(torch_cp.merge_time_factor(FOLDER, gpu, h200))
    assert 1.5 < got < 3.0   # strided FP32 merges: well below the streaming rate, not pathological


def test_merge_factor_scales_the_cp_parts_eager_ops_alone(h200):
    """`_cp_blocks`' memory-bound ops (copies, casts, merges, accumulations) take the factor; the
    attention kernels and the collectives (each with its measured host: component 'fixed') do not."""
    gpu = gpu_spec("h200")

    def core(seq, heads, causal):
        return Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=seq, heads=heads, qk_dim=192, v_dim=128,
                  causal=causal, precision="bf16")
    parts = {}
    for factor in (1.0, 2.0):
        f, b = Eager(gpu, h200), Eager(gpu, h200)
        blocks._cp_blocks(f, b, "allgather", 2, 8192, 16, 192, 128, gpu, h200, core,
                          {"all_gather": 1e-4, "reduce_scatter": 1e-4}, 1.19, factor)
        parts[factor] = {k: f.component_s.get(k, 0.0) + b.component_s.get(k, 0.0) for k in ("memory", "attention", "fixed")}
    assert parts[1.0]["memory"] > 0 and parts[2.0]["memory"] == pytest.approx(2 * parts[1.0]["memory"])
    assert parts[2.0]["attention"] == pytest.approx(parts[1.0]["attention"])
    assert parts[2.0]["fixed"] == pytest.approx(parts[1.0]["fixed"]) and parts[1.0]["fixed"] > 0


# --- s14cp: the TP blocks' kernels by component, from the fitting traces (docs/notes/s14cp_rule.md)

def test_trace_names_and_kernel_components():
    from calibration import tp_traces
    assert tp_traces.parse_name("trace_tp_moe_v3-slice-1l_8192_sp_rank1.json.gz") == dict(
        block="moe", model="v3-slice-1l", tokens=8192, sequence_parallel=True, tp=2, rank=1)
    ref = tp_traces.parse_name("trace_tp_mla_v2-lite-slice_8192_sp_tp1.json.gz")
    assert ref["tp"] == 1 and not ref["sequence_parallel"]   # the one-GPU reference runs without SP
    assert tp_traces.parse_name("trace_tp_moe_nosp_rank0.json.gz") is None   # no model: not read
    kc = tp_traces.kernel_component
    assert kc("ncclDevKernel_AllGather_RING_LL(x)") == "nccl"
    assert kc("_ZN7cutlass13device_kernelIN2at4cuda6detail25enable_3x_kernel_for_sm9xINS_4gemm6kernel13GemmUniversalINS5_17GroupProblemShape") == "grouped_gemm"
    assert kc("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT") == "gemm"
    assert kc("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert kc("void (anonymous namespace)::indexing_backward_kernel<c10::BFloat16, 4>") == "memory"


def test_traced_kernels_of_a_repetition(tmp_path):
    import gzip
    import json
    from calibration import tp_traces
    events = [dict(ph="X", cat="kernel", name="nvjet_x", dur=300.0), dict(ph="X", cat="kernel", name="nvjet_y", dur=100.0),
              dict(ph="X", cat="gpu_memset", name="Memset (Device)", dur=20.0),
              dict(ph="X", cat="cpu_op", name="aten::mm", dur=999.0)]   # host ops are not kernels
    path = tmp_path / "traces_x" / "trace_tp_mla_v3-slice-1l_2048_nosp_rank0.json.gz"
    path.parent.mkdir()
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    got = tp_traces.kernel_seconds(path)   # two repetitions a trace
    assert got["gemm"] == pytest.approx(200e-6) and got["memory"] == pytest.approx(10e-6) and got["nccl"] == 0.0
    [tb] = tp_traces.traced_blocks(tmp_path)
    assert (tb.block, tb.model, tb.tokens, tb.tp, tb.sequence_parallel) == ("mla", "v3-slice-1l", 2048, 2, False)


def test_component_scale_puts_each_component_at_its_factor(h200):
    """Eager.component_scale: an op's GPU time times its component's factor; none given, unchanged."""
    gpu = gpu_spec("h200")
    plain, scaled = Eager(gpu, h200), Eager(gpu, h200, component_scale={"memory": 2.0, "gemm": 0.5})
    for e in (plain, scaled):
        e.mem(1e8)
        e.gemm(4096, 4096, 4096, "bf16")
        e.small(3)                       # launch-bound: kept
        e.fixed(1e-4, 2e-4)              # a measured collective: kept
    assert scaled.component_s["memory"] == pytest.approx(2 * plain.component_s["memory"])
    assert scaled.component_s["gemm"] == pytest.approx(0.5 * plain.component_s["gemm"])
    assert scaled.component_s["launch"] == plain.component_s["launch"]
    assert scaled.component_s["fixed"] == plain.component_s["fixed"]
    assert [h for h, _ in scaled.ops] == [h for h, _ in plain.ops]   # host dispatch untouched


def test_component_factors_come_from_fitting_traces_alone(h200, tmp_path):
    """The H200's factors: measured from its fitting traces (the MoE block's memory-bound kernels
    above the twin's costing, its grouped GEMMs below); a trace of a held-out configuration is
    never read (copied in under a held-out name, it changes nothing); no traces, no factors."""
    import shutil
    gpu, t = gpu_spec("h200"), blocks.folder_terms(FOLDER, "h200", h200, component_factors=False)
    factors = blocks.block_component_factors(FOLDER, t.rows, gpu, h200, t.host, t.kernel_host)
    assert set(factors) == {"mla", "moe"}
    assert factors["moe"]["memory"] > 1.2 and factors["moe"]["grouped_gemm"] < 0.95
    assert set(factors["moe"]) == {"gemm", "grouped_gemm", "memory"} and "attention" in factors["mla"]
    (tmp_path / "traces_a").mkdir()
    copied = glob_traces(FOLDER / "traces_s8cp", "trace_tp_*.json")   # committed .json.xz
    assert copied
    for p in copied:
        shutil.copy(p, tmp_path / "traces_a" / p.name)
    # a fitting configuration's trace under a held-out configuration's name (v2-lite MoE: held out), gzipped
    # as real/bench writes traces: a folder of both forms reads alike
    with gzip.open(tmp_path / "traces_a" / "trace_tp_moe_v2-lite-slice_4096_sp_rank0.json.gz", "wt") as f:
        f.write(open_trace(FOLDER / "traces_s8cp" / "trace_tp_mla_v2-lite-slice_8192_sp_rank0.json.gz").read())
    assert blocks.block_component_factors(tmp_path, t.rows, gpu, h200, t.host, t.kernel_host) == factors
    assert blocks.block_component_factors(tmp_path / "none", t.rows, gpu, h200, t.host, t.kernel_host) == {}


@pytest.mark.parametrize("adopt", [False, True])
def test_both_settings_of_the_trace_component_factors(h200, adopt, monkeypatch):
    """Off: the TP rows as before s14cp (no factors); on: the H200's TP2 MoE blocks longer (the token
    side they do not split), the one-GPU references nearly unchanged (the two errors cancel there),
    the CP rows untouched. Judged as s14cp measured it, before s15bw costed the MoE backward's
    index_put_ at its own rate (test_factors_shrink_where_the_twin_costs_the_index_puts)."""
    monkeypatch.setattr(predict, "ADOPT_INDEX_PUT_RATE", False)
    monkeypatch.setattr(blocks, "ADOPT_TRACE_COMPONENT_FACTORS", adopt)
    t = blocks.folder_terms(FOLDER, "h200", h200)
    assert bool(t.component_factors) == adopt
    off = blocks.folder_terms(FOLDER, "h200", h200, component_factors=False)
    gpu = gpu_spec("h200")
    moe2 = dict(bench="tp_block", block="moe", model="v3-slice-1l", tp=2, cp=1, sequence_parallel=True, tokens=8192,
                seq_len=8192, num_experts=256, precision="bf16", skew=0.0)
    moe1 = dict(moe2, tp=1, sequence_parallel=False)
    for row, lo, hi in ((moe2, 1.04, 1.12), (moe1, 0.99, 1.04)):
        got = blocks.predict_block_row(row, gpu, h200, t.host, t.kernel_host, t.cp_terms, t.component_factors)
        base = blocks.predict_block_row(row, gpu, h200, off.host, off.kernel_host, off.cp_terms, off.component_factors)
        if adopt:
            assert lo < got / base < hi
        else:
            assert got == base
    cp = _row()
    assert blocks.predict_block_row(cp, gpu, h200, t.host, t.kernel_host, t.cp_terms, t.component_factors) == \
        blocks.predict_block_row(cp, gpu, h200, off.host, off.kernel_host, off.cp_terms)


def test_factors_shrink_where_the_twin_costs_the_index_puts(h200, monkeypatch):
    """The factors are the traces' kernel seconds over the twin's per component: with the MoE
    backward's index_put_ at its measured rate (s15bw, calibration.index_put) the twin's memory
    component carries part of what the factor carried, so the factors lengthen the H200's TP2 MoE
    block less than without it (s14cp's 1.04-1.12x), and still lengthen it."""
    monkeypatch.setattr(blocks, "ADOPT_TRACE_COMPONENT_FACTORS", True)
    gpu = gpu_spec("h200")
    moe2 = dict(bench="tp_block", block="moe", model="v3-slice-1l", tp=2, cp=1, sequence_parallel=True, tokens=8192,
                seq_len=8192, num_experts=256, precision="bf16", skew=0.0)
    gain = {}
    for rate in (False, True):
        monkeypatch.setattr(predict, "ADOPT_INDEX_PUT_RATE", rate)
        t = blocks.folder_terms(FOLDER, "h200", h200)
        off = blocks.folder_terms(FOLDER, "h200", h200, component_factors=False)
        gain[rate] = (blocks.predict_block_row(moe2, gpu, h200, t.host, t.kernel_host, t.cp_terms, t.component_factors)
                      / blocks.predict_block_row(moe2, gpu, h200, off.host, off.kernel_host, off.cp_terms,
                                                 off.component_factors))
    assert 1.0 < gain[True] < gain[False]


def test_h100_trace_factors_come_from_its_own_traces():
    """Factors are measured on each GPU's own traces (h100x2/traces_s14cp), never carried from the
    other GPU's: the H100's differ from the H200's."""
    h100x2 = rec.MEASUREMENTS_DIR / "h100x2"
    t = blocks.folder_terms(h100x2, "h100", _profile("h100"), component_factors=True)
    from calibration import tp_traces
    fitting = [tb for tb in tp_traces.traced_blocks(h100x2)
               if blocks._fit_row(t.rows, tb.block, tb.model, tb.tokens, tb.tp, tb.sequence_parallel) is not None]
    assert bool(t.component_factors) == bool(fitting) and len(fitting) == 18
    h200 = blocks.folder_terms(FOLDER, "h200", _profile("h200"), component_factors=True).component_factors
    assert t.component_factors["moe"]["memory"] != pytest.approx(h200["moe"]["memory"], rel=0.02)
    assert 1.1 < t.component_factors["moe"]["memory"] and t.component_factors["moe"]["grouped_gemm"] < 0.95


@pytest.mark.parametrize("name", GPUS)
def test_offdiag_factor_by_shape_from_fitting_rows_alone(name, tmp_path):
    """Candidate O (adopted): per head shape, the off-diagonal factor linear in log2 s/2 over the
    fitting one-GPU block rows; it grows with s/2 (cuDNN's unmasked blocks gain on the causal
    curve), passes near the rows it is fitted on, and held-out rows changed change nothing."""
    import math
    gpu, prof = gpu_spec(name), _profile(name)
    folder = rec.MEASUREMENTS_DIR / f"{name}x2"
    fits = blocks.offdiag_by_shape(folder, gpu, prof)
    assert set(fits) == {(16, 192, 128), (128, 192, 128)}
    where = blocks.chunks_folder(folder)
    pts = blocks._offdiag_ratios(where, gpu, prof)
    for shape, (a, b) in fits.items():
        assert b > 0
        mine = [(s2, r) for sh, s2, r in pts if sh == shape]
        resid = [abs(a + b * math.log2(s2) - r) for s2, r in mine]
        assert max(resid) < 0.1
    # held-out rows of cp_chunks.csv scaled tenfold: the fit is unchanged
    from calibration.records_io import read_csv
    df = read_csv(where / blocks.CHUNKS_FILE)
    df.loc[df["split"] != "fit", "time_s"] *= 10
    df.to_csv(tmp_path / blocks.CHUNKS_FILE, index=False)
    again = blocks.offdiag_by_shape(tmp_path, gpu, prof)
    assert again.keys() == fits.keys() and all(again[k] == pytest.approx(fits[k]) for k in fits)
    assert blocks.offdiag_by_shape(tmp_path / "none", gpu, prof) == {}


@pytest.mark.parametrize("adopt", [False, True])
def test_both_settings_of_the_offdiag_factor_by_shape(h200, adopt, monkeypatch):
    """Off: every CP2 row takes the median factor; on: a row at large s/2 (v2-lite 32K, s/2 = 8K)
    takes more than the median, one at small s/2 (v3 4K, s/2 = 1K) less; CP1 and TP rows untouched."""
    monkeypatch.setattr(blocks, "ADOPT_OFFDIAG_BY_SHAPE", adopt)
    t = blocks.folder_terms(FOLDER, "h200", h200)
    assert ("offdiag_by_shape" in t.cp_terms) == adopt
    monkeypatch.setattr(blocks, "ADOPT_OFFDIAG_BY_SHAPE", False)
    base = blocks.folder_terms(FOLDER, "h200", h200)
    gpu = gpu_spec("h200")

    def pred(terms, row):
        return blocks.predict_block_row(row, gpu, h200, terms.host, terms.kernel_host, terms.cp_terms,
                                        terms.component_factors)
    big = _row(tokens=32768, seq_len=32768)
    small = _row(model="v3-slice-1l", tokens=4096, seq_len=4096, num_heads=128)
    one = _row(cp=1, cp_kind="")
    if adopt:
        assert pred(t, big) > pred(base, big) and pred(t, small) < pred(base, small)
    else:
        assert pred(t, big) == pred(base, big) and pred(t, small) == pred(base, small)
    assert pred(t, one) == pred(base, one)


def _tp_host_row(block, tp_, sp, tokens, host_s, split="fit"):
    return dict(bench="tp_block", block=block, model="v2-lite-slice", tp=tp_, cp=1, sequence_parallel=sp,
                tokens=tokens, seq_len=tokens, num_experts=64, precision="bf16", skew=0.0, split=split,
                host_time_s=host_s, time_s=1.0)


def test_crossing_host_is_least_squares_over_the_fitting_rows():
    """host_time_s(TP2) - host_time_s(TP1) = 4 C + B calls (s14cp2's candidate H): recovered exactly
    from rows built with C = 0.1 ms and B = 0.3 ms; held-out rows unused; None without host times,
    with one form only, or where a term comes out negative."""
    C, B = 1e-4, 3e-4
    ref = 2e-3
    rows = pd.DataFrame([_tp_host_row("mla", 1, False, 2048, ref), _tp_host_row("mla", 2, True, 2048, ref + 4 * C + 4 * B),
                         _tp_host_row("mla", 2, False, 2048, ref + 4 * C + 2 * B),
                         _tp_host_row("moe", 1, False, 2048, ref), _tp_host_row("moe", 2, True, 2048, ref + 4 * C + 5 * B),
                         _tp_host_row("mla", 1, False, 4096, ref, "holdout"),
                         _tp_host_row("mla", 2, True, 4096, 9.0, "holdout")])
    assert blocks.block_crossing_host_s(rows) == pytest.approx((C, B))
    assert blocks.block_crossing_host_s(rows.drop(columns="host_time_s")) is None
    one_form = rows[rows["sequence_parallel"] | (rows["tp"] == 1)]
    assert blocks.block_crossing_host_s(one_form[one_form["block"] == "mla"]) is None
    # the SP rows' extra host below the 2-call rows': a negative cost per call
    flipped = rows[rows["block"] == "mla"].copy()
    flipped.loc[1, "host_time_s"] = ref + 0.5 * C
    assert blocks.block_crossing_host_s(flipped) is None


def test_crossings_charge_the_tp_rows_host_and_nothing_else(h200):
    """With the crossing term, a TP2 row's op lists carry four host-only ops of C (each crossing,
    with or without a collective) and every TP collective at B (or the isolated call's where more);
    the one-GPU reference has none."""
    gpu = gpu_spec("h200")
    row = dict(bench="tp_block", block="mla", model="v2-lite-slice", tp=2, cp=1, sequence_parallel=False,
               tokens=2048, seq_len=2048, num_experts=float("nan"), precision="bf16", skew=float("nan"))
    rows = pd.DataFrame([_tp_host_row("mla", 1, False, 2048, 2e-3), _tp_host_row("mla", 2, True, 2048, 3.6e-3),
                         _tp_host_row("mla", 2, False, 2048, 3.0e-3)])
    host = blocks.tp_host_terms({"all_reduce": 1e-3}, {"all_reduce": 1e-3}, rows, crossing=True)
    assert host[blocks.CROSSING_KEY] == pytest.approx(1e-4) and host["all_gather"] == pytest.approx(3e-4)
    assert host["all_reduce"] == pytest.approx(1e-3)                   # the isolated call's, more
    assert blocks.tp_host_terms({}, {}, rows, crossing=False) is None
    f, b = blocks.tp_block_ops(row, gpu, h200, host)
    crossings = [op for op in f.ops + b.ops if op[1] == 0.0 and op[0] == pytest.approx(1e-4)]
    assert len(crossings) == blocks.TP_CROSSINGS
    f1, b1 = blocks.tp_block_ops(dict(row, tp=1), gpu, h200, host)
    f0, b0 = blocks.tp_block_ops(dict(row, tp=1), gpu, h200)
    assert f1.ops + b1.ops == f0.ops + b0.ops


@pytest.mark.parametrize("adopt", [False, True])
def test_both_settings_of_the_crossing_host(adopt, monkeypatch):
    """Off (as adopted: docs/notes/s14cp2_rule.md, candidate H failed its rule): the TP rows take one
    host cost per collective call; on: only TP2 rows move, on both GPUs (the CP rows and the
    one-GPU references identical), the fitting rows' terms alone decide (held-out times x10 change
    nothing)."""
    monkeypatch.setattr(blocks, "ADOPT_CROSSING_HOST", adopt)
    for gpu in GPUS:
        prof, folder = _profile(gpu), rec.MEASUREMENTS_DIR / f"{gpu}x2"
        default = {c["name"]: c["predicted_s"] for c in blocks.predict_folder(folder, gpu, prof)}
        off = {c["name"]: c["predicted_s"] for c in blocks.predict_folder(folder, gpu, prof, crossing_host=False)}
        moved = {n for n in off if default[n] != off[n]}
        if not adopt:
            assert not moved
            continue
        assert moved and all(n.startswith("tp_block") and " tp2" in n for n in moved), gpu
        rows = blocks.load_block_rows(folder)
        skewed = rows.copy()
        skewed.loc[skewed["split"] != "fit", "host_time_s"] *= 10
        assert blocks.block_crossing_host_s(skewed) == blocks.block_crossing_host_s(rows)
