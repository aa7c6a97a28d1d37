"""Renders every report.html in headless Chromium (Debian package `chromium`) and fails on a broken page.

The reports carry no script. The test renders a copy with a probe script added before </body>; on
load the probe records, as JSON in a data attribute of <body> that --dump-dom prints: how many
images decoded and their sizes, the page's scroll width against the viewport, and every element
whose right edge passes the viewport (text or a table that overflows).
"""

import html
import json
import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT_W = 1024      # a laptop-width window: body text wraps at 1100 px max, so 1024 is the tighter case
EXPECTED_IMAGES = {"replay": 4, "replay_h200": 4, "serve": 3, "plan": 1, "load": 3, "validation": 4, "sweep": 1,
                   "serving_plan": 0, "serving_capacity": 1}
REPORTS = tuple(EXPECTED_IMAGES)   # the report_dirs fixture (conftest.py) writes each of these

PROBE = """<script>
window.addEventListener('load', function () {
  var doc = document.documentElement, vw = doc.clientWidth, imgs = [], wide = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    imgs.push({ok: im.complete && im.naturalWidth > 0, w: im.naturalWidth, h: im.naturalHeight,
               shown: im.getBoundingClientRect().width});
  }
  var els = document.body.querySelectorAll('*');
  for (var j = 0; j < els.length; j++) {
    var r = els[j].getBoundingClientRect();
    if (r.width > 0 && r.right > vw + 1) wide.push(els[j].tagName + ': ' + (els[j].textContent || '').slice(0, 60));
  }
  document.body.setAttribute('data-probe', JSON.stringify(
    {title: document.title, images: imgs, scroll_w: doc.scrollWidth, view_w: vw, overflowing: wide.slice(0, 10)}));
});
</script>"""


def render(page_path, tmp_path) -> dict:
    probe_page = tmp_path / "probe.html"
    text = page_path.read_text(encoding="utf-8")
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--window-size={VIEWPORT_W},900", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", probe_page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert m, "the probe did not run: " + proc.stdout[:500]
    return {**json.loads(html.unescape(m.group(1))), "dom": proc.stdout}


@pytest.mark.browser
@pytest.mark.parametrize("report", REPORTS)
def test_report_renders_whole(report, report_dirs, tmp_path):
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: apt-get install -y chromium (the browser test must not be skipped)")
    page = report_dirs[report] / "report.html"
    source = page.read_text(encoding="utf-8")
    assert "<script" not in source and "`" not in source          # no script, no literal backticks
    assert not re.search(r'(src|href)="(https?:|//)', source)       # self-contained
    # the page states its inputs (validation has no scenario) and names no path of this machine
    assert report == "validation" or "scenario.resolved.toml" in source
    assert str(page.parent.parent) not in source and not re.search(r"(?<![\w.])/(home|tmp|root|usr|work)/", source)
    got = render(page, tmp_path)
    title = re.search(r"<title>(.*?)</title>", source).group(1)
    assert got["title"] == html.unescape(title) and "report-loaded" not in title and "images=" not in title
    images = got["images"]
    assert len(images) == EXPECTED_IMAGES[report] and all(i["ok"] for i in images), images
    for i in images:   # a sensible PNG: neither a sliver nor a poster, and shown no wider than the page
        assert 300 <= i["w"] <= 2600 and 150 <= i["h"] <= 2600, i
        assert i["shown"] <= got["view_w"], i
    assert got["scroll_w"] <= got["view_w"], f"the page scrolls sideways: {got['scroll_w']} > {got['view_w']}"
    assert got["overflowing"] == [], got["overflowing"]


@pytest.mark.browser
def test_replay_report_reads_as_a_person_reads_it(report_dirs, tmp_path):
    got = render(report_dirs["replay"] / "report.html", tmp_path)
    dom = got["dom"]
    assert "Published figures" in dom and "Total official training cost" in dom
    assert "train.cost.total_gpu_hours" not in dom


@pytest.mark.browser
def test_the_probe_sees_a_page_that_overflows(tmp_path):
    """A table of 40 unbreakable numbers is wider than the window: the probe must say so."""
    from reports.page import Page
    page = tmp_path / "wide.html"
    page.write_text(Page("wide", "A table too wide.").table([f"c{i}" for i in range(40)], [[f"{10**9 + i:,}" for i in range(40)]]).html())
    got = render(page, tmp_path)
    assert got["scroll_w"] > got["view_w"] and any(o.startswith("TABLE") for o in got["overflowing"])
