"""Section host_bound (issue 13, s7dec): host-bound records beside their host calibration, in one
process; the code path real/campaigns/s7dec.sh runs, on the CPU with tiny shapes."""

import csv

import torch

from real.bench import host_bound as hb
from real.bench import host_dispatch as hd
from real.bench.records import Recorder
from real.bench.timing import Deadline, Timer
from real.telemetry import Telemetry


def test_host_calibration_takes_only_the_fitting_split_layers():
    moe, mla = hd.fit_layer_cases(quick=False)
    assert moe and mla
    assert all(c[1] not in hd.HOLDOUT_MODELS and c[2] not in hd.HOLDOUT_EXPERTS for c in moe)
    assert all(c[1] not in hd.HOLDOUT_MODELS for c in mla)
    all_moe, all_mla = hd._layer_cases(quick=False)
    assert len(moe) < len(all_moe) and len(mla) < len(all_mla)      # the held-out shapes are left out


def test_serve_cases_are_the_serve_sections():
    # the kernels are taken for exactly the models the model.csv serve rows time
    from real.configs import get_spec
    for name, _, _ in hb.SERVE_CASES:
        assert get_spec(name).num_layers >= 1


def test_quick_section_writes_calibration_records_and_kernels(tmp_path):
    env = {"fp8_blockwise_kernel": False, "gpu_name": "cpu"}
    rec = Recorder(tmp_path, env)
    timer = Timer(torch.device("cpu"), Telemetry(), 0.0, max_reps=2, warmup=1)
    deadline = Deadline(120.0)
    deadline.start(1.0)
    hb.bench_host_bound(rec, timer, torch.device("cpu"), deadline, True, env)
    rec.close()
    hd_rows = list(csv.DictReader((tmp_path / "host_dispatch.csv").open()))
    layers = [r for r in hd_rows if r["phase"] in ("fwd", "infer", "bwd")]
    assert layers and all(r["split"] == "fit" for r in layers)
    # the round's rows are kept raw beside the median rows
    assert (tmp_path / "round0" / "model.csv").is_file() and (tmp_path / "round1" / "model.csv").is_file()
    assert {r["phase"] for r in layers} == {"fwd", "infer", "bwd"}
    steps = [r for r in hd_rows if r["phase"] in ("prefill", "decode")]
    assert {r["phase"] for r in steps} == {"prefill", "decode"} and all(r["split"] == "holdout" for r in steps)
    assert all(float(r["host_s"]) > 0 and int(r["aten_ops"]) > 10 for r in steps)
    model = list(csv.DictReader((tmp_path / "model.csv").open()))
    assert {r["bench"] for r in model} == {"prefill", "decode"}
    assert len(model) == len(list(csv.DictReader((tmp_path / "round1" / "model.csv").open())))   # one row a record
    mla = list(csv.DictReader((tmp_path / "attention.csv").open()))
    assert {r["bench"] for r in mla} == {"mla_layer_fwd", "mla_layer_bwd"}


def test_an_over_deadline_writes_nothing_after_the_calibration(tmp_path):
    class _Over:
        def over(self):
            return True
    env = {"fp8_blockwise_kernel": False, "gpu_name": "cpu"}
    rec = Recorder(tmp_path, env)
    hb.bench_host_bound(rec, Timer(torch.device("cpu"), Telemetry(), 0.0, max_reps=1, warmup=0),
                        torch.device("cpu"), _Over(), True, env)
    rec.close()
    assert not list(tmp_path.glob("*.csv"))


def test_the_median_round_row_is_written_per_record(tmp_path):
    rec = Recorder(tmp_path, {"gpu_name": "cpu"})
    rounds = hb.RoundRecorder(rec)
    for i, times in enumerate([(3.0, 1.0), (1.0, 2.0), (2.0, 9.0)]):
        rounds.start_round(i)
        for b, t in zip((1, 8), times):
            rounds.row("model", bench="decode", model="tiny", batch=b, prompt_len=32, gen_len=8, precision="bf16",
                       time_s=t, reps=i + 1)
    rounds.drop_round(2)          # a round cut short leaves no row behind
    rounds.close()
    assert rounds.write_median_rounds() == 2
    rec.close()
    rows = {int(r["batch"]): r for r in csv.DictReader((tmp_path / "model.csv").open())}
    # two rounds left: the lower median, i.e. the faster round, whole (its reps column too)
    assert float(rows[1]["time_s"]) == 1.0 and rows[1]["reps"] == "2"
    assert float(rows[8]["time_s"]) == 1.0 and rows[8]["reps"] == "1"
    assert len(list(csv.DictReader((tmp_path / "round2" / "model.csv").open()))) == 2   # raw rows kept
