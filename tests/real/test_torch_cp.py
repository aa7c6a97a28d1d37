"""real/bench/torch_cp.py (campaign s8cp): the profiler-trace analysis on a synthetic trace (kernels
by the host range that launched them, categories, exposed NCCL time), the torch_cp section's
code on two gloo ranks with PyTorch's CP API stood in for (PyTorch's context parallelism runs only
CUDA SDPA kernels: on CPU the section itself skips and says why), and the campaign script as a
CPU dry run."""

import contextlib
import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from real.bench import torch_cp
from real.bench.cli import main
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.ports import free_port
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def test_kernel_categories():
    cat = torch_cp.kernel_category
    assert cat("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)") == "nccl"
    assert cat("void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>") == "attention"
    assert cat("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_3") == "attention"
    assert cat("fmha_cutlassB_bf16_aligned_64x64_k128_sm80") == "attention"
    assert cat("void at::native::(anonymous namespace)::CatArrayBatchedCopy<...>") == "copy"
    assert cat("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>") == "fill"
    assert cat("void at::native::reduce_kernel<512, 1>") == "reduce"
    assert cat("void at::native::vectorized_elementwise_kernel<4, at::native::sigmoid_kernel_cuda>") == "elementwise"


def _ev(cat, name, ts, dur, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def _synthetic_trace():
    """Two phases on the host (fwd 0..100 us, bwd 100..300 us); kernels launched in each (by
    correlation id), the backward's launched from another thread, some running after their range."""
    ev = [_ev("user_annotation", "fwd", 0, 100), _ev("user_annotation", "bwd", 100, 200)]
    launches = {1: 10, 2: 20, 3: 30, 4: 150, 5: 160, 6: 170}
    ev += [_ev("cuda_runtime", "cudaLaunchKernel", ts, 2, correlation=c) for c, ts in launches.items()]
    ev += [_ev("kernel", "flash_fwd_kernel", 50, 40, correlation=1, stream=7),
           _ev("kernel", "ncclDevKernel_AllGather", 40, 30, correlation=2, stream=20),   # 10 us exposed
           _ev("kernel", "sigmoid_kernel", 95, 10, correlation=3, stream=7),
           _ev("kernel", "flash_bwd_dq_dk_dv", 200, 100, correlation=4, stream=7),
           _ev("kernel", "ncclDevKernel_SendRecv", 250, 80, correlation=5, stream=20),   # 30 us exposed
           _ev("kernel", "CatArrayBatchedCopy", 340, 10, correlation=6, stream=7)]
    ev += [_ev("cpu_op", "aten::_scaled_dot_product_flash_attention", 12, 50),
           _ev("cpu_op", "aten::_scaled_dot_product_flash_attention_backward", 155, 10)]
    return {"traceEvents": ev}


def test_kernels_by_phase_tables_and_timelines():
    trace = _synthetic_trace()
    ks = torch_cp.kernels_by_phase(trace)
    assert {(k["name"], k["phase"]) for k in ks} == {
        ("flash_fwd_kernel", "fwd"), ("ncclDevKernel_AllGather", "fwd"), ("sigmoid_kernel", "fwd"),
        ("flash_bwd_dq_dk_dv", "bwd"), ("ncclDevKernel_SendRecv", "bwd"), ("CatArrayBatchedCopy", "bwd")}
    table = torch_cp.kernel_table(ks, reps=2)
    row = next(t for t in table if t["kernel"] == "flash_bwd_dq_dk_dv")
    assert row["category"] == "attention" and row["calls"] == 0.5 and row["time_s"] == pytest.approx(50e-6)
    fwd = torch_cp.phase_timeline(ks, "fwd", reps=1)
    assert fwd["span_s"] == pytest.approx(65e-6)          # 40..105
    assert fwd["compute_s"] == pytest.approx(50e-6)       # 50..105
    assert fwd["nccl_s"] == pytest.approx(30e-6)
    assert fwd["nccl_exposed_s"] == pytest.approx(10e-6)  # 40..50
    assert fwd["idle_s"] == pytest.approx(5e-6)           # 90..95
    bwd = torch_cp.phase_timeline(ks, "bwd", reps=1)
    assert bwd["span_s"] == pytest.approx(150e-6)         # 200..350
    assert bwd["nccl_exposed_s"] == pytest.approx(30e-6)  # 300..330
    assert bwd["idle_s"] == pytest.approx(10e-6)          # 330..340
    calls = torch_cp.aten_calls_by_phase(trace)
    assert calls == {("fwd", "aten::_scaled_dot_product_flash_attention"): 1,
                     ("bwd", "aten::_scaled_dot_product_flash_attention_backward"): 1}


def test_chunk_cases_cover_every_cp2_call():
    """The one-GPU calls of a load-balanced CP2 rank (s = S/2): the causal s x s reference and the
    non-causal s x s/2, s/2 x s calls, for every total length; the chunk calls of the held-out
    length held out."""
    cases = torch_cp.llama_chunk_cases(False)
    for S in torch_cp.TORCH_CP_SEQ_LENS:
        s = S // 2
        got = {(q, k, c) for b, q, k, c, src in cases}
        assert {(S, S, True), (s, s, True), (s, s // 2, False), (s // 2, s, False)} <= got
    assert {torch_cp.torch_cp_split(S) for S in torch_cp.TORCH_CP_SEQ_LENS} == {"fit", "holdout"}
    mla = torch_cp.mla_chunk_cases(False)
    assert len(mla) == 3 * len(torch_cp.MLA_CHUNK_CASES)


@contextlib.contextmanager
def _no_cp(mesh, **kwargs):
    yield


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from torch.distributed.device_mesh import init_device_mesh
    # PyTorch's CP runs only CUDA kernels: stand in a context that leaves SDPA local, so that the
    # rest of the section (timing, profiling, the gathered kernel tables and timelines) runs here
    torch_cp.CP_API.update(unavailable=lambda dev: "", api=lambda: (init_device_mesh, _no_cp, lambda m: None))
    assert main(["--out", out, "--quick", "--only", "torch_cp"]) == 0


def test_torch_cp_section_code_on_two_gloo_ranks(tmp_path):
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and "torch_cp_skipped" not in env
    with (tmp_path / "torch_cp.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["torch_cp"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    rows = list(csv.DictReader((tmp_path / "torch_cp.csv").open()))
    assert {(r["rotate_method"], r["seq_len"], r["cp"]) for r in rows} == {
        (m, str(S), "2") for m in torch_cp.ROTATE_METHODS for S in torch_cp.QUICK_SEQ_LENS}
    for r in rows:
        assert float(r["time_s"]) > 0 and float(r["host_time_s"]) > 0 and r["local_len"] == str(int(r["seq_len"]) // 2)
    tl = list(csv.DictReader((tmp_path / "torch_cp_timeline.csv").open()))
    assert {(r["rotate_method"], r["rank"], r["phase"]) for r in tl} == {
        (m, str(k), p) for m in torch_cp.ROTATE_METHODS for k in (0, 1) for p in torch_cp.PHASES}
    fwd_calls = [json.loads(r["sdpa_calls"]) for r in tl if r["phase"] == "fwd"]
    assert all(sum(c.values()) >= 1 for c in fwd_calls)   # the SDPA op, seen in the forward's range


def test_s8cp_campaign_cpu_dry_run(tmp_path):
    """real/campaigns/s8cp.sh with tiny shapes: the one-GPU expert GEMM and chunk rows with the environment; the
    torch_cp part runs on two gloo ranks and says that PyTorch's CP needs CUDA; the TP traces."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S8CP_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s8cp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)
    out = tmp_path / "s8cp"
    with (out / "cp_chunks.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["cp_chunks"] + STAT_COLS + ENV_COLS
    rows = list(csv.DictReader((out / "cp_chunks.csv").open()))
    assert {r["bench"] for r in rows} == {"llama_causal", "llama_chunk", "llama_causal_kvcontig", "mla_block"}
    assert {r["phase"] for r in rows} == {"fwd", "fwd_bwd"}
    for r in rows:
        assert float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
    grouped = list(csv.DictReader((out / "gemm.csv").open()))   # the TP2 MoE blocks' expert GEMMs
    assert {r["bench"] for r in grouped} == {"grouped_gemm", "grouped_gemm_wgrad"}
    assert all(float(r["time_s"]) > 0 and r["precision"] == "bf16" for r in grouped)
    log_txt = (out / "log.txt").read_text()
    assert (out / "env_torch_cp.json").exists(), f"the torch_cp part wrote no env.json; its log:\n{log_txt[-6000:]}"
    assert "CUDA" in json.loads((out / "env_torch_cp.json").read_text())["torch_cp_skipped"]
    chunks_env = json.loads((out / "env_chunks.json").read_text())
    assert "cp_chunks_kernels_llama_causal_cudnn_64" in chunks_env   # the profiled call (no kernels on CPU)
    assert len(list((out / "traces").glob("trace_tp_*_rank*.json.gz"))) == 4
    assert len(list((out / "traces").glob("trace_tp_*_tp1.json.gz"))) == 2   # the one-GPU references
    assert "s8cp done" in (out / "log.txt").read_text()
