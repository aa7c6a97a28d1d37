"""The look every report shares, and the files every report directory holds.

A report is built once as a `Page` (a title, a one-sentence verdict, then sections of paragraphs,
tables, lists and figures) and rendered twice: `report.html`, self-contained (its CSS inline, its
plots inlined as base64 data URIs, no script, nothing fetched), and `report.md`, which shows the
same PNGs from beside it. `write_report_dir` writes the common set, staged so that an interrupted
run leaves the earlier report whole (twin.core.atomic.staged_dir):

  report.html              the page, self-contained
  report.md                the same page in Markdown
  result.json              the result's JSON (twin.core.results.to_json)
  scenario.resolved.toml   the scenario as resolved (defaults and overrides filled in); loads back
                           to an equal scenario. Absent where a report has no scenario (validation)
  *.png, *.csv             the report's own plots (one per figure on the page) and tables

Numbers are formatted for people, in one place: counts with K/M/B/T suffixes (14.8T tokens,
2.79M GPU-hours), dollars ($5.58M), durations in the unit that reads best (50.5 days, 6.1 hours,
15 minutes; 53.1 ms), memory in binary units (GiB), fractions as percentages.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import html
import io
import json
import math
import multiprocessing as mp
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from twin.core.atomic import staged_dir  # noqa: E402
from twin.core.units import GIB, KIB, MIB, SECONDS_PER_DAY  # noqa: E402

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
RESULT_JSON = "result.json"
RESOLVED_SCENARIO = "scenario.resolved.toml"
COMMON_FILES = (REPORT_HTML, REPORT_MD, RESULT_JSON, RESOLVED_SCENARIO)

NA = "n/a"
PNG_DPI = 110


# --------------------------------------------------------------------------- number formats

def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def sig(x: float, digits: int = 3, trim: bool = False) -> str:
    """`digits` significant figures, thousands separated, never in exponent form: 1,729 · 17.7 · 0.0531.
    `trim` drops trailing zeros after the point (a published 119.0 reads 119)."""
    if _missing(x):
        return NA
    if x == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    rounded = round(x, decimals)          # 0.99996 rounds to 1.00, not 1.000: count the figures again
    if rounded:
        decimals = max(digits - 1 - math.floor(math.log10(abs(rounded))), 0)
    s = f"{rounded:,.{decimals}f}"
    return s.rstrip("0").rstrip(".") if trim and "." in s else s


_SUFFIXES = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3))


def count(x: float, digits: int = 3, trim: bool = False) -> str:
    """A large count with a suffix: 14.8T, 2.79M, 119K; below a thousand, plain (960). With
    digits=4, trim=True a published figure keeps its precision: 2.788M, 180K."""
    if _missing(x):
        return NA
    a = abs(x)
    for i, (suffix, scale) in enumerate(_SUFFIXES):
        if a >= scale:
            s = sig(x / scale, digits, trim)
            if abs(float(s.replace(",", ""))) >= 1000 and i > 0:   # 999.96K rounds to 1,000K: say 1M
                return sig(x / _SUFFIXES[i - 1][1], digits, trim) + _SUFFIXES[i - 1][0]
            return s + suffix
    return sig(x, digits, trim)


def number(x: float) -> str:
    """A rate or a size as people read it: whole numbers from 100 up (5,782), else three figures (17.7)."""
    if _missing(x):
        return NA
    return f"{x:,.0f}" if abs(x) >= 100 else sig(x)


def usd(x: float, digits: int = 3, trim: bool = False) -> str:
    """$5.58M, $950K, $12.3."""
    if _missing(x):
        return NA
    return ("-" if x < 0 else "") + "$" + count(abs(x), digits, trim)


def gpu_hours(x: float, digits: int = 3) -> str:
    return NA if _missing(x) else f"{count(x, digits)} GPU-hours"


def tokens(x: float) -> str:
    """14.8T tokens, 1T tokens."""
    return NA if _missing(x) else f"{count(x, 3, trim=True)} tokens"


def days(x: float) -> str:
    """Wall-clock time given in days, in the unit that reads best: 50.5 days, 3.27 days, 6.1 hours, 15 minutes."""
    if _missing(x):
        return NA
    if x >= 1:
        s = sig(x, 3, trim=True)
        return f"{s} days" if s != "1" else "1 day"
    hours = x * 24
    if hours >= 1:
        return f"{sig(hours, 2 if hours < 10 else 3, trim=True)} hours"
    return f"{sig(hours * 60, 2, trim=True)} minutes"


def duration(x_s: float) -> str:
    """A duration given in seconds, read like `days`: 1.03 days, 25 minutes, 11 minutes."""
    return NA if _missing(x_s) else days(x_s / SECONDS_PER_DAY)


def seconds(x: float) -> str:
    """A short duration: 17.7 s, 53.1 ms, 120 µs."""
    if _missing(x):
        return NA
    a = abs(x)
    if a >= 1 or a == 0:
        return f"{sig(x)} s"
    if a >= 1e-3:
        return f"{sig(x * 1e3)} ms"
    if a >= 1e-6:
        return f"{sig(x * 1e6)} µs"
    return f"{sig(x * 1e9)} ns"


_BINARY = (("TiB", 1024 * GIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB))


def binary_bytes(x: float) -> str:
    """Memory in binary units: 131 GiB, 68.6 KiB."""
    if _missing(x):
        return NA
    for unit, scale in _BINARY:
        if abs(x) >= scale:
            return f"{sig(x / scale)} {unit}"
    return f"{sig(x)} B"


def gib(x: float) -> str:
    """Memory always in GiB (for columns that compare GPUs): 79.7 GiB."""
    return NA if _missing(x) else f"{sig(x / GIB)} GiB"


def pct(x: float, signed: bool = False) -> str:
    """A fraction as a percentage: 43.8%, 0.2%; signed: +12.1%, -0.034%."""
    if _missing(x):
        return NA
    p = x * 100
    body = f"{abs(p):.1f}" if abs(p) >= 0.1 or p == 0 else sig(abs(p), 2)
    if not signed and body.endswith(".0"):
        body = body[:-2]                                          # 100%, 17%
    sign = ("+" if p > 0 else "-" if p < 0 else "") if signed else ("-" if p < 0 else "")
    return f"{sign}{body}%"


def energy_kwh(x: float) -> str:
    """Energy given in kWh, as Wh with an SI prefix: 4.72 GWh, 180 MWh."""
    if _missing(x):
        return NA
    wh = x * 1e3
    for unit, scale in (("TWh", 1e12), ("GWh", 1e9), ("MWh", 1e6), ("kWh", 1e3)):
        if abs(wh) >= scale:
            return f"{sig(wh / scale)} {unit}"
    return f"{sig(wh)} Wh"


def above_below(rel_error: float) -> str:
    """'0.2% below' / '3.1% above' / 'equal to'."""
    if _missing(rel_error):
        return NA
    if rel_error == 0:
        return "equal to"
    return f"{pct(abs(rel_error))} {'above' if rel_error > 0 else 'below'}"


def band(b: dict | None, fmt=sig) -> str:
    """A P10–P90 band: '2.24M – 2.75M'."""
    return NA if not b else f"{fmt(b['p10'])} – {fmt(b['p90'])}"


def slug(text: str, fallback: str = "item") -> str:
    """A file-name-safe single path component: lower-case letters, digits, '-', '_' and '.' not at
    the start. '../x' -> 'x'; '' -> fallback. Never a separator, never '.' or '..'."""
    s = re.sub(r"[^a-z0-9._-]+|\.{2,}", "-", str(text).lower())
    s = re.sub(r"-{2,}", "-", s).strip("-._")
    return s[:80] or fallback


# --------------------------------------------------------------------------- plots

def figure(width_in: float, height_in: float, nrows: int = 1, ncols: int = 1, **kw):
    """A figure with constrained layout (labels, legends and colorbars placed so they don't collide)."""
    return plt.subplots(nrows, ncols, figsize=(width_in, height_in), layout="constrained", **kw)


def png(fig, crop: bool = True) -> bytes:
    """The figure as PNG bytes, cropped to everything drawn (nothing clipped at the edges); closes it.
    `crop=False` saves the figure as its constrained layout placed it, drawn once instead of twice
    (a Gantt of 10^4 bars takes half the time); for figures whose every label the layout places."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, **({"bbox_inches": "tight", "pad_inches": 0.08} if crop else {}))
    plt.close(fig)
    return buf.getvalue()


def warm_up() -> None:
    """Draw a small figure and throw it away: the first figure a process draws also loads fonts
    and fills text caches (~0.25 s). Done in a process that will fork plot workers (pngs), while it
    waits for its data, each worker draws warm."""
    fig, ax = figure(2, 1.5)
    ax.plot([0, 1], [0, 1], label="x")
    ax.set_title("warm-up", fontsize=9)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=8)
    png(fig, crop=False)


_MAKERS: Sequence[Callable[[], Any]] = ()   # what pngs' forked workers draw (inherited, never pickled)


def _draw(index: int) -> bytes:
    return png(_MAKERS[index](), _CROP)


_CROP = True


def pngs(makers: Sequence[Callable[[], Any]], workers: int | None = None, crop: bool = True) -> list[bytes]:
    """Each maker's figure as PNG bytes (`png(fig, crop)`), in order. Drawing is pure Python under
    one lock (~0.3 s a figure), so with several figures and cores they are drawn in forked
    processes, which inherit the makers and the data they close over; elsewhere (one core, no
    fork) one after another."""
    global _MAKERS, _CROP
    cores = os.cpu_count() or 1
    workers = min(len(makers), workers or cores)
    if workers < 2 or cores < 2 or "fork" not in mp.get_all_start_methods():
        return [png(make(), crop) for make in makers]
    _MAKERS, _CROP = makers, crop
    try:
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            return list(pool.map(_draw, range(len(makers))))
    finally:
        _MAKERS = ()


def axis_formatter(fmt) -> FuncFormatter:
    """Tick labels in the page's number format (e.g. `axis_formatter(tick_count)` gives 500K, 1M)."""
    return FuncFormatter(lambda v, _pos: fmt(v))


def tick_count(x: float) -> str:
    """A tick label: 1M, 2.5M, 10K (no trailing zeros)."""
    return count(x, 3, trim=True)


def tick_usd(x: float) -> str:
    """A tick label: $5M, $5.2M."""
    return usd(x, 3, trim=True)


# --------------------------------------------------------------------------- the page

NUM_TD = '<td class="num">'
_CODE = re.compile(r"`([^`]+)`")
_NUMERIC = re.compile(r"^[-+$]*\d[\d.,]*\s?[A-Za-zµ%/-]*( [A-Za-z/-]+)?$|^n/a$|^—$")  # right-aligned cells


_LINK = re.compile(r"\[([^\]]+)\]\(([A-Za-z0-9._/-]+)\)")   # [text](relative/path) only: the page fetches nothing


def _text_html(text: str) -> str:
    out, pos = [], 0
    for m in _LINK.finditer(text):
        out += [html.escape(text[pos:m.start()]), f'<a href="{html.escape(m.group(2))}">{html.escape(m.group(1))}</a>']
        pos = m.end()
    return "".join(out) + html.escape(text[pos:])


def _inline_html(text: str) -> str:
    """Escaped text with `code` spans as <code> (no literal backticks on the page) and relative
    [text](path) links as <a>."""
    parts = _CODE.split(str(text))
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else _text_html(p) for i, p in enumerate(parts))


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


@dataclass
class Figure:
    name: str           # the PNG's file name, beside report.md
    data: bytes
    caption: str


@dataclass
class Page:
    """A report page: title, a one-sentence verdict, then blocks in order."""

    title: str
    verdict: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def section(self, heading: str) -> Page:
        self.blocks.append(("h2", heading))
        return self

    def para(self, text: str) -> Page:
        self.blocks.append(("p", text))
        return self

    def warn(self, text: str) -> Page:
        self.blocks.append(("warn", text))
        return self

    def bullets(self, items) -> Page:
        self.blocks.append(("ul", list(items)))
        return self

    def table(self, header: list[str], rows: list[list]) -> Page:
        self.blocks.append(("table", (list(header), [[str(c) for c in r] for r in rows])))
        return self

    def figure(self, name: str, fig_or_png, caption: str) -> Page:
        data = fig_or_png if isinstance(fig_or_png, bytes) else png(fig_or_png)
        self.blocks.append(("figure", Figure(name, data, caption)))
        return self

    @property
    def figures(self) -> list[Figure]:
        return [b for kind, b in self.blocks if kind == "figure"]

    # ----------------------------------------------------------------------- Markdown

    def markdown(self) -> str:
        out = [f"# {self.title}", "", f"**{self.verdict}**", ""]
        for kind, b in self.blocks:
            if kind == "h2":
                out += [f"## {b}", ""]
            elif kind == "p":
                out += [b, ""]
            elif kind == "warn":
                out += [f"> **{b}**", ""]
            elif kind == "ul":
                out += [f"- {item}" for item in b] + [""]
            elif kind == "table":
                header, rows = b
                out += ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows] + [""]
            elif kind == "figure":
                out += [f"![{b.caption}]({b.name})", "", f"*{b.caption}*", ""]
        return "\n".join(out).rstrip() + "\n"

    # ----------------------------------------------------------------------- HTML

    def html(self) -> str:
        body = [f"<header><h1>{_inline_html(self.title)}</h1><p class=\"verdict\">{_inline_html(self.verdict)}</p></header>", "<main>"]
        for kind, b in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{_inline_html(b)}</h2>")
            elif kind == "p":
                body.append(f"<p>{_inline_html(b)}</p>")
            elif kind == "warn":
                body.append(f"<p class=\"warn\">{_inline_html(b)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b) + "</ul>")
            elif kind == "table":
                header, rows = b
                th = "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                trs = "".join("<tr>" + "".join(
                    (NUM_TD if _NUMERIC.match(c) else "<td>") + _inline_html(c) + "</td>" for c in r) + "</tr>"
                    for r in rows)
                body.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "figure":
                uri = "data:image/png;base64," + base64.b64encode(b.data).decode("ascii")
                body.append(f"<figure><img alt=\"{html.escape(b.caption)}\" src=\"{uri}\">"
                            f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>")
        body.append("</main>")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")


STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}"
    "h1{font-size:1.6em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}"
    ".verdict{font-size:1.1em;background:#f4f7fb;border-left:4px solid #4477aa;padding:.6em .9em;margin:0 0 1em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
    "td{overflow-wrap:anywhere}td.num{text-align:right;white-space:nowrap}th{background:#f3f3f3;hyphens:auto}"
    "img{max-width:100%;height:auto;display:block}figure{margin:1.2em 0}figcaption{font-size:.9em;color:#555}"
    "code{background:#f3f3f3;padding:0 .2em;border-radius:3px;font-size:.92em;overflow-wrap:anywhere}"
    ".warn{color:#a00;font-weight:bold}"
)


# --------------------------------------------------------------------------- resolved scenario

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def to_toml(data: dict) -> str:
    """A small TOML writer for the resolved scenario (tables, arrays of tables, scalars; None omitted)."""
    lines: list[str] = []

    def is_table_array(v) -> bool:
        return isinstance(v, (list, tuple)) and bool(v) and isinstance(v[0], dict)

    def table(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if v is not None and not isinstance(v, dict) and not is_table_array(v):
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                lines.extend(["", f"[{prefix}{_toml_key(k)}]"])
                table(f"{prefix}{_toml_key(k)}.", v)
            elif is_table_array(v):
                for item in v:
                    lines.extend(["", f"[[{prefix}{_toml_key(k)}]]"])
                    table(f"{prefix}{_toml_key(k)}.", item)

    table("", data)
    return "\n".join(lines).lstrip() + "\n"


# --------------------------------------------------------------------------- the report directory

def write_common(tmp: Path, page: Page, result_json, scenario=None) -> None:
    """Into a staging directory: the page's PNGs, report.md, report.html, result.json and (with a
    scenario) scenario.resolved.toml."""
    tmp = Path(tmp)
    for f in page.figures:
        (tmp / f.name).write_bytes(f.data)
    (tmp / REPORT_MD).write_text(page.markdown(), encoding="utf-8")
    (tmp / REPORT_HTML).write_text(page.html(), encoding="utf-8")
    if callable(result_json):   # a result too large to hold as text: it writes itself (plan_report)
        result_json(tmp / RESULT_JSON)
    else:
        (tmp / RESULT_JSON).write_text(json.dumps(result_json, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if scenario is not None:
        (tmp / RESOLVED_SCENARIO).write_text(to_toml(scenario.to_dict()), encoding="utf-8")


def write_report_dir(out_dir, page: Page, result_json, scenario=None, files: dict | None = None) -> list[Path]:
    """Write the common files and `files` (name -> text, bytes, or a callable that writes the file
    at the path it is given) into `out_dir`, staged: nothing there changes until every file is
    complete. `result_json`: the result's JSON value, or a callable that writes result.json at the
    path it is given. Returns the paths written, sorted."""
    out_dir = Path(out_dir)
    files = files or {}
    for name in files:
        if Path(name).name != name or name in COMMON_FILES:
            raise ValueError(f"report file name {name!r}: a plain name other than {', '.join(COMMON_FILES)}")
    with staged_dir(out_dir) as tmp:
        for name, data in files.items():
            if callable(data):
                data(tmp / name)
            else:
                (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        write_common(tmp, page, result_json, scenario)
        names = sorted(p.name for p in tmp.iterdir())
    return [out_dir / n for n in names]
