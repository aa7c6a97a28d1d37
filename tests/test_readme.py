"""The README's Python API snippet runs as written: a V3 step on H200s, its replay, R1 serving and a
two-candidate plan (the full defaults, since a smaller scenario could hide a broken default)."""

from __future__ import annotations

import re
from pathlib import Path

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
