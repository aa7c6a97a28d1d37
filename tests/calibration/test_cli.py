import importlib.util
import subprocess
import sys

import pytest

from twin.cli.main import build_parser, main


def test_commands_registered():
    p = build_parser()
    for argv in (["fit", "--gpu", "h100"], ["validate", "--json", "-"], ["calibrate", "--out", "x"]):
        assert p.parse_args(argv).func is not None


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch
    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("command, default", [("step", "DeepSeek-V3 pre-training on 2,048 H800"),
                                              ("serve", "R1 served on one HGX H200")])
def test_each_commands_help_names_the_scenario_it_runs_by_default(command, default):
    """`twin serve --help` named V3 pre-training as its default (until s19ux): each says its own."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    scenario = next(a for a in sub._actions if a.dest == "scenario")
    assert scenario.help == f"scenario TOML (default: {default})"


def test_calibrate_without_cuda_exits_2(capsys, tmp_path):
    assert main(["calibrate", "--out", str(tmp_path)]) == 2
    assert "needs CUDA" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_calibrate_quick_on_gpu_then_fit(tmp_path):
    from calibration import records as rec
    from calibration.fit import fit_profile
    rc = subprocess.call([sys.executable, "-m", "real.bench", "--out", str(tmp_path / "gpu"), "--quick",
                          "--only", "grouped,memory,attention"])
    assert rc == 0
    df = rec.load_records("gpu", tmp_path)
    df["gpu"] = "h100"
    prof, stats = fit_profile(df, "h100")
    assert stats["num_fit_points"] > 0 and 0 < prof.memory_eff <= 1
