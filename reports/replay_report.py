"""The replay's cost report, in the shared page style (reports/page.py).

Files (staged, atomic): report.html (self-contained), report.md, result.json (the ReplayResult as
twin.core.results.to_json writes it), scenario.resolved.toml, results.csv (one row per stage) and
the plots: GPU-hours by stage, a Gantt chart of the simulated step per pipeline rank (compute,
communication, bubbles), a sensitivity tornado, and cost against cluster size.

DeepSeek's published training figures (twin/data/claims.toml) describe one run: DeepSeek-V3 on
H800. The report compares against them (with an error column) only when the result says they
describe its run (`ReplayResult.claims_describe_run`); otherwise it shows them as context, without
an error, and says why.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib.patches
from matplotlib.collections import PolyCollection
import numpy as np

from reports import page as pg
from reports.page import Page
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.results import to_json
from twin.training.replay.costs import PUBLISHED_RUN
from twin.training.replay.stages import stage_scenario
from twin.training.step import simulate_step
from twin.training.replay.result import ReplayResult

PLOTS = ("gpu_hours_by_stage.png", "step_gantt.png", "sensitivity_tornado.png", "cost_vs_cluster_size.png")
STAGES_CSV = "results.csv"
TOTAL_CLAIM = "train.cost.total_gpu_hours"


def published_run() -> str:
    """'deepseek-v3 on H800': the run DeepSeek's published figures describe."""
    return f"{PUBLISHED_RUN['model']} on {PUBLISHED_RUN['gpu'].upper()}"


def why_not_compared(result: dict, scenario) -> str:
    return (f"DeepSeek's published figures describe {published_run()}; this run is {scenario.model.name} on "
            f"{result['gpu'].upper()}, so they are shown for context only, without an error.")


# --------------------------------------------------------------------------- formatting

def quantity(x, unit: str, published: bool = False) -> str:
    """A claim's value in its unit, for people (published figures keep up to four figures)."""
    if x is None:
        return pg.NA
    digits = 4 if published else 3
    if "GPU-hours" in unit:
        per_t = "1e12 tokens" in unit
        return f"{pg.count(x, digits, published)} GPU-hours" + (" per 1T tokens" if per_t else "")
    if unit == "USD":
        return pg.usd(x, digits, published)
    if unit == "days":
        return pg.days(x)
    if unit == "tokens/s/GPU":
        return f"{pg.number(x)} tokens/s per GPU"
    if unit == "fraction":
        return pg.pct(x)
    return f"{pg.sig(x)} {unit}"


def _gpu(result: dict) -> str:
    return result["gpu"].upper()


# --------------------------------------------------------------------------- plots

def plot_gpu_hours(result: dict, compared: bool):
    """GPU-hours per stage group (log scale, P10–P90 whiskers), beside the published figures when compared."""
    groups = result["groups"]
    names = list(groups)
    band = result.get("band", {})
    fig, ax = pg.figure(8, 4.2)
    x = np.arange(len(names))
    pred = np.array([groups[g]["gpu_hours"] for g in names])
    err = np.zeros((2, len(names)))
    for i, g in enumerate(names):
        b = band.get(f"group.{g}.gpu_hours")
        if b:
            err[:, i] = max(pred[i] - b["p10"], 0), max(b["p90"] - pred[i], 0)
    width = 0.4 if compared else 0.6
    ax.bar(x - (0.2 if compared else 0), pred, width, yerr=err, capsize=4, label="twin (P10–P90)", color="#4477aa")
    if compared:
        claimed = [next((s.get("group_claimed_gpu_hours") for s in result["stages"] if s["group"] == g), None) for g in names]
        ax.bar(x + 0.2, [c or 0 for c in claimed], width, label="published (DeepSeek-V3 report, Table 1)", color="#ee7733")
    ax.set_xticks(x, [g.replace("_", " ") for g in names])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(pg.axis_formatter(pg.tick_count))
    ax.yaxis.set_minor_formatter(pg.axis_formatter(lambda v: ""))
    ax.set_ylabel("GPU-hours (log scale)")
    ax.set_title(f"GPU-hours by stage on {result['num_gpus']:,} {_gpu(result)}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


# the Gantt is drawn at about this many columns across the step: spans of one lane closer than one
# column are drawn as one bar, so a V3 step's ~100k events become a few thousand rectangles and the
# picture (10 in at 150 dpi) is the same
GANTT_COLUMNS = 3000


def merge_spans(spans: list[tuple[float, float]], min_gap_s: float) -> list[tuple[float, float]]:
    """(start, width) spans sorted by start, with those separated by less than `min_gap_s` joined."""
    out: list[list[float]] = []
    for start, width in sorted(spans):
        if out and start - (out[-1][0] + out[-1][1]) < min_gap_s:
            out[-1][1] = max(out[-1][1], start + width - out[-1][0])
        else:
            out.append([start, width])
    return [(a, b) for a, b in out]


def merge_spans_array(starts: np.ndarray, widths: np.ndarray, min_gap_s: float) -> list[tuple[float, float]]:
    """merge_spans on arrays: sorted by (start, width), a span joins the bar before it when it starts
    less than `min_gap_s` after the furthest end so far (the bar's end)."""
    order = np.lexsort((widths, starts))
    starts, ends = starts[order], starts[order] + widths[order]
    reach = np.maximum.accumulate(ends)
    new_bar = np.ones(len(starts), dtype=bool)
    new_bar[1:] = starts[1:] - reach[:-1] >= min_gap_s
    first = np.flatnonzero(new_bar)
    last = np.append(first[1:], len(starts)) - 1
    return list(zip(starts[first].tolist(), (reach[last] - starts[first]).tolist()))


def _lanes(events, streams: list[str]) -> dict:
    """(rank, stream index, op kind or 'comm') -> (starts, widths) arrays of the events drawn in it
    (from the simulator's per-op lanes where it kept them: no per-task events are built)."""
    cols: dict = {}
    if hasattr(events, "lanes"):
        for (rank, stream, kind), spans in events.lanes().items():
            si = streams.index(stream) if stream in streams else 0
            lane = cols.setdefault((rank, si, kind if stream == "compute" else "comm"), ([], []))
            lane[0].extend(a for a, _ in spans)
            lane[1].extend(b for _, b in spans)
        return {k: (np.array(a), np.array(b) - np.array(a)) for k, (a, b) in cols.items()}
    for ev in events:
        si = streams.index(ev.stream) if ev.stream in streams else 0
        key = (ev.rank, si, ev.kind if ev.stream == "compute" else "comm")
        lane = cols.get(key)
        if lane is None:
            lane = cols[key] = ([], [])
        lane[0].append(ev.start_s)
        lane[1].append(ev.end_s)
    return {k: (np.array(a), np.array(b) - np.array(a)) for k, (a, b) in cols.items()}


def plot_gantt(step, max_events: int = 1_000_000):
    """The simulated step: one row per pipeline rank, a lane per stream, bubbles left white. Spans
    closer than one of GANTT_COLUMNS columns of the step are drawn as one bar (merge_spans)."""
    fig, ax = pg.figure(10, 5)
    pipe = getattr(step, "pipeline", None) if step is not None else None
    if pipe is None or not getattr(pipe, "events", None):
        ax.text(0.5, 0.5, "no pipeline timeline available", ha="center", va="center")
        ax.set_axis_off()
        return fig
    colors = {"F": "#4477aa", "B": "#66ccee", "W": "#228833", "BW": "#66ccee", "FB": "#aa3377"}
    streams = list(getattr(pipe, "streams", ("compute", "comm")))
    lane_h = 0.8 / max(len(streams), 1)
    n_ranks = pipe.num_ranks
    min_gap_s = pipe.makespan_s / GANTT_COLUMNS
    events = pipe.events if hasattr(pipe.events, "lanes") else pipe.events[:max_events]   # lanes: one bar per op
    bars: dict[str, list[np.ndarray]] = {}   # color -> (x0, y0, x1, y1) rows: one collection per color
    for (rank, si, kind), (starts, widths) in _lanes(events, streams).items():
        color = colors.get(kind, "#bbbbbb") if kind != "comm" else "#ccbb44"
        spans = np.array(merge_spans_array(starts, widths, min_gap_s)).reshape(-1, 2)
        y0 = rank - 0.4 + si * lane_h
        bars.setdefault(color, []).append(np.column_stack([spans[:, 0], np.full(len(spans), y0),
                                                           spans.sum(axis=1), np.full(len(spans), y0 + lane_h * 0.95)]))
    for color, rows in bars.items():   # rectangles as polygons: what broken_barh draws, ~100x fewer calls
        x0, y0, x1, y1 = np.concatenate(rows).T
        ax.add_collection(PolyCollection(np.stack([np.column_stack(c) for c in ((x0, y0), (x0, y1), (x1, y1), (x1, y0))], axis=1),
                                         facecolors=color, linewidths=0))
    ax.set_xlim(0, pipe.makespan_s)
    ax.set_ylim(n_ranks - 0.5, -0.5)
    step_ranks = range(0, n_ranks, max(1, n_ranks // 16))
    ax.set_yticks(list(step_ranks), [f"PP{r}" for r in step_ranks], fontsize=7)
    ax.set_xlabel("time in step (s)")
    handles = [matplotlib.patches.Patch(facecolor=c, edgecolor="#999999", label=k) for k, c in
               (("forward", "#4477aa"), ("backward", "#66ccee"), ("weight grad", "#228833"),
                ("overlapped F&B", "#aa3377"), ("communication", "#ccbb44"), ("bubble", "#ffffff"))]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=6)
    ax.set_title(f"Simulated step: {step.schedule}, {step.num_microbatches} micro-batches, bubble "
                 f"{pg.pct(step.bubble_frac)}; each rank's lanes: " + " / ".join(streams), fontsize=9)
    return fig


def plot_tornado(result: dict):
    """Total cost with each uncertain input at its P10 and P90, widest first."""
    sens = (result.get("uncertainty") or {}).get("sensitivity", [])
    base = result["total_cost_usd"]
    fig, ax = pg.figure(8, 0.45 * max(len(sens), 2) + 1.4)
    if not sens:
        ax.text(0.5, 0.5, "no sensitivity analysis", ha="center", va="center")
        ax.set_axis_off()
        return fig
    rows = sorted(sens, key=lambda s: abs(s["total_cost_usd_high"] - s["total_cost_usd_low"]))
    for i, s in enumerate(rows):
        ax.barh(i, s["total_cost_usd_low"] - base, left=base, color="#4477aa", label="input at P10" if i == 0 else None)
        ax.barh(i, s["total_cost_usd_high"] - base, left=base, color="#ee6677", label="input at P90" if i == 0 else None)
    ax.set_yticks(range(len(rows)), [f"{s['label']} ({pg.sig(s['low_value'])} / {pg.sig(s['high_value'])})" for s in rows],
                  fontsize=8)
    ax.axvline(base, color="k", lw=0.8)
    ax.xaxis.set_major_formatter(pg.axis_formatter(pg.tick_usd))
    ax.set_xlabel(f"total rental cost (base {pg.usd(base)})")
    ax.set_title("Sensitivity of the total cost to each input, one at a time", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_cost_vs_size(result: dict):
    """Cost (left axis, USD) and wall-clock days (right axis) against the number of GPUs."""
    rows = [r for r in result.get("size_sweep", []) if r.get("feasible")]
    fig, ax = pg.figure(7, 3.8)
    if not rows:
        ax.text(0.5, 0.5, "no feasible cluster sizes in the sweep", ha="center", va="center")
        ax.set_axis_off()
        return fig
    n = [r["num_gpus"] for r in rows]
    ax.plot(n, [r["cost_usd"] for r in rows], "o-", color="#4477aa", label="rental cost (left)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(n, [f"{v:,}" for v in n])
    ax.minorticks_off()
    ax.set_xlabel(f"{_gpu(result)} GPUs")
    ax.set_ylabel("total rental cost")
    ax.yaxis.set_major_formatter(pg.axis_formatter(pg.tick_usd))
    ax2 = ax.twinx()
    ax2.plot(n, [r["wall_days"] for r in rows], "s--", color="#ee7733", label="wall-clock days (right)")
    ax2.set_ylabel("wall-clock days")
    ax.set_title("Cost and duration against cluster size (same plan, data parallelism scaled)", fontsize=10)
    fig.legend(fontsize=8, loc="outside lower center", ncol=2)
    return fig


# --------------------------------------------------------------------------- tables

def stage_rows(result: dict) -> list[dict]:
    """The CSV's rows: one per stage, machine-readable (SI units, unit-suffixed names)."""
    rows = []
    for s in result["stages"]:
        rows.append({
            "stage": s["name"], "group": s["group"], "tokens": s["tokens"], "seq_len": s["seq_len"],
            "global_batch_seqs": s["global_batch_seqs"], "feasible": s["feasible"],
            "gpu_hours": s.get("gpu_hours"), "gpu_hours_goodput": s.get("gpu_hours_goodput"),
            "claimed_gpu_hours": s.get("claimed_gpu_hours"), "wall_days": s.get("wall_days"),
            "tokens_per_s_per_gpu": s.get("tokens_per_s_per_gpu"), "mfu_frac": s.get("mfu_frac"),
            "step_time_s": s.get("step_time_s"), "bubble_frac": s.get("bubble_frac"),
            "cost_usd": s.get("cost_usd"), "energy_kwh": s.get("energy_kwh"), "plan": s["plan_note"],
        })
    return rows


def write_csv(result: dict) -> str:
    """results.csv: one row per stage."""
    rows = stage_rows(result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _headline(result: dict) -> list[list[str]]:
    band = result.get("band", {})
    kwh = band.get("total_energy_kwh")
    rows = [
        ["GPU-hours (no failures)", pg.gpu_hours(result["total_gpu_hours"]), pg.band(band.get("total_gpu_hours"), pg.count)],
        ["GPU-hours (with failures and restarts)", pg.gpu_hours(result["total_gpu_hours_goodput"]),
         pg.band(band.get("total_gpu_hours_goodput"), pg.count)],
        [f"Rental cost at {pg.usd(result['price_usd_per_gpu_hour'], trim=True)} per GPU-hour", pg.usd(result["total_cost_usd"]),
         pg.band(band.get("total_cost_usd"), pg.usd)],
        ["Rental cost (with failures)", pg.usd(result["total_cost_usd_goodput"]), pg.band(band.get("total_cost_usd_goodput"), pg.usd)],
        ["Wall-clock time", pg.days(result["total_wall_days"]), pg.band(band.get("total_wall_days"), pg.days)],
        ["Facility energy", pg.energy_kwh(result["total_energy_kwh"]), pg.band(kwh, pg.energy_kwh)],
        ["Carbon", "not reported (energy.carbon_kg_per_kwh = 0)" if result["total_carbon_kg"] is None
         else f"{pg.sig(result['total_carbon_kg'] / 1e3)} t CO2e", ""],
    ]
    return rows


def _stage_table(result: dict, compared: bool) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "tokens", "sequence", "batch (sequences)", "GPU-hours"]
    header += ["published", "error"] if compared else []
    header += ["wall-clock", "tokens/s per GPU", "MFU", "plan"]
    rows = []
    for s in result["stages"]:
        row = [s["name"].replace("_", " "), pg.count(s["tokens"], trim=True), f"{s['seq_len']:,}", f"{s['global_batch_seqs']:,}",
               pg.count(s.get("gpu_hours"))]
        if compared:
            claimed = s.get("claimed_gpu_hours")
            err = (s["gpu_hours"] - claimed) / claimed if claimed and s.get("gpu_hours") is not None else None
            pub = (pg.count(claimed, 4, True) if claimed else
                   f"group: {pg.count(s['group_claimed_gpu_hours'], 4, True)}" if s.get("group_claimed_gpu_hours") else "—")
            row += [pub, pg.pct(err, signed=True) if err is not None else "—"]
        row += [pg.days(s.get("wall_days")), pg.number(s.get("tokens_per_s_per_gpu")), pg.pct(s.get("mfu_frac")),
                s["plan_note"].split(" (fallback")[0]]
        rows.append(row)
    return header, rows


def _claims_table(result: dict, compared: bool) -> tuple[list[str], list[list[str]]]:
    if compared:
        header = ["figure", "published", "twin", "error", "twin P10–P90", "source"]
        rows = [[c["statement"], quantity(c["claimed"], c["unit"], published=True), quantity(c["predicted"], c["unit"]),
                 pg.pct(c["rel_error"], signed=True), pg.band(c.get("band"), lambda v, u=c["unit"]: quantity(v, u)),
                 c["source"]] for c in result["claims"]]
    else:
        header = [f"figure ({published_run()})", "published", "source"]
        rows = [[c["statement"], quantity(c["claimed"], c["unit"], published=True), c["source"]] for c in result["claims"]]
    return header, rows


def _input_note(i: dict) -> str:
    a, b = pg.sig(i["a"], trim=True), pg.sig(i["b"], trim=True)
    dist = f"lognormal, sigma {a}" if i["dist"] == "lognormal" else f"uniform {a}–{b}"
    return f"{i['label']} ({dist})"


def _assumptions(result: dict, scenario) -> list[str]:
    e = scenario.energy
    out = [f"Rental price {pg.usd(scenario.cluster.price_usd_per_gpu_hour, trim=True)} per {scenario.cluster.gpu.upper()} GPU-hour "
           "(`cluster.price_usd_per_gpu_hour`; where a scenario names none, the GPU type's catalog price, "
           "twin/data/hardware.toml).",
           f"Power: GPU busy at {pg.pct(e.gpu_busy_power_frac)} and idle at {pg.pct(e.gpu_idle_power_frac)} of "
           f"{scenario.gpu.tdp_w:,.0f} W TDP, node overhead {e.node_overhead_w:,.0f} W, PUE {pg.sig(e.pue)}."]
    f = scenario.failures
    stage0 = next((s for s in result["stages"] if s.get("goodput")), None)
    if f.enabled and stage0:
        g = stage0["goodput"]
        out.append(f"Failures ({f.catalog}): {pg.sig(g['rate_per_gpu_hour'] * 1e6)} interruptions per million GPU-hours, "
                   f"job MTBF {pg.duration(g['job_mtbf_s'])} on {stage0['num_gpus']:,} GPUs, detection and restart "
                   f"{pg.duration(g['restart_overhead_s'])}, checkpoint write {pg.seconds(g['checkpoint_write_s'])} every "
                   f"{pg.duration(g['checkpoint_interval_s'])} ({g['interval_rule'].replace('_', '-')}); "
                   f"effective training time {pg.pct(g['ettr_frac'])}.")
    u = result.get("uncertainty")
    if u:
        out.append(f"Uncertainty: {u['method'].replace('_', ' ')} ({u['num_samples']:,} samples through per-input response surfaces from "
                   "one-at-a-time runs at each input's P10 and P90); inputs: " + ", ".join(_input_note(i) for i in u["inputs"]) + ".")
    return out


def _verdict(result: dict, scenario, compared: bool) -> str:
    total = next((c for c in result["claims"] if c["id"] == TOTAL_CLAIM), None)
    gpu = _gpu(result)
    if compared and total and total["rel_error"] is not None:   # the run the total describes
        cost = total["predicted"] * result["price_usd_per_gpu_hour"]
        return (f"The twin puts DeepSeek-V3's training at {pg.count(total['predicted'])} {gpu} GPU-hours ({pg.usd(cost)}), "
                f"{pg.above_below(total['rel_error'])} DeepSeek's published {pg.count(total['claimed'], 4, True)}.")
    return (f"The twin puts this {scenario.model.name} run ({pg.tokens(result['total_tokens'])} in {len(result['stages'])} "
            f"stages) at {pg.count(result['total_gpu_hours'])} {gpu} GPU-hours ({pg.usd(result['total_cost_usd'])}) and "
            f"{pg.days(result['total_wall_days'])} on {result['num_gpus']:,} {gpu}.")


def build_page(result: dict, scenario, gantt_step=None) -> Page:
    """The report page of a replay result's JSON form (`to_json(ReplayResult)`)."""
    compared = result["claims_describe_run"]     # the twin decides (twin.training.replay.costs.describes)
    p = Page(f"Training-run replay: {result['scenario_name']}", _verdict(result, scenario, compared))
    if not result["complete"]:
        p.warn("Incomplete: some stages could not be simulated (see the stage table); the totals exclude them.")
    if compared:
        p.para(f"{result['num_gpus']:,} × {_gpu(result)} training {scenario.model.name} on "
               f"{pg.tokens(result['total_tokens'])} in {len(result['stages'])} stages. DeepSeek's published figures "
               "describe this run, so the twin is compared with them; they are compared against, never fitted.")
    else:
        p.para(why_not_compared(result, scenario))
    if result.get("assumed_from_deepseek_v3"):   # s27walk round 3: said by stderr and --json, not here, until then
        p.para("Assumed from DeepSeek-V3's defaults, not set for this model: "
               + ", ".join(f"{k} = {v}" for k, v in result["assumed_from_deepseek_v3"].items())
               + ". Set them in the scenario to run otherwise.")
    p.section("Headline (with the P10–P90 band)").table(["quantity", "twin", "P10–P90"], _headline(result))
    p.section("Stages").table(*_stage_table(result, compared))
    p.section("Published figures" if compared else "Published figures, for context only")
    p.table(*_claims_table(result, compared))
    if compared:
        p.section("What drives the gap").bullets(result["gap_drivers"])
    elif result["gap_drivers"]:
        p.section("Notes").bullets(result["gap_drivers"])
    p.section("Assumptions").bullets(_assumptions(result, scenario))
    p.section("Plots")
    # constrained layout places every label of these four: drawn once each, uncropped; a process
    # each (the Gantt takes as long as two others: with one process per core it ends last); the
    # Gantt drawn ahead by prepare() where it is of this very step
    makers = {0: lambda: plot_gpu_hours(result, compared), 1: lambda: plot_gantt(gantt_step),
              2: lambda: plot_tornado(result), 3: lambda: plot_cost_vs_size(result)}
    early = _EARLY_GANTT.get(_gantt_key(gantt_step))
    if early is not None:
        del makers[1]
    drawn = dict(zip(makers, pg.pngs(list(makers.values()), workers=len(makers), crop=False)))
    drawn = [drawn.get(i, early) for i in range(4)]
    for name, data, caption in zip(PLOTS, drawn, (
            "GPU-hours by stage with the P10–P90 band" + (", beside DeepSeek's published figures." if compared else "."),
            "One simulated step of the first feasible stage, per pipeline rank.",
            "How far each uncertain input moves the total cost.",
            "Cost and wall-clock days at other cluster sizes.")):
        p.figure(name, data, caption)
    prov = result["provenance"]
    p.section("Provenance").bullets([
        f"scenario: {prov['scenario']} (resolved copy: `{pg.RESOLVED_SCENARIO}`); the result: `{pg.RESULT_JSON}`; "
        f"one row per stage: `{STAGES_CSV}`",
        "versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v),
        f"created {prov['created_utc']}; the replay took {pg.seconds(result['runtime']['wall_s'])} "
        f"({result['runtime']['steps_simulated']:,} steps simulated)"])
    return p


# --------------------------------------------------------------------------- entry point

_EARLY_GANTT: dict[tuple, bytes] = {}   # _gantt_key(step) -> its Gantt PNG, drawn by prepare()


def _gantt_key(step) -> tuple | None:
    """What identifies a simulated step (the twin is deterministic: equal figures, same step)."""
    if step is None or getattr(step, "pipeline", None) is None:
        return None
    return (step.schedule, step.num_microbatches, step.num_gpus, step.step_time_s, step.pipeline.makespan_s,
            step.pipeline.busy_s, len(step.pipeline.events))


def prepare(scenario) -> None:
    """Work a report process can do while the replay simulates (twin replay forks it first):
    load matplotlib's fonts (pg.warm_up), and draw the Gantt of the first stage's step under the
    scenario's own plan, which the replay draws where that plan fits (build_page checks it is the
    same step; otherwise it draws the replay's)."""
    pg.warm_up()
    if not scenario.run.stages:
        return
    try:
        step = simulate_step(stage_scenario(scenario, scenario.run.stages[0]), record_events=True)
    except (ScenarioError, InfeasiblePlan):
        return   # the replay searches another plan: its Gantt is drawn with the report
    _EARLY_GANTT[_gantt_key(step)] = pg.png(plot_gantt(step), crop=False)


def write_report(replay: ReplayResult, scenario, out_dir, assumed: dict | None = None) -> Path:
    """Write the report into `out_dir` (report.html, report.md, result.json, scenario.resolved.toml,
    results.csv, the plots); nothing there changes until all are complete. Returns `out_dir`. `assumed`: the
    scenario's fields taken from DeepSeek-V3's defaults (twin.core.scenario.v3_defaults_assumed), a line of the page
    and result.json's "assumed_from_deepseek_v3" (as `twin replay --json`) where there are any."""
    result = to_json(replay)
    if assumed:
        result = {**result, "assumed_from_deepseek_v3": to_json(assumed)}
    return write_result(result, scenario, out_dir, replay.gantt_step)


def write_result(result: dict, scenario, out_dir, gantt_step=None) -> Path:
    """The report of a replay's JSON (write_report's, or a saved result.json re-rendered: `twin report`):
    `gantt_step` is the step of the Gantt chart (the JSON leaves its event log out). Returns `out_dir`."""
    page = build_page(result, scenario, gantt_step)
    pg.write_report_dir(out_dir, page, result, scenario, files={STAGES_CSV: write_csv(result)})
    return Path(out_dir)
