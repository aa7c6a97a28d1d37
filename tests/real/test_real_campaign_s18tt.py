"""real/campaigns/s18tt.sh (issue 14, torchtitan's 8B at 32K): the measured Llama block at CP1 with BF16
and with torchao's tensorwise Float8 linears (real.fp8.tensorwise_linear), as a CPU dry run."""

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from real.bench import cp_block
from real.fp8 import E5M2_DTYPE, quantize_tensorwise, tensorwise_linear
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_tensorwise_scale_is_one_per_tensor():
    x = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    q, inv = quantize_tensorwise(x)
    assert inv.dim() == 0 and float(inv) == pytest.approx(4.0 / 448.0)
    assert float(q.float().abs().max()) == 448.0 and q.dtype == torch.float8_e4m3fn
    assert quantize_tensorwise(x, E5M2_DTYPE, 57344.0)[0].dtype == E5M2_DTYPE


def test_tensorwise_linear_and_its_gradients_follow_bf16():
    """Forward and both gradients within FP8's rounding of the BF16 linear (CPU: the dequantized product)."""
    torch.manual_seed(0)
    x = torch.randn(64, 32, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(48, 32) * 0.1).to(torch.bfloat16).requires_grad_()
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    y = tensorwise_linear(x[None], w)[0]
    y.float().square().sum().backward()
    F.linear(x2, w2).float().square().sum().backward()
    def rel(a, b):
        return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())
    assert y.shape == (64, 48) and y.dtype == torch.bfloat16
    assert rel(y, F.linear(x2, w2)) < 0.06 and rel(x.grad, x2.grad) < 0.1 and rel(w.grad, w2.grad) < 0.1
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16


def test_float8_block_runs_every_linear_in_float8(monkeypatch):
    """All seven linears of the block go through the tensorwise linear, in the forward and again
    in the full-AC recomputation."""
    calls = []
    import real.dense as dense
    real_linear = dense.tensorwise_linear
    monkeypatch.setattr(dense, "tensorwise_linear", lambda x, w: calls.append(1) or real_linear(x, w))
    fwd, bwd, _ = cp_block.block_fns(16, torch.device("cpu"), quick=True, compiled=False, float8=True)
    bwd(fwd())
    assert len(calls) == 14


def _campaign(tmp_path, gpus: int):
    # the eager Float8 part only (the BF16 one is s17cp's CP1 part, tested there): one process start
    env = {**os.environ, "PYTHON": FORKED_PY, "S18TT_QUICK": "1", "S18TT_QUICK_GPUS": str(gpus),
           "S18TT_PARTS": "fp8eager", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s18tt.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=120)
    return tmp_path / "s18tt"


def test_s18tt_campaign_cpu_dry_run(tmp_path):
    """The eager Float8 part's row (bench cp_block, precision fp8-tensorwise, fit) with the
    environment and its timeline, renamed by part (the CPU profiler records no kernels)."""
    out = _campaign(tmp_path, 1)
    rows = _rows(out / "torch_cp_cp1_fp8eager.csv")
    assert [(r["bench"], r["cp"], r["precision"], r["split"]) for r in rows] == [("cp_block", "1", "fp8-tensorwise", "fit")]
    assert float(rows[0]["time_s"]) > 0 and rows[0]["torch_version"] and rows[0]["timestamp_utc"]
    assert {r["phase"] for r in _rows(out / "torch_cp_timeline_cp1_fp8eager.csv")} == {"fwd", "bwd"}
    env = json.loads((out / "env_cp1_fp8eager.json").read_text())
    assert env["cp_block_float8"] is True and env["cp_block_compiled"] is False and env["failures"] == []
    # the Float8 block's gradients against the same block eager in BF16: every leaf, FP8 rounding only
    errs = env["cp_block_grad_rel_error"]
    assert set(errs) == {"x", "attention_norm.weight", "ffn_norm.weight", "wq", "wk", "wv", "wo", "w1", "w3", "w2"}
    assert max(errs.values()) < 0.2 and env["cp_block_grads_ok"] is True
    assert list((out / "traces" / "fp8eager").glob("trace_cp_block_fp8_S64_rank0.json.gz"))
    assert not (out / "torch_cp_cp1_bf16.csv").exists() and "s18tt done" in (out / "log.txt").read_text()


def test_s18tt_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert "nothing to run" in (out / "log.txt").read_text()
    assert not list(out.glob("*.csv"))
