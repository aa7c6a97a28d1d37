"""Expert-load report, in the shared page style (reports/page.py).

  python -m reports.load_report OUT_DIR [--gpu h200] [--quick]

`build(out_dir, sc=scenario, balance=run_balance(...))` (twin balance --out) writes, staged and atomic:
  report.html, report.md        a verdict (what EPLB and routing skew do to this scenario), the
                                step-time curve, the load cases, the EPLB summary, the plots
  result.json                   the measured model, EPLB per layer, the step-time curve, the cases
                                and (from twin balance) the whole balance result
  scenario.resolved.toml        the training scenario as resolved
  step_time_vs_imbalance.csv, eplb_by_layer.csv
  expert_load_heatmap.png       layer x expert routed-token share (relative to the mean), step-averaged,
                                per bias-update rate: the MEASURED bench model's loads (real/ runs of
                                a small model, calibration/measurements/<gpu>/expert_load.csv),
                                titled with that model and its expert count
  step_time_vs_imbalance.png    the scenario's step time for a scalar rank max/mean sweep, with the
                                load-model cases of twin.training.balance marked
  eplb_before_after.png         per-layer GPU max/mean without EPLB (contiguous) and with EPLB
                                (hierarchical, one redundant expert per GPU) on the measured skew
                                carried to the scenario's experts
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from reports import page as pg
from reports.page import Page
from twin.core.results import to_json
from twin.core.scenario import load_scenario
from twin.moe.eplb import contiguous_gpu_loads, rebalance_experts
from twin.moe.load import EXPERT_LOADS, LoadModel, read_expert_load, recorded_rates
from twin.training.balance import run_balance
from twin.training.results import Perturb
from twin.training.step import simulate_step

PLOTS = ("expert_load_heatmap.png", "step_time_vs_imbalance.png", "eplb_before_after.png")
CURVE_CSV, EPLB_CSV = "step_time_vs_imbalance.csv", "eplb_by_layer.csv"
CASE_MARKERS = "XPDs^v<>ph*"


def measured_model(gpu: str) -> dict:
    """Which model the recorded expert loads of `gpu` come from: name, experts, layers recorded."""
    with EXPERT_LOADS.joinpath(f"{gpu}.csv").open() as fh:
        first = next(csv.DictReader(fh))
    counts = read_expert_load(gpu, recorded_rates(gpu)[0])
    return {"gpu": gpu, "model": first["model"], "num_experts": int(first["num_experts"]), "num_layers": counts.shape[1],
            "num_steps": counts.shape[0], "bias_update_rates": recorded_rates(gpu)}


# --------------------------------------------------------------------------- plots

def plot_heatmap(gpu: str, measured: dict, scenario_model: str, scenario_experts: int):
    rates = recorded_rates(gpu)
    fig, axes = pg.figure(3.6 * len(rates) + 1.2, 3.4, ncols=len(rates), squeeze=False, sharey=True)
    im = None
    for ax, rate in zip(axes[0], rates):
        c = read_expert_load(gpu, rate).mean(axis=0)
        share = c / c.sum(axis=1, keepdims=True) * c.shape[1]   # relative to the mean expert
        im = ax.imshow(share, aspect="auto", cmap="magma", vmin=0, vmax=4)
        ax.set_title(f"bias update rate {pg.sig(rate, trim=True)}", fontsize=9)
        ax.set_xlabel("expert")
        e = c.shape[1]
        ax.set_xticks(range(0, e, max(1, e // 8)))
        ax.set_yticks(range(c.shape[0]))
    axes[0, 0].set_ylabel("MoE layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="load / mean expert load")
    other = measured["model"] != scenario_model
    fig.suptitle(f"Measured expert loads of {measured['model']} ({measured['num_experts']} experts) on {gpu.upper()}, "
                 f"mean over {measured['num_steps']} steps"
                 + (f"\n(not {scenario_model}'s {scenario_experts} experts: the twin carries this skew to them)" if other else ""),
                 fontsize=10)
    return fig


def ep_nodes(ep: int, gpus_per_node: int) -> int:
    """Nodes an EP group spans, for EPLB's node level: EP4 on 8-GPU nodes is one node (ep // gpus_per_node
    was 0 and `twin balance --out` ended in a ZeroDivisionError, until s21walk); a group that does not
    split evenly over its nodes is placed as one (EPLB's global policy)."""
    nodes = max(1, -(-ep // gpus_per_node))
    return nodes if ep % nodes == 0 else 1


def eplb_before_after(shares_LE: np.ndarray, num_gpus: int = 64, num_nodes: int = 8, num_groups: int = 8,
                      redundant: int = 32) -> dict:
    """Per-layer max/mean GPU load, contiguous placement vs an EPLB plan."""
    before = contiguous_gpu_loads(shares_LE, num_gpus)
    plan = rebalance_experts(shares_LE, shares_LE.shape[1] + redundant, num_groups, num_nodes, num_gpus)
    after = plan.gpu_loads(shares_LE)
    mom = lambda x: (x.max(axis=1) / x.mean(axis=1)).tolist()  # noqa: E731
    return {"policy": plan.policy, "redundant_experts": redundant, "before_max_over_mean": mom(before),
            "after_max_over_mean": mom(after)}


def plot_eplb(res: dict, sc):
    fig, ax = pg.figure(7.5, 3.4)
    x = np.arange(1, len(res["before_max_over_mean"]) + 1)
    ax.plot(x, res["before_max_over_mean"], label="contiguous placement (no EPLB)")
    ax.plot(x, res["after_max_over_mean"], label=f"EPLB {res['policy']}, +{res['redundant_experts']} replicas")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("most loaded GPU / mean")
    ax.set_title(f"{sc.model.name}: {sc.model.num_routed_experts} experts over EP{sc.plan.ep}, measured skew", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def step_curve(sc, ratios=(1.0, 1.1, 1.25, 1.5, 2.0, 3.0)) -> list[dict]:
    return [{"rank_max_over_mean": r, "step_time_s": simulate_step(sc, perturb=Perturb(routing_imbalance=r), record_events=False,
                                                                     check_memory=False).step_time_s} for r in ratios]


def _feasible_cases(cases: dict) -> dict:
    return {k: v for k, v in cases.items() if "step_time_s" in v}


def plot_step(curve: list[dict], cases: dict, sc):
    """Step time against the most loaded rank's rows / mean; each load case a marker in the legend
    (no labels on the plot, so none can collide)."""
    fig, ax = pg.figure(7.5, 3.8)
    ax.plot([c["rank_max_over_mean"] for c in curve], [c["step_time_s"] for c in curve], "o-", color="#4477aa",
            label="scalar imbalance sweep")
    for i, (name, r) in enumerate(_feasible_cases(cases).items()):
        ax.plot(r["rank_max_over_mean"], r["step_time_s"], CASE_MARKERS[i % len(CASE_MARKERS)], ms=8, color=f"C{(i + 1) % 10}",
                label=f"{name.replace('_', ' ')} ({pg.sig(r['rank_max_over_mean'])}, {pg.seconds(r['step_time_s'])})")
    ax.set_xlabel("most loaded EP rank's rows / mean")
    ax.set_ylabel("step time (s)")
    ax.set_title(f"{sc.name}: step time against routing imbalance", fontsize=10)
    fig.legend(fontsize=7, loc="outside right upper")
    return fig


# --------------------------------------------------------------------------- tables and page

def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _verdict(sc, eplb: dict, curve: list[dict], cases: dict) -> str:
    before, after = float(np.mean(eplb["before_max_over_mean"])), float(np.mean(eplb["after_max_over_mean"]))
    head = (f"On {sc.name} ({sc.model.name}, EP{sc.plan.ep} on {sc.cluster.num_gpus:,} {sc.cluster.gpu.upper()}), EPLB "
            f"brings the most loaded GPU from {pg.sig(before)}× to {pg.sig(after)}× the mean under the measured skew")
    # the measured loads (not the fitted skews) that fit in memory: what a real run would see
    measured = {k: v for k, v in _feasible_cases(cases).items()
                if k.startswith("measured") and "straggler_penalty_frac" in v and not v.get("out_of_memory")}
    if measured:
        name, worst = max(measured.items(), key=lambda kv: kv[1]["straggler_penalty_frac"])
        return (head + f"; the measured routing skew (case {name.replace('_', ' ')}) lengthens the step by "
                f"{pg.pct(worst['straggler_penalty_frac'])} ({pg.gpu_hours(worst['gpu_hours_lost'])} over pre-training).")
    c0, c1 = curve[0], curve[-1]
    return (head + f"; a rank imbalance of {pg.sig(c1['rank_max_over_mean'])}× lengthens the step from "
            f"{pg.seconds(c0['step_time_s'])} to {pg.seconds(c1['step_time_s'])}.")


def build_page(sc, measured: dict, eplb: dict, curve: list[dict], cases: dict) -> Page:
    p = Page(f"Expert load: {sc.name}", _verdict(sc, eplb, curve, cases))
    m = measured
    other = m["model"] != sc.model.name
    p.para(f"Measured loads: {m['model']} ({m['num_experts']} experts, {m['num_layers']} MoE layers, {m['num_steps']} steps "
           f"per run) trained by real/ on {m['gpu'].upper()}, at bias-update rates "
           f"{', '.join(pg.sig(r, trim=True) for r in m['bias_update_rates'])} "
           f"(calibration/measurements/{m['gpu']}/expert_load.csv)."
           + (f" They are not {sc.model.name}'s loads: the twin carries their sorted share curve to "
              f"{sc.model.name}'s {sc.model.num_routed_experts} experts." if other else ""))
    p.section("Step time against routing imbalance").table(
        ["most loaded rank / mean", "step time", "slower than balanced"],
        [[pg.sig(c["rank_max_over_mean"]), pg.seconds(c["step_time_s"]), pg.pct(c["step_time_s"] / curve[0]["step_time_s"] - 1)]
         for c in curve])
    if cases:
        rows = []
        for name, r in cases.items():
            if "infeasible" in r:
                rows.append([name.replace("_", " "), pg.NA, pg.NA, pg.NA, pg.NA, f"can't run: {r['infeasible']}"])
                continue
            rows.append([name.replace("_", " "), pg.sig(r["rank_max_over_mean"]), pg.seconds(r["step_time_s"]),
                         pg.pct(r.get("straggler_penalty_frac"), signed=True), pg.count(r.get("gpu_hours_lost")),
                         "all-to-all buffers exceed memory" if r.get("out_of_memory") else ""])
        p.section("Load cases").table(["case", "rank max / mean", "step time", "step penalty", "GPU-hours lost", "note"], rows)
    before, after = np.mean(eplb["before_max_over_mean"]), np.mean(eplb["after_max_over_mean"])
    p.section("EPLB").para(
        f"{eplb['policy'].capitalize()} EPLB with {eplb['redundant_experts']} redundant experts on the measured skew carried to "
        f"{sc.model.name}: the most loaded GPU over the mean, averaged over layers, {pg.sig(before)} without EPLB and "
        f"{pg.sig(after)} with it (worst layer {pg.sig(max(eplb['before_max_over_mean']))} → {pg.sig(max(eplb['after_max_over_mean']))}).")
    p.section("Plots")
    p.figure(PLOTS[0], plot_heatmap(m["gpu"], m, sc.model.name, sc.model.num_routed_experts),
             f"The measured loads of {m['model']} ({m['num_experts']} experts)"
             + (f", not of {sc.model.name}" if other else "") + ": each cell is an expert's share of its layer's routed "
             "tokens over the mean share, averaged over the recorded steps.")
    p.figure(PLOTS[1], plot_step(curve, cases, sc), f"{sc.name}: step time against the most loaded EP rank's rows over the mean.")
    p.figure(PLOTS[2], plot_eplb(eplb, sc), "The most loaded GPU over the mean, per MoE layer, without and with EPLB.")
    p.section("Files").bullets([f"`{pg.RESULT_JSON}`: the result; `{CURVE_CSV}`, `{EPLB_CSV}`: the curve and EPLB per layer; "
                                f"`{pg.RESOLVED_SCENARIO}`: the scenario as resolved"])
    return p


def build(out_dir: str | Path, gpu: str = "h200", quick: bool = False, sc=None, balance: dict | None = None) -> dict:
    """Write the load report for scenario `sc` (default: the embedded V3 scenario) from the expert
    loads measured on `gpu`. `balance` is a finished `run_balance` result to reuse (its cases are
    plotted and it is saved in result.json); without it, the cases are computed unless `quick`."""
    sc = sc or load_scenario()
    m = sc.model
    measured = measured_model(gpu)
    shares = LoadModel("measured", measured_gpu=gpu).shares_LE(m.num_layers - m.num_dense_layers, m.num_routed_experts, m.top_k)
    eplb = eplb_before_after(shares, sc.plan.ep, ep_nodes(sc.plan.ep, sc.gpu.gpus_per_node), m.num_expert_groups,
                             redundant=sc.plan.ep)
    if balance is not None:
        cases = balance["cases"]
    elif quick:
        cases = {}
    else:
        cases = run_balance(sc, gpu=gpu)["cases"]
    curve = step_curve(sc, (1.0, 1.5, 2.0) if quick else (1.0, 1.1, 1.25, 1.5, 2.0, 3.0))
    result = {"gpu": gpu, "measured": measured, "eplb": eplb, "step_curve": curve, "cases": cases}
    payload = to_json({**result, "balance": balance})
    eplb_rows = [{"layer": i + 1, "before_max_over_mean": b, "after_max_over_mean": a}
                 for i, (b, a) in enumerate(zip(eplb["before_max_over_mean"], eplb["after_max_over_mean"]))]
    pg.write_report_dir(out_dir, build_page(sc, measured, eplb, curve, cases), payload, sc,
                        files={CURVE_CSV: _csv(curve), EPLB_CSV: _csv(eplb_rows)})
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--gpu", default="h200", choices=("h100", "h200"))
    ap.add_argument("--quick", action="store_true", help="skip the load-model step cases")
    a = ap.parse_args(argv)
    r = build(a.out_dir, a.gpu, a.quick)
    print(f"wrote {Path(a.out_dir) / pg.REPORT_HTML}: EPLB mean max/mean {np.mean(r['eplb']['before_max_over_mean']):.2f} -> "
          f"{np.mean(r['eplb']['after_max_over_mean']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
