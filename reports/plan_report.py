"""Plan search report, in the shared page style (reports/page.py).

`write_plan_report(plan, scenario, out_dir)` (twin plan --out) writes, staged and atomic:
  report.html, report.md      a verdict (the cheapest plan that meets the deadline), the ranked
                              table, the cost–time front, why the other candidates failed, the plot
  result.json                 the PlanResult (twin.core.results.to_json)
  scenario.resolved.toml      the plan scenario as resolved (its [search] included)
  plan.csv                    every candidate, feasible or not
  cost_vs_days.png            cost (USD) against wall-clock days; where some GPU types have no
                              price, GPU-hours against days on a second panel: one unit per axis
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from reports import page as pg
from reports.page import Page
from twin.core.results import to_json
from twin.planning.result import PlanResult

COLUMNS = ("label", "feasible", "reason", "gpu", "num_gpus", "tp", "pp", "ep", "schedule", "micro_batch_seqs",
           "step_time_s", "mfu_frac", "tokens_per_s_per_gpu", "memory_per_gpu_bytes", "wall_days", "gpu_hours", "cost_usd")
PLAN_CSV = "plan.csv"
PLOT = "cost_vs_days.png"
RANKED_ROWS = 25     # rows of the ranked table on the page (plan.csv has them all)


def plan_csv(result: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in result["rows"]:
        writer.writerow(row)
    return buf.getvalue()


def front(rows: list[dict], key: str) -> list[dict]:
    """The rows no other row beats on both wall-clock days and `key` (lower is better), fastest first."""
    out = []
    for r in sorted((r for r in rows if r.get(key) is not None), key=lambda r: (r["wall_days"], r[key])):
        if not out or r[key] < out[-1][key]:
            out.append(r)
    return out


# --------------------------------------------------------------------------- plot

def plot_cost_vs_days(result: dict):
    """One panel per unit: cost in USD for priced rows; GPU-hours for all rows when some have no price."""
    feasible = [r for r in result["rows"] if r["feasible"]]
    priced = [r for r in feasible if r["cost_usd"] is not None]
    panels = []
    if priced:
        panels.append(("cost_usd", "rental cost", pg.tick_usd, priced))
    if len(priced) < len(feasible) or not priced:
        title = "GPU-hours (every feasible plan)" if priced else "GPU-hours (no GPU type has a price)"
        panels.append(("gpu_hours", title, pg.tick_count, feasible))
    fig, axes = pg.figure(7.5, 3.6 * len(panels) + 0.8, nrows=len(panels), sharex=True, squeeze=False)
    gpus = sorted({r["gpu"] for r in feasible})
    best = result.get("best")
    for ax, (key, label, fmt, rows) in zip(axes[:, 0], panels):
        for i, gpu in enumerate(gpus):
            sub = [r for r in rows if r["gpu"] == gpu]
            if sub:
                ax.scatter([r["wall_days"] for r in sub], [r[key] for r in sub], s=20, color=f"C{i}", label=gpu.upper())
        f = front(rows, key)
        if f:
            ax.step([r["wall_days"] for r in f], [r[key] for r in f], where="post", color="#555555", lw=1,
                    label="front (nothing is both faster and cheaper)")
        ax.axvline(result["deadline_days"], color="k", ls="--", lw=1, label=f"deadline ({pg.days(result['deadline_days'])})")
        if best and best.get(key) is not None:
            ax.scatter([best["wall_days"]], [best[key]], marker="*", s=220, c="red", zorder=3, label="chosen: cheapest on time")
        ax.yaxis.set_major_formatter(pg.axis_formatter(fmt))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    legend = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    # one legend for the figure, below the panels: it never covers a point
    fig.legend(list(legend.values()), list(legend), fontsize=8, loc="outside lower center", ncol=3)
    axes[-1, 0].set_xlabel("wall-clock days")
    axes[0, 0].set_title(f"{result['num_feasible']} feasible plans of {result['num_candidates']} for "
                         f"{pg.tokens(result['tokens'])}", fontsize=10)
    return fig


# --------------------------------------------------------------------------- tables

def _plan_cells(r: dict) -> list[str]:
    return [r["label"], r["gpu"].upper(), f"{r['num_gpus']:,}", f"{r['tp']} / {r['pp']} / {r['ep']}", r["schedule"],
            f"{r['micro_batch_seqs']}", pg.days(r["wall_days"]), pg.count(r["gpu_hours"]),
            pg.usd(r["cost_usd"]) if r["cost_usd"] is not None else "no price", pg.pct(r["mfu_frac"]),
            pg.number(r["tokens_per_s_per_gpu"]), pg.gib(r["memory_per_gpu_bytes"])]


PLAN_HEADER = ["plan", "GPU", "GPUs", "TP / PP / EP", "schedule", "micro-batch", "wall-clock", "GPU-hours", "cost",
               "MFU", "tokens/s per GPU", "memory per GPU"]


def _verdict(r: dict) -> str:
    tok, deadline = pg.tokens(r["tokens"]), pg.days(r["deadline_days"])
    best, fastest = r.get("best"), r.get("fastest")
    if best:
        cost = pg.usd(best["cost_usd"]) if best["cost_usd"] is not None else "no price for its GPU type"
        return (f"The cheapest plan that trains {tok} within {deadline} is {best['label']}: {pg.days(best['wall_days'])}, "
                f"{pg.gpu_hours(best['gpu_hours'])}, {cost} ({r['num_meeting_deadline']} of {r['num_candidates']} "
                "candidates meet the deadline).")
    if fastest:
        return (f"None of the {r['num_candidates']} candidates trains {tok} within {deadline}; the fastest, "
                f"{fastest['label']}, takes {pg.days(fastest['wall_days'])}.")
    reason = max(r["infeasible_reasons"].items(), key=lambda kv: kv[1])[0] if r["infeasible_reasons"] else "unknown"
    return f"None of the {r['num_candidates']} candidates can run; the most common reason: {reason}."


def build_page(result: dict) -> Page:
    r = result
    p = Page(f"Plan search: {pg.tokens(r['tokens'])} within {pg.days(r['deadline_days'])}", _verdict(r))
    p.para(f"{r['num_candidates']} candidates, {r['num_feasible']} feasible, {r['num_meeting_deadline']} within the deadline. "
           "Ranked by rental cost; a GPU type without a price ranks after every priced plan, by GPU-hours.")
    ranked = r["ranked"]
    p.section("Ranked (plans that meet the deadline)")
    if ranked:
        p.table(["rank"] + PLAN_HEADER, [[str(i)] + _plan_cells(row) for i, row in enumerate(ranked[:RANKED_ROWS], 1)])
        if len(ranked) > RANKED_ROWS:
            p.para(f"The first {RANKED_ROWS} of {len(ranked)}; `{PLAN_CSV}` holds every candidate.")
    else:
        p.para("No feasible plan meets the deadline.")
    feasible = [x for x in r["rows"] if x["feasible"]]
    p.section("The front: cost against time")
    p.para("Plans that no other plan beats on both wall-clock time and cost: each is the cheapest at its speed.")
    priced = front(feasible, "cost_usd")
    if priced:
        p.table(PLAN_HEADER, [_plan_cells(x) for x in priced])
    if any(x["cost_usd"] is None for x in feasible):
        p.para("Some GPU types have no price, so the same front in GPU-hours, over every feasible plan:")
        p.table(PLAN_HEADER, [_plan_cells(x) for x in front(feasible, "gpu_hours")])
    if r["infeasible_reasons"]:
        p.section("Why the other candidates can't run").table(
            ["reason", "candidates"], [[k, f"{v:,}"] for k, v in sorted(r["infeasible_reasons"].items(), key=lambda kv: -kv[1])])
    if feasible:
        p.section("Plot").figure(PLOT, plot_cost_vs_days(r), "Each feasible plan's cost (and GPU-hours, where some GPU "
                                 "types have no price) against wall-clock days; one unit per axis.")
    p.section("Files").bullets([f"`{PLAN_CSV}`: every candidate with its step time, MFU, memory, days, GPU-hours and cost, "
                                f"or why it can't run; `{pg.RESULT_JSON}`: the result; `{pg.RESOLVED_SCENARIO}`: the scenario "
                                "and its search as resolved"])
    return p


def write_plan_report(plan: PlanResult, scenario, out_dir) -> list[Path]:
    """report.html, report.md, result.json, scenario.resolved.toml, plan.csv and cost_vs_days.png
    into `out_dir`, atomically. Returns the paths written."""
    result = to_json(plan)
    return pg.write_report_dir(out_dir, build_page(result), result, scenario, files={PLAN_CSV: plan_csv(result)})
