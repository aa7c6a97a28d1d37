"""real/campaigns/s24long.sh (session s24long, docs/notes/s24long_rule.md): section long_attn as a CPU dry run (tiny
shapes, the three masks), and the section's case list against the rule's split."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from real.bench.long_attention import LONG_ATTN_CASES, call_pairs
from tests.campaigns import FORKED_PY   # the campaign's Python processes forked from the fork server (torch imported once)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "real/campaigns/s24long.sh"


def test_s24long_campaign_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S24LONG_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(SCRIPT), str(tmp_path)], cwd=REPO, env=env, check=True, capture_output=True, timeout=90)
    out = tmp_path / "s24long"
    with (out / "long_attn.csv").open() as f:
        rows = list(csv.DictReader(f))
    # three tiny cases, each forward and forward + backward
    assert [(r["mask"], r["phase"]) for r in rows] == [(m, p) for m in ("causal", "none", "lower_right")
                                                       for p in ("fwd", "fwd_bwd")]
    assert all(float(r["time_s"]) > 0 and r["torch_version"] and r["gpu_name"] for r in rows)
    # forward FLOPs 4 E H pairs: the lower-right call of 16 queries over 96 keys scores 16 x 96 - 16^2 / 2 = 1,408
    # pairs -> 4 x 16 x 4 x 1,408 = 360,448; forward + backward 3.5x
    lr = [r for r in rows if r["mask"] == "lower_right"]
    assert [float(r["flops"]) for r in lr] == pytest.approx([360448.0, 3.5 * 360448.0], rel=1e-5)   # 6 digits
    assert "s24long done" in (out / "log.txt").read_text()
    assert (out / "env.json").exists() and (out / "gpu.txt").exists()


def test_long_attn_cases_follow_the_rule_split():
    """docs/notes/s24long_rule.md: fitting rows the 8B tie, the 16-head 8K and 32K squares and the two 4K x 64K
    calls; every other case held out."""
    fit = {(tag, q, kv, mask) for tag, _, _, _, q, kv, mask, _, split, _ in LONG_ATTN_CASES if split == "fit"}
    assert fit == {("8b", 32768, 32768, "causal"), ("405b-tp8", 8192, 8192, "causal"),
                   ("405b-tp8", 32768, 32768, "causal"), ("405b-tp8", 4096, 65536, "lower_right"),
                   ("405b-tp8", 4096, 65536, "none")}
    assert sum(1 for c in LONG_ATTN_CASES if c[-2] == "holdout") == 7
    assert [c[-1] for c in LONG_ATTN_CASES if c[-1] != 1] == [16]   # the 70B's local batch, once


def test_call_pairs_refuses_a_rectangular_causal_square():
    assert call_pairs(8, 8, "causal") == 8 * 8 - 32   # 64 - 8^2 / 2
    assert call_pairs(4, 8, "none") == 32
    with pytest.raises(ValueError, match="lower_right"):
        call_pairs(4, 8, "causal")
    with pytest.raises(ValueError, match="one of"):
        call_pairs(4, 8, "upper_left")
