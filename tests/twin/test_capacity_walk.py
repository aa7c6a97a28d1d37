"""s26walk: a capacity planner's walk through planning at scale (docs/notes/s26walk.md). Each test failed
before its fix; each runs in a few CPU-seconds."""

import json
import re

from twin.cli.main import main

SHORT = ["--set", "serve.input_len=512", "--set", "serve.output_len=64", "--requests", "300", "--quiet"]


def test_a_target_below_one_request_alone_is_named_with_its_own_value(capsys, tmp_path):
    """D1: `twin plan --rate 10 --ttft 0.001 --tpot 0.03` said "TTFT of one prompt alone (0.0592 s) over target (1)":
    the 1 was the count of the reason, read as the target (1 s, which 0.0592 s is not over)."""
    assert main(["plan", "--rate", "10", "--ttft", "0.001", "--tpot", "0.05", *SHORT,
                 "--json", str(tmp_path / "q.json"), "--out", str(tmp_path / "q")]) == 3
    cap = capsys.readouterr()
    text = cap.out + cap.err + (tmp_path / "q" / "report.md").read_text()
    assert re.search(r"TTFT of one prompt alone \(\d+(\.\d+)? ms\) over the target 1 ms", text), text
    assert "over target (1)" not in text and "target (1)" not in text
    assert main(["plan", "--rate", "10", "--ttft", "2", "--tpot", "0.0001", *SHORT]) == 3
    text = "".join(capsys.readouterr())
    assert re.search(r"TPOT of one request alone \(\d+(\.\d+)? ms\) over the target 0\.1 ms", text), text


def test_the_serving_trace_names_the_model_beside_the_scenario(tmp_path):
    """D2: `twin serve mixtral.toml --trace F` wrote otherData {"scenario": ...} alone, where `twin trace` names the
    model too (since the lead's 1eaff166): a scenario run with `--set model.name=...` keeps its own name."""
    f = tmp_path / "t.json"
    assert main(["serve", "--set", "model.name=mixtral-8x7b", "--set", "serve.tp=2", "--set", "serve.ep=2",
                 "--set", "serve.weight_precision=bf16", *SHORT, "--trace", str(f)]) == 0
    other = json.loads(f.read_text())["otherData"]
    assert other["scenario"] == "r1-serve-h200" and other["model"] == "mixtral-8x7b"
