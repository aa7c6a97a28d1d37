"""Every output FILE has the resolved scenario beside it (FILE's stem + .scenario.resolved.toml), and
it loads back to the scenario that ran: `twin serve --json F` and `twin replay --json F` wrote none
until s21walk (an --out DIR always held its scenario.resolved.toml; `twin balance --json F`: test_docs)."""

from twin.cli.main import main
from twin.core.scenario import SERVING, TRAINING, load_scenario

TINY_RUN = ('name = "tiny-run"\n[model]\nname = "tiny"\n[cluster]\ngpu = "h800"\nnum_gpus = 8\n[plan]\npp = 2\nep = 4\n'
            '[workload]\nseq_len = 512\nglobal_batch_seqs = 32\n[uncertainty]\nnum_samples = 100\n'
            '[[run.stages]]\nname = "pretrain"\ntokens = 1e9\nseq_len = 512\nglobal_batch_seqs = 32\n')


def test_serve_json_file_has_its_resolved_scenario_beside(tmp_path):
    assert main(["serve", "--quiet", "--requests", "20", "--set", "serve.output_len=64", "--json", str(tmp_path / "r1.json")]) == 0
    resolved = tmp_path / "r1.scenario.resolved.toml"
    assert load_scenario(resolved, kind=SERVING).serve.output_len == 64


def test_replay_json_file_has_its_resolved_scenario_beside(tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY_RUN)
    assert main(["replay", str(scenario), "--quiet", "--out", str(tmp_path / "report"),
                 "--json", str(tmp_path / "elsewhere" / "run.json"), "--set", "cluster.gpu=h200"]) == 0
    resolved = tmp_path / "elsewhere" / "run.scenario.resolved.toml"
    assert load_scenario(resolved, kind=TRAINING).cluster.gpu == "h200"
    assert (tmp_path / "report" / "scenario.resolved.toml").is_file()
    # s27walk round 3: the report says what this tiny model took from DeepSeek-V3's defaults (stderr and --json did)
    assert ("Assumed from DeepSeek-V3&#x27;s defaults, not set for this model: plan.schedule = dualpipe, "
            in (tmp_path / "report" / "report.html").read_text())


def test_stdout_json_writes_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--quiet", "--requests", "20", "--json", "-"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_sweep_json_file_has_its_resolved_scenario_beside(tmp_path):
    """s23walk D5: `twin sweep --json F` wrote neither the base scenario into F nor beside it."""
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY_RUN)
    assert main(["sweep", str(scenario), "--quiet", "--workers", "1", "--grid", "plan.schedule=1f1b,zb1p",
                 "--out", str(tmp_path / "sw"), "--json", str(tmp_path / "s.json"), "--set", "cluster.gpu=h200"]) == 0
    assert load_scenario(tmp_path / "s.scenario.resolved.toml", kind=TRAINING).cluster.gpu == "h200"


def test_step_json_file_has_its_resolved_scenario_beside(tmp_path):
    """s28prod: `twin step --json F` was the one output FILE without its resolved scenario beside it (the scenario
    sat inside F only); infeasible (exit 3) as feasible."""
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY_RUN)
    assert main(["step", str(scenario), "--quiet", "--json", str(tmp_path / "step.json"), "--set", "cluster.gpu=h200"]) == 0
    assert load_scenario(tmp_path / "step.scenario.resolved.toml", kind=TRAINING).cluster.gpu == "h200"
    assert main(["step", "--quiet", "--json", str(tmp_path / "oom.json"), "--set", "workload.seq_len=10000000"]) == 3
    assert load_scenario(tmp_path / "oom.scenario.resolved.toml", kind=TRAINING).workload.seq_len == 10_000_000
