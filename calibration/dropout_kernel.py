"""s28mlm3's judge (docs/notes/s28mlm3_rule.md): attention dropout's time factor from the profiled kernels.

The twin scales an attention call with dropout by one factor per direction (Profile.attention_dropout), taken from
the fitting rows' event-timed seconds; the candidate (twin.costs.compute.ADOPT_DROPOUT_KERNEL_FACTOR) takes it from
the same rows' profiled kernel seconds (Profile.attention_dropout_kernel; calibration.dense_dropout
.attention_dropout_kernel_terms: h100 from h100/dense_dropout*.csv, h200 from s28mlm2's fitting call). Judged on
s28mlm2's 9 held-out cuDNN calls (h200/s28mlm2/, one H200; seen, never fitted) on each record's kernel seconds: each
call's time with dropout predicted from its own kernel time without, forward t0_f x F_fwd, forward+backward
t0_f x F_fwd + (t0_fb - t0_f) x F_bwd (18 figures). K1: the h100 kernel factors median |error| <= 3%, P90 <= 6%;
K2: K1's median at least 3 points below the committed timed h100 factors'; K3: the h200 kernel factors <= 3% / 6%.

    python -m calibration.dropout_kernel [--fresh DIR] [--json FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration.dense_dropout import attention_dropout_kernel_terms, attention_dropout_terms, with_kernel_sums
from calibration.dropout_form import P_ON, _t, call_times, fresh_dirs
from calibration.records import records_root
from calibration.records_io import read_csv

JUDGEMENT_FILE = Path(__file__).resolve().parent / "s28mlm3_judgement.json"
FIT_CALL = (16, 1)          # (heads, batch): s28mlm2's fitting call, not judged
MEDIAN_MAX, P90_MAX, MARGIN = 0.03, 0.06, 0.03


def kernel_calls(folder: Path) -> pd.DataFrame:
    """The campaign's cuDNN rows on their profiled kernel seconds, one row per call, bench and probability."""
    raw = read_csv(Path(folder) / "dense_dropout.csv")
    df = with_kernel_sums(raw, read_csv(Path(folder) / "dense_dropout_kernels.csv"))
    return call_times(df[df["sdpa_ran"] == "cudnn"])


def factor_errors(calls: pd.DataFrame, factor: dict) -> list[dict]:
    """The factors on each held-out bshd call (forward; forward+backward), predicted from the call's own kernel
    times without dropout, against its kernel times with: rel_error = predicted / measured - 1."""
    out = []
    bshd = calls[calls["block"] == "attention"]
    for (heads, batch), _ in bshd.groupby(["num_heads", "batch"]):
        h, b = int(heads), int(batch)
        if (h, b) == FIT_CALL:
            continue
        f0, f1 = (_t(calls, "attention", h, b, "attn_fwd", p) for p in (0.0, P_ON))
        fb0, fb1 = (_t(calls, "attention", h, b, "attn_fwd_bwd", p) for p in (0.0, P_ON))
        if None in (f0, f1, fb0, fb1):
            continue
        fwd = f0 * factor["fwd"]
        out += [{"heads": h, "batch": b, "bench": "attn_fwd", "measured_s": f1, "predicted_s": fwd,
                 "error": fwd / f1 - 1},
                {"heads": h, "batch": b, "bench": "attn_fwd_bwd", "measured_s": fb1,
                 "predicted_s": fwd + (fb0 - f0) * factor["bwd"], "error": (fwd + (fb0 - f0) * factor["bwd"]) / fb1 - 1}]
    return out


def summary(rows: list[dict]) -> dict:
    e = np.abs([r["error"] for r in rows])
    return {"n": int(e.size), "median_abs": float(np.median(e)) if e.size else None,
            "p90_abs": float(np.quantile(e, 0.9)) if e.size else None,
            "signed_median": float(np.median([r["error"] for r in rows])) if e.size else None}


def judge(folder: Path, root: Path | None = None) -> dict:
    root = Path(root or records_root())
    calls = kernel_calls(folder)
    factors = {"h100_timed_committed": attention_dropout_terms("h100", root).get("cudnn", {}),
               "h100_kernel": attention_dropout_kernel_terms("h100", root).get("cudnn", {}),
               "h200_kernel": attention_dropout_kernel_terms("h200", root).get("cudnn", {})}
    out = {"folder": f"{Path(folder).parent.name}/{Path(folder).name}", "factors": factors, "forms": {}}
    for name, f in factors.items():
        rows = factor_errors(calls, f) if f else []
        out["forms"][name] = {**summary(rows), "rows": rows}
    k1, t, k3 = (out["forms"][n] for n in ("h100_kernel", "h100_timed_committed", "h200_kernel"))
    full = k1["n"] == 18 and k3["n"] == 18 and t["n"] == 18
    out["criteria"] = {
        "K1": bool(full and k1["median_abs"] <= MEDIAN_MAX and k1["p90_abs"] <= P90_MAX),
        "K2": bool(full and k1["median_abs"] <= t["median_abs"] - MARGIN),
        "K3": bool(full and k3["median_abs"] <= MEDIAN_MAX and k3["p90_abs"] <= P90_MAX),
        "all_held_out_present": bool(full)}
    out["verdict"] = "adopt" if all(out["criteria"].values()) else "not adopted"
    return out


def show(res: dict) -> None:
    print(f"{res['folder']}: 18 held-out kernel figures (9 calls x fwd, fwd+bwd)")
    for name, s in res["forms"].items():
        f = res["factors"][name]
        print(f"  {name:22s} fwd {f.get('fwd', float('nan')):.3f} bwd {f.get('bwd', float('nan')):.3f}: "
              f"median |error| {s['median_abs']:.1%}, P90 {s['p90_abs']:.1%}, signed median {s['signed_median']:+.1%}")
    print(f"  criteria {res['criteria']} -> {res['verdict']}")


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.dropout_kernel", __doc__)
    ap.add_argument("--fresh", type=entry.folder, default=None, help="a folder of s28mlm2's rows (default: every "
                    "committed <card>/s28mlm2/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the judgement (calibration/s28mlm3_judgement.json)")
    args = ap.parse_args(argv)
    folders = [args.fresh] if args.fresh else fresh_dirs()
    if not folders:
        print("error: --fresh: got none; allowed: a folder holding dense_dropout.csv and dense_dropout_kernels.csv",
              file=sys.stderr)
        return entry.EXIT_INVALID
    with entry.user_inputs("--fresh", args.fresh, "a folder holding s28mlm2's dense_dropout.csv and its kernels"):
        results = [judge(f) for f in folders]
    for res in results:
        show(res)
    entry.write_json(args.json, {"rule": "docs/notes/s28mlm3_rule.md", "cards": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
