"""Section attn_small (real/bench/attention.py, s12mla) and its campaign real/campaigns/s12mla.sh on
the CPU with tiny shapes: the grid's bounds and split, attention.csv's own schema, the MLA's operand
layout at the real head dims, and the campaign's quick dry run."""

import csv
import json
import os
import subprocess
from pathlib import Path

import torch

from calibration.split import is_held_out
from real.bench import attention as at
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS, NoRecorder
from real.bench.timing import Timer
from real.telemetry import Telemetry
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_holds_the_mla_calls_within_its_bounds_with_both_splits():
    grid = at.small_attention_grid(False)
    assert len(grid) == len(set(grid)) == 84
    assert all(b * s <= at.SMALL_MAX_TOKENS and b * h * s >= at.SMALL_MIN_HEAD_ROWS for h, b, s in grid)
    assert set(at.MLA_CALLS) <= set(grid)
    assert [h for h, _, _ in grid][0] == 16 and [h for h, _, _ in grid][-1] == 32   # V2-Lite's heads first
    held = {(h, b, s): is_held_out({"bench": "attn_bwd", "seq_len": s, "num_heads": h}) for h, b, s in grid}
    assert held[(16, 1, 4096)] and not held[(16, 4, 1024)]   # the split rule decides, not the grid
    assert 40 <= sum(not v for v in held.values()) < len(grid)
    # batch x heads x seq spans the MLA calls (65,536 head-rows at 16 heads) from both sides
    rows = sorted(b * h * s for h, b, s in grid if not held[(h, b, s)])
    assert rows[0] < 16 * 4096 < rows[-1]


def test_mla_layout_at_real_head_dims_runs_forward_and_backward_on_cpu():
    q, k, v = at.sdpa_operands(1, 2, 32, 192, 128, torch.device("cpu"), "bshd_mla")
    assert q.shape == (1, 2, 32, 192) and v.shape == (1, 2, 32, 128)
    assert not v.is_contiguous() and v.stride(2) == 2 * 256   # a slice of the (B, S, H, 128 + 128) up-projection
    timer = Timer(torch.device("cpu"), Telemetry(0), 0.0, max_reps=2, warmup=1)
    rates = at.time_sdpa(NoRecorder(), timer, torch.device("cpu"), 1, 2, 32, 192, 128, layout="bshd_mla")
    assert rates["fwd"] > 0 and rates["bwd"] > 0


def test_campaign_dry_run_on_cpu(tmp_path):
    # S12MLA_FULL=1: the first grid after the small one (the default run is the small one alone)
    env = {**os.environ, "S12MLA_QUICK": "1", "S12MLA_FULL": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(ROOT / "real/campaigns/s12mla.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s12mla"
    log = (out / "log.txt").read_text()
    assert "part attn_small,attn_first exit 0" in log and "s12mla done" in log
    rows = _rows(out / "attention.csv")
    assert list(rows[0]) == SHAPE_COLS["attention"] + STAT_COLS + ENV_COLS   # attention.csv's own columns
    shapes = [(int(r["num_heads"]), int(r["batch"]), int(r["seq_len"])) for r in rows]
    assert shapes[::2] == shapes[1::2] == at.small_attention_grid(True) + at.first_attention_grid(True)
    assert [r["bench"] for r in rows[:2]] == ["attn_fwd", "attn_bwd"]
    assert all(float(r["time_s"]) > 0 and r["torch_version"] and r["timestamp_utc"] for r in rows)
    layout = _rows(out / "attention_layout.csv")
    assert {r["layout"] for r in layout} == {"bshd_mla"} and len(layout) == 2
    assert "nccl_version" in json.loads((out / "env.json").read_text())
