"""The human summaries print times and memory in units that fit their size: a small model's step
printed as "step time 0.00 s", its ops as "0.000 s" and its memory as "0.0 GiB" until s21walk."""

import re

import pytest

from twin.cli import summary
from twin.cli.main import main
from twin.core.specs import get_gpu
from twin.training.step import training_capacity_bytes

TINY = ["--set", 'model.name="tiny"', "--set", "cluster.num_gpus=8", "--set", "plan.pp=2", "--set", "plan.ep=4",
        "--set", "workload.seq_len=512", "--set", "workload.global_batch_seqs=32"]


@pytest.mark.parametrize("x, text", [(18.4855, "18.49 s"), (1.0, "1.00 s"), (0.0, "0 s"), (0.00466, "4.66 ms"),
                                     (0.000932, "932 µs"), (4.5e-8, "0.045 µs"), (3600.0, "3,600.00 s")])
def test_seconds_picks_the_unit_by_size(x, text):
    assert summary.seconds(x) == text


@pytest.mark.parametrize("x, text", [(70.4 * 2**30, "70.4 GiB"), (0, "0.0 GiB"), (5.36e6, "0.00499 GiB")])
def test_gib_keeps_three_digits_below_one_gib(x, text):
    assert summary.gib(x) == text


def test_a_small_models_step_prints_no_zero_times(capsys):
    assert main(["step", *TINY, "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"\b0\.0+ (s|GiB)\b", out), out
    # of the GPU's training capacity: 80 GB (74.5 GiB) less what a process holds outside torch's allocator (s26mem3)
    capacity_gib = training_capacity_bytes(get_gpu("h800")) / 2**30
    assert re.search(r"step time +[\d.]+ ms\n", out)
    assert re.search(rf"memory per GPU +[\d.]+ GiB of {capacity_gib:.1f} GiB", out) and capacity_gib < 74.5


def test_balance_summary_in_units_that_fit():
    case = {"rank_max_over_mean": 1.37, "step_time_s": 0.00467, "straggler_penalty_frac": 0.002,
            "gpu_hours_lost": 654_425.6, "out_of_memory": True}
    text = summary.balance_summary({"balanced_step_time_s": 0.00466, "pretrain_steps": 235_239.66, "num_gpus": 2048,
                                    "cases": {"measured_no_bias": case, "zipf_fit": {"infeasible": "out of memory"}}})
    lines = text.splitlines()
    assert lines[0] == "balanced step 4.66 ms, 235,240 pre-training steps on 2,048 GPUs"
    assert re.fullmatch(r"measured_no_bias +rank max/mean  1\.37  step +4\.67 ms  penalty +0\.2%  lost +654K GPU-h"
                        r"  \(OOM: all-to-all buffers\)", lines[1])
    assert lines[2].split() == ["zipf_fit", "infeasible:", "out", "of", "memory"]


@pytest.mark.parametrize("xs, text", [((1.574, 4.675, 8.712), "1,574 / 4,675 / 8,712 ms"), ((0.0605, 0.0648), "60.5 / 64.8 ms"),
                                      ((63.5, 70.6), "63.5 / 70.6 s"), ((5.64e-4, 5.7e-4), "564 / 570 µs"),
                                      ((0.0337,), "33.7 ms")])
def test_latencies_share_the_largest_ones_unit(xs, text):
    assert summary.latencies(*xs) == text


def test_a_fast_deployment_prints_no_zero_latency_or_price(capsys):
    """A small model served fast printed 'E2E P50 / P99 0.0 / 0.0 s', 'TTFT 1 / 1 / 1 ms', 'input $0.00' and
    'one prompt's prefill 0 ms' until s21walk."""
    argv = ["serve", "--quiet", "--requests", "20", "--set", 'model.name="tiny"', "--set", "serve.tp=1", "--set", "serve.dp_attention=true",
            "--set", "serve.batch=4", "--set", "serve.input_len=128", "--set", "serve.output_len=128"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert not re.search(r"(?<![\d.,])0(\.0+)? (/|s\b|ms\b)|\$0\.00\b|prefill 0 ms", out), out
    assert re.search(r"TTFT P50 / P90 / P99 +[\d.]+ / [\d.]+ / [\d.]+ (µs|ms)\n", out), out


def test_balance_summary_blames_the_buffers_only_where_the_balanced_step_fits():
    def case(oom):
        return {"rank_max_over_mean": 1.0, "step_time_s": 18.7, "straggler_penalty_frac": 0.0, "gpu_hours_lost": 0.0,
                "out_of_memory": oom}
    result = {"balanced_step_time_s": 18.7, "pretrain_steps": 1e5, "num_gpus": 2048,
              "cases": {"balanced": case(True), "zipf_fit": case(True)}}
    lines = summary.balance_summary(result).splitlines()
    assert "runs out of memory even balanced" in lines[0]
    assert lines[1].endswith("(OOM)") and lines[2].endswith("(OOM)") and "all-to-all" not in "".join(lines)
    result["cases"]["balanced"] = case(False)
    lines = summary.balance_summary(result).splitlines()
    assert lines[1].endswith("GPU-h") and lines[2].endswith("(OOM: all-to-all buffers)")


def test_replay_summary_labels_a_run_deepseek_does_not_describe_by_what_its_rows_are(tmp_path, capsys):
    """A tiny model on H200 printed 'Pre-training cost of DeepSeek-V3' and 'H800 GPU-hours per trillion
    pre-training tokens' beside the twin's own figures until s21walk."""
    scenario = tmp_path / "tiny_h200.toml"
    scenario.write_text('name = "tiny-h200"\n[model]\nname = "tiny"\n[cluster]\ngpu = "h200"\nnum_gpus = 8\n'
                        '[plan]\npp = 2\nep = 4\n[workload]\nseq_len = 512\nglobal_batch_seqs = 32\n'
                        '[uncertainty]\nnum_samples = 100\n'
                        '[[run.stages]]\nname = "pretrain"\ntokens = 1e9\nseq_len = 512\nglobal_batch_seqs = 32\n')
    assert main(["replay", str(scenario), "--quiet", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "DeepSeek-V3 " not in out.split("(DeepSeek's published figures")[0] and "H800 GPU-hours" not in out
    assert re.search(r"^Pre-training +\S+", out, re.M) and re.search(r"^H200 GPU-hours per trillion pre-training tokens ", out, re.M)


def test_serve_summary_says_when_a_closed_loop_has_no_steady_state(capsys):
    """100 requests for R1's closed loop all started at once and printed 'input tokens/s 0' with no word
    of why until s21walk."""
    assert main(["serve", "--quiet", "--requests", "40"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^note: 40 requests for 40 closed-loop clients: .*simulate at least 80 ", out, re.M), out
    argv = ["serve", "--quiet", "--requests", "20", "--set", 'model.name="tiny"', "--set", "serve.tp=1",
            "--set", "serve.dp_attention=true", "--set", "serve.batch=4"]
    assert main(argv) == 0
    assert "note:" not in capsys.readouterr().out   # 20 requests for 4 clients: steady


def test_an_open_run_shorter_than_three_lifetimes_is_noted():
    """2,000 requests at 20/s arrive in 100 s while each lives 151 s: the headline reads a load still
    filling, said under the figures (s22walk); a run of 5 lifetimes says nothing."""
    from types import SimpleNamespace

    from twin.cli.summary import _open_run_note
    sc = SimpleNamespace(traffic=SimpleNamespace(rate_per_s=20.0))
    sim = SimpleNamespace(arrival="poisson", simulated_requests=2_000, e2e_s=SimpleNamespace(p50=151.1))
    assert "2,000 requests arrive in 100.00 s, under three request lifetimes" in _open_run_note(sc, sim)
    assert "simulate at least 9,066" in _open_run_note(sc, sim)   # 3 x 20 x 151.1
    assert _open_run_note(sc, SimpleNamespace(arrival="poisson", simulated_requests=2_000, e2e_s=SimpleNamespace(p50=20.0))) == ""
    assert _open_run_note(sc, SimpleNamespace(arrival="closed", simulated_requests=10, e2e_s=SimpleNamespace(p50=151.1))) == ""
