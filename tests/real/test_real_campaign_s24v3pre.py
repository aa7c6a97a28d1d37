"""real/campaigns/s24v3pre.sh and real/serve/prefillprof.py: the engine's prompt step profiled kernel by kernel, on
CPU with the tiny model (no kernels there: the step rows and the regions); without a GPU, nothing."""

import csv
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

from real.serve.prefillprof import MARK, attribute
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _ev(name, start, end, kernels=()):
    return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), device_type="DeviceType.CPU",
                           kernels=[SimpleNamespace(name=k, duration=d) for k, d in kernels])


def test_kernels_go_to_the_innermost_range_that_launched_them():
    events = [_ev(MARK + "layers.0.attn", 0, 100), _ev(MARK + "layers.0.attn.prefill_core", 10, 50),
              _ev("aten::mm", 5, 6, [("gemm", 4.0)]), _ev("aten::bmm", 20, 21, [("gemm", 6.0), ("softmax", 2.0)]),
              _ev("aten::copy_", 200, 201, [("copy", 1.0)]), _ev("aten::add", 60, 61)]
    got = attribute(events)
    assert got == {("layers.0.attn", "aten::mm", "gemm"): [1, 4e-6],
                   ("layers.0.attn.prefill_core", "aten::bmm", "gemm"): [1, 6e-6],
                   ("layers.0.attn.prefill_core", "aten::bmm", "softmax"): [1, 2e-6],
                   ("engine", "aten::copy_", "copy"): [1, 1e-6]}


def test_s24v3pre_campaign_without_a_gpu_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24v3pre.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=60)
    log = (tmp_path / "s24v3pre" / "log.txt").read_text()
    assert "skipped: no GPU" in log and "s24v3pre end" in log and "models v3-slice-2l,qwen3moe-mla-slice" in log


def test_s24v3pre_campaign_cpu_dry_run_records_the_steps(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S24V_DEVICE": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s24v3pre.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s24v3pre"
    log = (d / "log.txt").read_text()
    assert "prefillprof exit 0" in log and "s24v3pre end" in log
    steps = _read(d / "prefill_steps.csv")
    assert {r["profiled"] for r in steps} == {"0", "1"} and {r["composition"] for r in steps} == {"p1x12-d0", "p3x6-d0"}
    assert all(r["model"] == "tiny" and r["torch_version"] and r["gpu_name"] for r in steps)
    assert all(float(r["duration_s"]) >= float(r["host_s"]) > 0 for r in steps)
    assert (d / "env.json").exists() and (d / "prefill_kernels.csv").exists()
