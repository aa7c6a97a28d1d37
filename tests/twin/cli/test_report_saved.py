"""`twin report RESULT --out E` draws a saved result's report again (reports/saved.py): from the result.json
that `twin replay|serve|plan --out D` wrote (or their --json FILE) and the resolved scenario beside it, E holds
the files D held, byte for byte (a replay's Gantt step simulated again: saved_gantt_step). Until s30tree no
command read a result.json back. Small scenarios: a few CPU-seconds in all."""

import json
import re
from pathlib import Path

import pytest

from reports import saved
from twin.cli.main import main

# tiny on 8 GPUs; its first stage's 12 sequences are no batch the scenario's interleaved 1F1B (V 2) takes, so
# the replay falls back to another schedule with one chunk a rank: the Gantt step is that fallback plan's
FALLBACK_RUN = ('name = "tiny-fallback"\n[model]\nname = "tiny"\n[cluster]\ngpu = "h800"\nnum_gpus = 8\n'
                '[plan]\npp = 2\nep = 4\nschedule = "interleaved-1f1b"\nvirtual_stages = 2\n'
                '[workload]\nseq_len = 512\nglobal_batch_seqs = 32\n[uncertainty]\nnum_samples = 100\n'
                '[[run.stages]]\nname = "odd"\ntokens = 1e8\nseq_len = 512\nglobal_batch_seqs = 12\n'
                '[[run.stages]]\nname = "pretrain"\ntokens = 1e9\nseq_len = 512\nglobal_batch_seqs = 32\n')


def _same_files(original, again, left_out=()) -> None:
    names = sorted(p.name for p in original.iterdir() if p.name not in left_out)
    assert sorted(p.name for p in again.iterdir()) == names
    assert [n for n in names if (original / n).read_bytes() != (again / n).read_bytes()] == []


def test_a_saved_replay_renders_the_same_report_with_its_fallback_plans_gantt(tmp_path, capsys):
    scenario = tmp_path / "fb.toml"
    scenario.write_text(FALLBACK_RUN)
    assert main(["replay", str(scenario), "--quiet", "--out", str(tmp_path / "d"), "--json", str(tmp_path / "run.json")]) == 0
    first = json.loads((tmp_path / "d" / "result.json").read_text())["stages"][0]
    assert first["feasible"] and first["plan"]["schedule"] != "interleaved-1f1b"   # the fallback drew the Gantt
    capsys.readouterr()
    assert main(["report", str(tmp_path / "d" / "result.json"), "--out", str(tmp_path / "e")]) == 0
    assert "report: " in capsys.readouterr().out
    _same_files(tmp_path / "d", tmp_path / "e")   # report.html, report.md, the PNGs (step_gantt.png), results.csv, ...
    # the --json FILE of the same run, with FILE's resolved scenario beside it, draws the same page
    assert main(["report", str(tmp_path / "run.json"), "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "report.html").read_bytes() == (tmp_path / "d" / "report.html").read_bytes()


def test_a_saved_serve_result_renders_the_same_report(tmp_path):
    assert main(["serve", "--quiet", "--requests", "20", "--out", str(tmp_path / "d")]) == 0
    assert main(["report", str(tmp_path / "d"), "--out", str(tmp_path / "e")]) == 0   # the folder names its result.json
    _same_files(tmp_path / "d", tmp_path / "e")


def test_a_saved_plan_search_renders_the_same_report_and_tables(tmp_path):
    scenario = tmp_path / "fb.toml"
    scenario.write_text(FALLBACK_RUN)
    assert main(["plan", str(scenario), "--tokens", "1e9", "--days", "30", "--pp", "1,2", "--ep", "2,4", "--quiet",
                 "--workers", "1", "--out", str(tmp_path / "d")]) == 0
    assert main(["report", str(tmp_path / "d" / "result.json"), "--out", str(tmp_path / "e")]) == 0
    _same_files(tmp_path / "d", tmp_path / "e", left_out=("rows.jsonl",))   # the search's journal is no part of the report
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    assert main(["report", str(tmp_path / "d"), "--out", str(tmp_path / "d")]) == 0   # into its own folder: nothing moves
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before


def test_a_serving_capacity_result_renders_the_same_report(tmp_path):
    assert main(["plan", "--rate", "1,2", "--ttft", "2", "--tpot", "0.1", "--requests", "50", "--quiet",
                 "--out", str(tmp_path / "d")]) == 0
    assert saved.result_kind(json.loads((tmp_path / "d" / "result.json").read_text())) == "serving_capacity"
    assert main(["report", str(tmp_path / "d" / "result.json"), "--out", str(tmp_path / "e")]) == 0
    _same_files(tmp_path / "d", tmp_path / "e")


def test_each_kind_is_told_by_its_own_fields():
    fields = {kind: dict.fromkeys(f) for kind, (f, _, _) in saved.KINDS.items()}
    assert {kind: saved.result_kind(d) for kind, d in fields.items()} == {kind: kind for kind in saved.KINDS}
    assert saved.result_kind({**fields["replay"], **fields["serve"]}) is None   # both: neither
    assert saved.result_kind([1, 2]) is None and saved.result_kind({"feasible": False}) is None


SERVE_FIELDS = json.dumps(dict.fromkeys(saved.KINDS["serve"][0]))
SERVING_SCENARIO = (Path(__file__).resolve().parents[3] / "scenarios" / "r1_serve_h800_decode.toml").read_text()


@pytest.mark.parametrize("result, beside, why", [
    (None, 'name = "x"\n', r"no such file"),
    ("{not json", 'name = "x"\n', r"not JSON"),
    ('{"feasible": false}', 'name = "x"\n', r"the fields of none of them"),
    (SERVE_FIELDS, None, r"no scenario\.resolved\.toml beside it"),
    (SERVE_FIELDS, SERVING_SCENARIO, r"a whole twin serve result of the scenario beside it \(KeyError"),   # 3 fields of ~40
])
def test_a_result_it_cannot_draw_is_one_line_naming_RESULT(tmp_path, capsys, result, beside, why):
    d = tmp_path / "d"
    d.mkdir()
    if result is not None:
        (d / "result.json").write_text(result)
    if beside is not None:
        (d / "scenario.resolved.toml").write_text(beside)
    assert main(["report", str(d / "result.json"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"RESULT.*" + why, err), err
    assert not (tmp_path / "e").exists()
