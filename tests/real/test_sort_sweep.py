"""real/bench/sort_sweep.py on the CPU (its dry run): one row per (op, size), every environment column filled."""
import csv

import torch

from real.bench import sort_sweep


def test_calls_compute_what_real_runs():
    dev = torch.device("cpu")
    order = sort_sweep.make_call("argsort", 100, dev)()
    assert order.shape == (100,) and sorted(order.tolist()) == list(range(100))
    # index_put_ of a permutation with accumulate: every destination row receives exactly one source row
    out = sort_sweep.make_call("index_put", 50, dev)()
    assert out.shape == (50, sort_sweep.WIDTH) and bool((out.abs().sum(1) > 0).all())


def test_quick_run_writes_a_row_per_op_and_size(tmp_path):
    assert sort_sweep.run(tmp_path, quick=True) == 0
    rows = list(csv.DictReader(open(tmp_path / "sort_sweep.csv")))
    assert [(r["op"], int(r["elems"])) for r in rows] == [(op, n) for op in ("argsort", "index_put")
                                                          for n in sort_sweep.QUICK_SIZES]
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and float(r["time_s"]) > 0 for r in rows)
    assert (tmp_path / "env_sort_sweep.json").is_file()


def test_reps_below_one_is_refused(tmp_path, capsys):
    assert sort_sweep.main(["--out", str(tmp_path), "--reps", "0"]) == 2
    assert "--reps: 0" in capsys.readouterr().err and not (tmp_path / "sort_sweep.csv").exists()
