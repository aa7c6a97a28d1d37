"""Plan sweep outputs: plan.csv (every candidate), cost against wall-clock days, resolved scenario."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from twin.core.atomic import staged_dir  # noqa: E402
from twin.core.results import to_json  # noqa: E402
from twin.planning.result import PlanResult  # noqa: E402

COLUMNS = ("label", "feasible", "reason", "gpu", "num_gpus", "tp", "pp", "ep", "schedule", "micro_batch_seqs",
           "step_time_s", "mfu_frac", "tokens_per_s_per_gpu", "memory_per_gpu_bytes", "wall_days", "gpu_hours", "cost_usd")


def plan_csv(result: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in result["rows"]:
        writer.writerow(row)
    return buf.getvalue()


def plot_cost_vs_days(result: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    feasible = [r for r in result["rows"] if r["feasible"]]
    for gpu in sorted({r["gpu"] for r in feasible}):
        rows = [r for r in feasible if r["gpu"] == gpu]
        y = [r["cost_usd"] / 1e6 if r["cost_usd"] is not None else r["gpu_hours"] / 1e6 for r in rows]
        ax.scatter([r["wall_days"] for r in rows], y, label=gpu, s=18)
    ax.axvline(result["deadline_days"], color="k", ls="--", lw=1, label="deadline")
    best = result.get("best")
    if best:
        ax.scatter([best["wall_days"]], [(best["cost_usd"] or best["gpu_hours"]) / 1e6], marker="*", s=200, c="red",
                   label=f"cheapest on time: {best['label']}")
    ax.set_xlabel("wall-clock days")
    ax.set_ylabel("cost (M USD; M GPU-hours where no price is given)")
    ax.set_title(f"{result['num_feasible']} feasible plans of {result['num_candidates']} for {result['tokens']:.3g} tokens")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plan_report(plan: PlanResult, scenario, out_dir) -> None:
    result = to_json(plan)
    with staged_dir(out_dir) as tmp:
        (tmp / "plan.csv").write_text(plan_csv(result))
        (tmp / "plan.json").write_text(json.dumps(result, indent=2))
        (tmp / "scenario.json").write_text(json.dumps(scenario.to_dict(), indent=2, default=str))
        plot_cost_vs_days(result, tmp / "cost_vs_days.png")
