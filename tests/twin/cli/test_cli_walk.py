"""s27walk: what a capacity planner met at the command line, left alone by earlier walks (docs/notes/s27walk.md).
Each test failed before its fix; a few CPU-seconds in all."""

import json

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
