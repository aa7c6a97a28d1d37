"""real/bench/torch_cp.py's torch_cp_scaling section and real/campaigns/s10cp.sh (issue 14,
torchtitan's CP rows): 32K positions a rank at CP = W, W the process count. On CPU the section's
CP1 path runs for real (the plain call), the multi-rank path on two gloo ranks with PyTorch's CP
API stood in for (it runs only CUDA SDPA kernels), and the campaign script as a dry run."""

import contextlib
import csv
import json
import os
import subprocess
from pathlib import Path

import torch.multiprocessing as mp

from real.bench import torch_cp
from real.bench.cli import main
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from tests.ports import free_port
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_scaling_cases_and_split():
    """Flash (the default kernel of the December 2024 rows) before cuDNN, torchtitan's allgather
    before alltoall; CP1 has no rotate method; CP4 and up held out, the fit sees CP1 and CP2."""
    assert torch_cp.scaling_cases(1) == [("flash", "none"), ("cudnn", "none")]
    assert torch_cp.scaling_cases(4)[:2] == [("flash", "allgather"), ("flash", "alltoall")]
    assert len(torch_cp.scaling_cases(2)) == len(torch_cp.SDPA_BACKENDS) * len(torch_cp.ROTATE_METHODS)
    assert [torch_cp.scaling_split(w) for w in (1, 2, 4, 8)] == ["fit", "fit", "holdout", "holdout"]
    # compiled (campaign s10cpc): the table's configuration only
    assert torch_cp.scaling_cases(1, compiled=True) == [("flash", "none")]
    assert torch_cp.scaling_cases(4, compiled=True) == [("flash", "allgather")]


def test_compiled_core_in_one_process(tmp_path, monkeypatch):
    """REAL_BENCH_CP_COMPILE=1: the core under torch.compile(fullgraph=True) (aot_eager off a GPU:
    the same dynamo and AOTAutograd trace), one flash row, bench torch_cp_compiled, its trace kept."""
    monkeypatch.setenv(torch_cp.COMPILE_ENV, "1")
    monkeypatch.setenv("REAL_BENCH_TRACE_DIR", str(tmp_path))
    assert main(["--out", str(tmp_path), "--quick", "--only", "torch_cp_scaling"]) == 0
    rows = _rows(tmp_path / "torch_cp.csv")
    assert [(r["bench"], r["sdpa_backend"], r["rotate_method"]) for r in rows] == [("torch_cp_compiled", "flash", "none")]
    assert float(rows[0]["time_s"]) > 0
    assert json.loads((tmp_path / "env.json").read_text())["torch_cp_compiled"] is True
    assert len(list(tmp_path.glob("trace_torch_cp_compiled_flash_none_S64_rank0.json.gz"))) == 1


def test_cp1_section_in_one_process(tmp_path, monkeypatch):
    """One process, no process group: the plain call, one row per backend, the environment's
    num_gpus 0 off a GPU, a Chrome trace kept per case."""
    monkeypatch.setenv("REAL_BENCH_TRACE_DIR", str(tmp_path / "traces"))
    (tmp_path / "traces").mkdir()
    assert main(["--out", str(tmp_path), "--quick", "--only", "torch_cp_scaling"]) == 0
    with (tmp_path / "torch_cp.csv").open() as f:
        assert next(csv.reader(f)) == SHAPE_COLS["torch_cp"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    rows = _rows(tmp_path / "torch_cp.csv")
    assert [(r["sdpa_backend"], r["rotate_method"], r["cp"]) for r in rows] == [("flash", "none", "1"),
                                                                             ("cudnn", "none", "1")]
    for r in rows:
        assert r["seq_len"] == r["local_len"] == str(torch_cp.QUICK_SCALING_LOCAL_LEN)
        assert r["load_balance"] == "none" and r["split"] == "fit" and r["num_gpus"] == "0"
        assert float(r["time_s"]) > 0 and r["gpu_name"] and r["timestamp_utc"]
    tl = _rows(tmp_path / "torch_cp_timeline.csv")
    assert {(r["rank"], r["phase"]) for r in tl} == {("0", p) for p in torch_cp.PHASES}
    assert len(list((tmp_path / "traces").glob("trace_torch_cp_*_none_S64_rank0.json.gz"))) == 2


@contextlib.contextmanager
def _no_cp(mesh, **kwargs):
    yield


def _rank(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), REAL_BENCH_TRACE_DIR=out)
    from torch.distributed.device_mesh import init_device_mesh
    # PyTorch's CP runs only CUDA kernels: a context that leaves SDPA local stands in, so that the
    # section's own code (the sweep at W ranks, timing, gathered kernel tables, timelines) runs here
    torch_cp.CP_API.update(unavailable=lambda dev: "", api=lambda: (init_device_mesh, _no_cp, lambda m: None))
    assert main(["--out", out, "--quick", "--only", "torch_cp_scaling"]) == 0


def test_scaling_section_on_two_gloo_ranks(tmp_path):
    """W = 2 (the W = 4 run takes the same code with split holdout; four CPU ranks cost ~30 s):
    S = 2 x the per-rank length, every backend x rotate method; every rank's timeline gathered to
    rank 0 and a trace kept per rank and case."""
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["failures"] == [] and env["world_size"] == 2
    rows = _rows(tmp_path / "torch_cp.csv")
    assert {(r["sdpa_backend"], r["rotate_method"]) for r in rows} == set(torch_cp.scaling_cases(2))
    for r in rows:
        assert r["cp"] == "2" and r["seq_len"] == str(2 * torch_cp.QUICK_SCALING_LOCAL_LEN)
        assert r["local_len"] == str(torch_cp.QUICK_SCALING_LOCAL_LEN) and r["split"] == "fit"
        assert r["load_balance"] == "head_tail" and float(r["time_s"]) > 0
    tl = _rows(tmp_path / "torch_cp_timeline.csv")
    assert {r["rank"] for r in tl} == {"0", "1"}
    assert len(list(tmp_path.glob("trace_torch_cp_*_rank1.json.gz"))) == len(torch_cp.scaling_cases(2))


def test_s10cp_campaign_cpu_dry_run(tmp_path):
    """real/campaigns/s10cp.sh with tiny shapes on two gloo ranks: CP1's rows with the environment,
    each part's files renamed by its CP degree; the CP2 part records that PyTorch's CP needs CUDA;
    no CP4 part with two ranks."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S10CP_QUICK": "1", "S10CP_QUICK_RANKS": "2",
           "S10CP_EAGER": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s10cp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)
    out = tmp_path / "s10cp"
    rows = _rows(out / "torch_cp_cp1.csv")
    assert {r["cp"] for r in rows} == {"1"} and len(rows) == len(torch_cp.scaling_cases(1))
    assert all(float(r["time_s"]) > 0 and r["torch_version"] and r["timestamp_utc"] for r in rows)
    assert "CUDA" in json.loads((out / "env_cp2.json").read_text())["torch_cp_skipped"]
    assert not (out / "env_cp4.json").exists()
    log = (out / "log.txt").read_text()
    assert "the CP4 part skipped" in log and "s10cp done" in log
    assert len(list((out / "traces").glob("trace_torch_cp_*_rank0.json.gz"))) == 2


def test_s10cpc_campaign_cpu_dry_run(tmp_path):
    """real/campaigns/s10cp.sh without S10CP_EAGER runs s10cpc.sh (the compiled parts) on two gloo
    ranks: the CP2 part runs the section with REAL_BENCH_CP_COMPILE set and records that PyTorch's
    CP needs CUDA; no CP4 part; no eager output."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S10CP_QUICK": "1", "S10CP_QUICK_RANKS": "2",
           "PYTHONPATH": str(REPO)}
    env.pop("S10CP_EAGER", None)
    subprocess.run(["bash", str(REPO / "real/campaigns/s10cp.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)
    assert not (tmp_path / "s10cp").exists()
    out = tmp_path / "s10cpc"
    cp2 = json.loads((out / "env_compiled_cp2.json").read_text())
    assert "CUDA" in cp2["torch_cp_skipped"] and cp2["world_size"] == 2
    log = (out / "log.txt").read_text()
    assert "the compiled CP4 part skipped" in log and "s10cpc done" in log

