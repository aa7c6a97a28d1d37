"""DeepEP's low-latency send and receive kernel times as fixed + per-row terms (s22dep, issue 15).

Reads the campaign s22dep rows (real/bench/deepep_ll.py: 2 GPUs of one host, DeepEP with return_recv_hook,
every kernel timed by the torch profiler) from calibration/measurements/<gpu>x2/deepep_ll.csv and fits, for each
expert count and each of the four kernels (dispatch send, dispatch receive, combine send, combine receive), a
line `seconds = fixed_s + per_row_s x rows` over the token counts, rows = tokens a rank x top_k. Only the hook
rows at the largest sleep between send and hook are used: their receive kernel finds its rows landed, as
DeepSeek's decode does after the other micro-batch's compute (docs/notes/s22dep_rule.md). Each token count's
point is the mean over the ranks of each rank's median over its profiled rounds.

    python -m calibration.deepep_ll_fit calibration/measurements/h100x2/deepep_ll.csv
prints the fit as twin/data/serving_claims.toml's [deepep_ll_sm] holds it, with the residuals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from calibration import entry
from calibration.records_io import read_csv

KERNELS = ("dispatch_send", "dispatch_recv", "combine_send", "combine_recv")


def usable_rows(df):
    """The hook rows at the largest gap (receive timed without waiting), status ok."""
    hook = df[(df["status"] == "ok") & (df["mode"] == "hook")]
    return hook[hook["gap_us"] == hook["gap_us"].max()]


def points(df, experts: int, kernel: str) -> list[tuple[float, float]]:
    """(rows, seconds) per token count: rows = tokens x top_k, seconds the mean over ranks of `kernel`'s median."""
    sel = usable_rows(df)
    sel = sel[sel["num_experts"] == experts]
    out = []
    for tokens, g in sorted(sel.groupby("tokens_per_rank"), key=lambda kv: kv[0]):
        out.append((float(tokens * g["top_k"].iloc[0]), float(g[f"{kernel}_s"].mean())))
    return out


def fit_line(pts: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares (fixed_s, per_row_s) of seconds = fixed + per_row x rows.
    E.g. [(256, 10e-6), (512, 12e-6), (768, 14e-6)] -> (8e-6, 7.8125e-9)."""
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    per_row, fixed = np.polyfit(x, y, 1)
    return float(fixed), float(per_row)


def fit(csv_path: Path | str) -> dict:
    """[deepep_ll_sm] of twin/data/serving_claims.toml from one records file, plus each point's residual."""
    df = read_csv(csv_path)
    experts = sorted(int(e) for e in usable_rows(df)["num_experts"].unique())
    table: dict = {"experts": experts}
    residuals = {}
    for kernel in KERNELS:
        fixed, per_row = [], []
        for e in experts:
            pts = points(df, e, kernel)
            a, b = fit_line(pts)
            fixed.append(a)
            per_row.append(b)
            residuals[(kernel, e)] = [(r, s, s - (a + b * r)) for r, s in pts]
        table[f"{kernel}_fixed_s"], table[f"{kernel}_per_row_s"] = fixed, per_row
    gpu = str(df["gpu_name"].iloc[0])
    return {"table": table, "residuals": residuals, "gpu_name": gpu, "deepep_commit": str(df["deepep_commit"].iloc[0])}


def within(residuals: dict, rel: float = 0.15, abs_s: float = 2e-6) -> bool:
    """Every point within `rel` of its value or `abs_s` (the rule's criterion 1)."""
    return all(abs(d) <= max(rel * s, abs_s) for pts in residuals.values() for _, s, d in pts)


@entry.script
def main(argv=None) -> int:
    p = entry.JudgeParser(prog="python -m calibration.deepep_ll_fit", description=__doc__.split("\n\n")[0])
    p.add_argument("csv", type=Path)
    args = p.parse_args(argv)
    with entry.user_inputs("CSV", args.csv, "a DeepEP low-latency records CSV (real/bench/deepep_ll.py)"):
        r = fit(args.csv)
        t = r["table"]
        print(f"# {r['gpu_name']}, DeepEP {r['deepep_commit']}")
        print(f"experts = {t['experts']}")
        for k in KERNELS:
            print(f"{k}_fixed_s = [{', '.join(f'{v:.4g}' for v in t[f'{k}_fixed_s'])}]")
            print(f"{k}_per_row_s = [{', '.join(f'{v:.4g}' for v in t[f'{k}_per_row_s'])}]")
        for (k, e), pts in r["residuals"].items():
            print(f"# {k} experts {e}: " + ", ".join(f"rows {x:.0f}: {s * 1e6:.2f} us ({d * 1e6:+.2f})" for x, s, d in pts))
        print(f"# residuals within 15% or 2 us: {within(r['residuals'])}")
        return 0 if not math.isnan(t["dispatch_send_fixed_s"][0]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
