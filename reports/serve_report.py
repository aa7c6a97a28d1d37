"""Serving report, in the shared page style (reports/page.py).

`write_outputs(result, scenario, out_dir)` (twin serve --out) writes, staged and atomic:
  report.html, report.md      the headline of the request simulation (output and input tokens/s per
                              GPU and per node, TTFT/TPOT/E2E percentiles, goodput, $ per million
                              tokens, memory per GPU in GiB), the memory breakdown, where a decode
                              step goes, the published figures beside the twin, the sweep plots
  result.json                 the ServeResult (twin.core.results.to_json)
  scenario.resolved.toml      the serving scenario as resolved
  serve_sweep.csv             one row per concurrency of the sweep
  throughput_vs_batch.png, throughput_vs_tpot.png, latency_cdf.png
  (twin serve --trace FILE writes the simulated iterations as a Chrome trace: serve_trace)

  python -m reports.serve_report OUT_DIR [SCENARIO.toml ...] [--set serve.x=v]

runs each scenario (default: the three r1_serve_*.toml the package ships, twin/data; scenarios/ links them) into OUT_DIR/<n>-<slug>/ (the
slug is made from the scenario's name, reduced to letters, digits and '-', so nothing is written
outside OUT_DIR) and writes an overview at the top: report.html, report.md and result.json with
every scenario's headline, the DeepGEMM kernel check and the twin against our measured decode and
prefill (calibration/measurements/<gpu>/model.csv).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
from pathlib import Path

from calibration.kernel_tables import deepgemm_check
from calibration.serve_validation import validate_measured
from reports import page as pg
from reports.page import Page
from twin.core.chrome_trace import complete_slice, nested_cleanly
from twin.core.results import to_json
from twin.core.scenario import PACKAGED_SCENARIOS, SERVING, ServeScenario, load_scenario, packaged_scenario
from twin.serving.result import ServeResult, SweepPoint
from twin.serving.run import PUBLISHED_MODEL, claim_compared, claim_gpu, serve

SWEEP_COLUMNS = tuple(f.name for f in dataclasses.fields(SweepPoint))
SWEEP_CSV = "serve_sweep.csv"
PLOTS = ("throughput_vs_batch.png", "throughput_vs_tpot.png", "latency_cdf.png")

# every serving scenario the package ships (package data: an installed wheel runs them too)
DEFAULT_SCENARIOS = PACKAGED_SCENARIOS

# what a claim's metric measures, and how its values read
METRICS = {
    "output_tokens_per_s_per_node": ("Output tokens/s per node", lambda v: f"{pg.number(v)} tokens/s"),
    "input_tokens_per_s_per_node": ("Input tokens/s per node", lambda v: f"{pg.number(v)} tokens/s"),
    "min_hbm_bytes": ("Least GPU memory that serves the model", pg.binary_bytes),
    "weight_bytes_total": ("Model weights in memory", pg.binary_bytes),
}
MEMORY_PARTS = (("weights", "Weights"), ("kv_cache", "KV cache"), ("activations", "Activations"),
                ("runtime_reserved", "Runtime reserve"))


def _metric(metric: str):
    return METRICS.get(metric, (metric.replace("_", " "), pg.sig))


def comparable(claim: dict, result: dict) -> bool:
    """A published figure is compared only for the model, GPU type and run it describes: the twin's verdict
    (twin.serving.run.claim_compared; a result.json written before s24srvwalk: model and GPU type)."""
    return claim.get("compared", True) and claim_compared(claim["id"], result["model"], result["gpu"])


# --------------------------------------------------------------------------- plots

def _claim_lines(result: dict) -> list[tuple[str, float]]:
    return [(f"published: {pg.number(c['claimed'])} per {(claim_gpu(c['id']) or result['gpu']).upper()} node", c["claimed"])
            for c in result.get("claims", []) if c["metric"] == "output_tokens_per_s_per_node" and comparable(c, result)]


def plot_throughput_vs_batch(result: dict):
    rows = [r for r in result["sweep"] if r["feasible"]]
    fig, ax = pg.figure(6.5, 4)
    ax.plot([r["batch"] for r in rows], [r["output_tokens_per_s_per_node"] for r in rows], "o-", label="twin")
    if result.get("max_batch_by_memory"):
        ax.axvline(result["max_batch_by_memory"], color="grey", ls=":", label="memory limit")
    for label, val in _claim_lines(result):
        ax.axhline(val, color="C3", ls="--", label=label)
    ax.set_xscale("log", base=2)
    batches = [r["batch"] for r in rows] + ([result["max_batch_by_memory"]] if result.get("max_batch_by_memory") else [])
    ticks = sorted(set(batches))
    ticks = ticks[::max(1, -(-len(ticks) // 8))]             # at most 8 labels: they never collide
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(pg.axis_formatter(pg.tick_count))
    ax.set_xlabel("concurrent requests per instance")
    ax.set_ylabel("output tokens/s per node")
    ax.set_title(f"{result['model']} on {result['num_gpus']} × {result['gpu'].upper()}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_throughput_vs_tpot(result: dict):
    rows = [r for r in result["sweep"] if r["feasible"]]
    fig, ax = pg.figure(6.5, 4)
    tpot_ms = [r["tpot_s"] * 1e3 for r in rows]
    y = [r["output_tokens_per_s_per_node"] for r in rows]
    ax.plot(tpot_ms, y, "o-", label="analytic sweep (labels: concurrent requests)")
    # label a point only when it is clear of the last labelled one (in axes fractions), so labels never collide
    span_x, span_y = (max(tpot_ms) - min(tpot_ms)) or 1.0, (max(y) - min(y)) or 1.0
    last = None
    for r, t, v in zip(rows, tpot_ms, y):
        here = (t / span_x, v / span_y)
        if last is None or abs(here[0] - last[0]) > 0.05 or abs(here[1] - last[1]) > 0.08:
            ax.annotate(f"{r['batch']:,}", (t, v), fontsize=7, xytext=(4, -10), textcoords="offset points")
            last = here
    for label, val in _claim_lines(result):
        ax.axhline(val, color="C3", ls="--", label=label)
    ax.yaxis.set_major_formatter(pg.axis_formatter(pg.tick_count))
    sim = result.get("simulation")
    if sim and sim.get("tpot_s", {}).get("p50") is not None:
        ax.plot([sim["tpot_s"]["p50"] * 1e3], [result["output_tokens_per_s_per_node"]], "*", ms=14, color="C2",
                label="request simulation (TPOT P50)")
    ax.set_xlabel("time per output token (ms)")
    ax.set_ylabel("output tokens/s per node")
    ax.set_title("Throughput against latency: analytic concurrency sweep and the simulated load", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_latency_cdf(result: dict):
    """TTFT, TPOT and E2E distributions over the simulated requests (empirical CDFs)."""
    sim = result["simulation"]
    fig, axes = pg.figure(10, 3.4, ncols=3)
    for ax, key, label, scale, unit in ((axes[0], "ttft_cdf_s", "time to first token", 1e3, "ms"),
                                        (axes[1], "tpot_cdf_s", "time per output token", 1e3, "ms"),
                                        (axes[2], "e2e_cdf_s", "end-to-end latency", 1.0, "s")):
        xs = [x * scale for x in sim.get(key) or []]
        if xs:
            ax.plot(xs, [i / (len(xs) - 1) for i in range(len(xs))], "-")
        ax.set_xlabel(f"{label} ({unit})")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of requests")
    fig.suptitle(f"Latency over {sim['simulated_requests']:,} simulated requests", fontsize=10)
    return fig


def serve_trace(result: ServeResult) -> dict:
    """The simulated iterations as a Chrome trace (µs; one process per pool, one thread per
    instance), the first traffic.trace_iterations of them. Opens in https://ui.perfetto.dev."""
    pools = {"colocated": 1, "prefill": 2, "decode": 3}
    events = []
    named_pools, seen = set(), set()
    for pool, inst, start_s, dur_s, batch, prompt in result.simulation.trace:
        pid = pools[pool]
        if pid not in named_pools:   # only the pools that ran (every pool was named, an empty one too, until s21walk)
            named_pools.add(pid)
            events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"{pool} instances"}})
        if (pid, inst) not in seen:
            seen.add((pid, inst))
            events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": inst, "args": {"name": f"instance {inst}"}})
        kind = "mixed" if batch and prompt else ("prefill" if prompt else "decode")
        events.append(complete_slice(f"{kind} b={batch} p={prompt}", pid, inst, start_s, start_s + dur_s, cat=kind,
                                     args={"decode_requests": batch, "prompt_tokens": prompt}))
    return {"traceEvents": nested_cleanly(events), "displayTimeUnit": "ms",
            # the model beside the scenario's name, as `twin trace` names it (s26walk: a scenario run with --set model.name=...)
            "otherData": {"scenario": result.scenario, "model": result.model, "iterations_total": result.simulation.iterations,
                          "iterations_in_trace": len(result.simulation.trace)}}


# --------------------------------------------------------------------------- tables

def sweep_csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SWEEP_COLUMNS))
    w.writeheader()
    for r in result["sweep"]:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in SWEEP_COLUMNS})
    return buf.getvalue()


def _headline(r: dict) -> list[list[str]]:
    return [
        ["Output tokens/s", pg.number(r["output_tokens_per_s_per_gpu"]), pg.number(r["output_tokens_per_s_per_node"]),
         pg.number(r["output_tokens_per_s"])],
        ["Input (prompt) tokens/s", pg.number(r["input_tokens_per_s_per_gpu"]), pg.number(r["input_tokens_per_s_per_node"]),
         pg.number(r["input_tokens_per_s"])],
    ]


def _latency(r: dict) -> list[list[str]]:
    sim = r["simulation"]
    def dist(d, scale=1.0):
        return " / ".join(pg.seconds(d[k]) for k in ("p50", "p90", "p99"))
    return [
        ["Time to first token (TTFT), P50 / P90 / P99", dist(sim["ttft_s"])],
        ["Time per output token (TPOT), P50 / P90 / P99", dist(sim["tpot_s"])],
        ["End-to-end latency, P50 / P90 / P99", dist(sim["e2e_s"])],
        ["Goodput (requests/s within the SLO)", f"{pg.sig(r['goodput_requests_per_s'])} ({pg.pct(sim['slo_attained_frac'])} of requests)"],
        ["$ per million output / input tokens", f"{pg.usd(r['usd_per_million_output_tokens'])} / {pg.usd(r['usd_per_million_input_tokens'])}"],
        ["Simulated", f"{sim['simulated_requests']:,} requests, {sim['iterations']:,} iterations, {sim['preemptions']:,} preemptions"],
        ["KV cache per instance", f"peak {pg.count(sim['kv_peak_tokens_per_instance'])} of {pg.count(sim['kv_capacity_tokens_per_instance'])} tokens"],
        ["Memory per GPU", f"{pg.gib(r['memory_per_gpu_bytes'])} of {pg.gib(r['memory_breakdown_bytes'].get('capacity'))}"],
        ["Analytic sweep (no queueing)", f"best concurrency {r['batch']:,} per instance (memory allows {r['max_batch_by_memory']:,}): "
                                         f"TPOT {pg.seconds(r['tpot_s'])}, a full prefill chunk ({r['prefill']['tokens_per_gpu']:,} prompt tokens "
                                         f"per GPU) {pg.seconds(r['ttft_s'])}"],   # not one prompt's, as said until s24srvwalk
    ]


def _memory(r: dict) -> list[list[str]]:
    mem = r["memory_breakdown_bytes"]
    cap = mem.get("capacity")
    rows = [[label, pg.gib(mem.get(key)), pg.pct(mem[key] / cap) if cap and mem.get(key) is not None else pg.NA]
            for key, label in MEMORY_PARTS if key in mem]
    rows.append(["Total", pg.gib(mem.get("total")), pg.pct(mem["total"] / cap) if cap else pg.NA])
    rows.append(["HBM capacity", pg.gib(cap), "100%"])
    return rows


def _decode(r: dict) -> list[list[str]]:
    d, p = r["decode"], r["prefill"]
    rows = [["Decode step", pg.seconds(d.get("step_s")),
             f"{d.get('num_microbatches', 1)} micro-batch(es); MLA core {d.get('mla_core_bound', 'n/a')}-bound"],
            ["of which MoE layers", pg.seconds(d.get("layers_moe_s")), ""],
            ["of which dense layers", pg.seconds(d.get("layers_dense_s")), ""],
            ["of which the output head", pg.seconds(d.get("head_s")), ""],
            ["Prefill forward", pg.seconds(p.get("forward_s")), f"{p.get('tokens_per_gpu', 0):,.0f} prompt tokens per GPU"]]
    return rows


def _claims(r: dict) -> tuple[list[str], list[list[str]]]:
    header = ["figure", "published", "twin", "error", "conditions", "source"]
    rows = []
    for c in r["claims"]:
        label, fmt = _metric(c["metric"])
        gpu = claim_gpu(c["id"])
        ok = comparable(c, r)
        rows.append([f"{label}" + (f" ({gpu.upper()})" if gpu else ""), fmt(c["claimed"]),
                     fmt(c["predicted"]) if c["predicted"] is not None else pg.NA,
                     pg.pct(c["rel_error"], signed=True) if ok else "not compared",
                     c["conditions_note"], c["source"]])
    return header, rows


def _verdict(r: dict) -> str:
    return (f"Simulating {r['simulated_requests']:,} requests, the twin serves {r['model']} on {r['num_gpus']} × {r['gpu'].upper()} at "
            f"{pg.number(r['output_tokens_per_s_per_gpu'])} output tokens/s per GPU "
            f"({pg.number(r['output_tokens_per_s_per_node'])} per node), a median time per output token of "
            f"{pg.seconds(r['tpot_p50_s'])} and a median time to first token of {pg.seconds(r['ttft_p50_s'])} "
            f"(P99 {pg.seconds(r['ttft_p99_s'])}).")


def build_page(result: dict) -> Page:
    """The serving page of a ServeResult's JSON form."""
    r = result
    p = Page(f"Serving: {r['scenario']}", _verdict(r))
    prof = r.get("profile", {})
    p.para(f"{r['instances']:,} instance{'' if r['instances'] == 1 else 's'} of {r['instance_gpus']} GPUs ({r.get('gpu_name', r['gpu'])}); efficiency profile "
           f"{prof.get('gpu', r['gpu']).upper()}{'' if prof.get('calibrated', True) else ' (not calibrated: the default profile)'}. "
           "Predicted from first principles and the calibrated profiles; published figures are compared, never fitted.")
    p.section("Headline").table(["throughput", "per GPU", "per node", "whole deployment"], _headline(r))
    p.table(["latency and memory", "twin"], _latency(r))
    p.section("Memory per GPU").table(["part", "GiB", "of capacity"], _memory(r))
    p.section("Where the time goes").table(["part", "time", "note"], _decode(r))
    p.section("Published figures")
    off = [c for c in r["claims"] if not comparable(c, r)]
    if off:
        p.para(f"Figures marked 'not compared' describe {PUBLISHED_MODEL} on another GPU type (or another model) than this "
               "scenario's, or a run under other conditions (their conditions column), so they are context, not a test of the twin.")
    if r["claims"]:
        p.table(*_claims(r))
    else:
        p.para("The scenario names no published figures ([serve] claims).")
    p.section("Plots")
    p.figure(PLOTS[2], plot_latency_cdf(r), "Latency distributions of the simulated requests.")
    if any(s["feasible"] for s in r["sweep"]):
        p.figure(PLOTS[0], plot_throughput_vs_batch(r), "Output tokens/s per node against concurrency.")
        p.figure(PLOTS[1], plot_throughput_vs_tpot(r), "Output tokens/s per node against time per output token.")
    else:
        p.warn("No concurrency of the sweep fits: see the reasons in serve_sweep.csv.")
    p.section("Files").bullets([f"`{pg.RESULT_JSON}`: the result; `{SWEEP_CSV}`: one row per concurrency of the sweep; "
                                f"`{pg.RESOLVED_SCENARIO}`: the scenario as resolved"])
    return p


def write_outputs(result: ServeResult, scenario: ServeScenario, out_dir: str | Path) -> list[Path]:
    """report.html, report.md, result.json, scenario.resolved.toml, serve_sweep.csv and the
    throughput plots into `out_dir`, atomically. Returns the paths written."""
    return write_result(to_json(result), scenario, out_dir)


def write_result(data: dict, scenario: ServeScenario, out_dir: str | Path) -> list[Path]:
    """write_outputs of the ServeResult's JSON (a saved result.json re-rendered: `twin report`)."""
    return pg.write_report_dir(out_dir, build_page(data), data, scenario, files={SWEEP_CSV: sweep_csv(data)})


# --------------------------------------------------------------------------- several scenarios

def overview_page(runs: list[tuple[str, dict]], validation: list[dict], kernel: list[dict]) -> Page:
    """The top of `python -m reports.serve_report`: each scenario's headline (linking its own report),
    the DeepGEMM kernel check and the twin against our measured decode and prefill."""
    best = max(runs, key=lambda x: x[1]["output_tokens_per_s_per_gpu"]) if runs else None
    verdict = (f"Of {len(runs)} serving scenarios, {best[1]['scenario']} gives the most output per GPU: "
               f"{pg.number(best[1]['output_tokens_per_s_per_gpu'])} tokens/s at a median TPOT of {pg.seconds(best[1]['tpot_p50_s'])}."
               if best else "No serving scenarios were run.")
    p = Page("Serving twin: overview", verdict)
    p.para("Predicted from first principles and the calibrated profiles; published figures are compared, never fitted. "
           "Each scenario's full report is in its own folder.")
    p.section("Scenarios").table(
        ["scenario", "folder", "output tokens/s per GPU", "per node", "input tokens/s per node", "TPOT P50", "TTFT P50", "memory per GPU"],
        [[r["scenario"], f"[{d}]({d}/{pg.REPORT_HTML})", pg.number(r["output_tokens_per_s_per_gpu"]), pg.number(r["output_tokens_per_s_per_node"]),
          pg.number(r["input_tokens_per_s_per_node"]), pg.seconds(r["tpot_p50_s"]), pg.seconds(r["ttft_p50_s"]),
          pg.gib(r["memory_per_gpu_bytes"])] for d, r in runs])
    claim_rows = []
    for _, r in runs:
        for c in r["claims"]:
            label, fmt = _metric(c["metric"])
            claim_rows.append([r["scenario"], label, fmt(c["claimed"]),
                               fmt(c["predicted"]) if c["predicted"] is not None else pg.NA,
                               pg.pct(c["rel_error"], signed=True) if comparable(c, r) else "not compared"])
    if claim_rows:
        p.section("Published figures").table(["scenario", "figure", "published", "twin", "error"], claim_rows)
    p.section("FP8 GEMM kernel check (DeepGEMM's published H800 table)").table(
        ["m", "n", "k", "published", "FP8 row-wise (error)", "FP8 block-wise (error)"],
        [[f"{k['m']:,}", f"{k['n']:,}", f"{k['k']:,}", pg.seconds(k["published_s"]),
          f"{pg.seconds(k['fp8-rowwise_s'])} ({pg.pct(k['fp8-rowwise_rel_error'], signed=True)})",
          f"{pg.seconds(k['fp8_s'])} ({pg.pct(k['fp8_rel_error'], signed=True)})"] for k in kernel])
    p.section("The twin against our measurements (calibration/measurements/*/model.csv)").table(
        ["GPU", "bench", "model", "batch", "measured", "twin", "error", "GPU-only", "note"],
        [[v["gpu"].upper(), v["bench"], v["model"], f"{v['batch']:,}", pg.seconds(v["measured_s"]), pg.seconds(v["predicted_s"]),
          pg.pct(v["rel_error"], signed=True), pg.seconds(v["gpu_only_s"]), v["note"]] for v in validation])
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.serve_report", description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("scenarios", nargs="*")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    out = Path(args.out)
    runs = []
    for i, path in enumerate(args.scenarios or [packaged_scenario(name) for name in DEFAULT_SCENARIOS], start=1):
        sc = load_scenario(path, args.set, kind=SERVING)
        result = serve(sc)
        # never a path from the scenario's name: an index and a slug reduced to [a-z0-9._-], one component
        folder = f"{i:02d}-{pg.slug(sc.name, 'scenario')}"
        write_outputs(result, sc, out / folder)
        runs.append((folder, to_json(result)))
    validation = to_json(validate_measured())
    kernel = to_json(deepgemm_check())
    payload = {"results": [{k: v for k, v in r.items() if k != "sweep"} | {"folder": d} for d, r in runs],
               "validation": validation, "deepgemm_check": kernel}
    pg.write_report_dir(out, overview_page(runs, validation, kernel), payload)
    print(out / pg.REPORT_HTML)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
