"""Section mla_host (issue 13, s8mla): MLA host time per kernel by op class beside the MLA layer
records; the code path real/campaigns/s8mla.sh runs, on the CPU with tiny shapes."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from real.bench import host_dispatch as hd
from real.bench import mla_host as mh
from real.bench.records import Recorder
from real.bench.timing import Timer
from real.telemetry import Telemetry
from tests.campaigns import FORKED_PY

ROOT = Path(__file__).resolve().parents[2]


def test_fit_cases_are_the_fitting_split_and_holdout_cases_the_records():
    from calibration.split import is_held_out
    for name, b, s in mh.MLA_FIT_CASES:
        assert not is_held_out({"bench": "mla_layer_fwd", "model": name, "batch": b, "seq_len": s})
    for name, b, s in mh.MLA_HOLDOUT_CASES:
        assert is_held_out({"bench": "mla_layer_fwd", "model": name, "batch": b, "seq_len": s})
        assert name in hd.HOLDOUT_MODELS


@pytest.mark.parametrize("op", mh.PROBE_OPS)
def test_probe_phases_dispatch_the_chain_as_their_class(op):
    # the same chain of n ops in every phase: forward phases dispatch n ops, the backward phases one
    # per op (the engine's nodes, or the Function's backward) and the result matches the reference
    n, d = 5, 8
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(d, d, generator=g), torch.randn(d, d, generator=g) / d ** 0.5
    xg, gy = x.clone().requires_grad_(True), torch.randn(d, d, generator=g)
    ref_y = mh._chain(op, x, w, n)
    for phase in ("nograd", "record", "custom_fwd"):
        fn, setup = mh.probe_phase(op, phase, x, xg, w, gy, n)
        counter = hd._CountOps()
        with counter:
            y = fn(setup())
        assert counter.n == n and torch.allclose(y, ref_y)
        assert y.requires_grad == (phase != "nograd")
    grads = []
    for phase in ("engine", "custom_bwd"):
        fn, setup = mh.probe_phase(op, phase, x, xg, w, gy, n)
        state = setup()
        counter = hd._CountOps()
        with counter:
            (gx,) = fn(state)
        assert counter.n >= n
        grads.append(gx)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_an_over_deadline_writes_no_layer_rows(tmp_path):
    class _Over:
        until = 0.0

        def over(self):
            return True
    env = {"fp8_blockwise_kernel": False, "gpu_name": "cpu"}
    rec = Recorder(tmp_path, env)
    mh.bench_mla_host(rec, Timer(torch.device("cpu"), Telemetry(), 0.0, max_reps=1, warmup=0),
                      torch.device("cpu"), _Over(), True, env)
    rec.close()
    assert not list(tmp_path.glob("*.csv"))


def test_campaign_script_runs_on_the_cpu(tmp_path):
    # the script as the lead runs it (python3 on the GPU image; here the test's interpreter)
    script = (ROOT / "real/campaigns/s8mla.sh").read_text().replace("python3 -m", f"{FORKED_PY} -m")
    (tmp_path / "s8mla.sh").write_text(script)
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(tmp_path / "s8mla.sh"), str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "TWIN_TESTS_PYTHON": sys.executable,   # FORKED_PY runs it
                            "TWIN_FORK_SERVER": os.environ.get("TWIN_FORK_SERVER", ""),   # its fork server, if any
                            "S8MLA_QUICK": "1", "PYTHONPATH": str(ROOT),
                            "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (out / "s8mla" / "log.txt").read_text()
    assert "mla_host exit 0" in log and "all sections ran" in log
    _check_outputs(out / "s8mla")


def _check_outputs(d: Path):
    probes = list(csv.DictReader((d / "host_class.csv").open()))
    assert {(r["op"], r["phase"]) for r in probes} == {(o, p) for o in mh.PROBE_OPS for p in mh.PROBE_PHASES}
    assert all(float(r["host_s"]) > 0 and r["split"] == "fit" for r in probes)
    rows = list(csv.DictReader((d / "host_dispatch.csv").open()))
    assert {r["phase"] for r in rows} == {"fwd", "infer", "bwd"}
    assert {r["precision"] for r in rows} == {"bf16", "fp8-rowwise"}
    assert all(r["config"].startswith("mla_layer ") and int(r["aten_ops"]) > 10 for r in rows)
    mla = list(csv.DictReader((d / "attention.csv").open()))
    assert {r["bench"] for r in mla} == {"mla_layer_fwd", "mla_layer_bwd"}
    # one row per record (the median round), the raw rounds kept beside
    assert len(mla) == len(list(csv.DictReader((d / "round1" / "attention.csv").open())))
    assert (d / "round0" / "host_class.csv").is_file() and (d / "env.json").is_file()


def test_host_rows_take_the_round_of_their_median_host_time(tmp_path):
    from real.bench.host_bound import RoundRecorder
    rec = Recorder(tmp_path, {"gpu_name": "cpu"})
    rounds = RoundRecorder(rec, rank_by={"host_dispatch": "host_s"})
    for i, (host, t) in enumerate([(1.0, 5.0), (3.0, 5.0), (2.0, 4.0)]):
        rounds.start_round(i)
        rounds.row("host_dispatch", bench="host_dispatch", config="mla_layer tiny b1 s8", phase="bwd", precision="bf16",
                   host_s=host, time_s=t)
    rounds.close()
    assert rounds.write_median_rounds() == 1
    rec.close()
    (row,) = list(csv.DictReader((tmp_path / "host_dispatch.csv").open()))
    assert float(row["host_s"]) == 2.0 and float(row["time_s"]) == 4.0     # by host time, not event time
