"""Sweeps: axes and points, the rows journal, resume after SIGKILL with no orphaned worker, Dask."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from twin.core.errors import ScenarioError
from twin.core.journal import Journal, clean_stale_tmp, read_rows
from twin.core.scenario import apply_overrides, from_dict, read_raw
from twin.planning.sweep import Axis, candidate_id, check_keys, parse_axis, points, run_sweep

ROOT = Path(__file__).resolve().parents[2]
# a small MoE training job: DeepSeek-V2-Lite on 64 H800, each step a fraction of a second
SMALL = """name = "small"
[model]
name = "deepseek-v2-lite"
[cluster]
gpu = "h800"
num_gpus = 64
[plan]
tp = 1
pp = 4
ep = 8
schedule = "1f1b"
[workload]
seq_len = 4096
global_batch_seqs = 256
"""


@pytest.fixture()
def small(tmp_path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def test_axes_parse_lists_and_ranges():
    assert parse_axis("plan.pp=8,16") == Axis("plan.pp", values=(8, 16))
    assert parse_axis("cluster.gpu=h800,h200").values == ("h800", "h200")
    assert parse_axis("workload.routing_imbalance=1.0:1.5") == Axis("workload.routing_imbalance", low=1.0, high=1.5)
    assert parse_axis("plan.pp=2:8").integer
    # plan.pp=8,8: each point twice (until s21ux)
    for bad in ("plan.pp", "pp=8", "plan.pp=", "plan.pp=3:1", "plan.pp=nan:2", "plan.pp=8,8"):
        with pytest.raises(ScenarioError, match="--grid"):
            parse_axis(bad)
    # NaN, infinity or an integer beyond int64 ended the sweep in a traceback writing its report (until s21ux)
    for bad in ("plan.pp=nan", "plan.pp=1,1e400", "plan.pp=1,99999999999999999999999", "plan.pp=[nan]",
                "plan.pp=1:99999999999999999999999"):
        with pytest.raises(ScenarioError, match=r"finite .*integers within \+-9,223,372,036,854,775,807"):
            parse_axis(bad)
    with pytest.raises(ScenarioError, match=r"--grid plan.ppp.*a field of \[plan\]"):
        check_keys([parse_axis("plan.ppp=1")])


def test_a_key_given_twice_is_refused():
    """--grid plan.pp=8,16 --grid plan.pp=4 swept two points, both at PP4 (until s19ux)."""
    with pytest.raises(ScenarioError, match=r"^--grid plan.pp: got 'plan.pp'; allowed: each key once"):
        check_keys([parse_axis("plan.pp=8,16"), parse_axis("plan.pp=4")])
    check_keys([parse_axis("plan.pp=8,16"), parse_axis("plan.ep=8")])


def test_points_grid_random_and_latin_hypercube():
    axes = [Axis("plan.pp", values=(1, 2, 4)), Axis("plan.schedule", values=("1f1b", "zb1p"))]
    assert len(points(axes, "grid")) == 6
    rnd = points(axes, "random", 50, seed=1)
    assert rnd == points(axes, "random", 50, seed=1) and len(rnd) <= 6     # duplicates dropped
    lhs = points([Axis("workload.routing_imbalance", low=1.0, high=2.0)], "lhs", 8, seed=3)
    # one point in each eighth of the range: the Latin hypercube's stratification
    assert sorted(int((v - 1.0) * 8) for ((_, v),) in lhs) == list(range(8))
    with pytest.raises(ScenarioError, match="--random N or --lhs N"):
        points([Axis("plan.pp", low=1, high=4, integer=True)], "grid")


def test_journal_drops_a_row_cut_by_a_kill_and_never_duplicates(tmp_path):
    path = tmp_path / "rows.jsonl"
    with Journal(path) as j:
        j.append({"candidate_id": "a", "x": 1})
        j.append({"candidate_id": "b", "x": 2})
        j.append({"candidate_id": "a", "x": 3})        # a second row for a: the first wins
    with open(path, "ab") as fh:
        fh.write(b'{"candidate_id": "c", "x"')       # the kill landed mid-row
    rows = read_rows(path)
    assert rows == {"a": {"candidate_id": "a", "x": 1}, "b": {"candidate_id": "b", "x": 2}}
    assert path.read_bytes().endswith(b"\n")        # truncated to the last whole row: appends stay well formed
    with Journal(path) as j:
        j.append({"candidate_id": "c", "x": 4})
    assert set(read_rows(path)) == {"a", "b", "c"}


def test_the_journal_read_a_line_at_a_time_gives_read_rows_rows_and_drops_a_cut_row(tmp_path):
    """`twin plan --out` resumes through iter_rows (the default space's journal, ~45 MB, was read
    whole and held as dicts beside its rows until s21ux): the same rows, the first of an id kept,
    the cut last row dropped from the file once read."""
    from twin.core.journal import iter_rows
    path = tmp_path / "rows.jsonl"
    with Journal(path) as j:
        j.append_many([{"candidate_id": "a", "x": 1}, {"candidate_id": "b", "x": 2}, {"candidate_id": "a", "x": 3}])
    with open(path, "ab") as fh:
        fh.write(b'garbled\n{"candidate_id": "c", "x"')
    pairs = list(iter_rows(path))
    assert pairs == [("a", {"candidate_id": "a", "x": 1}), ("b", {"candidate_id": "b", "x": 2}),
                     ("a", {"candidate_id": "a", "x": 3})]
    assert path.read_bytes().endswith(b"garbled\n")
    assert dict(reversed(pairs)) == read_rows(path)


def test_stale_staging_is_cleaned(tmp_path):
    out = tmp_path / "sw"
    (tmp_path / ".sw.abc123.tmp").mkdir()
    out.mkdir()
    (out / ".results.csv.x1.tmp").write_text("half")
    (out / "keep.csv").write_text("ok")
    removed = clean_stale_tmp(out)
    assert len(removed) == 2 and [p.name for p in tmp_path.iterdir()] == ["sw"] and os.listdir(out) == ["keep.csv"]


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc (Linux)")
def test_sweep_killed_with_sigkill_leaves_no_worker_and_resumes_without_loss_or_duplicates(small, tmp_path):
    out = tmp_path / "sw"
    argv = [sys.executable, "-m", "twin.cli.main", "sweep", str(small), "--grid", "plan.pp=1,2,4,8",
            "--grid", "workload.routing_imbalance=1.0,1.2,1.4", "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / "rows.jsonl"
    deadline = time.monotonic() + 120
    workers = set()
    while time.monotonic() < deadline and proc.poll() is None:
        workers |= _children(proc.pid)
        if journal.exists() and journal.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed: " + proc.stderr.read().decode()
    workers |= _children(proc.pid)
    assert len(workers) >= 2
    proc.kill()                  # SIGKILL: no handler runs in the parent
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "workers outlived the killed sweep"
    done_before = set(read_rows(journal))
    # the kill can land after the last row is journalled (a race on a loaded machine): then the
    # re-run must simply add nothing
    assert 2 <= len(done_before) <= 12
    (tmp_path / ".sw.stale.tmp").mkdir()      # what a kill during the report's staging leaves
    rerun = subprocess.run(argv + ["--json", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["num_points"] == 12 and result["evaluated_now"] == 12 - len(done_before)
    ids = [r["candidate_id"] for r in result["rows"]]
    assert len(ids) == len(set(ids)) == 12 and done_before <= set(ids)
    lines = journal.read_text().splitlines()
    assert len(lines) == len({json.loads(x)["candidate_id"] for x in lines}) == 12     # no row twice
    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 12 and sorted(table.column("candidate_id").to_pylist()) == sorted(ids)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc (Linux)")
def test_pool_workers_die_with_a_killed_parent_even_mid_task():
    # each worker is inside a 60 s task when its parent is killed: without the guard it would finish
    # the task (and only then fail to send its result); with it the kernel kills it at once
    code = "import time\nfrom twin.planning import executor\nfor _ in executor.run(time.sleep, [60, 60], workers=2): pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 60
    workers = set()
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert len(workers) == 2
    time.sleep(1.0)              # both inside their task
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "a worker outlived its killed parent"


def test_a_worker_exception_that_does_not_unpickle_reaches_the_parent_instead_of_hanging():
    """An exception class whose __init__ takes other arguments than it gives Exception cannot be
    rebuilt from its pickle: multiprocessing's result thread died on it and the run waited forever
    (until s20ux). Run as a process with a timeout, so a hang fails the test."""
    code = ("from twin.planning import executor\n"
            "class TwoArgs(Exception):\n"
            "    def __init__(self, a, b):\n"
            "        super().__init__(f'{a} and {b}')\n"
            "def fn(x):\n"
            "    if x == 3:\n"
            "        raise TwoArgs('one', 'two')\n"
            "    return x\n"
            "list(executor.run(fn, range(6), workers=2))\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung on an exception that does not unpickle")
    assert proc.returncode == 1
    assert re.search(r"WorkerError: __main__\.TwoArgs: one and two\n", proc.stderr), proc.stderr[-2000:]


def test_dask_local_cluster_gives_the_process_pools_rows(small):
    raw, source = read_raw(small)
    pts = points([Axis("plan.pp", values=(1, 2, 4)), Axis("plan.schedule", values=("1f1b", "zb1p"))], "grid")[:4]
    pool_rows, dask_rows = {}, {}
    run_sweep(raw, source, pts, set(), lambda r: pool_rows.__setitem__(r["candidate_id"], r), workers=2)
    run_sweep(raw, source, pts, set(), lambda r: dask_rows.__setitem__(r["candidate_id"], r), workers=2, dask="local")
    assert set(pool_rows) == {candidate_id(raw, p) for p in pts}
    assert dask_rows == pool_rows


def test_sweep_cli_writes_one_table_and_a_rerun_recomputes_nothing(small, tmp_path):
    out = tmp_path / "sw"
    argv = [sys.executable, "-m", "twin.cli.main", "sweep", str(small), "--grid", "plan.pp=1,2", "--grid",
            "plan.schedule=1f1b,dualpipe", "--out", str(out), "--workers", "1", "--quiet"]
    first = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "4 computed now, 0 resumed" in first.stdout
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["candidate_id", "plan.pp", "plan.schedule", "status", "reason"] and "step_time_s" in header
    assert (out / "sweep.png").is_file() and (out / "report.html").is_file()
    second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert "0 computed now, 4 resumed" in second.stdout
    # dualpipe on pp1 can't run: a row with its reason, not a crash
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "invalid" for r in rows) == 1


def test_python_api_sweep_returns_one_row_per_point(small):
    import twin
    out = twin.sweep(small, grid=["plan.pp=1,2", "plan.schedule=1f1b,dualpipe"], workers=1)
    assert (out.num_points, out.num_ok, out.num_invalid) == (4, 3, 1)
    assert [r["plan.pp"] for r in out.rows] == [1, 1, 2, 2]
    with pytest.raises(ScenarioError, match="random"):
        twin.sweep(small, grid=["plan.pp=1,2"], random=0)


def test_dask_missing_or_unreachable_is_refused_as_input_without_a_traceback(small, tmp_path, monkeypatch, capsys):
    """--dask without the extra installed, at a scheduler that does not answer, or at no address:
    each was a traceback (ModuleNotFoundError, or OSError after 30 s) until s20ux."""
    import dask
    import dask.distributed  # noqa: F401  (its config defaults loaded before config.set changes one)
    from twin.cli.main import main
    argv = ["sweep", str(small), "--grid", "plan.pp=1,2", "--out", str(tmp_path / "sw"), "--quiet", "--dask"]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*argv, "tcp://127.0.0.1:1"]) == 2
        assert capsys.readouterr().err.startswith("error: --dask: got 'tcp://127.0.0.1:1'; allowed: 'local' or the address "
                                                  "of a running Dask scheduler, e.g. tcp://HOST:8786 (nothing accepts "
                                                  "a connection there: ")   # refused before any work (s27walk round 2)
    assert main([*argv, "banana"]) == 2   # refused before any work (s27walk: Dask's "missing port number" after it)
    assert capsys.readouterr().err.startswith("error: --dask: got 'banana'; allowed: 'local' or a Dask scheduler's "
                                              "address [SCHEME://]HOST:PORT")
    monkeypatch.setitem(sys.modules, "dask.distributed", None)   # as if the dask extra were not installed
    assert main([*argv, "local"]) == 2
    assert capsys.readouterr().err.startswith("error: --dask: got 'local'; allowed: Dask distributed installed "
                                              "(pip install 'moe-twin[dask]'")


def test_a_point_that_raises_is_an_error_row_the_sweep_goes_on_and_a_rerun_retries_it(small, tmp_path, monkeypatch, capsys):
    """One point raising anything but ScenarioError/InfeasiblePlan (a twin bug) stopped the whole
    sweep with a traceback (until s21ux): now it is a row with status 'error' naming the exception,
    the other points run, the summary counts it and the exit status is 4; a re-run retries it."""
    from twin.cli.main import main
    from twin.planning import sweep as sweep_mod
    real = sweep_mod.simulate_step

    def flaky(sc, **kw):
        if sc.plan.pp == 2:
            raise ZeroDivisionError("float division by zero")
        return real(sc, **kw)

    monkeypatch.setattr(sweep_mod, "simulate_step", flaky)
    out = tmp_path / "sw"
    argv = ["sweep", str(small), "--grid", "plan.pp=1,2,4", "--out", str(out), "--workers", "1", "--quiet",
            "--json", str(tmp_path / "sw.json")]
    assert main(argv) == 4
    captured = capsys.readouterr()
    assert "3 points (grid): 2 ran, 0 invalid, 0 infeasible, 1 failed with an error" in captured.out
    assert captured.err.startswith("error: 1 of 3 points raised an error (status 'error' in ")
    result = json.loads((tmp_path / "sw.json").read_text())
    assert (result["num_ok"], result["num_error"]) == (2, 1)
    bad = [r for r in result["rows"] if r["status"] == "error"]
    assert [r["plan.pp"] for r in bad] == [2]
    assert bad[0]["reason"].startswith("builtins.ZeroDivisionError: float division by zero (at test_sweep.py:")
    assert "error" in (out / "results.csv").read_text() and "failed with an error" in (out / "report.html").read_text()
    monkeypatch.setattr(sweep_mod, "simulate_step", real)   # the bug fixed: the re-run computes that point only
    assert main(argv) == 0
    assert "(1 computed now, 2 resumed)" in capsys.readouterr().out
    assert json.loads((tmp_path / "sw.json").read_text())["num_error"] == 0


def test_a_serving_point_reports_its_own_simulated_latency():
    """A serving sweep over the request rate: each row's TTFT/TPOT percentiles, goodput and cost are
    the simulation's under that point's traffic (until s22walk the rows carried the analytic sweep's
    tpot_s, ttft_s and batch: the same at every rate)."""
    from twin.planning.sweep import evaluate_point
    raw, source = read_raw(None, "serving")
    raw = {**raw, "serve": {**raw["serve"], "input_len": 256, "output_len": 16, "batch_sweep": [1, 64]},
           "traffic": {"arrival": "poisson", "num_requests": 120}}
    rows = [evaluate_point((raw, source, str(rate), (("traffic.rate_per_s", rate),))) for rate in (1.0, 400.0)]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    slow, busy = rows
    assert "batch" not in slow and "tpot_s" not in slow and "ttft_s" not in slow
    assert busy["ttft_p90_s"] > slow["ttft_p90_s"] and busy["tpot_p90_s"] > slow["tpot_p90_s"]
    assert busy["output_tokens_per_s"] > slow["output_tokens_per_s"]
    for r in rows:
        assert r["ttft_p50_s"] <= r["ttft_p90_s"] <= r["ttft_p99_s"] and r["usd_per_million_output_tokens"] > 0


def test_a_serving_sweep_report_shows_latency_beside_throughput():
    """Ranked by output tokens/s per GPU alone, an overloaded point (TTFT P90 minutes) heads the
    table with nothing to say so: the serving rows show TTFT and TPOT P90 and goodput beside it."""
    from reports.sweep_report import build_page
    row = {"candidate_id": "a", "traffic.rate_per_s": 20, "status": "ok", "reason": "", "output_tokens_per_s_per_gpu": 763.0,
           "ttft_p90_s": 182.5, "tpot_p90_s": 0.124, "goodput_requests_per_s": 1.15}
    page = build_page({"num_points": 1, "mode": "grid", "num_ok": 1, "num_invalid": 0, "num_infeasible": 0, "num_error": 0,
                       "evaluated_now": 1, "axes": {"traffic.rate_per_s": [20]}, "rows": [row]}).markdown()
    assert "| a | 20 | 763 | 182 s | 124 ms | 1.15 |" in page


@pytest.mark.parametrize("kind, key, belongs", [("training", "traffic.rate_per_s", "a serving scenario"),
                                                ("serving", "plan.pp", "a training scenario")])
def test_a_key_of_the_other_kind_is_refused_before_any_point_runs(kind, key, belongs):
    """`twin sweep --grid traffic.rate_per_s=1,2` on the default training scenario ran every point
    to 'invalid' and exited 3 (until s22walk)."""
    with pytest.raises(ScenarioError, match=rf"--grid {key}: got .*belongs to {belongs}"):
        check_keys([parse_axis(f"{key}=1,2")], kind)
    check_keys([parse_axis("model.num_layers=2,4")], kind)   # [model] is every kind's


def test_a_serving_sweep_can_ask_the_serving_question_at_every_point(tmp_path):
    """`twin sweep SERVE --grid ... --rate R --ttft S --tpot S`: each point's row is its fewest GPUs,
    as `twin plan --rate` answers it (s22walk: the sweep ran each point once, at its own traffic)."""
    from twin.planning.serving import size_serving
    from twin.planning.sweep import ServingQuestion, evaluate_point
    raw, source = read_raw(None, "serving")
    raw = {**raw, "serve": {**raw["serve"], "input_len": 512, "output_len": 64}}
    q = ServingQuestion(1.0, 3.0, 0.05)
    settings = (("serve.kv_precision", "fp8"),)
    row = evaluate_point((raw, source, "a", settings, q))
    sc = from_dict(apply_overrides(raw, ['serve.kv_precision="fp8"']), source)
    best = size_serving(sc, 1.0, 3.0, 0.05).best
    assert row["status"] == "ok" and (row["num_gpus"], row["layout"]) == (best.num_gpus, best.layout) == (8, "co-located")
    assert row["usd_per_hour"] == pytest.approx(best.usd_per_hour) and row["colocated_gpus"] == 8
    # the question is part of the point's id: a resumed sweep never mixes answers to two questions
    assert candidate_id(raw, settings) != candidate_id(raw, settings, q) != candidate_id(raw, settings, ServingQuestion(2.0, 3.0, 0.05))
    from twin.cli.main import main
    assert main(["sweep", "--quiet", "--grid", "plan.pp=1,2", "--rate", "1", "--ttft", "3", "--tpot", "0.05",
                 "--out", str(tmp_path / "s")]) == 2   # a training scenario: refused before any point runs
