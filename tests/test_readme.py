"""The README's Python API snippet runs as written: a V3 step on H200s, its replay, R1 serving and a
two-candidate plan (the full defaults, since a smaller scenario could hide a broken default)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from twin.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_snippet_runs(capsys):
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "s per step, MFU" in out and "M GPU-hours" in out and "output tok/s" in out
    assert namespace["data"]["total_gpu_hours"] == namespace["run"].total_gpu_hours


def _reuse_the_sessions_validation(monkeypatch):
    """`twin validate` here prints the session's one validate() of the committed records
    (tests/committed.py) instead of computing it again (minutes on CI's two cores): this test is
    about what the command prints (every section after validate() is computed here). The figures themselves are
    judged by tests/calibration/; tests/test_wheel.py runs sections of it with the installed wheel."""
    from calibration import records as rec
    from calibration import validate as val
    from calibration import validate_sections
    from calibration.fit import PROFILES_DIR
    from tests.committed import SHARED_JUDGED, judged, validation

    def committed(root, profiles_dir, on_part=None):
        assert (Path(root), Path(profiles_dir)) == (rec.MEASUREMENTS_DIR, PROFILES_DIR)  # the README's defaults
        return validation()
    monkeypatch.setattr(val, "validate", committed)

    # the judged sections a test module judges too, from the session's one computation of each (tests/committed.py)
    def shared(key):
        def compute(root):
            assert Path(root) == rec.MEASUREMENTS_DIR
            return judged(key)
        return compute
    monkeypatch.setattr(validate_sections, "JUDGED", tuple(
        dataclasses.replace(j, compute=shared(j.key)) if j.key in SHARED_JUDGED else j for j in validate_sections.JUDGED))


@pytest.mark.parametrize("argv, expect", [
    (["model", "deepseek-v3"], "671B total"),
    (["step"], "step time"),
    (["schedule", "dualpipe", "--pp", "8", "--microbatches", "20"], "bubble (closed form)"),
    (["serve", "--quiet"], "output tokens/s"),
    (["plan", "--tokens", "1e12", "--days", "30", "--pp", "16", "--quiet", "--workers", "1"], "1 candidate screened, 1 fit"),
    (["validate", "--quiet"], "HELD-OUT TOTAL"),
    (["docs"], "# Scenario reference"),
])
def test_readme_commands_print_their_answer_on_stdout(argv, expect, capsys, monkeypatch):
    if argv[0] == "validate":
        _reuse_the_sessions_validation(monkeypatch)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert expect in out


def test_json_to_stdout_keeps_stdout_pure_json(capsys):
    assert main(["step", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["step_time_s"] > 0 and "step time" in captured.err
