"""calibration/step_protocol.py: the s21host2b diagnostic's blocks read side by side."""

import numpy as np
import pandas as pd
import pytest

from calibration import step_protocol

KEY = {"bench": "decode", "model": "m", "batch": 4, "prompt_len": 256, "gen_len": 64, "precision": "bf16"}


def _steps(block, steps_s, hosts_s):
    return pd.DataFrame([{**KEY, "block": block, "step_s": s, "host_s": h} for s, h in zip(steps_s, hosts_s)])


def test_block_stats_medians_and_tail():
    # steps 3, 4, 5 ms with host 2.0, 3.5, 4.0 ms: tails 1.0, 0.5, 1.0 -> median 1.0 ms
    steps = pd.concat([_steps("control", [3e-3, 4e-3, 5e-3], [2e-3, 3.5e-3, 4e-3]), _steps("probed", [9e-3], [1e-3])])
    s = step_protocol.block_stats(steps, pd.Series(KEY), "control")
    assert s == pytest.approx({"control_step_s": 4e-3, "control_host_s": 3.5e-3, "control_tail_s": 1e-3})
    missing = step_protocol.block_stats(steps, pd.Series(KEY), "back_to_back")
    assert all(np.isnan(v) for v in missing.values())


@pytest.fixture(scope="module")
def rows():
    r = step_protocol.committed_rows()
    if r.empty:
        pytest.skip("no s21host2b records")
    return r


def test_synchronised_steps_pay_the_tail_back_to_back_steps_hide(rows):
    # every record of the three runs: the GPU time left after the host returns is longer when the step starts on
    # an idle device (control) than when it is issued behind the previous one (back to back)
    assert len(rows) == 24
    assert (rows["control_tail_s"] > rows["back_to_back_tail_s"]).all()
    # the mixtral slices' grouped expert GEMMs (one MoE layer near the step's end): a long tail at batch 32
    mixtral32 = rows[rows["model"].str.startswith("mixtral") & (rows["batch"] == 32)]
    assert (mixtral32["control_tail_s"] > 0.5e-3).all() and (mixtral32["back_to_back_tail_s"] < 0.2e-3).all()


def test_twin_gpu_sum_near_profiler_at_batch_32(rows):
    # the twin's decode GPU seconds against the profiler's kernel sum: within 15% at batch 32 (the b4 steps'
    # over-pricing, +23..+87%, is reported in docs/notes/s22host_rule.md)
    b32 = rows[rows["batch"] == 32]
    assert (abs(b32["twin_gpu_s"] / b32["kernel_sum_s"] - 1) < 0.15).all()


def test_host_rate_over_probe_per_model():
    # the GQA slices' own host time per kernel sits below the probe's rate on most runs (qwen3moe-slice 0.82-0.98),
    # the MLA slices' near it: reported in docs/notes/s22host_rule.md, not modelled
    t = step_protocol.host_rate_over_probe()
    if t.empty:
        pytest.skip("no host_steps records")
    assert len(t) == 7 and t.notna().all().all()
    assert t["qwen3moe-slice"].median() < t["mixtral-mla-slice"].median()
