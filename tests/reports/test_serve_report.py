"""The serving report: the headline a reader needs, claims by what they measure, and no file
outside the chosen folder whatever a scenario is called."""

import json
import re
from pathlib import Path

from reports.page import COMMON_FILES
from reports.serve_report import PLOTS, SWEEP_CSV, build_page, main, write_outputs
from twin.core.results import to_json

ROOT = Path(__file__).resolve().parents[2]


def test_writes_the_common_files(tmp_path, served):
    sc, result = served
    paths = write_outputs(result, sc, tmp_path / "out")
    assert {p.name for p in paths} == set(COMMON_FILES) | set(PLOTS) | {SWEEP_CSV}
    out = tmp_path / "out"
    assert json.loads((out / "result.json").read_text())["batch"] == result.batch
    assert (out / SWEEP_CSV).read_text().count("\n") == len(result.sweep) + 1


def test_headline_claims_and_memory_read_for_people(served):
    sc, result = served
    data = to_json(result)
    p = build_page(data)
    md = p.markdown()
    # "Simulating 2,000 requests, the twin serves deepseek-v3 on 8 × H200 at 778 output tokens/s per GPU (6,223 per node), ..."
    assert re.match(r"Simulating [\d,]+ requests, the twin serves deepseek-v3 on 8 × H200 at [\d,]+ output tokens/s per GPU "
                    r"\([\d,]+ per node\), a median time per output token of [\d.]+ ms", p.verdict)
    for label in ("Output tokens/s", "Input (prompt) tokens/s", "Time per output token (TPOT), P50 / P90 / P99",
                  "Time to first token (TTFT), P50 / P90 / P99", "Goodput", "$ per million output / input tokens",
                  "| Weights |", "| KV cache |", "| HBM capacity | 140 GiB |", "latency_cdf.png"):   # 139.8 GiB: total_memory (s21mem)
        assert label in md, label
    assert " GB" not in md.replace("800 GB", "").replace("1,128 GB", "")   # binary units: GiB
    for c in data["claims"]:
        assert f"| {c['id']} |" not in md
    assert "| Output tokens/s per node (H200) | 3,872 tokens/s |" in md


def test_a_claim_for_another_gpu_is_not_compared(served):
    sc, result = served
    data = to_json(result)
    data["gpu"] = "h100"                        # the same figures, read as an H100 deployment
    md = build_page(data).markdown()
    row = next(line for line in md.splitlines() if line.startswith("| Output tokens/s per node (H200)"))
    assert "not compared" in row and "%" not in row.split("|")[4]


def test_a_scenario_name_never_becomes_a_path(tmp_path):
    text = (ROOT / "scenarios" / "r1_serve_h200.toml").read_text()
    evil = tmp_path / "in" / "evil.toml"
    evil.parent.mkdir()
    evil.write_text(re.sub(r'^name = ".*"$', 'name = "../../escaped"', text, count=1, flags=re.M))
    out = tmp_path / "deep" / "out"
    assert main([str(out), str(evil)]) == 0
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written - {"in/evil.toml"} == {f"deep/out/{n}" for n in ("report.html", "report.md", "result.json")} | {
        f"deep/out/01-escaped/{n}" for n in (*COMMON_FILES, *PLOTS, SWEEP_CSV)}
    overview = (out / "report.md").read_text()
    assert "[01-escaped](01-escaped/report.html)" in overview
