"""Renders report.html in headless Chromium (Debian package `chromium`) and fails on a broken page."""

import re
import shutil
import subprocess

import pytest

from reports.replay_report import write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.browser
def test_report_renders_with_all_images(tmp_path, replayed):
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: apt-get install -y chromium (the browser test must not be skipped)")
    sc, _, typed = replayed
    write_report(typed, sc, tmp_path / "r")
    page = (tmp_path / "r" / "report.html").resolve()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    m = re.search(r"<title>report-loaded images=(\d+)/(\d+)</title>", dom)
    assert m, "the page's load script did not run: " + dom[:500]
    ok, total = int(m.group(1)), int(m.group(2))
    assert total == 4 and ok == total, f"{ok} of {total} images decoded"
    assert "Published figures" in dom and "train.cost.total_gpu_hours" in dom
