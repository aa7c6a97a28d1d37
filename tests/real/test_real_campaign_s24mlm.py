"""Section mlm_sustained (real/bench/mlm_sustained.py) and its campaign real/campaigns/s24mlm.sh on the
CPU with tiny shapes: every TE-split GEMM written whole and as its chunks (one stream, three), every
block and the reference GEMM once in a burst and then per held window, each row with the environment
columns every record must carry."""

import csv
import os
import subprocess
from pathlib import Path

from real.bench import mlm_sustained as ms
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_te_split_gemms_are_the_four_ring_exchange_and_two_pipeline_gemms_of_a_gpt_layer():
    gemms = {name: (m, n, k, c) for name, m, n, k, c in ms.te_gemms(18432, 4096)}
    assert gemms["qkv_fprop"] == (4096, 3 * 18432 // 8, 18432, 8)
    assert gemms["fc1_fprop"] == (4096, 4 * 18432 // 8, 18432, 8)
    assert gemms["proj_dgrad"] == (4096, 18432 // 8, 18432, 8)     # dX of the output projection's shard
    assert gemms["fc2_dgrad"] == (4096, 4 * 18432 // 8, 18432, 8)
    assert gemms["proj_fprop"] == (4096, 18432, 18432 // 8, 4)
    assert gemms["fc2_fprop"] == (4096, 18432, 4 * 18432 // 8, 4)


def test_campaign_dry_run_writes_every_variant_and_held_windows(tmp_path):
    env = {**os.environ, "S24MLM_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(ROOT / "real/campaigns/s24mlm.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s24mlm"
    log = (out / "s24mlm.log").read_text()
    assert "part mlm_sustained exit 0" in log and "s24mlm done" in log
    gemm = _rows(out / "gemm.csv")
    assert list(gemm[0]) == SHAPE_COLS["gemm"] + STAT_COLS + ENV_COLS
    tags = {r["shape_tag"] for r in gemm}
    for name, _m, _n, _k, c in ms.te_gemms(128, 64):
        assert {f"tiny-gpt/{name}/whole", f"tiny-gpt/{name}/chunks{c}_streams1",
                f"tiny-gpt/{name}/chunks{c}_streams3"} <= tags
    assert all(float(r["time_s"]) > 0 and r["torch_version"] and r["timestamp_utc"] for r in gemm)
    held = _rows(out / "sustained.csv")
    assert list(held[0]) == SHAPE_COLS["sustained"] + STAT_COLS + ENV_COLS
    for config in ("tiny-gpt tp8 b1 s32 block fwd_bwd flash", "gemm m=512 n=256 k=448"):
        mine = [r for r in held if r["config"] == config]
        assert [r["phase"] for r in mine][:2] == ["burst", "sustained"], config
        assert all(float(r["time_s"]) > 0 and r["bench"] == "mlm_sustained" for r in mine)


def test_round_two_dry_run_times_every_variant_twice_in_paired_order(tmp_path):
    env = {**os.environ, "S24MLM2_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(ROOT / "real/campaigns/s24mlm2.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "s24mlm2"
    assert "part mlm_chunks exit 0" in (out / "s24mlm2.log").read_text()
    gemm = _rows(out / "gemm.csv")
    assert all(r["bench"] == "mlm_chunks2" and r["gpu_name"] and r["torch_version"] for r in gemm)
    for name, _m, _n, _k, c in ms.te_gemms(128, 64):
        mine = [r["shape_tag"].split("/", 2)[2] for r in gemm if r["shape_tag"].split("/")[1] == name]
        variants = ["whole", f"chunks{c}_streams1", f"chunks{c}_streams3"]
        assert mine == [f"{v}/a" for v in variants] + [f"{v}/b" for v in reversed(variants)]

