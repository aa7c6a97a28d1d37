"""s27walk: what a capacity planner met at the command line, left alone by earlier walks (docs/notes/s27walk.md).
Each test failed before its fix; a few CPU-seconds in all."""

import json
import re

import pytest

from twin.cli.main import main
from twin.core.scenario import load_scenario
from twin.training.step import simulate_step
from twin.training.trace import step_trace

TINY = ["--set", "model.name=tiny", "--set", "cluster.num_gpus=8", "--set", "plan.pp=2", "--set", "plan.ep=1",
        "--set", "workload.global_batch_seqs=16", "--set", "workload.seq_len=512"]


def test_twin_trace_shows_progress_and_writes_the_same_trace(tmp_path, capsys):
    """W4a: `twin trace` cut ~2.4 M tasks into op slices for ~20 s at the task bound without a word: a bar over the
    tasks, then over the slices (on stderr, off under --quiet); the trace is the same bytes either way."""
    loud, quiet = tmp_path / "loud.json", tmp_path / "quiet.json"
    assert main(["trace", *TINY, "--out", str(loud)]) == 0
    err = capsys.readouterr().err
    assert "trace: tasks" in err and "trace: slices" in err, err
    assert main(["trace", *TINY, "--out", str(quiet), "--quiet"]) == 0
    assert "trace:" not in capsys.readouterr().err
    assert loud.read_bytes() == quiet.read_bytes()
    sc = load_scenario(None, TINY[1::2])
    res = simulate_step(sc)
    assert json.loads(loud.read_bytes()) == json.loads(json.dumps(step_trace(sc, res)))


def test_a_bad_set_value_is_named_as_the_set_that_gave_it(capsys):
    """W4b: `--set plan.tp=abc` said "plan.tp in <default: deepseek_v3_pretrain.toml>: got 'abc'": the value came
    from the command line. A file's field that an override made invalid names both."""
    assert main(["step", "--set", "plan.tp=abc", "--quiet"]) == 2
    assert capsys.readouterr().err == ("error: plan.tp (--set plan.tp=abc): got 'abc'; allowed: integer >= 1 "
                                       "and <= 1,024\n")
    assert main(["step", "--set", "plan.tp=3", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: cluster.num_gpus in <default: deepseek_v3_pretrain.toml> with "
                                              "--set plan.tp=3: got 2048; allowed: a multiple of plan.tp")
    assert main(["step", "--set", "model.num_layers=0", "--set", "plan.tp=2", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: model.num_layers (--set model.num_layers=0): got 0")


def test_a_dask_address_no_scheduler_could_have_is_refused_before_the_screen(capsys):
    """W4c: `twin plan --dask bogus` screened every candidate behind its bar, then Dask said 'missing port number'."""
    for address in ("bogus", "tcp://host", "http://host:8786", "host:0", "host:70000"):
        assert main(["plan", "--tokens", "1e12", "--days", "30", "--dask", address]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --dask: got '{address}'; allowed: 'local' or a Dask scheduler's address "
                              "[SCHEME://]HOST:PORT") and "screen" not in err, err


def test_sweep_and_plan_name_a_bad_set_value_as_its_set(tmp_path, capsys):
    """W6a: `twin sweep` and `twin plan` check their scenario outside load_scenario: the same naming."""
    assert main(["sweep", "--grid", "plan.pp=8,16", "--set", "plan.ep=3", "--out", str(tmp_path / "sw"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: plan.ep (--set plan.ep=3): got 3")
    assert main(["plan", "--rate", "1", "--ttft", "1", "--tpot", "0.05", "--set", "serve.tp=3", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: serve.tp (--set serve.tp=3): got 3")


def test_a_dense_scenario_without_plan_ep_is_not_refused_for_v3s_default(tmp_path):
    """W6b: a llama scenario naming no plan.ep was refused as "plan.ep in F: got 64; allowed: 1 for a dense model":
    64 is V3's default, never in F. A dense model's plan.ep now follows it (1) where the scenario does not say; an
    explicit one is still judged."""
    f = tmp_path / "llama.toml"
    f.write_text('name = "l"\n[model]\nname = "llama3-8b"\n[cluster]\ngpu = "h100"\nnum_gpus = 64\n'
                 '[plan]\ntp = 2\npp = 4\nschedule = "1f1b"\n[workload]\nseq_len = 4096\nglobal_batch_seqs = 256\n')
    assert load_scenario(f).plan.ep == 1
    assert main(["step", str(f), "--quiet"]) == 0
    assert main(["step", str(f), "--set", "plan.ep=8", "--quiet"]) == 2


def test_twin_balance_says_whose_loads_the_measured_cases_carry(tmp_path, capsys):
    """W6c: `twin balance mixtral.toml` printed "measured_no_bias rank max/mean 2.09 ... lost 127K GPU-h" with no word
    that the loads are bench-small's (16 experts, real/ on H200) carried to the scenario's 8 experts; the report said
    so, the terminal did not. ~4 CPU-seconds."""
    f = tmp_path / "moe.toml"
    f.write_text('name = "t"\n[model]\nname = "mixtral-slice"\n[cluster]\ngpu = "h200"\nnum_gpus = 8\n[plan]\npp = 1\n'
                 'ep = 8\nschedule = "1f1b"\n[workload]\nseq_len = 1024\nglobal_batch_seqs = 16\n')
    assert main(["balance", str(f), "--quiet"]) == 0
    assert ("note: the measured cases carry bench-small's loads (16 experts, trained by real/ on H200) to "
            "mixtral-slice's 8 experts; they are not mixtral-slice's own") in capsys.readouterr().out


def test_a_sweep_prints_its_best_point(tmp_path, capsys):
    """W6e: `twin sweep` printed its counts and file names only; the answer (the report's first "Best points" row)
    was in report.html and the CSV. Now a line: the swept values and the headline figure."""
    assert main(["sweep", *TINY, "--grid", "plan.pp=1,2", "--out", str(tmp_path / "sw"), "--quiet", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^best: plan\.pp=[12]: step time \(s\) [\d.]+ \(tokens/s per GPU [\d,.]+", out, re.M), out


def test_a_sweep_of_another_model_is_told_which_fields_it_took_from_deepseek_v3s_defaults(tmp_path, capsys):
    """s27walk round 3: `twin sweep` of another model said nothing of V3's defaults it ran under (step, replay and plan
    did since round 2): the stderr note and --json's key now, the swept axes left out (each point sets them)."""
    assert main(["sweep", *TINY, "--grid", "plan.schedule=1f1b,zb1p", "--out", str(tmp_path / "sw"), "--quiet",
                 "--workers", "1", "--json", str(tmp_path / "sw.json")]) == 0
    err = capsys.readouterr().err
    assumed = json.loads((tmp_path / "sw.json").read_text())["assumed_from_deepseek_v3"]
    assert "plan.schedule" not in assumed and "plan.pp" not in assumed, assumed   # swept; set by --set
    assert {"plan.gemm_precision": "fp8", "plan.recompute": "selective"}.items() <= assumed.items(), assumed
    assert "note: assumed from DeepSeek-V3's defaults, not set for this model: " in err and "plan.schedule" not in err, err
    assert "Assumed from DeepSeek-V3&#x27;s defaults, not set for this model (and not swept): plan.gemm_precision = fp8" \
        in (tmp_path / "sw" / "report.html").read_text()


def test_the_plan_summary_says_what_its_labels_words_mean(capsys):
    """W6f: "512xh100 TP1 PP4 V1 EP8 CP1 ZeRO1 mb1 1f1b SMdef selective fp8": "SMdef" and "mb1" were nowhere
    explained, on the terminal or in the report."""
    from twin.planning.space import LABEL_LEGEND
    assert "SM (SMs held for EP communication; def: 20 with EP, else 0)" in LABEL_LEGEND
    assert "mb (sequences a micro-batch)" in LABEL_LEGEND and "V (virtual stages)" in LABEL_LEGEND
    assert main(["plan", *TINY, "--tokens", "1e9", "--days", "30", "--gpu", "h100", "--num-gpus", "8", "--pp", "1,2",
                 "--quiet"]) == 0
    assert f"\n({LABEL_LEGEND})\n" in capsys.readouterr().out


def test_argparse_refusals_are_one_named_line(capsys):
    """s27walk round 2: argparse's own refusals (`twin serve --requests 1e9`) printed the usage (3-4 lines) above
    "twin serve: error: argument --requests: invalid int value: '1e9'"; now one line, as a scenario's: flag, value,
    what is allowed, exit 2. --help still prints the usage."""
    import importlib.util
    import sys
    from pathlib import Path
    import pytest
    fuzz = sys.modules.get("fuzz_cli_loader")   # the fuzzer's pattern of a named refusal (as test_scenario_loader_fuzz)
    if fuzz is None:
        spec = importlib.util.spec_from_file_location("fuzz_cli_loader", Path(__file__).resolve().parents[3] / "benchmarks" / "fuzz_cli.py")
        fuzz = sys.modules["fuzz_cli_loader"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fuzz)
    NAMED = fuzz.NAMED
    cases = {("serve", "--requests", "1e9"): "error: --requests: got '1e9'; allowed: an integer (N)",
             ("plan", "--days", "x"): "error: --days: got 'x'; allowed: a number (DAYS)",
             ("step", "--schedule", "bogus"): "error: --schedule: got 'bogus'; allowed: 1f1b, zb1p",
             ("plan", "--bogus"): "error: arguments in twin plan: got '--bogus'; allowed: the options and arguments of `twin plan --help`",
             ("serve", "--requests"): "error: --requests: got no value; allowed: an integer (N)",
             ("frob",): "error: command: got 'frob'; allowed: model, step,",
             (): "error: command: got nothing; allowed: model, step,",
             ("step", "--quiet=3"): "error: --quiet: got '3'; allowed: no value (a switch)",
             ("sweep", "--grid", "plan.pp=1", "--random", "2", "--lhs", "2"): "error: --lhs: got it with --random; allowed: one of"}
    for argv, start in cases.items():
        with pytest.raises(SystemExit) as exc:
            main(list(argv))
        out, err = capsys.readouterr()
        lines = err.strip("\n").split("\n")
        assert exc.value.code == 2 and not out and len(lines) == 1 and lines[0].startswith(start), (argv, err)
        assert NAMED.match(lines[0]), lines[0]
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("usage: twin serve")


def test_a_dask_address_where_nothing_answers_is_refused_before_the_screen(capsys, monkeypatch):
    """s27walk round 2: `twin plan --dask tcp://HOST:PORT` where nothing listens screened every candidate, then
    waited Dask's 30 s connect timeout; now a TCP connect within --dask-connect-timeout (default 5 s) first."""
    import socket

    import twin.planning.search as search
    from twin.planning import executor
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()   # a port nothing listens on: refused at once
    monkeypatch.setattr(search, "_screen_batch", lambda *a: (_ for _ in ()).throw(AssertionError("screened")))
    argv = ["plan", "--tokens", "1e12", "--days", "30", "--quiet", "--dask", f"tcp://127.0.0.1:{port}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --dask: got 'tcp://127.0.0.1:{port}'; allowed: 'local' or the address of a running "
                          "Dask scheduler, e.g. tcp://HOST:8786 (nothing accepts a connection there: ") and err.count("\n") == 1, err
    assert main([*argv, "--dask-connect-timeout", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --dask-connect-timeout: got 0")

    def silent(addr, timeout):
        raise TimeoutError("timed out")
    monkeypatch.setattr(executor.socket, "create_connection", silent)   # a host that drops the packets
    assert main([*argv, "--dask-connect-timeout", "0.5"]) == 2
    assert "(nothing accepts a connection there: no answer within 0.5 s; --dask-connect-timeout S waits longer)" in \
        capsys.readouterr().err


LLAMA70B = 'name = "llama70b"\n[model]\nname = "llama3-70b"\n[cluster]\ngpu = "h100"\nnum_gpus = 1024\n[plan]\ntp = 8\npp = 4\n'


def test_another_model_is_told_which_fields_it_took_from_deepseek_v3s_defaults(tmp_path, capsys):
    """s27walk round 2: a llama scenario without a schedule, a GEMM precision or a batch ran DualPipe, FP8 blockwise
    GEMMs and V3's 15,360 sequences without a word (the loader's defaults are V3's). Now said on stderr, in --json and
    in the plan report; what the scenario sets, V3's own scenario and --set values are not listed; nothing moves."""
    f = tmp_path / "llama.toml"
    f.write_text(LLAMA70B)
    assumed = {"plan.schedule": "dualpipe", "plan.gemm_precision": "fp8", "plan.fp8_recipe": "blockwise",
               "plan.recompute": "selective", "workload.global_batch_seqs": 15360}
    assert main(["step", str(f), "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    err = capsys.readouterr().err
    assert "note: assumed from DeepSeek-V3's defaults, not set for this model: plan.schedule = 'dualpipe', " in err, err
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["assumed_from_deepseek_v3"] == assumed and data["scenario"]["plan"]["schedule"] == "dualpipe"
    assert main(["step", str(f), "--quiet", "--set", "plan.schedule=1f1b", "--set", "plan.gemm_precision=bf16",
                 "--json", str(tmp_path / "s.json")]) == 0
    left = json.loads((tmp_path / "s.json").read_text())["assumed_from_deepseek_v3"]
    assert left == {"plan.recompute": "selective", "workload.global_batch_seqs": 15360}, left
    capsys.readouterr()
    assert main(["step", "--quiet", "--json", str(tmp_path / "v3.json")]) == 0   # V3's own scenario: nothing assumed
    assert "assumed" not in capsys.readouterr().err and "assumed_from_deepseek_v3" not in (tmp_path / "v3.json").read_text()
    assert main(["step", "--quiet", "--set", "model.name=mixtral-8x7b", "--set", "plan.ep=8"]) == 0   # V3's file, another model
    assert "plan.pp = 16, plan.schedule = 'dualpipe'" in capsys.readouterr().err
    assert main(["plan", str(f), "--tokens", "2e11", "--days", "60", "--tp", "8", "--pp", "4", "--workers", "1", "--quiet",
                 "--out", str(tmp_path / "p"), "--json", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["assumed_from_deepseek_v3"] == assumed
    assert "Assumed from DeepSeek-V3&#x27;s defaults, not set for this model (and not varied by the search): " \
           "plan.schedule = dualpipe" in (tmp_path / "p" / "report.html").read_text()


def test_a_dask_scheduler_lost_mid_run_ends_in_one_line_naming_it(monkeypatch):
    """s28prod: a Dask scheduler that went away mid-sweep (its LocalCluster closed, the host gone) ended `twin sweep
    --dask tcp://...` in Dask's FutureCancelledError traceback, exit 1; now the --dask refusal in one line, exit 2,
    saying how far it got (sweep's and plan's journals in --out keep the rows done: a re-run resumes). A stand-in client: the second
    task's future is cancelled as Dask cancels them when the connection to the scheduler is lost."""
    import dask.distributed
    from distributed.client import FutureCancelledError

    from twin.core.errors import ScenarioError
    from twin.planning import executor

    class Future:
        def __init__(self, value):
            self.value = value

        def result(self):
            if self.value == 2:
                raise FutureCancelledError("task-2", "scheduler-connection-lost",
                                           "Client lost the connection to the scheduler.\nPlease re-run your work.")
            return self.value

    class Client:
        def __init__(self, address):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, items, pure):
            return [Future(i) for i in items]

    monkeypatch.setattr(dask.distributed, "Client", Client)
    monkeypatch.setattr(dask.distributed, "as_completed", iter)
    got = []
    with pytest.raises(ScenarioError) as exc:
        got.extend(executor.run(abs, [1, 2, 3], dask="tcp://127.0.0.1:8786"))
    assert got == [1]
    text = str(exc.value)
    assert "\n" not in text and text.startswith("--dask: got 'tcp://127.0.0.1:8786'; allowed: a Dask cluster that runs "
                                                "the whole job (it stopped after 1 of 3 tasks: FutureCancelledError: ")
    assert "scheduler-connection-lost" in text and text.endswith("a re-run into it resumes")


def test_a_model_override_is_named_as_the_set_that_gave_it(capsys):
    """s28prod: `twin model deepseek-v3 --set model.num_layers=nan` was refused as "model.num_layers in
    twin/data/models.toml: got nan", a value the catalog never held; now the --set that gave it, as every scenario
    command names an override (W4b)."""
    assert main(["model", "deepseek-v3", "--set", "model.num_layers=nan"]) == 2
    assert capsys.readouterr().err == ("error: model.num_layers (--set model.num_layers=nan): got nan; allowed: integer >= 1 "
                                       "and <= 1,000\n")
