"""The serving twin: memory closed forms, feasibility, decode-step behaviour, EPLB, bad specs."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.fields import build
from reports.serve_report import write_outputs
from twin.core.results import to_json
from twin.core.scenario import SERVING, load_scenario
from twin.costs.memory import kv_bytes_per_token, max_batch_by_memory, memory_per_gpu, weight_breakdown
from twin.serving.iteration import (_load_figures, _moe_compute_s, decode_step, mla_decode_core_s, overlapped_layers_s, prefix_expand_s,
                                    serving_profile, straggler_slot_rows, weight_stream_floor_s)
from twin.serving.timing import IterationCosts
from twin.serving.run import serve
from twin.costs import compute
from twin.core.serve_specs import ServeSpec
from twin.core.specs import get_gpu, get_model

ROOT = Path(__file__).resolve().parents[3]
V3 = get_model("deepseek-v3")


def load_serve_scenario(path):
    sc = load_scenario(path, kind=SERVING)
    return sc, sc.serve


def run_serve(sc, serve_spec=None):
    """The serving result as JSON values, with the scenario's [serve] replaced by `serve_spec`."""
    return to_json(serve(dataclasses.replace(sc, serve=serve_spec) if serve_spec else sc))


@pytest.fixture(scope="module")
def h200_node():
    return load_serve_scenario(ROOT / "scenarios" / "r1_serve_h200.toml")


def test_kv_bytes_per_token_v3():
    # MLA keeps d_c + d_rope = 512 + 64 values per layer: 576 x 2 B x 61 layers = 70,272 B
    assert kv_bytes_per_token(V3, "bf16", include_mtp=False) == 70272
    assert kv_bytes_per_token(V3, "bf16", include_mtp=True) == 576 * 2 * 62
    # FlashMLA FP8 format: 512 FP8 + 512/128 FP32 scales + 64 BF16 rope = 656 B per layer
    assert kv_bytes_per_token(V3, "fp8", include_mtp=False) == 656 * 61


def test_r1_fp8_weights_match_published_footprint():
    w = weight_breakdown(V3, ServeSpec(ep=8, tp=8, dp_attention=False))
    assert w["weight_bytes_total"] == pytest.approx(685e9, rel=0.02)   # claim h200.weights_fp8
    bf16 = weight_breakdown(V3, ServeSpec(ep=8, tp=8, dp_attention=False, weight_precision="bf16"))
    assert bf16["weight_bytes_total"] > 1.3e12


def test_r1_does_not_fit_8xh100_in_fp8(h200_node):
    sc, s = h200_node
    h100 = dataclasses.replace(sc, cluster=dataclasses.replace(sc.cluster, gpu="h100"))
    # 8 x 79.2 GiB (torch's total_memory on our H100 80GB) = 633 GiB < 685 GB (638 GiB) of FP8 weights
    assert max_batch_by_memory(V3, get_gpu("h100"), s) == 0
    with pytest.raises(InfeasiblePlan, match=r"needs [\d.]+ GiB per GPU \(weights [\d.]+ GiB.*> 79.2 GiB.*633 GiB for 638 GiB of weights"):
        run_serve(h100, s)


def test_r1_fits_one_h200_node_and_kv_limits_the_batch(h200_node):
    sc, s = h200_node
    gpu = sc.gpu
    b = max_batch_by_memory(V3, gpu, s)
    assert b > 0
    assert memory_per_gpu(V3, gpu, s, b)["total"] <= gpu.hbm_bytes < memory_per_gpu(V3, gpu, s, b + 1)["total"]
    # DP attention stores each request's latent once instead of on every TP rank (8x less KV per
    # request and GPU), but replicates the dense weights (~19 GB instead of ~2.4 GB per GPU)
    dp = dataclasses.replace(s, tp=1, dp_attention=True)
    room = lambda spec: gpu.hbm_bytes - memory_per_gpu(V3, gpu, spec, 0)["total"]  # noqa: E731
    expected = 8 * b * room(dp) / room(s)
    assert max_batch_by_memory(V3, gpu, dp) == pytest.approx(expected, rel=0.02)


def test_decode_throughput_monotone_in_batch_until_memory_bound(h200_node):
    sc, s = h200_node
    for variant in (s, dataclasses.replace(s, disaggregated=True), dataclasses.replace(s, tp=1, dp_attention=True)):
        out = run_serve(sc, variant)
        rows = [r for r in out["sweep"] if r["feasible"]]
        thr = [r["output_tokens_per_s"] for r in rows]
        assert len(rows) >= 5
        assert all(b >= a for a, b in zip(thr, thr[1:])), thr
        tpot = [r["tpot_s"] for r in rows]
        assert all(b >= a for a, b in zip(tpot, tpot[1:])), tpot
        assert not out["sweep"][-1]["feasible"]          # the sweep ran into the memory limit
        assert out["batch"] == max(r["batch"] for r in rows)


def test_tpot_bounded_below_by_weight_streaming(h200_node):
    sc, s = h200_node
    gpu = sc.gpu
    # at a batch that touches every expert, a step reads every weight byte a GPU holds
    step = decode_step(V3, gpu, s, 256)
    assert step["tpot_s"] >= weight_stream_floor_s(V3, gpu, s)
    # and at batch 1 it still reads the dense weights and the 8 routed experts per layer
    one = decode_step(V3, gpu, s, 1)
    dense = weight_breakdown(V3, s)["dense_bytes_per_gpu"] / gpu.hbm_bytes_per_s
    assert one["tpot_s"] >= dense
    assert one["tpot_s"] < step["tpot_s"]


def test_flashmla_roofline_crossover():
    gpu, prof = get_gpu("h800"), serving_profile(get_gpu("h800"), ServeSpec())
    # flashmla.roofline: decode with h_q = 128 heads per latent is compute-bound, 16 heads (TP8) memory-bound
    for tp, bound in ((1, "compute"), (8, "memory")):
        s = ServeSpec(tp=tp, ep=8, dp_attention=tp == 1)
        t, flops, nbytes = mla_decode_core_s(V3, gpu, s, 64, 1, 4096, prof)
        peak = gpu.peak_bf16_flops_per_s * 660 / 989.5
        bw = gpu.hbm_bytes_per_s * 3000 / 3350
        assert (flops / peak > nbytes / bw) == (bound == "compute")
        assert t == pytest.approx(max(flops / peak, nbytes / bw) + prof.launch_s)


def test_eplb_replication_lowers_the_max_rank_load():
    skewed = ServeSpec(ep=8, redundant_experts=32, load_model="zipf", load_param=1.0)
    with_eplb = _load_figures(V3, skewed, 8)
    assert with_eplb["rows_frac"] < with_eplb["rows_frac_contiguous"]
    assert with_eplb["rows_frac_contiguous"] > 1.2
    gpu = get_gpu("h200")
    contiguous = dataclasses.replace(skewed, redundant_experts=0, eplb=False)
    moe_s = lambda spec, b: decode_step(V3, gpu, spec, b)["per_layer_moe_compute_s"]  # noqa: E731
    # compute-bound expert GEMMs (2,048+ rows per GPU): the straggler's rows set the time
    assert moe_s(skewed, 32768) < 0.8 * moe_s(contiguous, 32768)
    # weight-streaming regime (32 tokens per GPU): 36 resident experts per GPU instead of 32 cost
    # weight bytes and the rows barely matter - replication does not pay there
    assert moe_s(skewed, 256) > moe_s(contiguous, 256)


def test_two_batch_overlap_fills_once_per_forward_not_per_layer():
    """Micro-batches of a prefill forward: attention 4, dispatch 2, experts 5, combine 3 (ms) per
    micro-batch. One micro-batch runs them in sequence; two overlap each one's all-to-all with the
    other's compute across layer boundaries: 2 x 9 ms per layer plus one combine at the end."""
    assert overlapped_layers_s(10, 1, 4, 2, 5, 3) == pytest.approx(10 * 14)
    assert overlapped_layers_s(10, 2, 4, 2, 5, 3) == pytest.approx(10 * 2 * 9 + 3)
    # communication-bound: the all-to-all stream sets the pace (2 x 10 ms a layer)
    assert overlapped_layers_s(10, 2, 1, 5, 1, 5) == pytest.approx(10 * 2 * 10 + 1, rel=0.02)
    # a dispatch longer than the attention that should hide it leaves a bubble on the compute stream
    balanced = overlapped_layers_s(10, 2, 4, 4, 4, 4)
    assert overlapped_layers_s(10, 2, 2, 6, 6, 2) > balanced
    assert overlapped_layers_s(0, 2, 4, 2, 5, 3) == 0.0


def test_a_chunk_behind_a_cached_prefix_pays_to_expand_its_latents():
    """MLA caches latents: a prefill chunk behind c cached tokens multiplies their latents by W_UK and
    W_UV again (a GEMM of m = c, n = 128 x (128 + 128), k = 512 per layer on V3), so the same chunk
    at the same attention span costs more with the prefix's latents to expand; GQA caches K and V."""
    gpu, s = get_gpu("h800"), ServeSpec(ep=8, weight_precision="fp8")
    assert prefix_expand_s(V3, gpu, s, 0) == 0.0
    one, two = prefix_expand_s(V3, gpu, s, 4096), prefix_expand_s(V3, gpu, s, 8192)
    assert 0 < one < two <= 2.05 * one
    costs = IterationCosts(V3, gpu, s)
    alone = costs.iteration_s(0, 0.0, 8 * 2048, 2048 + 2 * 2048)[0]
    behind = costs.iteration_s(0, 0.0, 8 * 2048, 2048 + 2 * 2048, prefix_tokens=8 * 2048)[0]
    assert behind - alone == pytest.approx(costs.prefix_s(8 * 2048)) and behind > alone
    assert prefix_expand_s(get_model("llama3-8b"), gpu, ServeSpec(), 4096) == 0.0


def test_straggler_rows_keep_rows_and_skip_untouched_experts():
    rows = straggler_slot_rows(np.full(32, 1 / 256), 8.0)     # 8 rows over 256 experts: ~1 slot of 32 hit
    assert sum(rows) == pytest.approx(8 * 32 / 256)
    assert len(rows) == 1
    many = straggler_slot_rows(np.full(32, 1 / 256), 256 * 100)
    assert len(many) == 32 and many[0] == pytest.approx(100)


def test_claims_are_compared_not_fitted(h200_node):
    sc, s = h200_node
    out = run_serve(sc, s)
    ids = {c["id"]: c for c in out["claims"]}
    c = ids["h200.nim_3872"]
    assert c["claimed"] == 3872 and c["predicted"] == out["output_tokens_per_s_per_node"]
    assert c["rel_error"] == pytest.approx(c["predicted"] / 3872 - 1)
    assert "1024" in c["conditions_note"]


def test_outputs_written(tmp_path, h200_node):
    sc, s = h200_node
    result = serve(sc)
    write_outputs(result, sc, tmp_path / "out")
    out = to_json(result)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.html", "report.md", "result.json", "scenario.resolved.toml", "serve_sweep.csv", "throughput_vs_batch.png", "throughput_vs_tpot.png"} <= names
    assert (tmp_path / "out" / "serve_sweep.csv").read_text().count("\n") == len(out["sweep"]) + 1


@pytest.mark.parametrize("name", ["r1_serve_h200.toml", "r1_serve_h800_decode.toml", "r1_serve_h800_prefill.toml"])
def test_shipped_scenarios_run(name):
    sc, s = load_serve_scenario(ROOT / "scenarios" / name)
    out = run_serve(sc, s)
    assert out["output_tokens_per_s"] > 0 and out["input_tokens_per_s"] > 0 and out["ttft_s"] > 0
    assert out["memory_per_gpu_bytes"] <= sc.gpu.hbm_bytes
    assert all(c["predicted"] is not None for c in out["claims"])


@pytest.mark.parametrize("table, pattern", [
    ({"ep": 7}, r"serve.tp.*got 1.*|serve.ep.*got 7.*divisor of cluster.num_gpus = 8"),
    ({"tp": 3, "ep": 8}, r"serve.tp.*got 3.*a divisor of serve.ep = 8"),
    ({"tp": 2, "ep": 8, "dp_attention": False}, r"serve.tp.*got 2.*equal to serve.ep = 8 when serve.dp_attention = false"),
    ({"redundant_experts": 8, "eplb": False}, r"serve.redundant_experts.*got 8.*0 when serve.eplb = false"),
    ({"redundant_experts": 4}, r"serve.ep.*got 8.*routed \+ redundant experts = 256 \+ 4 = 260"),
    ({"weight_precision": "int4"}, r"serve.weight_precision.*'int4'.*one of 'fp8', 'bf16'"),
    ({"batch": -1}, r"serve.batch.*got -1.*integer >= 0"),
    ({"claims": ["nim"]}, r"serve.claims\[0\].*'nim'.*one of .*h200.nim_3872"),
    ({"speed": 1}, r"serve.speed.*known keys: .*batch"),
    ({"a2a": "nvlink", "ep": 16}, r"serve.a2a.*'nvlink'.*serve.ep = 16 spans more than one 8-GPU node"),
    ({"mtp_acceptance_frac": 1.5}, r"serve.mtp_acceptance_frac.*1.5.*<= 1"),
])
def test_bad_serve_specs_name_field_value_and_allowed(table, pattern):
    num_gpus = 16 if table.get("ep") == 16 else 8
    with pytest.raises(ScenarioError, match=pattern):
        s = build(ServeSpec, table, "serve")
        s.check_against(V3, get_gpu("h200"), num_gpus)


def test_fp8_dispatch_over_nvlink_pays_its_cast_but_deepep_low_latency_does_not():
    # DeepEP's low-latency dispatch casts to FP8 inside its kernel; an NVLink dispatch casts first
    m, gpu = get_model("deepseek-v3"), get_gpu("h200")
    loads = {"slot_shares": np.full(256, 1 / 256)}
    prof = serving_profile(gpu, ServeSpec(ep=8))
    nv = _moe_compute_s(m, gpu, ServeSpec(ep=8, a2a="nvlink"), 64.0, 64, loads, prof, 1.0)
    ll = _moe_compute_s(m, gpu, ServeSpec(ep=8, a2a="deepep_ll"), 64.0, 64, loads, prof, 1.0)
    assert nv - ll == pytest.approx(compute.cast_time_s("cast", 64 * m.hidden_size, gpu, prof))
