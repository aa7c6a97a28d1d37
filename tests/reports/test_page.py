"""The shared page: human number formats, the Markdown and HTML twins, the resolved scenario, the
common file set."""

import tomllib
from pathlib import Path

import pytest

from reports import page as pg
from reports.page import Page
from twin.core.scenario import PLAN, SERVING, from_dict, load_scenario, read_raw

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("fmt, x, text", [
    (pg.tokens, 14.8e12, "14.8T tokens"),
    (pg.gpu_hours, 2.788e6, "2.79M GPU-hours"),
    (pg.usd, 5.576e6, "$5.58M"),
    (pg.count, 119_000, "119K"),
    (pg.count, 999_960, "1.00M"),             # rounds up into the next suffix, not "1,000K"
    (pg.count, 960.0067, "960"),
    (lambda x: pg.count(x, 4, trim=True), 2.788e6, "2.788M"),
    (lambda x: pg.count(x, 4, trim=True), 119e3, "119K"),
    (pg.number, 1729.24, "1,729"),
    (pg.number, 17.694, "17.7"),
    (pg.days, 50.5386, "50.5 days"),
    (pg.days, 60.0, "60 days"),
    (pg.days, 0.4167, "10 hours"),
    (pg.days, 0.42, "10.1 hours"),
    (pg.days, 0.0106, "15 minutes"),            # not "0.0106 days"
    (pg.seconds, 0.05311, "53.1 ms"),
    (pg.seconds, 1.5569, "1.56 s"),
    (pg.seconds, 1.4e-4, "140 µs"),
    (pg.gib, 85_595_661_476, "79.7 GiB"),
    (pg.binary_bytes, 70272, "68.6 KiB"),
    (pg.binary_bytes, 800e9, "745 GiB"),
    (pg.pct, 0.43768, "43.8%"),
    (pg.pct, 1.0, "100%"),
    (lambda x: pg.pct(x, signed=True), -0.109, "-10.9%"),
    (lambda x: pg.pct(x, signed=True), -0.000343, "-0.034%"),
    (pg.energy_kwh, 4_718_752, "4.72 GWh"),
    (pg.above_below, -0.002, "0.2% below"),
    (pg.count, None, "n/a"),
    (pg.days, float("nan"), "n/a"),
])
def test_human_formats(fmt, x, text):
    assert fmt(x) == text


@pytest.mark.parametrize("name, folder", [("../x", "x"), ("a/b/../../c", "a-b-c"), ("..", "item"), ("", "item"),
                                          ("R1 serve: H200!", "r1-serve-h200"), (".hidden", "hidden")])
def test_slug_is_one_safe_path_component(name, folder):
    assert pg.slug(name) == folder


def test_markdown_and_html_hold_the_same_page():
    p = (Page("T <1>", "It works.").section("Numbers").para("Run `twin validate` first; see [the run](run/report.html).")
         .table(["a", "b"], [["x|y", "1,234"]]).bullets(["one"]))
    md, html = p.markdown(), p.html()
    assert md.startswith("# T <1>\n\n**It works.**") and "| x\\|y | 1,234 |" in md and "`twin validate`" in md
    assert "<title>T &lt;1&gt;</title>" in html and '<p class="verdict">It works.</p>' in html
    assert "<code>twin validate</code>" in html and "`" not in html
    assert '<a href="run/report.html">the run</a>' in html and '<td class="num">1,234</td>' in html


def test_links_go_nowhere_outside_the_page():
    html = Page("t", "v").para("[x](https://example.com/a) [y](javascript:alert) [z](ok.html)").html()
    assert html.count("<a ") == 1 and '<a href="ok.html">z</a>' in html   # only relative paths become links


@pytest.mark.parametrize("load", [
    lambda: load_scenario(overrides=["cluster.num_gpus=4096"]),
    lambda: load_scenario(ROOT / "scenarios" / "r1_serve_h800_decode.toml", kind=SERVING),
    lambda: from_dict(*read_raw(ROOT / "scenarios" / "v3_plan.toml"), PLAN),
])
def test_resolved_scenarios_of_every_kind_round_trip(load):
    sc = load()
    assert from_dict(tomllib.loads(pg.to_toml(sc.to_dict())), kind=sc.kind) == sc


def test_report_dir_refuses_paths_and_common_names(tmp_path):
    p = Page("t", "v")
    for bad in ("../x.csv", "sub/x.csv", "report.html"):
        with pytest.raises(ValueError, match="report file name"):
            pg.write_report_dir(tmp_path / "out", p, {}, files={bad: "x"})
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.csv").exists()


def test_report_dir_writes_the_common_files(tmp_path):
    paths = pg.write_report_dir(tmp_path / "out", Page("t", "v"), {"a_s": 1.0}, load_scenario(), files={"x.csv": "a\n"})
    assert [p.name for p in paths] == sorted(set(pg.COMMON_FILES) | {"x.csv"})


def test_pngs_draws_in_forked_workers_the_same_bytes_in_order():
    """Several figures are drawn in forked processes; the PNGs are those drawn here, in order."""
    def maker(k):
        def make():
            fig, ax = pg.figure(3, 2)
            ax.plot([0, 1, 2], [0, k, 2 * k])
            ax.set_title(f"figure {k}")
            return fig
        return make
    makers = [maker(k) for k in (1, 2, 3)]
    here = [pg.png(m()) for m in makers]
    assert len(set(here)) == 3
    assert pg.pngs(makers, workers=2) == here
    assert pg.pngs(makers, workers=1) == here
    uncropped = [pg.png(m(), crop=False) for m in makers]   # as the layout placed it: the figure's full size
    assert pg.pngs(makers, workers=2, crop=False) == uncropped != here
