"""The replay's cost report: report.md, a self-contained report.html, PNG plots, results.csv and the
resolved scenario, written atomically (all files are built in a temporary directory first).

Plots: GPU-hours by stage against the published figures, a Gantt chart of the simulated step per
pipeline stage (compute, communication, bubbles), a sensitivity tornado, and cost against cluster size.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from twin.core.atomic import staged_dir  # noqa: E402
from twin.core.results import to_json  # noqa: E402
from twin.training.replay.result import ReplayResult  # noqa: E402

PLOTS = ("gpu_hours_by_stage.png", "step_gantt.png", "sensitivity_tornado.png", "cost_vs_cluster_size.png")


# --------------------------------------------------------------------------- formatting

def _k(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e3:,.1f}K"


def _usd(x: float | None) -> str:
    return "n/a" if x is None else f"${x / 1e6:,.3f}M"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _num(x, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a >= 1e4:
        s = f"{x:,.0f}"
    elif a >= 10:
        s = f"{x:,.1f}"
    else:
        s = f"{x:.3g}"
    return s + (f" {unit}" if unit else "")


def _band(b: dict | None, fmt=_num) -> str:
    return "n/a" if not b else f"{fmt(b['p10'])} – {fmt(b['p90'])}"


# --------------------------------------------------------------------------- plots

def plot_gpu_hours(result: dict, path: Path) -> None:
    groups = result["groups"]
    claims = {c["id"]: c for c in result["claims"]}
    names = list(groups)
    claimed = [next((s.get("group_claimed_gpu_hours") for s in result["stages"] if s["group"] == g), None) for g in names]
    band = result.get("band", {})
    fig, ax = plt.subplots(figsize=(8, 4.2))
    x = range(len(names))
    pred = [groups[g]["gpu_hours"] / 1e3 for g in names]
    err = [[0] * len(names), [0] * len(names)]
    for i, g in enumerate(names):
        b = band.get(f"group.{g}.gpu_hours")
        if b:
            err[0][i] = max(pred[i] - b["p10"] / 1e3, 0)
            err[1][i] = max(b["p90"] / 1e3 - pred[i], 0)
    ax.bar([i - 0.2 for i in x], pred, 0.4, yerr=err, capsize=4, label="twin (P10–P90)", color="#4477aa")
    ax.bar([i + 0.2 for i in x], [c / 1e3 if c else 0 for c in claimed], 0.4, label="published (DeepSeek-V3 Table 1)", color="#ee7733")
    ax.set_xticks(list(x), names)
    ax.set_yscale("log")
    ax.set_ylabel("GPU-hours (thousands, log)")
    tot = claims.get("train.cost.total_gpu_hours")
    title = f"GPU-hours by stage ({result['gpu']} x {result['num_gpus']})"
    if tot and tot["rel_error"] is not None:
        title += f" — total {_k(tot['predicted'])} vs {_k(tot['claimed'])} ({_pct(tot['rel_error'])})"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gantt(step, path: Path, max_events: int = 1_000_000) -> None:
    fig, ax = plt.subplots(figsize=(10, 5))
    pipe = getattr(step, "pipeline", None) if step is not None else None
    if pipe is None or not getattr(pipe, "events", None):
        ax.text(0.5, 0.5, "no pipeline timeline available", ha="center", va="center")
        ax.set_axis_off()
    else:
        colors = {"F": "#4477aa", "B": "#66ccee", "W": "#228833", "BW": "#66ccee", "FB": "#aa3377"}
        streams = list(getattr(pipe, "streams", ("compute", "comm")))
        lane_h = 0.8 / max(len(streams), 1)
        n_ranks = pipe.num_ranks
        by_lane: dict = {}
        for ev in pipe.events[:max_events]:
            si = streams.index(ev.stream) if ev.stream in streams else 0
            key = (ev.rank, si, ev.kind if ev.stream == "compute" else "comm")
            by_lane.setdefault(key, []).append((ev.start_s, ev.end_s - ev.start_s))
        for (rank, si, kind), spans in by_lane.items():
            color = colors.get(kind, "#bbbbbb") if kind != "comm" else "#ccbb44"
            ax.broken_barh(spans, (rank - 0.4 + si * lane_h, lane_h * 0.95), facecolors=color, linewidth=0)
        ax.set_xlim(0, pipe.makespan_s)
        ax.set_ylim(n_ranks - 0.5, -0.5)
        ax.set_yticks(range(n_ranks), [f"PP{r}" for r in range(n_ranks)], fontsize=7)
        ax.set_xlabel("time in step (s)")
        handles = [matplotlib.patches.Patch(color=c, label=k) for k, c in
                   (("forward", "#4477aa"), ("backward", "#66ccee"), ("weight grad", "#228833"),
                    ("overlapped F&B", "#aa3377"), ("communication", "#ccbb44"), ("bubble (white)", "#ffffff"))]
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=6, framealpha=0.9)
        ax.set_title(f"Simulated step ({step.schedule}, {step.num_microbatches} micro-batches, "
                     f"bubble {step.bubble_frac * 100:.1f}%): lanes per rank = " + " / ".join(streams), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_tornado(result: dict, path: Path) -> None:
    sens = result.get("uncertainty", {}).get("sensitivity", [])
    base = result["total_cost_usd"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if not sens:
        ax.text(0.5, 0.5, "no sensitivity analysis", ha="center", va="center")
        ax.set_axis_off()
    else:
        rows = sorted(sens, key=lambda s: abs(s["total_cost_usd_high"] - s["total_cost_usd_low"]))
        for i, s in enumerate(rows):
            lo, hi = s["total_cost_usd_low"] / 1e6, s["total_cost_usd_high"] / 1e6
            ax.barh(i, lo - base / 1e6, left=base / 1e6, color="#4477aa")
            ax.barh(i, hi - base / 1e6, left=base / 1e6, color="#ee6677")
        ax.set_yticks(range(len(rows)), [f"{s['label']} ({s['low_value']:.3g} / {s['high_value']:.3g})" for s in rows], fontsize=8)
        ax.axvline(base / 1e6, color="k", lw=0.8)
        ax.set_xlabel("total cost (M USD); blue = input at P10, red = at P90")
        ax.set_title("Sensitivity of the total cost to each input (one at a time)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_vs_size(result: dict, path: Path) -> None:
    rows = [r for r in result.get("size_sweep", []) if r.get("feasible")]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if not rows:
        ax.text(0.5, 0.5, "no feasible cluster sizes in the sweep", ha="center", va="center")
        ax.set_axis_off()
    else:
        n = [r["num_gpus"] for r in rows]
        ax.plot(n, [r["cost_usd"] / 1e6 for r in rows], "o-", color="#4477aa", label="cost (M USD)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(n, [str(v) for v in n])
        ax.set_xlabel(f"{result['gpu']} GPUs")
        ax.set_ylabel("total cost (M USD)")
        ax2 = ax.twinx()
        ax2.plot(n, [r["wall_days"] for r in rows], "s--", color="#ee7733", label="wall-clock days")
        ax2.set_ylabel("wall-clock days")
        ax.set_title("Cost and duration against cluster size (same plan, DP scaled)", fontsize=10)
        fig.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.88))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- tables

def stage_rows(result: dict) -> list[dict]:
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


def write_csv(result: dict, path: Path) -> None:
    rows = stage_rows(result)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def _headline(result: dict) -> list[tuple[str, str, str]]:
    band = result.get("band", {})
    return [
        ("GPU-hours (ideal)", _k(result["total_gpu_hours"]), _band(band.get("total_gpu_hours"), _k)),
        ("GPU-hours (goodput-adjusted)", _k(result["total_gpu_hours_goodput"]), _band(band.get("total_gpu_hours_goodput"), _k)),
        ("Rental cost", _usd(result["total_cost_usd"]) + f" at ${result['price_usd_per_gpu_hour']:g}/GPU-hour",
         _band(band.get("total_cost_usd"), _usd)),
        ("Rental cost (goodput-adjusted)", _usd(result["total_cost_usd_goodput"]), _band(band.get("total_cost_usd_goodput"), _usd)),
        ("Wall-clock days", _num(result["total_wall_days"]), _band(band.get("total_wall_days"))),
        ("Facility energy", _num(result["total_energy_kwh"] / 1e3, "MWh"),
         _band({k: v / 1e3 for k, v in band["total_energy_kwh"].items()} if band.get("total_energy_kwh") else None, lambda x: _num(x, "MWh"))),
        ("Carbon", "not reported (energy.carbon_kg_per_kwh = 0)" if result["total_carbon_kg"] is None
         else _num(result["total_carbon_kg"] / 1e3, "t CO2e"), ""),
    ]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _stage_table(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "tokens", "seq", "batch", "GPU-hours", "published", "error", "wall days", "tok/s/GPU", "MFU", "plan"]
    rows = []
    for s in result["stages"]:
        claimed = s.get("claimed_gpu_hours")
        err = (s["gpu_hours"] - claimed) / claimed if claimed and s.get("gpu_hours") is not None else None
        pub = _k(claimed) if claimed else (f"group {_k(s['group_claimed_gpu_hours'])}" if s.get("group_claimed_gpu_hours") else "—")
        rows.append([s["name"], f"{s['tokens'] / 1e9:,.1f}B", s["seq_len"], s["global_batch_seqs"],
                     _k(s.get("gpu_hours")), pub, _pct(err) if err is not None else "—",
                     _num(s.get("wall_days")), _num(s.get("tokens_per_s_per_gpu")),
                     f"{s['mfu_frac'] * 100:.1f}%" if s.get("mfu_frac") is not None else "n/a", s["plan_note"].split(" (fallback")[0]])
    return header, rows


def _claims_table(result: dict) -> tuple[list[str], list[list[str]]]:
    header = ["claim", "published", "twin", "error", "twin P10–P90", "unit", "source"]
    rows = []
    for c in result["claims"]:
        rows.append([c["id"], _num(c["claimed"]), _num(c["predicted"]), _pct(c["rel_error"]),
                     _band(c.get("band")), c["unit"], c["source"]])
    return header, rows


def _assumption_rows(result: dict, scenario) -> list[str]:
    out = [f"Rental price ${scenario.cluster.price_usd_per_gpu_hour:g} per {scenario.cluster.gpu} GPU-hour "
           "(cluster.price_usd_per_gpu_hour; where a scenario names none, the GPU type's catalog price, "
           "twin/data/hardware.toml).",
           f"Power: GPU busy at {scenario.energy.gpu_busy_power_frac:.0%} and idle at {scenario.energy.gpu_idle_power_frac:.0%} of "
           f"{scenario.gpu.tdp_w:.0f} W TDP, node overhead {scenario.energy.node_overhead_w:.0f} W, PUE {scenario.energy.pue:g}.",
           ]
    f = scenario.failures
    stage0 = next((s for s in result["stages"] if s.get("goodput")), None)
    if f.enabled and stage0:
        g = stage0["goodput"]
        out.append(f"Failures ({f.catalog}): {g['rate_per_gpu_hour'] * 1e6:.1f} interruptions per million GPU-hours, job MTBF "
                   f"{g['job_mtbf_s'] / 3600:.1f} h on {stage0['num_gpus']} GPUs, detection+restart {g['restart_overhead_s'] / 60:.0f} min, "
                   f"checkpoint write {g['checkpoint_write_s']:.1f} s every {g['checkpoint_interval_s'] / 60:.1f} min ({g['interval_rule']}), "
                   f"ETTR {g['ettr_frac']:.3f}.")
    u = result.get("uncertainty")
    if u:
        out.append(f"Uncertainty: {u['method']} ({u['num_samples']} samples through per-input response surfaces from one-at-a-time "
                   "runs at each input's P10 and P90); inputs: " + ", ".join(
                       f"{i['label']} ({'lognormal sigma ' + format(i['a'], 'g') if i['dist'] == 'lognormal' else f'uniform {i[chr(97)]:g}–{i[chr(98)]:g}'})"
                       for i in u["inputs"]) + ".")
    return out


def render_markdown(result: dict, scenario) -> str:
    lines = [f"# Training-run replay: {result['scenario_name']}", "",
             f"{result['num_gpus']} x {result['gpu']}; {result['total_tokens'] / 1e12:.3f}T tokens over "
             f"{len(result['stages'])} stages. Published figures are compared against, never fitted.", ""]
    if not result["complete"]:
        lines += ["**Incomplete: some stages could not be simulated (see the stage table); totals exclude them.**", ""]
    lines += ["## Headline (P10–P90 band)", "", _md_table(["quantity", "twin", "P10–P90"], [list(r) for r in _headline(result)]), ""]
    lines += ["## Stages", "", _md_table(*_stage_table(result)), ""]
    lines += ["## Published figures", "", _md_table(*_claims_table(result)), ""]
    lines += ["## What drives the gap", ""] + [f"- {n}" for n in result["gap_drivers"]] + [""]
    lines += ["## Assumptions", ""] + [f"- {a}" for a in _assumption_rows(result, scenario)] + [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""]
    prov = result["provenance"]
    lines += ["## Provenance", "", f"- scenario: `{prov['scenario']}` (resolved copy: `scenario.resolved.toml`)",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v),
              f"- created: {prov['created_utc']}; replay took {result['runtime']['wall_s']:.2f} s "
              f"({result['runtime']['steps_simulated']} steps simulated)", ""]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def render_html(result: dict, scenario, images: dict[str, bytes]) -> str:
    esc = html.escape
    imgs = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"><figcaption>{esc(name)}</figcaption></figure>'
        for name, data in images.items())
    prov = result["provenance"]
    body = [f"<h1>Training-run replay: {esc(result['scenario_name'])}</h1>",
            f"<p>{result['num_gpus']} × {esc(result['gpu'])}; {result['total_tokens'] / 1e12:.3f}T tokens over {len(result['stages'])} stages. "
            "Published figures are compared against, never fitted.</p>"]
    if not result["complete"]:
        body.append('<p class="warn">Incomplete: some stages could not be simulated; totals exclude them.</p>')
    body += ["<h2>Headline (P10–P90 band)</h2>", _html_table(["quantity", "twin", "P10–P90"], _headline(result)),
             "<h2>Stages</h2>", _html_table(*_stage_table(result)),
             "<h2>Published figures</h2>", _html_table(*_claims_table(result)),
             "<h2>What drives the gap</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in result["gap_drivers"]) + "</ul>",
             "<h2>Assumptions</h2><ul>" + "".join(f"<li>{esc(a)}</li>" for a in _assumption_rows(result, scenario)) + "</ul>",
             "<h2>Plots</h2>" + imgs,
             "<h2>Provenance</h2><ul>" + f"<li>scenario: {esc(prov['scenario'])} (resolved copy: scenario.resolved.toml)</li>"
             + "<li>versions: " + esc(", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v)) + "</li>"
             + f"<li>created {esc(prov['created_utc'])}; replay took {result['runtime']['wall_s']:.2f} s</li></ul>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
             "figure{margin:1em 0}.warn{color:#a00;font-weight:bold}")
    # The script reports how many images decoded (the browser test reads it from the title).
    script = ("<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
              "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
              "document.title='report-loaded images='+ok+'/'+im.length;});</script>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>report</title>"
            f"<style>{style}</style>{script}</head><body>" + "\n".join(body) + "</body></html>\n")


# --------------------------------------------------------------------------- resolved scenario

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def to_toml(data: dict) -> str:
    """A small TOML writer for the resolved scenario (tables, arrays of tables, scalars; None omitted)."""
    lines: list[str] = []

    def table(prefix: str, d: dict) -> None:
        scalars = {k: v for k, v in d.items() if v is not None and not isinstance(v, dict)
                   and not (isinstance(v, (list, tuple)) and v and isinstance(v[0], dict))}
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append("")
                lines.append(f"[{prefix}{k}]")
                table(f"{prefix}{k}.", v)
            elif isinstance(v, (list, tuple)) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append("")
                    lines.append(f"[[{prefix}{k}]]")
                    table(f"{prefix}{k}.", item)

    table("", data)
    return "\n".join(lines).lstrip() + "\n"


# --------------------------------------------------------------------------- entry point

def write_report(replay: ReplayResult, scenario, out_dir) -> Path:
    """Write every report file into `out_dir`; nothing there changes until all are complete.
    The report renders the result's JSON form (twin.core.results.to_json), the same as results.json."""
    result = to_json(replay)
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        plot_gpu_hours(result, tmp / PLOTS[0])
        plot_gantt(replay.gantt_step, tmp / PLOTS[1])
        plot_tornado(result, tmp / PLOTS[2])
        plot_cost_vs_size(result, tmp / PLOTS[3])
        images = {p: (tmp / p).read_bytes() for p in PLOTS}
        (tmp / "report.md").write_text(render_markdown(result, scenario), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(result, scenario, images), encoding="utf-8")
        write_csv(result, tmp / "results.csv")
        (tmp / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        resolved = scenario.to_dict()
        (tmp / "scenario.resolved.toml").write_text(to_toml(resolved), encoding="utf-8")
    return out_dir
