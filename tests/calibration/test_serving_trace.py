"""Kernel-group times per layer and micro-batch from a PyTorch-profiler trace (calibration/serving_trace.py):
checked on small hand-built traces, and on DeepSeek's own training trace where the reference copy is present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from calibration import serving_trace as st
from calibration.trace import load_trace

ROOT = Path(__file__).resolve().parents[2]
# DeepSeek's reference copy sits beside the checkout (../shared/reference, as the developers' guide
# places it); TWIN_REFERENCE_DIR points elsewhere
REFERENCE_DIR = Path(os.environ.get("TWIN_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))
TRAIN_JSON = REFERENCE_DIR / "profile-data" / "train.json"


def _trace(gpu_annotations: bool = False) -> list[dict]:
    """Two layers x two micro-batches of a decode layer as DeepSeek's figure orders it (SHARED,
    ATTN-0, MLP, ATTN-1, with the dispatch and combine), one kernel per group, launched from a
    second CPU thread (as train.json's backward is) or replayed under GPU-side ranges (CUDA graphs)."""
    ev, t, corr = [], 1000.0, 1
    kernels = {"SHARED": [("deep_gemm::fp8_gemm_nt shared", 20.0)],
               "ATTN-0": [("deep_gemm::fp8_gemm_nt q_a", 10.0), ("rmsnorm_kernel", 3.0)],
               "DISPATCH": [("deep_ep::internode_ll::dispatch<...>", 50.0)],
               "MLP": [("deep_gemm::m_grouped_fp8_gemm_nt_masked", 40.0), ("silu_and_mul_kernel", 5.0)],
               "ATTN-1": [("flash_fwd_splitkv_mla_kernel", 100.0), ("nvjet_tst_64x128 o_proj", 15.0)],
               "COMBINE": [("deep_ep::internode_ll::combine<...>", 80.0)]}
    for _layer in range(2):
        for _mb in range(2):
            for name, ks in kernels.items():
                span = sum(d for _, d in ks) + 4.0 * len(ks)
                if gpu_annotations:
                    ev.append({"ph": "X", "cat": "gpu_user_annotation", "name": name, "pid": 0, "tid": 7, "ts": t, "dur": span})
                else:
                    ev.append({"ph": "X", "cat": "user_annotation", "name": name, "pid": 100, "tid": 1, "ts": t, "dur": span})
                k_t = t
                for kname, dur in ks:
                    if not gpu_annotations:
                        ev.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 100, "tid": 2,
                                   "ts": k_t + 1.0, "dur": 2.0, "args": {"correlation": corr}})
                    ev.append({"ph": "X", "cat": "kernel", "name": kname, "pid": 0, "tid": 7, "ts": k_t + 2.0, "dur": dur,
                               "args": {"correlation": corr}})
                    k_t += dur + 4.0
                    corr += 1
                t += span
    # a kernel outside every phase (a sampling kernel after the last layer) is not attributed
    ev.append({"ph": "X", "cat": "kernel", "name": "sampling_kernel", "pid": 0, "tid": 7, "ts": t + 10.0, "dur": 9.0,
               "args": {"correlation": 10_000}})
    return ev


@pytest.mark.parametrize("gpu_annotations", [False, True])
def test_derive_books_each_kernel_to_its_group_layer_and_microbatch(gpu_annotations):
    rows = st.derive(_trace(gpu_annotations), microbatches=2)
    cells = {(r["annotation"], r["layer"], r["microbatch"], r["group"]): r for r in rows if r["microbatch"] >= 0}
    assert {(layer, mb) for _, layer, mb, _ in cells} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert cells[("SHARED", 1, 0, "shared_experts")]["kernel_us"] == 20.0
    assert cells[("MLP", 0, 1, "routed_experts")]["kernel_us"] == 40.0
    assert cells[("MLP", 0, 1, "elementwise")]["kernel_us"] == 5.0
    assert cells[("ATTN-1", 1, 1, "attention_core")]["kernel_us"] == 100.0
    assert cells[("ATTN-1", 1, 1, "attention_gemm")]["kernel_us"] == 15.0
    assert cells[("DISPATCH", 0, 0, "dispatch")]["kernels"] == 1
    means = st.per_microbatch_means(rows)
    assert means["attention_gemm"] == 25.0 and means["combine"] == 80.0 and means["dispatch"] == 50.0
    assert means["elementwise"] == 8.0
    # every kernel runs back to back with 4 us gaps except the first of each phase (2 us in): the
    # layer's idle time is its span less the kernels inside it; the sampling kernel is in no layer
    kernel_us_per_layer = 2 * sum(d for d in (20, 10, 3, 50, 40, 5, 100, 15, 80))
    span = next(r["kernel_us"] for r in rows if r["group"] == "span" and r["layer"] == 0)
    idle = next(r["kernel_us"] for r in rows if r["group"] == "idle" and r["layer"] == 0)
    assert idle == pytest.approx(span - kernel_us_per_layer)
    assert sum(r["kernels"] for r in rows) == 2 * 2 * 9


def test_derive_names_what_the_trace_lacks():
    with pytest.raises(ValueError, match="no GPU kernels"):
        st.derive([{"ph": "X", "cat": "user_annotation", "name": "MLP", "pid": 1, "tid": 1, "ts": 0, "dur": 1}])
    with pytest.raises(ValueError, match="no phase annotations"):
        st.derive([{"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 0, "dur": 1, "args": {}}])


def test_kernel_groups_follow_name_and_phase():
    assert st.kernel_group("void dpsk::ep::internode::cached_notify<false>(int)", "combine") == "combine"
    assert st.kernel_group("flash_fwd_splitkv_mla_kernel", "attention") == "attention_core"
    assert st.kernel_group("void cutlass::device_kernel<dpsk::grouped_gemm::cuda::fp8_pt>", "attention") == "attention_gemm"
    assert st.kernel_group("void cutlass::device_kernel<dpsk::grouped_gemm::cuda::fp8_pt>", "mlp") == "routed_experts"
    assert st.kernel_group("deep_gemm::fp8_gemm", "shared") == "shared_experts"
    assert st.kernel_group("dpsk::grouped_gemm::cuda::utils::fill_tensormaps_kernel", "mlp") == "elementwise"
    assert st.phase_of("ProfilerStep#1") is None and st.phase_of("attn(B)") == "attention"


@pytest.mark.skipif(not TRAIN_JSON.is_file(), reason="DeepSeek's train.json reference copy is not on this machine")
def test_derive_reproduces_deepseeks_training_phase_means():
    """The same derivation on DeepSeek's H800 training trace gives back every published phase mean
    (calibration/data/h800_trace.toml, from deepseek_claims.yaml) and the chunk pair's GPU span."""
    rows = st.derive(st.load_events(TRAIN_JSON), microbatches=1)
    published = load_trace()
    means = published["phase_means_us"]
    by_annotation = {}
    for r in rows:
        by_annotation[r["annotation"]] = by_annotation.get(r["annotation"], 0.0) + r["kernel_us"] / 4
    for name, key in (("attn(F)", "attn_F"), ("attn(B)", "attn_B"), ("attn(W)", "attn_W"), ("mlp(F)", "mlp_F"),
                      ("mlp(B)", "mlp_B"), ("dispatch(F)", "dispatch_F"), ("dispatch(B)", "dispatch_B"),
                      ("combine(F)", "combine_F"), ("combine(B)", "combine_B")):
        assert by_annotation[name] == pytest.approx(means[key], rel=0.005), name
    assert by_annotation["mlp(W)"] == pytest.approx(means["mlp_W"] + means["mlp_W_stream23"], rel=0.005)
    spans = sum(r["kernel_us"] for r in rows if r["group"] == "span")
    assert spans == pytest.approx(published["chunk_pair"]["gpu_span_us"], rel=1e-6)


def test_cli_derives_a_csv_with_its_source_and_compare_reads_it(tmp_path):
    trace = tmp_path / "decode.json"
    trace.write_text(json.dumps({"traceEvents": _trace()}))
    out = tmp_path / "decode.csv"
    assert st.main(["derive", str(trace), "--phase", "decode", "--out", str(out)]) == 0
    assert out.read_text().startswith(f"# source: deepseek-ai/profile-data@{st.SOURCE['commit']}:decode.json")
    rows = st.read_csv(out)
    assert st.per_microbatch_means(rows)["attention_core"] == 100.0
    result = {r["phase"]: r for r in st.compare({"decode": out, "prefill": tmp_path / "absent.csv"})}
    dec, pre = result["decode"], result["prefill"]
    assert dec["trace_available"] and not pre["trace_available"] and "absent" in pre["note"]
    core = next(g for g in dec["groups"] if g["group"] == "attention_core")
    assert core["trace_us"] == 100.0 and core["rel_error"] == pytest.approx(core["twin_us"] / 100.0 - 1.0)
    assert all(g["trace_us"] is None and g["twin_us"] is not None for g in pre["groups"])
    assert "trace not available" in st.format_table([pre]) and "attention_core" in st.format_table([dec])


def test_cli_rejects_a_missing_trace(tmp_path, capsys):
    assert st.main(["derive", str(tmp_path / "nope.json"), "--phase", "prefill"]) == 2
    assert "not found" in capsys.readouterr().err


def test_compare_runs_the_packaged_scenarios_and_names_files_from_the_package():
    """Both profiles are compared from the scenarios the package ships (until s19ux they were read
    from the checkout's scenarios/, so an installed `twin validate` compared nothing), and the
    derived CSV is named from the package root, never as an absolute path of this machine."""
    result = st.compare()
    assert [r["phase"] for r in result] == ["decode", "prefill"]
    assert [r["trace_file"] for r in result] == ["calibration/data/deepseek_decode_profile.csv",
                                                 "calibration/data/deepseek_prefill_profile.csv"]
