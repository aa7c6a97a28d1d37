"""Plan search report, in the shared page style (reports/page.py).

`write_plan_report(plan, scenario, out_dir)` (twin plan --out) writes, staged and atomic:
  report.html, report.md      a verdict (the answer to the question), the front of cost against
                              time, the screen's error against the simulator, why the other
                              candidates failed, the plot
  result.json                 the PlanResult (twin.core.results.to_json)
  scenario.resolved.toml      the plan scenario as resolved (its [search] included)
  plan.csv, plan.parquet      every candidate, one row each (plan axes as plan.<field> columns)
  (rows.jsonl                 the rows journal `twin plan --out` streams to, beside them: a re-run resumes)
  cost_vs_days.png            cost (USD) against wall-clock days of the simulated plans (the
                              screened ones faint behind them); where some GPU types have no price,
                              GPU-hours against days on a second panel: one unit per axis
`write_serving_plan_report(result, scenario, out_dir)` writes the serving question's page.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

from reports import page as pg
from reports import table
from reports.page import Page
from twin.core.atomic import open_atomic
from twin.core.results import to_json
from twin.planning.result import SCREENED, SIMULATED, PlanResult, reason_examples, reason_kind
from twin.planning.serving import burst_note, nodes_of, pool_instances
from twin.planning.space import LABEL_LEGEND

FIRST_COLUMNS = ("candidate_id", "label", "status", "feasible", "reason", "gpu", "num_gpus")
PLAN_CSV = "plan.csv"
PLAN_PARQUET = "plan.parquet"
PLAN_JOURNAL = "rows.jsonl"   # twin plan --out journals the rows here as they arrive (a re-run resumes)
PLOT = "cost_vs_days.png"
FRONT_ROWS = 25      # rows of the front on the page (plan.csv has every candidate)


def plan_table(result: dict) -> tuple[list[dict], list[str]]:
    rows = [table.flatten(r) for r in result["rows"]]
    return rows, table.columns_of(rows, FIRST_COLUMNS)


def front(rows: list[dict], key: str) -> list[dict]:
    """The rows no other row beats on both wall-clock days with failure downtime and `key` (lower is
    better), fastest first."""
    out = []
    for r in sorted((r for r in rows if r.get(key) is not None), key=lambda r: (r["wall_days_goodput"], r[key])):
        if not out or r[key] < out[-1][key]:
            out.append(r)
    return out


# --------------------------------------------------------------------------- plot

def plot_cost_vs_days(result: dict):
    """One panel per unit: cost in USD for priced rows; GPU-hours for all rows when some have no price."""
    simulated = [r for r in result["rows"] if r["status"] == "simulated"]
    screened = [r for r in result["rows"] if r["status"] == "screened"]
    priced = [r for r in simulated if r["cost_usd_goodput"] is not None]
    panels = []
    if priced:
        panels.append(("cost_usd_goodput", "rental cost", pg.tick_usd, priced))
    if len(priced) < len(simulated) or not priced:
        title = "GPU-hours (every simulated plan)" if priced else "GPU-hours (no GPU type has a price)"
        panels.append(("gpu_hours_goodput", title, pg.tick_count, simulated))
    fig, axes = pg.figure(7.5, 3.6 * len(panels) + 0.8, nrows=len(panels), sharex=True, squeeze=False)
    gpus = sorted({r["gpu"] for r in simulated})
    best = result.get("best")
    for ax, (key, label, fmt, rows) in zip(axes[:, 0], panels):
        faint = [r for r in screened if r.get(key) is not None]
        if faint:
            ax.scatter([r["wall_days_goodput"] for r in faint], [r[key] for r in faint], s=4, color="#bbbbbb",
                       label="screened only (closed form)", rasterized=True)
        for i, gpu in enumerate(gpus):
            sub = [r for r in rows if r["gpu"] == gpu]
            if sub:
                ax.scatter([r["wall_days_goodput"] for r in sub], [r[key] for r in sub], s=20, color=f"C{i}", label=gpu.upper())
        f = front(rows, key)
        if f:
            ax.step([r["wall_days_goodput"] for r in f], [r[key] for r in f], where="post", color="#555555", lw=1,
                    label="front (nothing is both faster and cheaper)")
        ax.axvline(result["deadline_days"], color="k", ls="--", lw=1, label=f"deadline ({pg.days(result['deadline_days'])})")
        if key == "cost_usd_goodput" and result.get("budget_usd") is not None:
            ax.axhline(result["budget_usd"], color="k", ls=":", lw=1, label=f"budget ({pg.usd(result['budget_usd'])})")
        if best and best.get(key) is not None:
            ax.scatter([best["wall_days_goodput"]], [best[key]], marker="*", s=220, c="red", zorder=3, label=f"chosen: {result['question']}")
        ax.yaxis.set_major_formatter(pg.axis_formatter(fmt))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    legend = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    # one legend for the figure, below the panels: it never covers a point
    fig.legend(list(legend.values()), list(legend), fontsize=8, loc="outside lower center", ncol=3)
    axes[-1, 0].set_xlabel("wall-clock days with the expected failure downtime")
    axes[0, 0].set_title(f"{result['simulated']} simulated of {result['feasible']:,} that fit, {result['evaluated']:,} "
                         f"screened, for {pg.tokens(result['tokens'])}", fontsize=10)
    return fig


# --------------------------------------------------------------------------- tables

def _plan_text(r: dict) -> str:
    p = r["plan"]
    keys = [k for k in ("tp", "pp", "ep") if k in p]
    return " / ".join(str(p[k]) for k in keys)


def _plan_cells(r: dict) -> list[str]:
    p = r["plan"]
    return [r["label"], r["gpu"].upper(), f"{r['num_gpus']:,}", _plan_text(r), str(p.get("schedule", "")),
            str(p.get("micro_batch_seqs", "")), pg.days(r["wall_days_goodput"]), pg.days(r["wall_days"]),
            pg.pct(r["ettr_frac"]), pg.count(r["gpu_hours_goodput"]),
            pg.usd(r["cost_usd_goodput"]) if r["cost_usd_goodput"] is not None else "no price",
            pg.pct(r["mfu_frac"]) if r["mfu_frac"] is not None else "-", pg.number(r["tokens_per_s_per_gpu"]),
            pg.gib(r["memory_per_gpu_bytes"])]


# wall-clock days, GPU-hours and cost with the expected failure downtime; compute days without (s23ettr)
PLAN_HEADER = ["plan", "GPU", "GPUs", "TP / PP / EP", "schedule", "micro-batch", "wall-clock", "compute days", "ETTR",
               "GPU-hours", "cost",
               "MFU (BF16 peak)", "tokens/s per GPU", "memory per GPU"]


def _verdict(r: dict) -> str:
    tok, deadline = pg.tokens(r["tokens"]), pg.days(r["deadline_days"])
    best, fastest = r.get("best"), r.get("fastest")
    within = f"within {deadline}" + (f" and {pg.usd(r['budget_usd'])}" if r.get("budget_usd") is not None else "")
    if best:
        cost = pg.usd(best["cost_usd_goodput"]) if best["cost_usd_goodput"] is not None else "no price for its GPU type"
        what = "fastest" if r.get("budget_usd") is not None else "cheapest"
        return (f"The {what} plan that trains {tok} {within} is {best['label']}: {pg.days(best['wall_days_goodput'])} "
                f"with the expected failure downtime ({pg.days(best['wall_days'])} of compute, ETTR {pg.pct(best['ettr_frac'])}), "
                f"{pg.gpu_hours(best['gpu_hours_goodput'])}, {cost} ({r['num_meeting_deadline']} of {r['simulated']} simulated "
                f"plan{'' if r['simulated'] == 1 else 's'} qualify; {r['evaluated']:,} candidate{'' if r['evaluated'] == 1 else 's'} screened).")
    if fastest:
        return (f"None of the {r['simulated']} simulated plan{'' if r['simulated'] == 1 else 's'} trains {tok} {within}; the fastest, "
                f"{fastest['label']}, takes {pg.days(fastest['wall_days_goodput'])} with the expected failure downtime "
                f"({pg.days(fastest['wall_days'])} of compute).")
    reason = next(iter(r["infeasible_by_reason"]), "unknown")
    return f"None of the {r['evaluated']:,} candidates can run; the most common reason: {reason}."


def _reason_examples(rows: list[dict]) -> dict[str, str]:
    """kind of failure -> 'label: reason' of its first row, from a whole result's rows (page_result
    keeps only these of its invalid and infeasible rows)."""
    first: dict[str, str] = {}
    for x in rows:
        if not x["feasible"]:
            first.setdefault(reason_kind(x["reason"]), f"{x['label']}: {x['reason']}")
    return first


def _screen_para(e: dict) -> str:
    if not e["num_compared"]:
        return "No candidate was simulated, so the screen's error is not measured."
    return (f"Every candidate was first screened in closed form (step estimate and memory check); the best "
            f"{e['num_compared']} by the question were then simulated step by step. On those, the screen's step time "
            f"differs from the simulator's by a median of {pg.pct(e['median_abs_frac'])} (P90 {pg.pct(e['p90_abs_frac'])}, "
            f"max {pg.pct(e['max_abs_frac'])}; signed median {pg.pct(e['median_signed_frac'], signed=True)}). "
            "The answer and the front use simulated figures only.")


def build_page(result: dict) -> Page:
    r = result
    p = Page(f"Plan search: {pg.tokens(r['tokens'])} within {pg.days(r['deadline_days'])}", _verdict(r))
    p.para(f"{r['evaluated']:,} candidate{'' if r['evaluated'] == 1 else 's'} over {len(r['axes'])} axes, {r['feasible']:,} fit in memory, "
           f"{r['simulated']} simulated. Question: {r['question']}.")
    if r.get("assumed_from_deepseek_v3"):   # s27walk round 2: another model ran V3's layout without a word
        p.para("Assumed from DeepSeek-V3's defaults, not set for this model (and not varied by the search): "
               + ", ".join(f"{k} = {v}" for k, v in r["assumed_from_deepseek_v3"].items())
               + ". Set them in the scenario to plan otherwise.")
    p.section("Axes searched").table(["scenario key", "values"], [[k, ", ".join(str(v) for v in vs)] for k, vs in r["axes"].items()])
    p.section("The front: cost against time").para(
        "Simulated plans that no other simulated plan beats on both wall-clock time and cost: each is the cheapest at its speed. "
        "Wall-clock days, GPU-hours and cost include the expected failure downtime at the plan's cluster size (interruptions, "
        "restarts and checkpoints: the failure model `twin replay` applies, its ETTR shown); compute days are the steps alone. "
        f"Each plan's words: {LABEL_LEGEND}.")
    simulated = [x for x in r["rows"] if x["status"] == "simulated"]
    priced = front(simulated, "cost_usd_goodput")
    if priced:
        p.table(PLAN_HEADER, [_plan_cells(x) for x in priced[:FRONT_ROWS]])
    if any(x["cost_usd_goodput"] is None for x in simulated):
        p.para("Some GPU types have no price, so the same front in GPU-hours, over every simulated plan:")
        p.table(PLAN_HEADER, [_plan_cells(x) for x in front(simulated, "gpu_hours_goodput")[:FRONT_ROWS]])
    p.section("Screen against simulator").para(_screen_para(r["screen_error"]))
    if r["infeasible_by_reason"]:
        # the kind names the refusing field; its first candidate's reason says why (s23walk)
        first = r["reason_examples"] if "reason_examples" in r else _reason_examples(r["rows"])
        p.section("Why the other candidates can't run").table(
            ["reason", "candidates", "the first such candidate, and why"],
            [[k, f"{v:,}", first.get(k, "-")] for k, v in r["infeasible_by_reason"].items()])
    if simulated:
        p.section("Plot").figure(PLOT, plot_cost_vs_days(r), "Each simulated plan's cost (and GPU-hours, where some GPU "
                                 "types have no price) against wall-clock days, the screened-only plans faint behind; one unit per axis.")
    p.section("Files").bullets([f"`{PLAN_CSV}` and `{PLAN_PARQUET}`: every candidate, one row each, with its status "
                                "(invalid, infeasible, screened, simulated), its screen and simulated step time, MFU, memory, "
                                f"days, GPU-hours and cost, or why it can't run; `{PLAN_JOURNAL}`: the rows as they arrived "
                                f"(a re-run into this folder resumes from it); `{pg.RESULT_JSON}`: the result; "
                                f"`{pg.RESOLVED_SCENARIO}`: the scenario and its search as resolved"])
    return p


# the fields of a screened-only row the page reads (its plot's faint points)
PAGE_FIELDS = ("candidate_id", "status", "gpu", "wall_days_goodput", "cost_usd_goodput", "gpu_hours_goodput")


def page_result(plan: PlanResult) -> dict:
    """The result as build_page reads it: every field, the rows cut to the simulated ones whole
    and the screened ones' PAGE_FIELDS (invalid and infeasible rows are counted, not shown, but for
    the first of each kind of failure: `reason_examples`, kind -> 'label: reason')."""
    data = to_json(dataclasses.replace(plan, rows=()))
    data["reason_examples"] = {k: f"{r.label}: {r.reason}" for k, r in reason_examples(plan).items()}
    data["rows"] = []
    for r in plan.rows:
        if r.status == SIMULATED:
            data["rows"].append(to_json(r))
        elif r.status == SCREENED:
            row = to_json(r)
            data["rows"].append({k: row[k] for k in PAGE_FIELDS})
    return data


def write_json_rows(fh, plan: PlanResult, assumed: dict | None = None) -> None:
    """json.dumps(to_json(plan), indent=2, allow_nan=False) + newline, byte for byte, written a row
    at a time: the rows (the last field) are never all held as JSON values or text (a plan search
    of the default space has 57,600 of them; until s21ux its report held them three times over).
    `assumed`: the base scenario's fields taken from DeepSeek-V3's defaults (scenario.v3_defaults_assumed), a key
    "assumed_from_deepseek_v3" before the rows where there are any."""
    data = to_json(dataclasses.replace(plan, rows=()))
    if assumed:
        data = {**{k: v for k, v in data.items() if k != "rows"}, "assumed_from_deepseek_v3": to_json(assumed), "rows": []}
    head = json.dumps(data, indent=2, allow_nan=False)
    assert head.endswith('\n  "rows": []\n}'), "rows is PlanResult's last field"
    if not plan.rows:
        fh.write(head + "\n")
        return
    fh.write(head[:-len("[]\n}")] + "[")
    for i, row in enumerate(plan.rows):
        text = json.dumps(to_json(row), indent=2, allow_nan=False).replace("\n", "\n    ")
        fh.write(("," if i else "") + "\n    " + text)
    fh.write("\n  ]\n}\n")


def write_plan_json(plan: PlanResult, target: str, assumed: dict | None = None) -> None:
    """`twin plan --json FILE` (atomic) or `--json -` (stdout), streamed as write_json_rows does."""
    if target == "-":
        write_json_rows(sys.stdout, plan, assumed)
        return
    with open_atomic(target) as fh:
        write_json_rows(fh, plan, assumed)


def _table_files(table_rows) -> dict:
    """plan.csv and plan.parquet of the rows `table_rows()` yields afresh each call (flattened JSON rows)."""
    columns, kinds = table.stream_columns(table_rows(), FIRST_COLUMNS)
    return {PLAN_CSV: lambda path: table.write_csv(path, table_rows(), columns),
            PLAN_PARQUET: lambda path: table.write_parquet(path, table_rows, columns, kinds)}


def write_plan_report(plan: PlanResult, scenario, out_dir, assumed: dict | None = None) -> list[Path]:
    """report.html, report.md, result.json, scenario.resolved.toml, plan.csv, plan.parquet and
    cost_vs_days.png into `out_dir`, atomically. Returns the paths written. The table and the JSON
    are written a row at a time (twin plan's memory then grows with its rows, not with three
    copies of them as JSON values and text)."""
    def write_json(path: Path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            write_json_rows(fh, plan, assumed)

    files = _table_files(lambda: (table.flatten(to_json(r)) for r in plan.rows))
    page = page_result(plan)
    if assumed:
        page["assumed_from_deepseek_v3"] = to_json(assumed)
    return pg.write_report_dir(out_dir, build_page(page), write_json, scenario, files=files)


def saved_page_result(data: dict) -> dict:
    """page_result of a saved result.json (the PlanResult's JSON as write_json_rows wrote it, every row)."""
    page = {k: v for k, v in data.items() if k != "rows"}
    examples: dict[str, str] = {}
    for row in data["rows"]:
        if not row["feasible"]:
            examples.setdefault(reason_kind(row["reason"]), f"{row['label']}: {row['reason']}")
    page["reason_examples"] = examples
    page["rows"] = [row if row["status"] == SIMULATED else {k: row[k] for k in PAGE_FIELDS}
                    for row in data["rows"] if row["status"] in (SIMULATED, SCREENED)]
    return page


def write_saved_plan_report(data: dict, scenario, out_dir) -> list[Path]:
    """write_plan_report's files from a saved result.json (`twin report`): the same page, table and JSON."""
    files = _table_files(lambda: (table.flatten(r) for r in data["rows"]))
    return pg.write_report_dir(out_dir, build_page(saved_page_result(data)), data, scenario, files=files)


# --------------------------------------------------------------------------- serving question

def _usd(x) -> str:
    """Dollars and cents, or "-" for a cost with no tokens to spread it over (JSON null, from an infinite cost: the
    report crashed on it with a TypeError until s26walk)."""
    return "-" if x is None or not math.isfinite(x) else f"${x:,.2f}"


def _cost(b: dict) -> str:
    if b.get("usd_per_hour") is None:   # a result.json written before s22walk
        return ""
    return (f", {_usd(b['usd_per_hour'])} per hour ({_usd(b['usd_per_million_output_tokens_all_gpus'])} per million output "
            f"tokens, every GPU's cost; split by work {_usd(b['usd_per_million_output_tokens'])} output and "
            f"{_usd(b['usd_per_million_input_tokens'])} input)")


def _split(b: dict, r: dict) -> str:
    """A deployment's layout with its nodes and instances (the split in GPUs alone until s24srvwalk); `r` the
    question's answer (.get: a result.json written before s24srvwalk has no node size)."""
    instance_gpus = r["instance_gpus"]
    nodes = nodes_of(b["num_gpus"], r.get("gpus_per_node", 8))
    nodes_text = f"{nodes:,} node{'s' if nodes != 1 else ''}"
    if b.get("layout") == "co-located":
        n = b["num_gpus"] // instance_gpus
        return f"{n:,} co-located instance{'s' if n != 1 else ''} of {instance_gpus}, {nodes_text}"
    p, d = pool_instances(b["prefill_gpus"], b["decode_gpus"], instance_gpus, r.get("prefill_instance_gpus"))
    ratio = f", P:D 1:{d / p:.3g}" if p else ""
    return f"{b['prefill_gpus']:,} prefill, {b['decode_gpus']:,} decode: {p:,} + {d:,} instances{ratio}, {nodes_text}"


def _why_none(r: dict) -> str:
    """Why no deployment served: each reason with its count (the page said nothing of it until s24srvwalk, where
    the terminal named an instance that holds no request and the instance that would)."""
    reasons = r.get("infeasible_by_reason") or {}
    if not r.get("evaluated"):   # a floor no pool lifts, none simulated: its count read as its target until s26walk
        return (": " + "; ".join(reasons)) if reasons else ""
    return (": " + "; ".join(f"{k} ({v:,} deployment{'' if v == 1 else 's'})" for k, v in reasons.items())) if reasons else ""


def build_serving_page(r: dict, scenario_name: str = "") -> Page:
    b = r["best"]
    target = f"{r['rate_per_s']:g} requests/s within TTFT {pg.seconds(r['ttft_target_s'])} and TPOT {pg.seconds(r['tpot_target_s'])}"
    verdict = (f"The fewest GPUs that serve {target}: {b['num_gpus']:,} ({_split(b, r)}), "
               f"at TTFT {pg.seconds(b['ttft_s'])} and TPOT {pg.seconds(b['tpot_s'])}" + _cost(b) + "." if b else
               f"No deployment of up to the checked size serves {target}" + _why_none(r) + ".")
    p = Page(f"Serving capacity: {r['rate_per_s']:g} requests/s", verdict)
    pct = f"P{r['percentile']:g}" if "percentile" in r else f"P{b['percentile']:g}" if b else "percentile"   # r's: since s24srvwalk
    p.para(f"Instances of {r['instance_gpus']} GPUs; {r['evaluated']:,} deployments simulated request by request "
           "(twin.serving.simulate, open-loop arrivals at the rate), by bisection (twin.planning.serving): co-located, the "
           "fewest instances that prefill and decode; disaggregated, the fewest decode instances with every prompt "
           "prefilled on arrival (prefill 0 below), then the fewest prefill instances beside them. "
           f"TTFT and TPOT: {pct} over the requests arriving in the steady window.")
    others = [(name, r.get(key)) for name, key in (("co-located", "best_colocated"), ("disaggregated", "best_disaggregated"))
              if name in r.get("layouts", ())]   # .get: a result.json written before s22walk
    if len(others) > 1:
        p.section("By layout").table(["layout", "fewest GPUs", "split", "TTFT", "TPOT", "$ per hour", "$ per M output tokens (every GPU)"],
                                     [[name, f"{x['num_gpus']:,}", _split(x, r), pg.seconds(x["ttft_s"]),
                                       pg.seconds(x["tpot_s"]), _usd(x['usd_per_hour']).lstrip("$"), _usd(x['usd_per_million_output_tokens_all_gpus']).lstrip("$")]
                                      if x else [name, "none within the targets", "-", "-", "-", "-", "-"]
                                      for name, x in others])
    if r.get("arrival_note"):
        p.warn(r["arrival_note"][0].upper() + r["arrival_note"][1:] + ".")
    burst = b and burst_note(b["rate_per_s"], b.get("served_rate_per_s"), b["simulated_requests"], r.get("arrival", ""))
    if burst:   # the summary's note (s26walk)
        p.warn(burst[0].upper() + burst[1:] + ".")
    if b and b["simulated_requests"] < b.get("steady_requests", 0):   # the summary's note (s22walk)
        p.warn(f"{b['simulated_requests']:,} requests per deployment are too few for the steady state "
               f"({b['steady_requests']:,}: their arrivals span three lifetimes of a request at a full instance's pace); the "
               "decode pool may never fill and the answer may be too small.")
    p.section("Deployments checked").table(
        ["layout", "GPUs", "prefill", "decode", "meets", "reason", "TTFT", "TPOT", "decode batch cap", "served requests/s", "requests"],
        [[c.get("layout", "disaggregated"), f"{c['num_gpus']:,}", f"{c['prefill_gpus']:,}", f"{c['decode_gpus']:,}", "yes" if c["meets"] else "no", c["reason"] or "-",
          pg.seconds(c["ttft_s"]) if c["ttft_s"] is not None else "-", pg.seconds(c["tpot_s"]) if c["tpot_s"] is not None else "-",
          str(c["decode_batch"] or "-"), f"{c['served_rate_per_s']:.3g}" if c["served_rate_per_s"] is not None else "-",
          f"{c['simulated_requests']:,}"]
         for c in r["checks"][-FRONT_ROWS:]])
    # the page states its inputs, as every other report does (missing until s19ux2)
    p.section("Files").bullets([f"`{pg.RESULT_JSON}`: the result; `{pg.RESOLVED_SCENARIO}`: the serving scenario"
                                + (f" ({scenario_name})" if scenario_name else "") + " as resolved, the deployment every "
                                "check scales"])
    return p


def write_serving_plan_report(result, scenario, out_dir) -> list[Path]:
    return write_serving_plan_json(to_json(result), scenario, out_dir)


def write_serving_plan_json(data: dict, scenario, out_dir) -> list[Path]:
    """The serving question's report of its JSON (a saved result.json re-rendered: `twin report`)."""
    return pg.write_report_dir(out_dir, build_serving_page(data, scenario.name), data, scenario)


CAPACITY_PLOT = "capacity.png"


def plot_capacity(r: dict):
    """GPUs and $ per million output tokens against the rate, one marker per layout of each answer."""
    fig, (ax_gpus, ax_usd) = pg.figure(7.5, 6.0, nrows=2, sharex=True)
    for i, layout in enumerate(("co-located", "disaggregated")):
        best = [(p["rate_per_s"], p[f"best_{layout.replace('-', '')}"]) for p in r["plans"]]
        best = [(rate, b) for rate, b in best if b]
        if best:
            ax_gpus.plot([x for x, _ in best], [b["num_gpus"] for _, b in best], "o-", color=f"C{i}", label=layout)
            ax_usd.plot([x for x, _ in best], [b["usd_per_million_output_tokens_all_gpus"] for _, b in best], "o-", color=f"C{i}",
                        label=layout)
    ax_gpus.set_ylabel("fewest GPUs")
    ax_usd.set_ylabel("$ per million output tokens\n(every GPU's cost)")
    ax_usd.set_xlabel("requests per second")
    for ax in (ax_gpus, ax_usd):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _rate(plan: dict) -> str:
    return f"{plan['rate_per_s']:g}/s"


def build_capacity_page(r: dict, scenario_name: str = "") -> Page:
    plans = r["plans"]
    served = [p for p in plans if p["best"]]
    target = f"TTFT {pg.seconds(r['ttft_target_s'])} and TPOT {pg.seconds(r['tpot_target_s'])} (P{r['percentile']:g})"
    parts = [", ".join(f"{x['best']['num_gpus']:,} at {_rate(x)}" for x in served)] if served else []
    if len(served) < len(plans):
        parts.append("no deployment serves " + ", ".join(_rate(x) for x in plans if not x["best"]))
    verdict = f"The fewest GPUs within {target} at {len(plans)} request rates: " + "; ".join(parts) + "."
    p = Page("Serving capacity against the request rate", verdict)
    p.para("Each rate is its own serving question (twin.planning.serving.size_serving): co-located and disaggregated "
           "deployments simulated request by request, each layout's fewest GPUs found by bisection, the fewer answered.")
    rows = []
    for x in plans:
        b = x["best"]
        rows.append([f"{x['rate_per_s']:g}", f"{b['num_gpus']:,}", b["layout"], _split(b, x), pg.seconds(b["ttft_s"]),
                     pg.seconds(b["tpot_s"]), _usd(b['usd_per_hour']).lstrip("$"), _usd(b['usd_per_million_output_tokens_all_gpus']).lstrip("$"),
                     f"{x['evaluated']:,}"] if b else
                    [f"{x['rate_per_s']:g}", "none", "-", "; ".join(x["infeasible_by_reason"]) or "-", "-", "-", "-", "-", f"{x['evaluated']:,}"])
    p.section("Answers").table(["requests/s", "fewest GPUs", "layout", "split", "TTFT", "TPOT", "$ per hour",
                                "$ per M output tokens (every GPU)", "deployments simulated"], rows)
    if served:
        p.section("Plot").figure(CAPACITY_PLOT, plot_capacity(r), "Each layout's fewest GPUs, and their whole cost per million "
                                                                  "output tokens, against the request rate.")
    notes = sorted({x["arrival_note"] for x in plans if x.get("arrival_note")})
    for n in notes:
        p.warn(n[0].upper() + n[1:] + ".")
    p.section("Files").bullets([f"`{pg.RESULT_JSON}`: the result (one serving answer a rate); `{pg.RESOLVED_SCENARIO}`: the "
                                "serving scenario" + (f" ({scenario_name})" if scenario_name else "") + " as resolved"])
    return p


def write_serving_capacity_report(result, scenario, out_dir) -> list[Path]:
    return write_serving_capacity_json(to_json(result), scenario, out_dir)


def write_serving_capacity_json(data: dict, scenario, out_dir) -> list[Path]:
    """The capacity curve's report of its JSON (a saved result.json re-rendered: `twin report`)."""
    return pg.write_report_dir(out_dir, build_capacity_page(data, scenario.name), data, scenario)
