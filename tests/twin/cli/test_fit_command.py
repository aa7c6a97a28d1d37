"""`twin fit`'s command line, around a stand-in fit (the real one takes a minute per GPU): a progress
bar over each GPU's fit parts (none until s21walk), and with --json - nothing but the JSON on stdout
(the per-GPU line went there too until s21walk)."""

import dataclasses
import json
import re

import calibration.fit as fit
from twin.cli.main import main
from twin.costs.profile import default_profile


def fake_fit_gpu(gpu, root, on_part=lambda name: None):
    for name in fit.FIT_PARTS:
        on_part(name)
    stats = {"num_fit_points": 3, "rms_log_residual": 0.05, "median_abs_rel_error_fit": 0.02}
    return dataclasses.replace(default_profile(), gpu=gpu), stats


def test_fit_json_to_stdout_is_json_alone_and_the_bar_counts_every_part(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fit, "fit_gpu", fake_fit_gpu)
    assert main(["fit", "--gpu", "h100", "--profiles", str(tmp_path), "--json", "-"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert list(out) == ["h100"] and out["h100"]["num_fit_points"] == 3
    assert "h100: 3 fitting points" in captured.err
    assert re.search(rf"fit: .*\d/{len(fit.FIT_PARTS)} \[", captured.err)   # a bar over the GPU's fit parts
    assert (tmp_path / "h100.json").is_file()


def test_fit_quiet_prints_no_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fit, "fit_gpu", fake_fit_gpu)
    assert main(["fit", "--gpu", "h100", "--profiles", str(tmp_path), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("h100: 3 fitting points") and captured.err == ""
