"""A normal (non-editable) install works: the wheel carries every file the twin reads at run time
(catalogs, default scenarios, profiles, measured expert loads, the records `twin validate`
predicts), read through importlib.resources. Built here, installed into a fresh virtual
environment, and run from a folder outside the source tree so nothing resolves against it.

`twin validate` is not run whole here (over a minute of CI's CPU: validate() and every section again, the
session's one validate() already computed in the source tree): the installed packages hold every file of the
source's packages byte for byte (code and records alike), and the installed interpreter computes the sections of
tests/wheel_sections.py, which read every data family through the packages' own paths, to the source tree's
figures. Same code and same files read from the same places give the same validation; the command itself runs end
to end in tests/test_readme.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.wheel_sections import sections

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("twin", "real", "calibration", "reports")
# files of the packages' folders that the wheel leaves out, as pyproject.toml's package data says: the GPU campaigns'
# scripts (run from a checkout on a GPU host), their logs and the notes beside the records; no code reads them
NOT_PACKAGED = (".sh", ".log", ".log.xz", ".md")


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


# `twin balance` on a one-layer, 8-expert MoE scenario written outside the source tree (the default, DeepSeek-V3's
# 256 experts, took ~22 s of CPU here: its bias-update simulations, ~4 s on this one, s30ci). The installed command
# runs end to end as on the default: the scenario read, every load case (the packaged measured expert loads
# among them), the JSON written; the default scenario's own package data runs in `replay` and `serve` below
BALANCE_SCENARIO = ('name = "wheel"\n[model]\nname = "mixtral-slice"\n[cluster]\ngpu = "h200"\nnum_gpus = 8\n'
                    '[plan]\npp = 1\nep = 8\nschedule = "1f1b"\n[workload]\nseq_len = 1024\nglobal_batch_seqs = 16\n')


@pytest.mark.wheel
@pytest.mark.parametrize("args", [
    ["balance", "moe.toml", "--json", "out.json"],
    ["replay", "--out", "replay", "--json", "out.json", "--quiet"],
    ["serve", "--json", "out.json"],
    ["serve", str(ROOT / "scenarios" / "r1_serve_h800_decode.toml"), "--json", "out.json"],
])
def test_installed_commands_run_outside_the_source_tree(installed, args):
    bin_dir, work = installed
    (work / "moe.toml").write_text(BALANCE_SCENARIO)
    _run([str(bin_dir / "twin"), *args], work)
    data = json.loads((work / "out.json").read_text())
    assert data
    if args[0] == "balance":   # every load case ran, the packaged measured loads' among them
        assert {"balanced", "measured_no_bias", "zipf_fit"} <= set(data["cases"])
    if args[0] == "replay":
        assert (work / "replay" / "report.html").stat().st_size > 0
        assert data["total_gpu_hours"] > 0


def _site_packages(bin_dir: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(_run([str(bin_dir / "python"), "-c", code], bin_dir).stdout.strip())


def _digests(root: Path) -> dict[str, str]:
    """{path from `root`: sha256} of every file of the packages' folders under `root` (no byte code)."""
    out = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.wheel
def test_the_installed_packages_hold_every_file_of_the_source_tree(installed):
    """Every file of the source's packages is installed byte for byte: the code and every record at every folder
    depth (until s18ci the package data held only calibration/measurements/<gpu>/*, not a campaign's folders, rounds
    and traces one level down: the installed validate's held-out moe_layer_bwd, tp_block, train_step and pipeline
    figures moved and the s15rank/s16idle/s17alt judgements were absent), and nothing else of the packages."""
    bin_dir, work = installed
    source, site = _digests(work.parent / "src"), _digests(_site_packages(bin_dir))   # the tree the wheel was built from
    left_out = sorted(p for p in source if p not in site)
    assert all(p.endswith(NOT_PACKAGED) for p in left_out), [p for p in left_out if not p.endswith(NOT_PACKAGED)]
    assert any(p.endswith(".csv.xz") and p.count("/") >= 4 for p in site)   # a campaign's records, folders down
    assert not [p for p in site if p not in source], "installed files the source tree does not hold"
    assert [p for p in site if site[p] != source[p]] == []


@pytest.mark.wheel
def test_the_installed_validate_sections_give_the_source_trees_figures(installed):
    """tests/wheel_sections.py run by the installed interpreter from outside the source tree: the same folders,
    records and figures as in the source tree, and no path of this machine in them."""
    bin_dir, work = installed
    _run([str(bin_dir / "python"), str(ROOT / "tests" / "wheel_sections.py"), "sections.json"], work)
    run = json.loads((work / "sections.json").read_text())
    assert "site-packages" in run["calibration_file"]   # the installed packages, not the checkout
    text = json.dumps(run["sections"])
    assert "site-packages" not in text and str(ROOT) not in text
    data, source = run["sections"], sections()
    for key, figures in source.items():
        assert data.get(key) == figures, f"the installed {key} differs from the source tree's"
    # both of DeepSeek's serving profiles compared from the packaged scenarios (until s19ux: none, the scenarios
    # were read from the checkout's scenarios/); the s20new records two folders down were found and compared
    assert [p["phase"] for p in data["deepseek_serving_profiles"]] == ["decode", "prefill"]
    assert data["prereg_s20new"]["rows"] and set(data["records"]) == {"h100", "h200"}
