"""Section duty_sweep (real/bench/duty_sweep.py) and its campaign real/campaigns/s14tt.sh on the CPU
with tiny shapes: the idle row, then every duty point of both kernels with the duty_sweep schema,
the measured duty within [0, 1] and the environment every row must carry."""

import csv
import os
import subprocess
from pathlib import Path

from real.bench import duty_sweep as ds
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sleep_cycles_size_the_gap_for_the_target_duty():
    assert ds.sleep_cycles(0.008, 1.0, 1500.0) == 0
    # a duty of one half: a gap as long as the busy time, in cycles of the clock just read
    assert ds.sleep_cycles(0.008, 0.5, 1500.0) == int(0.008 * 1500e6)
    assert ds.sleep_cycles(0.008, 0.25, float("nan")) == int(0.008 * 3 * 1980e6)


def test_targets_span_the_limited_and_the_free_regime():
    for targets in (ds.DUTY_TARGETS_GEMM, ds.DUTY_TARGETS_FA2):
        assert targets[0] == 1.0 and min(targets) <= 0.15 and list(targets) == sorted(targets, reverse=True)


def test_campaign_dry_run_on_cpu(tmp_path):
    env = {**os.environ, "S14TT_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(ROOT / "real/campaigns/s14tt.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s14tt"
    log = (out / "log.txt").read_text()
    assert "part duty_sweep exit 0" in log and "s14tt done" in log
    rows = _rows(out / "duty_sweep.csv")
    assert list(rows[0]) == SHAPE_COLS["duty_sweep"] + STAT_COLS + ENV_COLS
    assert rows[0]["kernel"] == "idle"
    kernels = {r["kernel"] for r in rows[1:]}
    assert len(kernels) == 2 and any(k.startswith("gemm m=") for k in kernels)
    assert any(k.startswith("attention flash") and k.endswith("causal fwd") for k in kernels)
    for kernel, targets in zip(sorted(kernels, key=lambda k: not k.startswith("gemm")),
                               (ds.DUTY_TARGETS_GEMM, ds.DUTY_TARGETS_FA2)):
        seen = {float(r["duty_target"]) for r in rows if r["kernel"] == kernel}
        assert seen == set(targets), kernel
    for r in rows[1:]:
        assert 0.0 <= float(r["duty_frac"]) <= 1.0 and float(r["time_s"]) > 0
        assert r["torch_version"] and r["timestamp_utc"]
    assert (out / "env.json").is_file()
