"""Plots and CSVs for `twin validate --out DIR`: predicted vs measured (log-log, identity line,
one colour per GPU/op kind), median |error| by op kind (held-out cases), and, when the result holds
it, the H800 trace beside the twin phase by phase (h800_trace.csv / h800_trace.png)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from calibration.sm_reserve import slowdown_png  # noqa: E402


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
    if result.get("h800_trace"):
        paths += write_trace_comparison(result["h800_trace"], out_dir)
    if any(result.get("sm_reserve", {}).values()):
        paths += write_sm_reserve(result["sm_reserve"], out_dir)
    return paths


def write_sm_reserve(rows_by_gpu: dict, out_dir: Path) -> list[Path]:
    """sm_reserve.csv (the twin's SM-reservation slowdown beside the measured one, per GPU, mode,
    precision and SM count) and sm_reserve.png (the same against the SM count)."""
    csv_path = out_dir / "sm_reserve.csv"
    pd.DataFrame([r for rows in rows_by_gpu.values() for r in rows]).to_csv(csv_path, index=False)
    png_path = out_dir / "sm_reserve.png"
    png_path.write_bytes(slowdown_png(rows_by_gpu))
    return [csv_path, png_path]


def write_trace_comparison(tr: dict, out_dir: Path) -> list[Path]:
    """DeepSeek's H800 chunk-pair trace and the twin side by side: per phase (and per DeepEP data
    kernel) trace and twin microseconds, the relative error and the target band where one applies."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"phase": "chunk pair", "kind": "chunk_pair", "trace_us": tr["chunk_pair"]["trace_us"],
             "predicted_us": tr["chunk_pair"]["predicted_us"], "rel_error": tr["chunk_pair"]["rel_error"],
             "target": tr["chunk_pair"]["target"]}]
    rows += [{k: r[k] for k in ("phase", "kind", "trace_us", "predicted_us", "rel_error", "target")} for r in tr["phases"]]
    table = pd.DataFrame(rows)
    csv_path = out_dir / "h800_trace.csv"
    table.to_csv(csv_path, index=False)
    phases = table[table.kind != "chunk_pair"].iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(phases) + 1.2))
    y = range(len(phases))
    ax.barh([i + 0.2 for i in y], phases.trace_us / 1e3, height=0.4, label="DeepSeek trace", color="#4477aa")
    ax.barh([i - 0.2 for i in y], phases.predicted_us / 1e3, height=0.4, label="twin", color="#ee6677")
    for i, (_, r) in zip(y, phases.iterrows()):
        ax.text(max(r.trace_us, r.predicted_us) / 1e3 * 1.02, i, f"{r.rel_error:+.0%}", va="center", fontsize=7,
                color="k" if pd.isna(r.target) or abs(r.rel_error) <= r.target else "#aa3377")
    ax.set_yticks(list(y), [f"{r.phase} ({r.kind})" for _, r in phases.iterrows()], fontsize=7)
    c = tr["chunk_pair"]
    ax.set(xlabel="ms per layer", title=f"H800 chunk pair: twin {c['predicted_us'] / 1e3:.1f} ms vs trace "
           f"{c['trace_us'] / 1e3:.1f} ms ({c['rel_error']:+.1%})")
    ax.legend(fontsize=7, loc="lower right")
    png = out_dir / "h800_trace.png"
    fig.savefig(png, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return [csv_path, png]
