"""Plots and a CSV for `twin validate --out DIR`: predicted vs measured (log-log, identity line,
one colour per GPU/op kind) and median |error| by op kind (held-out cases)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def write_report(result: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = pd.DataFrame(result["cases"])
    paths = []
    csv_path = out_dir / "validation_cases.csv"
    cases.to_csv(csv_path, index=False)
    paths.append(csv_path)
    if cases.empty:
        return paths

    fig, ax = plt.subplots(figsize=(7, 7))
    for (gpu, bench), g in cases.groupby(["gpu", "bench"]):
        ax.scatter(g["measured_s"], g["predicted_s"], s=12, alpha=0.7, label=f"{gpu} {bench}",
                   marker="o" if gpu == "h100" else "^")
    lo = min(cases["measured_s"].min(), cases["predicted_s"].min()) * 0.8
    hi = max(cases["measured_s"].max(), cases["predicted_s"].max()) * 1.25
    ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="identity")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (s)", ylabel="predicted (s)",
           title="Twin vs measurements")
    ax.legend(fontsize=6, ncol=2)
    p = out_dir / "validation_scatter.png"
    fig.savefig(p, dpi=130, bbox_inches="tight")
    plt.close(fig)
    paths.append(p)

    held = cases[cases["held_out"]].copy()
    if not held.empty:
        held["abs_err"] = held["rel_error"].abs()
        tab = held.groupby(["bench", "gpu"])["abs_err"].median().unstack("gpu")
        fig, ax = plt.subplots(figsize=(8, 4))
        tab.plot.bar(ax=ax)
        ax.axhline(0.05, color="k", ls="--", lw=1, label="5% target")
        ax.set(ylabel="median |relative error| (held-out)", xlabel="op kind", title="Held-out error by op kind")
        ax.legend()
        p = out_dir / "validation_error_by_op.png"
        fig.savefig(p, dpi=130, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths
