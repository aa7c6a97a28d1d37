"""Expert-load report: measured load heatmaps, step time against imbalance, EPLB before/after.

  python -m reports.load_report OUT_DIR [--gpu h200] [--quick]

Writes (each file atomically, the set staged so a failed run leaves an earlier report intact):
  expert_load_heatmap.png     layer x expert routed-token share, step-averaged, without and with
                              the bias update (real/ bench-small runs, expert_load.csv)
  step_time_vs_imbalance.png  V3 step time for a scalar rank max/mean sweep, with the load-model
                              cases of twin.training.balance marked
  eplb_before_after.png       per-layer GPU max/mean without EPLB (contiguous) and with EPLB
                              (hierarchical, one redundant expert per GPU) on the measured-skew V3 loads
  load_report.md, load_report.json
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from twin.core import atomic  # noqa: E402
from twin.moe.eplb import contiguous_gpu_loads, rebalance_experts  # noqa: E402
from twin.core.scenario import load_scenario  # noqa: E402
from twin.moe.load import LoadModel, read_expert_load, recorded_rates  # noqa: E402
from twin.training.balance import run_balance  # noqa: E402
from twin.training.results import Perturb  # noqa: E402
from twin.training.step import simulate_step  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def heatmap_png(gpu: str) -> bytes:
    rates = recorded_rates(gpu)
    fig, axes = plt.subplots(1, len(rates), figsize=(4.5 * len(rates), 3.2), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        c = read_expert_load(gpu, rate).mean(axis=0)
        share = c / c.sum(axis=1, keepdims=True) * c.shape[1]   # relative to mean
        im = ax.imshow(share, aspect="auto", cmap="magma", vmin=0, vmax=4)
        ax.set_title(f"{gpu} bias rate {rate:g}")
        ax.set_xlabel("expert")
        ax.set_ylabel("MoE layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="load / mean")
    return _png(fig)


def eplb_before_after(shares_LE: np.ndarray, num_gpus: int = 64, num_nodes: int = 8, num_groups: int = 8,
                      redundant: int = 32) -> dict:
    """Per-layer max/mean GPU load, contiguous placement vs an EPLB plan."""
    before = contiguous_gpu_loads(shares_LE, num_gpus)
    plan = rebalance_experts(shares_LE, shares_LE.shape[1] + redundant, num_groups, num_nodes, num_gpus)
    after = plan.gpu_loads(shares_LE)
    mom = lambda x: (x.max(axis=1) / x.mean(axis=1)).tolist()  # noqa: E731
    return {"policy": plan.policy, "redundant_experts": redundant, "before_max_over_mean": mom(before),
            "after_max_over_mean": mom(after)}


def eplb_png(res: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(res["before_max_over_mean"]))
    ax.plot(x, res["before_max_over_mean"], label="contiguous (no EPLB)")
    ax.plot(x, res["after_max_over_mean"], label=f"EPLB {res['policy']} +{res['redundant_experts']} replicas")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("GPU load max / mean")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def step_curve(sc, ratios=(1.0, 1.1, 1.25, 1.5, 2.0, 3.0)) -> list[dict]:
    return [{"rank_max_over_mean": r, "step_time_s": simulate_step(sc, perturb=Perturb(routing_imbalance=r), record_events=False,
                                                                     check_memory=False).step_time_s} for r in ratios]


def step_png(curve: list[dict], cases: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["rank_max_over_mean"] for c in curve], [c["step_time_s"] for c in curve], "o-", label="scalar knob")
    for name, r in cases.items():
        if "step_time_s" in r:
            ax.plot(r["rank_max_over_mean"], r["step_time_s"], "x")
            ax.annotate(name, (r["rank_max_over_mean"], r["step_time_s"]), fontsize=7)
    ax.set_xlabel("most loaded EP rank rows / mean")
    ax.set_ylabel("step time (s)")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def build(out_dir: str | Path, gpu: str = "h200", quick: bool = False, sc=None, balance: dict | None = None) -> dict:
    """Write the load report for scenario `sc` (default: the embedded V3 scenario). `balance` is a
    finished `run_balance` result to reuse (its cases are plotted and it is saved as balance.json)."""
    sc = sc or load_scenario()
    m = sc.model
    shares = LoadModel("measured", measured_gpu=gpu).shares_LE(m.num_layers - m.num_dense_layers, m.num_routed_experts, m.top_k)
    eplb = eplb_before_after(shares, sc.plan.ep, sc.plan.ep // sc.gpu.gpus_per_node, m.num_expert_groups, redundant=sc.plan.ep)
    if balance is not None:
        cases = balance["cases"]
    elif quick:
        cases = {}
    else:
        cases = run_balance(sc, gpu=gpu)["cases"]
    curve = step_curve(sc, (1.0, 1.5, 2.0) if quick else (1.0, 1.1, 1.25, 1.5, 2.0, 3.0))
    result = {"gpu": gpu, "eplb": eplb, "step_curve": curve, "cases": cases}
    md = ["# Expert load report", "",
          f"Measured loads: real/ bench-small on {gpu} (calibration/measurements/{gpu}/expert_load.csv).", "",
          "| rank max/mean | step time (s) |", "|---|---|"]
    md += [f"| {c['rank_max_over_mean']:.2f} | {c['step_time_s']:.2f} |" for c in curve]
    md += ["", f"EPLB ({eplb['policy']}, +{eplb['redundant_experts']} replicas) on measured-skew V3 loads: mean GPU max/mean "
           f"{np.mean(eplb['before_max_over_mean']):.2f} -> {np.mean(eplb['after_max_over_mean']):.2f}", ""]
    with atomic.staged_dir(out_dir) as tmp:
        (tmp / "expert_load_heatmap.png").write_bytes(heatmap_png(gpu))
        (tmp / "step_time_vs_imbalance.png").write_bytes(step_png(curve, cases))
        (tmp / "eplb_before_after.png").write_bytes(eplb_png(eplb))
        (tmp / "load_report.md").write_text("\n".join(md))
        (tmp / "load_report.json").write_text(json.dumps(result, indent=2))
        (tmp / "scenario.json").write_text(json.dumps(sc.to_dict(), indent=2, default=str))
        if balance is not None:
            (tmp / "balance.json").write_text(json.dumps(balance, indent=2))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--gpu", default="h200", choices=("h100", "h200"))
    ap.add_argument("--quick", action="store_true", help="skip the load-model step cases")
    a = ap.parse_args(argv)
    r = build(a.out_dir, a.gpu, a.quick)
    print(f"wrote {a.out_dir}: EPLB mean max/mean {np.mean(r['eplb']['before_max_over_mean']):.2f} -> "
          f"{np.mean(r['eplb']['after_max_over_mean']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
