"""calibration/gemm_align_curve.py (session s24align3): the cutlass families' rate curves fitted on
the s23align / s23align2 records and judged on the fresh s24align3 ones (docs/notes/s24align3_rule.md).
The fit must recover a curve from times made by it; the committed table must be the fit of the
committed records; the held-out criteria read the s24align3 records where they exist."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calibration import gemm_align_curve as gc
from calibration import gemm_align_fit as gf
from twin.costs import compute, gemm_alignment
from twin.costs.gemm_alignment import operand_alignments

H100_SMS = 132


@pytest.fixture(scope="module")
def fit_rows():
    rows = gc.fitting_rows("h100")
    if rows.empty:
        pytest.skip("no s23align / s23align2 H100 records")
    return rows


def test_kernel_tile_reads_the_cutlass_name():
    name = "void cutlass::Kernel2<cutlass_75_tensorop_bf16_s1688gemm_bf16_256x128_nn_align1>(...)"
    assert gc.kernel_tile(name) == (256, 128)
    assert gc.kernel_tile("Memset (Device);void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_bf16_"
                          "128x256_64x3_tn_align2>(...)") == (128, 256)
    assert gc.kernel_tile("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT") is None


def test_fit_recovers_a_curve_from_its_own_times(fit_rows):
    """Times made by a known curve (the committed shapes, kernels and tiles) are fitted back exactly."""
    launch_s = 2e-6
    truth = gc.fit_curves(fit_rows, launch_s, H100_SMS)
    synth = fit_rows.copy()
    with gc.curve_table("h100", truth):
        rates = [gemm_alignment.curve_rate_flops_per_s("h100", int(r.m), int(r.n), int(r.k),
                                                       operand_alignments(int(r.outputs), int(r.inputs), r["pass"]),
                                                       r["pass"], H100_SMS) for _, r in synth.iterrows()]
    synth["time_s"] = synth["flops"].to_numpy() / np.array(rates) + launch_s
    again = gc.fit_curves(synth, launch_s, H100_SMS)
    assert again["constants"] == pytest.approx(truth["constants"], rel=1e-9)
    for fam in truth["families"]:
        for k in ("fill_exp", "k_exp", "mn_exp"):
            assert again["families"][fam][k] == pytest.approx(truth["families"][fam][k], rel=1e-6, abs=1e-9)


def test_committed_table_is_the_fit_of_the_committed_records(fit_rows):
    """twin/data/gemm_alignment.json's curve_fits hold what calibration.gemm_align_curve makes of the
    s23align and s23align2 records (no hand edits): 207 rows; align1's odd-output forward is its slowest key."""
    committed = json.loads(gf.TABLE.read_text())["curve_fits"]["h100"]
    fit = gc.fit_curves(fit_rows, committed["launch_s"], committed["num_sms"])
    assert committed["constants"] == pytest.approx(fit["constants"], rel=1e-12)
    assert committed["families"]["align1"]["tiles"] == fit["families"]["align1"]["tiles"]
    assert committed["fit_rows"] == len(fit_rows) == 207
    a1 = {k: v for k, v in committed["constants"].items() if k.startswith("align1/")}
    assert min(a1, key=a1.get) == "align1/fwd/c"


def test_switch_follows_the_rule():
    """docs/notes/s24align3_rule.md: the switch as the rule's verdict says (off until the outcome)."""
    assert compute.ADOPT_GEMM_ALIGNMENT_CURVE is False


@pytest.fixture(scope="module")
def h100_judged():
    if gc.load("h100", gc.HELD_RECORDS).empty:
        pytest.skip("no s24align3 H100 records")
    return gc.judge("h100")


@pytest.mark.xfail(strict=True, reason="s24align3 criterion 1 (H100, 66 fresh misaligned GEMM rows): the curve's "
                                       "twin time 7.5% median / 16.8% P90 |error| (20 within 5%, 44 within 10%); it reads "
                                       "slow (signed median +6.1%), most on weight gradients (+9.5%) and at 1,000 tokens")
def test_fresh_gemm_rows_meet_the_target(h100_judged):
    c = h100_judged["gemm_misaligned"]["curve"]
    print(f"fresh misaligned GEMM rows: median {c['median_abs_error']:.1%}, P90 {c['p90_abs_error']:.1%}")
    assert c["rows"] == 66 and c["median_abs_error"] <= 0.05 and c["p90_abs_error"] <= 0.10


@pytest.mark.xfail(strict=True, reason="s24align3 criterion 2 (H100, 22 fresh misaligned linear-layer triples): the "
                                       "sum of the curve's three GEMM times 9.5% median / 17.5% P90 |error|, 19 of 22 "
                                       "reading slow (the GEMM rows' bias adds up over the three passes)")
def test_fresh_layer_rows_meet_the_target(h100_judged):
    c = h100_judged["layer_misaligned"]["curve"]
    print(f"fresh misaligned layer rows: median {c['median_abs_error']:.1%}, P90 {c['p90_abs_error']:.1%}")
    assert c["rows"] == 22 and c["median_abs_error"] <= 0.05 and c["p90_abs_error"] <= 0.10


def test_curve_beats_the_pattern_form_and_leaves_aligned_rows(h100_judged):
    """Criterion 3 (H100): GEMM rows 7.5% / 16.8% with the curve against 17.1% / 29.9% with s23align2's pattern
    factors; layer rows 9.5% / 17.5% against 20.6% / 26.1%; today's twin 66% / 80%; the aligned rows (today's
    dense curve: 17.9% / 21.3% on the GEMMs) untouched."""
    for rows in ("gemm_misaligned", "layer_misaligned"):
        j = h100_judged[rows]
        for stat in ("median_abs_error", "p90_abs_error"):
            assert j["curve"][stat] < j["pattern"][stat] < j["off"][stat]
    assert h100_judged["gemm_aligned"]["curve_max_rel_change"] == 0.0
    assert h100_judged["layer_aligned"]["curve_max_rel_change"] == 0.0
