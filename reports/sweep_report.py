"""Sweep report, in the shared page style (reports/page.py).

`write_sweep_report(result, scenario, out_dir)` (twin sweep --out) writes, staged and atomic:
  results.csv, results.parquet  every point, one row each: candidate_id, the swept keys, status,
                                reason, and the figures (step_time_s, mfu_frac, ... for training;
                                output_tokens_per_s, ttft_p90_s, tpot_p90_s, goodput, $ per
                                million output tokens, ... for serving: the request-level simulation's)
  sweep.png                     the headline figure against each swept key, one panel per key
  report.html, report.md, result.json, scenario.resolved.toml (the base scenario)
The rows journal (rows.jsonl, twin.core.journal) that the sweep streams to stays beside them: it
is what a re-run resumes from.
"""

from __future__ import annotations

from pathlib import Path

from reports import page as pg
from reports import table
from reports.page import Page
from twin.core.results import to_json

RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
PLOT = "sweep.png"
JOURNAL = "rows.jsonl"
MAX_PANELS = 6
SHOWN_ROWS = 30
def _figure(x) -> str:
    return f"{x:,}" if isinstance(x, int) else pg.sig(x)   # a GPU count: "8", not "8.00"


# columns beside the headline where the rows have them: a serving point's throughput alone ranks an overloaded
# point first (R1 at 20/s on one node: TTFT P90 3 minutes)
LATENCY_COLUMNS = (("ttft_p90_s", "TTFT P90", pg.seconds), ("tpot_p90_s", "TPOT P90", pg.seconds),
                   ("goodput_requests_per_s", "goodput requests/s", pg.sig),
                   ("layout", "layout", str), ("usd_per_hour", "$ per hour", pg.usd),
                   ("usd_per_million_output_tokens_all_gpus", "$ per million output tokens", pg.usd),
                   # training: what a step time does not say across GPU types and counts (s23walk)
                   ("tokens_per_s_per_gpu", "tokens/s per GPU", pg.number), ("usd_per_million_tokens", "$ per million tokens", pg.usd))
HEADLINES = (("num_gpus", "fewest GPUs"), ("step_time_s", "step time (s)"), ("output_tokens_per_s_per_gpu", "output tokens/s per GPU"))
LOWER_IS_BETTER = ("num_gpus", "step_time_s")


def headline(rows: list[dict]) -> tuple[str, str] | None:
    for key, label in HEADLINES:
        if any(key in r for r in rows):
            return key, label
    return None


def plot_sweep(result: dict):
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    key, label = headline(rows)
    keys = list(result["axes"])[:MAX_PANELS]
    fig, axes = pg.figure(4.0 * min(3, len(keys)), 3.2 * ((len(keys) + 2) // 3), nrows=(len(keys) + 2) // 3,
                          ncols=min(3, len(keys)), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        xs = [r[k] for r in rows]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, [r[key] for r in rows], s=14)
        else:   # categories in order of first appearance
            cats = list(dict.fromkeys(str(x) for x in xs))
            ax.scatter([cats.index(str(x)) for x in xs], [r[key] for r in rows], s=14)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
        ax.set_xlabel(k)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    return fig


def best_points(rows: list[dict]) -> tuple[tuple[str, str] | None, list[dict]]:
    """(the headline's key and label, the points that ran, best first): by the headline, or for the serving
    question by $ per hour, then GPUs. (None, []) where no point ran."""
    head = headline([x for x in rows if x["status"] == "ok"])
    if not head:
        return None, []
    ok = sorted((x for x in rows if x["status"] == "ok"), key=lambda x: x[head[0]], reverse=head[0] not in LOWER_IS_BETTER)
    if head[0] == "num_gpus" and all(x.get("usd_per_hour") is not None for x in ok):
        # the serving question over GPU types: the cheapest deployment first, then the fewest GPUs (by GPU count
        # alone 12 H200 at $42.0 an hour ranked above 14 H100 at $41.3, until s26walk)
        ok.sort(key=lambda x: (x["usd_per_hour"], x["num_gpus"]))
    return head, ok


def best_line(result: dict) -> str:
    """The best point in a line for the terminal (the report's first "Best points" row), "" where none ran."""
    head, ok = best_points(result["rows"])
    if not head:
        return ""
    x = ok[0]
    extra = [f"{label} {show(x[k])}" for k, label, show in LATENCY_COLUMNS if k in x and x[k] is not None]
    return (f"best: {', '.join(f'{k}={x[k]}' for k in result['axes'])}: {head[1]} {_figure(x[head[0]])}"
            + (f" ({', '.join(extra)})" if extra else ""))


def build_page(result: dict) -> Page:
    r = result
    rows = r["rows"]
    verdict = (f"{r['num_points']:,} points ({r['mode']}): {r['num_ok']:,} ran, {r['num_invalid']:,} invalid, "
               f"{r['num_infeasible']:,} infeasible"
               + (f", {r['num_error']:,} failed with an error (a re-run tries them again)" if r["num_error"] else "")
               + f"; {r['evaluated_now']:,} computed by this run, the rest resumed.")
    p = Page("Sweep", verdict)
    if r.get("assumed_from_deepseek_v3"):   # s27walk round 3: another model swept under V3's layout without a word
        p.para("Assumed from DeepSeek-V3's defaults, not set for this model (and not swept): "
               + ", ".join(f"{k} = {v}" for k, v in r["assumed_from_deepseek_v3"].items())
               + ". Set them in the scenario to sweep otherwise.")
    p.section("Axes").table(["scenario key", "values"], [[k, ", ".join(map(str, v)) if isinstance(v, list) else f"{v['low']} to {v['high']}"]
                                                         for k, v in r["axes"].items()])
    head, ok = best_points(rows)
    if head:
        extra = [c for c in LATENCY_COLUMNS if c[0] in ok[0]]   # serving: the latency beside the throughput
        p.section("Best points").table(["candidate", *r["axes"], head[1], *(label for _, label, _ in extra)],
                                       [[x["candidate_id"], *(str(x[k]) for k in r["axes"]), _figure(x[head[0]]),
                                         *(show(x[k]) for k, _, show in extra)]
                                        for x in ok[:SHOWN_ROWS]])
        p.section("Plot").figure(PLOT, plot_sweep(r), f"{head[1]} against each swept key (points that ran).")
    bad = [x for x in rows if x["status"] != "ok"]
    if bad:
        p.section("Points that can't run").table(["candidate", "status", "reason"],
                                                 [[x["candidate_id"], x["status"], x["reason"]] for x in bad[:SHOWN_ROWS]])
    p.section("Files").bullets([f"`{RESULTS_CSV}` and `{RESULTS_PARQUET}`: every point, one row each; `{JOURNAL}`: the rows as "
                                "they arrived (a re-run resumes from it); "
                                f"`{pg.RESULT_JSON}`: the result; `{pg.RESOLVED_SCENARIO}`: the base scenario"])
    return p


def write_sweep_report(result, scenario, out_dir, assumed: dict | None = None) -> list[Path]:
    """`assumed`: the base scenario's fields taken from DeepSeek-V3's defaults (scenario.v3_defaults_assumed), a line
    of the page and result.json's "assumed_from_deepseek_v3" (as `twin sweep --json`) where there are any."""
    data = to_json(result)
    if assumed:
        data = {**data, "assumed_from_deepseek_v3": to_json(assumed)}
    rows = [table.flatten(x) for x in data["rows"]]
    columns = table.columns_of(rows, ("candidate_id", *data["axes"], "status", "reason"))
    return pg.write_report_dir(out_dir, build_page(data), data, scenario,
                               files={RESULTS_CSV: table.to_csv(rows, columns), **table.parquet_files(RESULTS_PARQUET, rows, columns)})
