"""Section cp_sustained (real/bench/cp_sustained.py) and its campaign real/campaigns/s11cp8b.sh on the
CPU with tiny shapes: every kernel written once timed (burst) and then per held window, with the
schema and environment of sustained.csv, and the config strings calibration.power_cap reads."""

import csv
import os
import subprocess
from pathlib import Path

from real.bench import cp_sustained as cs
from real.bench.cli import main
from real.bench.records import ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_cp_rank_s_calls_are_the_diagonal_and_the_two_half_shapes():
    s = cs.LLAMA_8B["local_len"]
    assert cs.attention_cases(False) == [(s, s, True), (s // 2, s, False), (s, s // 2, False)]
    # each off-diagonal call holds half the pairs of a full s x s square: a causal call's work
    fn, causal_flops = cs.full_ac_attention_fn(8, 8, True, 2, 4, __import__("torch").device("cpu"))
    _, half_q = cs.full_ac_attention_fn(4, 8, False, 2, 4, __import__("torch").device("cpu"))
    assert causal_flops == half_q > 0
    fn()   # forward, recomputed forward and backward run on the CPU kernel


def test_section_writes_burst_and_held_windows_for_every_kernel(tmp_path):
    assert main(["--out", str(tmp_path), "--quick", "--only", "cp_sustained", "--budget-s", "30"]) == 0
    rows = _rows(tmp_path / "sustained.csv")
    assert list(rows[0]) == SHAPE_COLS["sustained"] + STAT_COLS + ENV_COLS
    d = cs.QUICK_8B
    wanted = [cs.attention_config(q, k, c, d["heads"], d["head_dim"]) for q, k, c in cs.attention_cases(True)]
    wanted.append("gemm m=512 n=256 k=448")   # the BF16 reference GEMM (the FP8 one needs a GPU)
    for config in wanted:
        mine = [r for r in rows if r["config"] == config]
        assert [r["phase"] for r in mine][:2] == ["burst", "sustained"], config
        assert all(float(r["time_s"]) > 0 and r["bench"] == "cp_sustained" for r in mine)
        assert all(r["torch_version"] and r["timestamp_utc"] for r in mine)


def _campaign_dry_run(name: str, tmp_path) -> tuple[Path, str]:
    """real/campaigns/<name>.sh in its quick CPU mode (<NAME>_QUICK=1): its output folder and log."""
    env = {**os.environ, f"{name.upper()}_QUICK": "1", "PYTHON": FORKED_PY, "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(["bash", str(ROOT / f"real/campaigns/{name}.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / name
    return out, (out / "log.txt").read_text()


def test_campaign_dry_run_on_cpu(tmp_path):
    out, log = _campaign_dry_run("s11cp8b", tmp_path)
    assert "part cp_sustained exit 0" in log and "s11cp8b done" in log
    assert len(_rows(out / "sustained.csv")) >= 8 and (out / "env.json").is_file()


def test_fa2_cases_cover_torchtitan_s_call_lengths_with_equal_tokens_a_call():
    cases = cs.fa2_cases(False)
    assert sorted(s for s, _ in cases) == [8192, 16384, 32768] and cases[0][0] == 8192
    assert {s * b for s, b in cases} == {cs.FA2_TOKENS}
    fns = cs.fa2_pass_fns(8, 2, 2, 4, __import__("torch").device("cpu"))
    assert fns["bwd"][1] == 2.5 * fns["fwd"][1] > 0
    fns["fwd"][0]()
    fns["bwd"][0]()
    fns["bwd"][0]()   # the graph is kept: the backward alone runs again


def test_fa2_campaign_dry_run_on_cpu(tmp_path):
    out, log = _campaign_dry_run("s11fa2", tmp_path)
    assert "part fa2_sustained exit 0" in log and "s11fa2 done" in log
    rows = _rows(out / "sustained.csv")
    d = cs.QUICK_8B
    wanted = [cs.fa2_config(s, b, d["heads"], d["head_dim"], p) for s, b in cs.fa2_cases(True) for p in ("fwd", "bwd")]
    for config in wanted + ["gemm m=512 n=256 k=448"]:
        mine = [r for r in rows if r["config"] == config]
        assert [r["phase"] for r in mine][:2] == ["burst", "sustained"], config
        assert all(float(r["time_s"]) > 0 and r["bench"] == "fa2_sustained" for r in mine)
    assert (out / "env.json").is_file()
