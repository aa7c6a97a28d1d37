"""What each command prints on stdout: a short human summary of its typed result.

Pure functions from results to text, so the terminal output is tested like any other output.
Memory is in GiB (binary) everywhere; counts in K/M/B/T; money in $K/$M; times in s, or ms and µs
below a second (a small model's step printed as "0.00 s" until s21walk).
"""

from __future__ import annotations

import math

import numpy as np

from twin.core.serve_specs import MAX_SIM_REQUESTS
from twin.core.units import GIB, short_count
from twin.planning.result import SIMULATED, reason_examples
from twin.planning.search import cheapest_in_time
from twin.planning.serving import burst_note, nodes_of, pool_instances
from twin.planning.space import LABEL_LEGEND
from twin.serving.run import PUBLISHED_MODEL
from twin.serving.simulate import holds_steady_window
from twin.training.replay.run import inherited_stages_note


def table(rows: list[tuple[str, ...]], header: tuple[str, ...] | None = None) -> str:
    """Rows of cells as aligned columns (the first left-aligned, the rest right-aligned)."""
    rows = ([header] if header else []) + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(widths[i + 1]) for i, c in enumerate(r[1:])]
        lines.append("  ".join(cells).rstrip())
        if header and j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pairs(rows: list[tuple[str, str]]) -> str:
    """Label/value lines, both left-aligned."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


count = short_count   # 14.8e12 -> '14.8T' (twin.core.units, shared with the plan search's reason)


def dollars(x: float | None) -> str:
    """A price: cents from $0.01 up, three significant digits below ('$0.00' said free until s21walk); "-" for a cost
    with no tokens to spread it over ("$inf input" until s26walk)."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"${x:,.2f}" if abs(x) >= 0.01 or x == 0 else f"${x:.3g}"


def usd(x: float | None) -> str:
    return "-" if x is None else f"${count(x)}"


def gib(x: float) -> str:
    """Bytes in GiB: one decimal from 1 GiB up, three significant digits below (no "0.0 GiB")."""
    return f"{x / GIB:.1f} GiB" if abs(x) >= GIB or x == 0 else f"{x / GIB:.3g} GiB"


def seconds(x: float) -> str:
    """18.49 -> '18.49 s', 0.0123 -> '12.3 ms', 4.5e-5 -> '45 µs': the unit follows the size."""
    ax = abs(x)
    if ax == 0:
        return "0 s"
    if ax >= 1:
        return f"{x:,.2f} s"
    if ax >= 1e-3:
        return f"{x * 1e3:.3g} ms"
    return f"{x * 1e6:.3g} µs"


def model_summary(out: dict) -> str:
    return pairs([
        ("model", out["name"]),
        ("parameters", f"{count(out['total_params'])} total, {count(out['active_params'])} active per token"),
        ("training FLOPs per token", f"{flop(out['train_flops_per_token'])} at {out['seq_len']:,} tokens"),
        ("KV cache per token (BF16)", binary_bytes(out["kv_cache_bytes_per_token"])),
    ])


def flop(x: float) -> str:
    """250.5e9 -> '250.5 GFLOP'; a small model's in MFLOP or KFLOP ('0.0 GFLOP' until s23walk)."""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:,.1f} {prefix}FLOP"
    return f"{x:,.0f} FLOP"


def binary_bytes(x: float) -> str:
    """70,272 -> '68.6 KiB'; under a KiB in bytes ('0.1 KiB' until s23walk)."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= scale:
            return f"{x / scale:,.1f} {unit}"
    return f"{x:,.0f} B"


def step_summary(name: str, res, breakdown: bool = False) -> str:
    text = f"{name}: one {res.schedule} step on {res.num_gpus:,} GPUs\n" + pairs([
        ("step time", seconds(res.step_time_s)),
        ("pipeline bubble", f"{res.bubble_frac:.1%}"),
        ("exposed communication", f"{res.exposed_comm_frac:.1%}"),
        ("tokens/s per GPU", f"{res.tokens_per_s_per_gpu:,.0f}"),
        ("MFU (BF16 peak)", f"{res.mfu_frac:.1%}"),
        ("memory per GPU", f"{gib(res.memory_per_gpu_bytes)} of {gib(res.memory_capacity_bytes)}"),
    ])
    if breakdown:
        ops = sorted(res.op_time_s.items(), key=lambda kv: -kv[1])
        text += "\n\n" + table([(op, seconds(s)) for op, s in ops], header=("op (busiest rank)", "time per step"))
    return text


def latencies(*xs: float) -> str:
    """Percentiles in one unit, the largest's: (1.574, 4.675, 8.712) -> '1,574 / 4,675 / 8,712 ms',
    (0.0605, 0.0608) -> '60.5 / 60.8 ms', (63.5, 70.6) -> '63.5 / 70.6 s', (4e-4, 5e-4) -> '400 / 500 µs'.
    No finite value (TPOT where every output is one token): '-' ("nan / nan / nan µs" until s22walk)."""
    if not any(math.isfinite(x) for x in xs):
        return "-"
    top = max(abs(x) for x in xs if math.isfinite(x))
    scale, unit = (1.0, "s") if top >= 10 else (1e3, "ms") if top >= 1e-3 else (1e6, "µs")
    digits = 1 if top * scale < 100 else 0
    return " / ".join(f"{x * scale:,.{digits}f}" for x in xs) + f" {unit}"


def balance_summary(result: dict) -> str:
    """`twin balance`: the balanced step, then each load case's straggler penalty and GPU-hours lost."""
    lines = [f"balanced step {seconds(result['balanced_step_time_s'])}, {result['pretrain_steps']:,.0f} pre-training steps "
             f"on {result['num_gpus']:,} GPUs"]
    # a skewed case runs out of memory by its larger all-to-all buffers only where the balanced step fits
    # (every case said "all-to-all buffers" until s21walk, the balanced one too on a plan that does not fit)
    plan_oom = result["cases"].get("balanced", {}).get("out_of_memory", False)
    if plan_oom:
        lines[0] += " (the plan runs out of memory even balanced: `twin step` says by how much)"
    for name, r in result["cases"].items():
        if "infeasible" in r:
            lines.append(f"{name:28s} infeasible: {r['infeasible']}")
            continue
        oom = "  (OOM)" if plan_oom else "  (OOM: all-to-all buffers)"
        lines.append(f"{name:28s} rank max/mean {r['rank_max_over_mean']:5.2f}  step {seconds(r['step_time_s']):>9}  "
                     f"penalty {100 * r['straggler_penalty_frac']:6.1f}%  lost {count(r['gpu_hours_lost']):>6} GPU-h"
                     + (oom if r["out_of_memory"] else ""))
    return "\n".join(lines)


def infeasible_summary(reason: str, breakdown: dict | None) -> str:
    text = f"infeasible: {reason}"
    if breakdown:
        text += "\nmemory per GPU:\n" + pairs([(f"  {k}", gib(v)) for k, v in breakdown.items()])
    return text


def schedule_summary(out: dict) -> str:
    chunks = f" x {out['virtual_stages']} chunks" if out.get("virtual_stages", 1) > 1 else ""
    text = (f"{out['schedule']} on {out['pp']} ranks{chunks}, {out['num_microbatches']} micro-batches\n" + pairs([
        ("makespan", f"{out['makespan_s']:g} s"),
        ("bubble (simulated)", f"{out['bubble_s']:g} s"),
        ("bubble (closed form)", f"{out['formula_bubble_s']:g} s = {out['formula']}"),
        # schedules compare at the same model only: DualPipeV's ranks run two stages of --f per micro-batch, so the
        # same --f is twice 1F1B's model (a 54 s makespan against 33 s said nothing of it until s23walk)
        ("busy per rank", f"{max(out['busy_s']):g} s, the model {out['num_model_stages']} " +
         (f"chunks of --f / {out['virtual_stages']}" if out.get("virtual_stages", 1) > 1 else "stages of --f")),
    ]))
    return text + (f"\nnote: {out['note']}" if out.get("note") else "")


# a run DeepSeek's figures do not describe (another model, GPU or cluster): the twin's rows by what they
# are, not by DeepSeek's statements ("Pre-training cost of DeepSeek-V3" for a tiny model, "H800 GPU-hours
# per trillion tokens" for an H200 run, until s21walk)
OWN_RUN_LABELS = {"train.cost.pretrain_gpu_hours": "Pre-training", "train.cost.context_ext_gpu_hours": "Context extension",
                  "train.cost.posttrain_gpu_hours": "Post-training", "train.cost.total_gpu_hours": "Total",
                  "train.throughput.gpu_hours_per_T": "{gpu} GPU-hours per trillion pre-training tokens"}


def titled(sc) -> str:
    """The scenario's name, with its model where the name does not say it: `--set model.name=llama3-8b` on the
    default scenario ran under 'deepseek-v3-pretrain' alone (until s23walk)."""
    return sc.name if sc.model.name in sc.name else f"{sc.name} (model {sc.model.name})"


def replay_summary(sc, res, out_dir: str | None) -> str:
    claims = {c.id: c for c in res.claims}
    published = res.claims_describe_run
    head = (f"{titled(sc)}: {count(res.total_tokens)} tokens on {res.num_gpus:,} {res.gpu.upper()} in "
            f"{res.total_wall_days:.1f} days: {count(res.total_gpu_hours)} GPU-hours, {usd(res.total_cost_usd)} "
            f"at ${res.price_usd_per_gpu_hour:.2f}/GPU-hour")
    rows = []
    for c in res.claims:
        if c.predicted is None or "gpu_hours" not in c.id:
            continue
        band = f"{count(c.band.p10)}-{count(c.band.p90)}" if c.band else ""
        label = c.statement if published else OWN_RUN_LABELS.get(c.id, c.statement).format(gpu=res.gpu.upper())
        row = (label, count(c.predicted), band)
        rows.append(row + ((count(c.claimed), f"{c.rel_error:+.1%}") if published else ()))
    header = ("GPU-hours", "twin", "P10-P90") + (("published", "error") if published else ())
    text = head + "\n\n" + table(rows, header=header)
    if inherited_stages_note(sc):
        text += f"\n{inherited_stages_note(sc)}"
    if not published:
        text += (f"\n(DeepSeek's published figures describe DeepSeek-V3 on H800s; this scenario runs "
                 f"{sc.model.name} on {sc.cluster.gpu}, so they are not compared.)")
    if not res.complete:
        text += "\nincomplete: some stages could not be simulated (see the report's notes)"
    if "train.cost.total_cost_usd" in claims and published:
        c = claims["train.cost.total_cost_usd"]
        text += f"\nrental cost: twin {usd(c.predicted)} vs published {usd(c.claimed)} ({c.rel_error:+.1%})"
    if out_dir:
        text += f"\nreport: {out_dir}/report.html"
    return text


def plural(n: int, noun: str) -> str:
    """'1 request', '2,000 requests' ("1 instance(s)", "1 requests simulated" until s22walk)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def serve_summary(sc, out, asked_requests: int | None = None) -> str:
    """`asked_requests`: --requests, for the note where a trace holds fewer (said nothing until s24srvwalk)."""
    sim = out.simulation
    load = (f"closed loop, {sim.concurrency:,} in flight" if sim.arrival == "closed" else
            f"{sim.arrival} arrivals at {sc.traffic.rate_per_s:g}/s" if sim.arrival != "trace" else "trace")
    text = (f"{sc.name}: {sc.model.name} on {out.num_gpus:,} {out.gpu.upper()} ({plural(out.instances, 'instance')} of "
            f"{plural(out.instance_gpus, 'GPU')}{', disaggregated' if sc.serve.disaggregated else ''}); "
            f"{plural(out.simulated_requests, 'request')} simulated ({load})\n" + pairs([
                ("output tokens/s", f"{out.output_tokens_per_s:,.0f} ({out.output_tokens_per_s_per_gpu:,.0f} per GPU, "
                                    f"{out.output_tokens_per_s_per_node:,.0f} per node)"),
                ("input tokens/s", f"{out.input_tokens_per_s:,.0f} ({out.input_tokens_per_s_per_node:,.0f} per node)"),
                ("TTFT P50 / P90 / P99", latencies(out.ttft_p50_s, out.ttft_p90_s, out.ttft_p99_s)),
                ("TPOT P50 / P90 / P99", latencies(out.tpot_p50_s, out.tpot_p90_s, out.tpot_p99_s)),
                ("E2E P50 / P99", latencies(out.e2e_p50_s, out.e2e_p99_s)),
                ("goodput", f"{out.goodput_requests_per_s:,.2f} requests/s within TTFT {sc.traffic.slo_ttft_s:g} s, "
                            f"TPOT {sc.traffic.slo_tpot_s * 1e3:g} ms" if holds_steady_window(sim) else
                            # a rate over a window of a fraction of a second ("264.62 requests/s" until s24srvwalk)
                            f"- (no steady state in the measuring window: see the note; "
                            f"{sim.slo_attained_frac:.0%} of requests within the SLO)"),
                ("$ per million tokens", f"output {_per_million(out.usd_per_million_output_tokens, 'output token')}, "
                                         f"input {_per_million(out.usd_per_million_input_tokens, 'prompt')}"),
                ("memory per GPU", f"{gib(out.memory_per_gpu_bytes)} (KV peak {sim.kv_peak_tokens_per_instance:,.0f} of "
                                   f"{sim.kv_capacity_tokens_per_instance:,.0f} tokens per instance; {plural(sim.preemptions, 'preemption')})"),
                ("analytic sweep", f"best concurrency {out.batch:,} per instance: {out.analytic_output_tokens_per_s_per_node:,.0f} "
                                   f"output tok/s per node at TPOT {latencies(out.tpot_s)}; {full_chunk(out.prefill)} "
                                   f"{latencies(out.ttft_s)}"),
            ]))
    if not holds_steady_window(sim):
        # the figures come from the window between 10% and 90% of requests finished: with fewer requests than
        # twice the clients, most start at once and that window may hold no new prompt at all ("input tokens/s
        # 0" with no word of why, until s21walk)
        text += (f"\nnote: {sim.simulated_requests:,} requests for {sim.concurrency:,} closed-loop clients: most start at once, "
                 f"so the measuring window (10%-90% of requests finished) holds little or no steady state; "
                 f"simulate at least {2 * sim.concurrency:,} (--requests, traffic.num_requests)")
    text += _open_run_note(sc, sim)
    asked = asked_requests or sc.traffic.num_requests
    if sim.arrival == "trace" and asked and asked > sim.simulated_requests:
        text += f"\nnote: {asked:,} requests asked; the trace holds {sim.simulated_requests:,}, all simulated"
    def fmt(c, x):
        return gib(x) if "bytes" in c.metric else f"{x:,.0f}"
    # a figure published for another GPU type, model or run is context, not a test (the report's rule: claim_compared)
    rows = [(c.id, fmt(c, c.predicted), fmt(c, c.claimed), f"{c.rel_error:+.1%}" if c.compared else "not compared")
            for c in out.claims if c.predicted is not None]
    if rows:
        text += "\n\n" + table(rows, header=("published figure", "twin", "published", "error"))
    if any(not c.compared for c in out.claims if c.predicted is not None):
        text += (f"\n(figures marked 'not compared' describe {PUBLISHED_MODEL} on another GPU type than this run's "
                 f"{out.gpu.upper()}, another model, or a run under other conditions, as the report's conditions column "
                 "says: context, not a test of the twin)")
    return text


def full_chunk(prefill: dict) -> str:
    """What the analytic sweep's prefill time is: the forward of a full chunk (serve.prefill_chunk_tokens a GPU),
    not one prompt's prefill, as it was labelled until s24srvwalk (R1 on HGX H200: 1,547 ms for 8,192 tokens a
    GPU, where one 1K prompt alone takes 59 ms)."""
    return f"a full prefill chunk ({prefill['tokens_per_gpu']:,} prompt tokens per GPU)"


def _per_million(usd_per_million: float, what: str) -> str:
    """A price per million tokens, or '-' where the measuring window held none to spread it over ("input $inf"
    on a closed loop whose window held no new prompt, until s24srvwalk)."""
    return dollars(usd_per_million) if math.isfinite(usd_per_million) else f"- (no {what} in the measuring window)"


def _open_run_note(sc, sim) -> str:
    """Open arrivals that stop before three request lifetimes (E2E P50) leave the deployment short of
    its steady state: the headline then reads a load still filling (the serving question's defect D1,
    docs/notes/s22walk.md; `twin serve` kept its request count and says so)."""
    if sim.arrival not in ("poisson", "gamma") or not math.isfinite(sim.e2e_s.p50):
        return ""
    mean_span_s, need = sim.simulated_requests / sc.traffic.rate_per_s, math.ceil(3 * sc.traffic.rate_per_s * sim.e2e_s.p50)
    # the arrivals as drawn: bursty gamma arrivals (CV 100) put 2,000 requests at 10/s into ~2 s, not 200 s, and the
    # headline read a burst as the rate (goodput 55 requests/s) with no note, judged on the mean span alone (until s26walk)
    drawn = (getattr(sim, "requests", None) or {}).get("arrival_s")
    span_s = float(np.nanmax(drawn) - np.nanmin(drawn)) if drawn is not None and len(drawn) > 1 else mean_span_s
    if span_s >= 3 * sim.e2e_s.p50 or (need > MAX_SIM_REQUESTS and span_s >= mean_span_s / 2):
        return ""
    if span_s < mean_span_s / 2:   # more requests at the same rate would not lift it: the draw is a burst
        return (f"\nnote: the {sim.simulated_requests:,} {sim.arrival} arrivals drawn (CV {sc.traffic.arrival_cv:g}) came "
                f"within {seconds(span_s)}, where the mean rate of {sc.traffic.rate_per_s:g}/s spreads them over "
                f"{seconds(mean_span_s)}: the figures are a burst's, not the mean rate's; simulate many more requests "
                f"(--requests) or a lower traffic.arrival_cv")
    return (f"\nnote: {sim.simulated_requests:,} requests arrive in {seconds(span_s)}, under three request lifetimes "
            f"(E2E P50 {seconds(sim.e2e_s.p50)}): the run may end before the deployment holds its steady load, if it "
            f"keeps up with the rate at all; simulate at least {need:,} (--requests, traffic.num_requests)")


def _days_text(r) -> str:
    """A plan's wall-clock days with the expected failure downtime, and its compute days beside
    (s23ettr: the deadline is met or missed by the first)."""
    return f"{r.wall_days_goodput:.1f} days with failures ({r.wall_days:.1f} compute days, ETTR {r.ettr_frac:.1%})"


def plan_summary(out) -> str:
    """A PlanResult: the space, the answer, the front, the screen's error, why candidates failed."""
    budget = f" and ${count(out.budget_usd)}" if out.budget_usd is not None else ""
    text = (f"{plural(out.evaluated, 'candidate')} screened, {out.feasible:,} fit, {out.simulated:,} simulated, "
            f"{out.num_meeting_deadline:,} simulated within {out.deadline_days:g} days{budget}")
    best = out.best
    if best is not None:
        text += (f"\n{out.question}: {best.label}: {_days_text(best)}, {count(best.gpu_hours_goodput)} GPU-hours, "
                 f"{usd(best.cost_usd_goodput)}, MFU {best.mfu_frac:.1%} of BF16 peak")
    elif out.fastest is not None:
        text += f"\nnone meets the question; the fastest simulated plan: {out.fastest.label}, {_days_text(out.fastest)}"
        cheapest = (cheapest_in_time([r for r in out.rows if r.status == SIMULATED], out.deadline_days)
                    if out.budget_usd is not None else None)
        if cheapest is not None:   # a budget missed: what the deadline costs at the least (s27walk)
            text += (f"\nthe cheapest within {out.deadline_days:g} days: {cheapest.label}, {usd(cheapest.cost_usd_goodput)}, "
                     f"{_days_text(cheapest)}")
    rows = [(r.label, f"{r.wall_days_goodput:.1f}", f"{r.wall_days:.1f}", count(r.gpu_hours_goodput), usd(r.cost_usd_goodput),
             f"{r.mfu_frac:.1%}") for r in out.pareto[:12]]
    if rows:
        text += ("\n\nfront of cost against time (simulated; days, GPU-hours and cost with the expected failure downtime)\n"
                 + table(rows, header=("plan", "days", "compute days", "GPU-hours", "cost", "MFU (BF16)"))
                 + f"\n({LABEL_LEGEND})")
    e = out.screen_error
    if e.num_compared:
        text += (f"\n\nscreen step time vs simulator over {plural(e.num_compared, 'plan')}: median |error| {e.median_abs_frac:.1%}, "
                 f"P90 {e.p90_abs_frac:.1%}, max {e.max_abs_frac:.1%}")
    examples = reason_examples(out)   # the kind names the refusing field; the example says why (s23walk)
    for reason, n in list(out.infeasible_by_reason.items())[:6]:
        text += f"\n  can't run {n:,}: {reason}"
        if reason in examples:
            text += f"\n      e.g. {examples[reason].label}: {examples[reason].reason}"
    return text


def serving_plan_summary(out) -> str:
    sizes = (f"decode instances of {plural(out.instance_gpus, 'GPU')}, prefill instances of {out.prefill_instance_gpus}"
             if out.prefill_instance_gpus not in (0, out.instance_gpus) and "disaggregated" in out.layouts else
             f"instances of {plural(out.instance_gpus, 'GPU')}")   # a prefill instance's own size unsaid until s24srvwalk
    head = (f"{out.rate_per_s:g} requests/s within TTFT {out.ttft_target_s:g} s and TPOT {out.tpot_target_s * 1e3:g} ms "
            f"({sizes}; {plural(out.evaluated, 'deployment')} checked)")
    b = out.best
    if b is None:
        return head + f"\nno deployment meets the targets: {serving_reasons(out)}"
    return head + "\n" + pairs([
        ("fewest GPUs", _layout_text(b, out)),
        *[(f"fewest {x.layout}", _layout_text(x, out)) for x in (out.best_colocated, out.best_disaggregated)
          if x is not None and x is not b],
        *[(f"fewest {name}", "none within the targets") for name, x in (("co-located", out.best_colocated),
          ("disaggregated", out.best_disaggregated)) if x is None and name in out.layouts],
        (f"TTFT (P{b.percentile:g}, simulated)", f"{b.ttft_s:.3g} s"),
        (f"TPOT (P{b.percentile:g}, simulated)", f"{b.tpot_s * 1e3:.1f} ms, at most {b.decode_batch:,} requests per "
                                                 f"{'decode ' if b.layout == 'disaggregated' else ''}instance"),
        ("cost", f"{dollars(b.usd_per_hour)} per hour: {dollars(b.usd_per_million_output_tokens_all_gpus)} per million "
                 f"output tokens (every GPU); split by work {dollars(b.usd_per_million_output_tokens)} output, "
                 f"{dollars(b.usd_per_million_input_tokens)} input"),
        ("simulated", f"{b.simulated_requests:,} requests per deployment, {out.arrival} arrivals at {out.rate_per_s:g}/s "
                      f"(served {b.served_rate_per_s:.3g}/s in the steady window)"),
    ]) + _short_run_note(b) + _burst_note(b, out.arrival) + (f"\nnote: {out.arrival_note}" if out.arrival_note else "")


def serving_reasons(out) -> str:
    """Why no deployment met the targets: each reason with the deployments simulated that it stopped, or alone
    where none was simulated (a floor no pool size lifts: one prompt's prefill over the TTFT target). Until
    s26walk the floor carried a bare "(1)", read as its target."""
    if not out.evaluated:
        return "; ".join(out.infeasible_by_reason)
    return "; ".join(f"{k} ({plural(v, 'deployment')})" for k, v in out.infeasible_by_reason.items())


def serving_capacity_summary(out) -> str:
    """The serving question at several rates: one line a rate, the fewest GPUs and their cost."""
    first = out.plans[0]
    head = (f"fewest GPUs within TTFT {out.ttft_target_s:g} s and TPOT {out.tpot_target_s * 1e3:g} ms "
            f"(P{out.percentile:g}, instances of {plural(first.instance_gpus, 'GPU')})")
    header = ("rate/s", "GPUs", "layout", "split", "TTFT", "TPOT", "$/hour", "$/M output tok (every GPU)")
    rows = [header]
    for p in out.plans:
        b = p.best
        if b is None:
            rows.append((f"{p.rate_per_s:g}", "none", "-", next(iter(p.infeasible_by_reason), "-"), "-", "-", "-", "-"))
            continue
        split = (plural(b.num_gpus // p.instance_gpus, "instance") if b.layout == "co-located" else
                 f"{b.prefill_gpus:,} + {b.decode_gpus:,}")
        rows.append((f"{p.rate_per_s:g}", f"{b.num_gpus:,}", b.layout, split, seconds(b.ttft_s), seconds(b.tpot_s),
                     dollars(b.usd_per_hour), dollars(b.usd_per_million_output_tokens_all_gpus)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i in (0, 1) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    notes = {n for p in out.plans for n in ([_short_run_note(p.best).strip(), _burst_note(p.best, p.arrival).strip()] if p.best else [])
             + [p.arrival_note] if n}
    return "\n".join([head, *lines, *(f"note: {n}" if not n.startswith("note:") else n for n in sorted(notes))])


def _layout_text(b, out) -> str:
    """A deployment in a planner's units: GPUs, nodes, instances, and a split's prefill-to-decode ratio ("336: 40
    prefill + 296 decode", GPUs alone, until s24srvwalk)."""
    nodes = plural(nodes_of(b.num_gpus, out.gpus_per_node), "node")
    if b.layout == "co-located":
        n = b.num_gpus // out.instance_gpus
        return f"{b.num_gpus:,}: {plural(n, 'co-located instance')} ({nodes}; prefill and decode on the same GPUs)"
    p, d = pool_instances(b.prefill_gpus, b.decode_gpus, out.instance_gpus, out.prefill_instance_gpus)
    ratio = f", P:D 1:{d / p:.3g}" if p else ""
    return (f"{b.num_gpus:,}: {b.prefill_gpus:,} prefill + {b.decode_gpus:,} decode GPUs ({nodes}; {p:,} prefill and "
            f"{d:,} decode instance{'s' if d != 1 else ''}{ratio})")


def _burst_note(b, arrival: str) -> str:
    note = burst_note(b.rate_per_s, b.served_rate_per_s, b.simulated_requests, arrival)
    return f"\nnote: {note}" if note else ""


def _short_run_note(b) -> str:
    """A run too short for the decode pool to fill can pass a pool too small for the rate."""
    if b.simulated_requests >= b.steady_requests:
        return ""
    return (f"\nnote: {b.simulated_requests:,} requests arrive in {b.simulated_requests / b.rate_per_s:.3g} s, too few for "
            f"the steady state ({b.steady_requests:,}: three lifetimes of a request at a full instance's pace); the decode pool "
            f"may never fill and the answer may be too small: leave --requests out")
