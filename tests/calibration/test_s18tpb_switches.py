"""docs/notes/s18tpb_rule.md: candidate C (real/cp.py CPMLABlock's sublayer kernels at their
fitting-trace factors, ADOPT_CP_SUBLAYER_FACTORS: adopted) and candidate I (the SP MoE block's bare
expert-ids all-gather at its isolated host, ADOPT_IDS_GATHER_HOST: failed its rule, off), each
tested in both settings."""

import pandas as pd
import pytest

from calibration import parallel_blocks as blocks
from calibration import records as rec
from calibration.validate import load_fitted_profile

H200X2 = rec.MEASUREMENTS_DIR / "h200x2"
H100X2 = rec.MEASUREMENTS_DIR / "h100x2"


@pytest.fixture(scope="module")
def h200():
    prof, _ = load_fitted_profile("h200", None)
    return prof


def test_switches_as_the_rule_decided():
    assert blocks.ADOPT_CP_SUBLAYER_FACTORS is True
    assert blocks.ADOPT_IDS_GATHER_HOST is False


def _kernel_rows(block, model, kind, seq_len, split, per_component_us):
    """Two ranks x one repetition of a traced CP case, one kernel per component."""
    names = {"gemm": "nvjet_tst_gemm", "memory": "elementwise_kernel", "attention": "cudnn_fmha"}
    rows = []
    for rank in (0, 1):
        t = 0.0
        for comp, us in per_component_us.items():
            rows.append(dict(bench="cp_block", block=block, model=model, cp=2, cp_kind=kind, seq_len=seq_len,
                             split=split, rank=rank, rep=0, event="kernel", name=names[comp], start_us=t,
                             end_us=t + us))
            t += us
    return rows


def test_sublayer_factors_are_the_mla_case_less_the_attention_case_over_the_twin(tmp_path, h200):
    spec = blocks.gpu_spec("h200")
    model, S = "v2-lite-slice", 8192
    twin = blocks._sublayer_twin_s(model, S // 2, spec, h200)
    sub_gemm_us, sub_mem_us = 2e6 * twin["gemm"], 3e6 * twin["memory"] + 1e6 * twin.get("launch", 0.0)
    rows = (_kernel_rows("attention", model, "ring", S, "fit", {"attention": 500.0, "memory": 100.0})
            + _kernel_rows("mla", model, "ring", S, "fit",
                           {"attention": 500.0, "memory": 100.0 + sub_mem_us, "gemm": sub_gemm_us})
            # a held-out pair of ten times the sublayer: never read
            + _kernel_rows("attention", model, "ring", 2 * S, "holdout", {"attention": 900.0})
            + _kernel_rows("mla", model, "ring", 2 * S, "holdout", {"attention": 900.0, "gemm": 10 * sub_gemm_us}))
    sub = tmp_path / "s13cp"
    sub.mkdir()
    pd.DataFrame(rows).to_csv(sub / "cp_trace_kernels_rank0.csv", index=False)
    factors = blocks.cp_sublayer_factors(tmp_path, spec, h200)
    assert factors == pytest.approx({"gemm": 2.0, "memory": 3.0}, rel=1e-6)
    assert blocks.cp_sublayer_factors(tmp_path / "none", spec, h200) == {}


def test_measured_sublayer_factors_h200_only(h200):
    """The H200's fitting CP2 traces (h200x2/s13cp): the sublayer's memory-bound kernels well above
    the twin's costing (1.59x when written), its GEMMs a little below (0.91x); no CP traces on the H100."""
    f = blocks.cp_sublayer_factors(H200X2, blocks.gpu_spec("h200"), h200)
    assert f["memory"] > 1.3 and 0.8 < f["gemm"] < 1.0
    prof100, _ = load_fitted_profile("h100", None)
    assert blocks.cp_sublayer_factors(H100X2, blocks.gpu_spec("h100"), prof100) == {}


@pytest.fixture(scope="module")
def h200_c_both(h200):
    off = {c["name"]: c for c in blocks.predict_folder(H200X2, "h200", h200, cp_sublayer=False)}
    on = {c["name"]: c for c in blocks.predict_folder(H200X2, "h200", h200, cp_sublayer=True)}
    return off, on


def test_c_moves_only_the_cp2_mla_rows(h200_c_both):
    off, on = h200_c_both
    moved = {n for n in off if abs(on[n]["predicted_s"] - off[n]["predicted_s"]) > 1e-9}
    assert moved and all(n.startswith("cp_block mla") and " cp2" in n for n in moved)
    # the device-bound ones (v3 at every size) gain: the sublayer's memory-bound kernels grow
    v3 = [n for n in off if n.startswith("cp_block mla v3-slice-1l") and " cp2" in n]
    assert v3 and all(on[n]["predicted_s"] > off[n]["predicted_s"] for n in v3)


def test_c_brings_the_fitting_cp2_mla_rows_closer(h200_c_both):
    off, on = h200_c_both
    fit = [n for n, c in off.items() if not c["held_out"] and n.startswith("cp_block mla") and " cp2" in n]

    def err(c):
        return abs(c["predicted_s"] / c["measured_s"] - 1)
    assert sum(err(on[n]) for n in fit) < sum(err(off[n]) for n in fit)


def test_i_charges_the_ids_gather_its_isolated_host(h200):
    off = blocks.folder_terms(H200X2, "h200", h200, ids_gather_host=False)
    on = blocks.folder_terms(H200X2, "h200", h200, ids_gather_host=True)
    isolated = blocks.load_collective_host(H200X2)["all_gather"]
    assert blocks.IDS_GATHER_KEY not in off.host and on.host[blocks.IDS_GATHER_KEY] == isolated
    # the cheap call set apart, the per-call figure of the other calls is read higher
    assert on.host["all_gather"] >= off.host["all_gather"]
    rows = off.rows[(off.rows["bench"] == "tp_block") & (off.rows["block"] == "moe")
                    & (pd.to_numeric(off.rows["tp"]) == 2)]
    sp = rows[rows["sequence_parallel"].map(blocks._bool)]
    assert len(sp)
    for _, r in sp.iterrows():   # five calls, one of them now at ~0.1 ms instead of ~0.3 ms
        f0, _ = blocks.tp_block_ops(r, off.spec, h200, off.host, off.kernel_host)
        f1, _ = blocks.tp_block_ops(r, on.spec, h200, on.host, on.kernel_host)
        assert isolated in [op[0] for op in f1.ops] and isolated not in [op[0] for op in f0.ops]
