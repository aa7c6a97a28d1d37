"""A normal (non-editable) install works: the wheel carries every file the twin reads at run time
(catalogs, default scenarios, profiles, measured expert loads, the records `twin validate`
predicts), read through importlib.resources. Built here, installed into a fresh virtual
environment, and run from a folder outside the source tree so nothing resolves against it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.committed import validation
from twin.core.results import to_json

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # without PYTHONPATH: a developer's PYTHONPATH=<checkout> would put the source tree ahead of
    # the installed wheel, the very thing this test rules out. Without PYTHONDONTWRITEBYTECODE: the
    # environment is installed without byte-compiling (below), so the first command compiles the
    # modules it imports and the later ones reuse them
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's bin folder, a working folder outside the source tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info/ beside the sources, and the suite
    # writes nothing into the checkout (a parallel worker may be reading it)
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "out", "*.egg-info", "__pycache__", ".pytest_cache", "campaign_*"))
    # the build backend of this environment, so the test needs no network for setuptools
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)], tmp)
    wheel = next((tmp / "dist").glob("moe_twin-*.whl"))
    # installed by this environment's pip into the fresh one (pip --python: no pip bootstrapped into
    # it) with its dependencies, not byte-compiled: compiling every module of numpy, scipy, pandas
    # and matplotlib took more than half of the install, and the commands import a fraction of them
    venv.create(tmp / "env", with_pip=False)
    bin_dir = tmp / "env" / "bin"
    _run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q", "--no-compile", str(wheel)], tmp)
    work = tmp / "work"
    work.mkdir()
    return bin_dir, work


@pytest.mark.wheel
def test_wheel_installs_the_twin_with_its_data(installed):
    bin_dir, work = installed
    code = "import twin, sys; print(twin.__file__); assert 'site-packages' in twin.__file__"
    assert "site-packages" in _run([str(bin_dir / "python"), "-c", code], work).stdout


@pytest.mark.wheel
@pytest.mark.parametrize("args", [
    ["validate", "--json", "out.json"],
    ["balance", "--json", "out.json"],
    ["replay", "--out", "replay", "--json", "out.json", "--quiet"],
    ["serve", "--json", "out.json"],
    ["serve", str(ROOT / "scenarios" / "r1_serve_h800_decode.toml"), "--json", "out.json"],
])
def test_installed_commands_run_outside_the_source_tree(installed, args):
    bin_dir, work = installed
    _run([str(bin_dir / "twin"), *args], work)
    data = json.loads((work / "out.json").read_text())
    assert data
    if args[0] == "validate":
        _same_figures_as_the_source_tree(data)
        # both of DeepSeek's serving profiles compared from the packaged scenarios (until s19ux: none,
        # the scenarios were read from the checkout's scenarios/), and no path of this machine
        assert [p["phase"] for p in data["deepseek_serving_profiles"]] == ["decode", "prefill"]
        assert "site-packages" not in (work / "out.json").read_text()
    if args[0] == "replay":
        assert (work / "replay" / "report.html").stat().st_size > 0
        assert data["total_gpu_hours"] > 0


def _package_relative(value):
    """`value` with each path into the installed package or the checkout written from the package
    root (calibration/..., twin/...): the figures compare, not where they were read from."""
    if isinstance(value, dict):
        return {k: _package_relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_package_relative(v) for v in value]
    if isinstance(value, str) and "site-packages/" in value:
        return value.split("site-packages/", 1)[1]
    if isinstance(value, str) and value.startswith(str(ROOT) + os.sep):
        return value[len(str(ROOT)) + 1:]
    return value


def _same_figures_as_the_source_tree(installed: dict) -> None:
    """The installed `twin validate` predicts every record the source tree's validate() does, to the
    same figures: a record the wheel does not carry is skipped silently by validate (until s18ci the
    package data held only calibration/measurements/<gpu>/*, not a campaign's folders, rounds and
    traces one level down: the held-out moe_layer_bwd, tp_block, train_step and pipeline figures moved
    and the s15rank/s16idle/s17alt judgements were absent). The source tree's is the session's one
    validate() (tests/committed.py), through the same JSON conversion the command writes."""
    source = json.loads(json.dumps(to_json(validation()), allow_nan=False))
    for key, figures in source.items():
        assert key in installed, f"the installed validate has no {key!r}"
        assert _package_relative(installed[key]) == _package_relative(figures), f"{key} differs from the source tree's"
