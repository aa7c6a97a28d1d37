"""real/campaigns/s20new.sh (session s20new): real/'s training step on the slices of other MoE
families (twin/data/models.toml qwen3moe-/qwen2moe-/mixtral-mla-slice), as a CPU dry run, and each
slice's MoE layout (expert count, top-k, shared width) training on the CPU at toy widths."""

import csv
import dataclasses
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from calibration import prereg
from real.bench.whole_model import parse_train_cases
from real.configs import get_spec
from real.model import build_model
from real.train import MasterAdamW, train_step
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s20new.sh"
NEW_SLICES = ("qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice")


def _campaign(tmp_path, gpus: int):
    env = {**os.environ, "PYTHON": FORKED_PY, "S20NEW_QUICK": "1", "S20NEW_QUICK_GPUS": str(gpus),
           "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=120)
    return tmp_path / "s20new"


def test_s20new_campaign_cpu_dry_run(tmp_path):
    """The tiny model's two rows (BF16 and the CPU's FP8), with the bench's environment columns."""
    out = _campaign(tmp_path, 1)
    with (out / "model.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["bench"], r["model"], r["batch"], r["seq_len"]) for r in rows] == [("train_step", "tiny", "2", "64")] * 2
    assert rows[0]["precision"] == "bf16" and rows[1]["precision"].startswith("fp8")
    for r in rows:
        assert float(r["time_s"]) > 0 and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
    assert (out / "env.json").is_file() and "s20new done" in (out / "log.txt").read_text()


def test_s20new_campaign_needs_a_gpu(tmp_path):
    out = _campaign(tmp_path, 0)
    assert not (out / "model.csv").exists() and "no GPU: nothing to run" in (out / "log.txt").read_text()


def test_campaign_cases_are_the_preregistered_ones():
    """The script's cases string and calibration.prereg.CASES (what was predicted) are the same list."""
    text = re.search(r'^CASES="([^"]+)"', SCRIPT.read_text(), re.M)[1]
    assert [(m, S, tuple(b)) for m, S, b in parse_train_cases(text)] == list(prereg.CASES)


def test_parse_train_cases():
    assert parse_train_cases("a:4096:1,2; b:2048:4;") == [("a", 4096, [1, 2]), ("b", 2048, [4])]


@pytest.mark.parametrize("name", NEW_SLICES)
def test_new_slice_layout_trains_on_cpu(name):
    """Each slice at toy widths but its own expert count, top-k and shared width: one training step
    runs, every routed token reaches top_k experts, the loss is finite."""
    spec = get_spec(name)
    toy = dataclasses.replace(spec, hidden_size=64, vocab_size=256, num_heads=2, kv_lora_rank=32,
                              qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, intermediate_size=96,
                              moe_intermediate_size=32 if spec.moe_intermediate_size < 4096 else 96)
    torch.manual_seed(0)
    model = build_model(toy, "cpu", torch.float32, max_seq_len=32)
    opt = MasterAdamW(model.parameters())
    tokens = torch.randint(0, toy.vocab_size, (2, 32))
    loss, counts = train_step(model, opt, tokens, torch.roll(tokens, -1, 1))
    assert torch.isfinite(torch.tensor(loss))
    assert len(counts) == spec.num_layers - spec.num_dense_layers
    for c in counts:
        assert c.numel() == spec.num_routed_experts and int(c.sum()) == 2 * 32 * spec.top_k
