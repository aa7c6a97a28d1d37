"""s28mlm2's judge (docs/notes/s28mlm2_rule.md): the form of attention dropout's cost on fresh cuDNN calls.

Campaign s28mlm2 (real/campaigns/s28mlm2.sh, `real.bench.dense_dropout --calls`) timed the cuDNN SDPA call alone
at Megatron's per-rank calls (16 heads at batch 1, 2, 4, 8; 12 and 7 heads at batch 1, 2, 4; seq 4096, head dim
128, causal) at dropout 0 and 0.1, forward (attn_fwd) and forward+backward (attn_fwd_bwd), the list twice. Per call
and probability: the median time over the passes. On the fitting call (16 heads x batch 1, the call the twin's
factor is measured at) two one-parameter forms are fitted per bench: M, a time factor r = t(0.1) / t(0); A, a cost
per drawn probability c = (t(0.1) - t(0)) / n, n = batch x heads x causal query-key pairs. Each held-out call's
time with dropout is predicted from its own measured time without: M t0 x r, A t0 + n x c (rel_error = predicted /
measured - 1). Criteria A1 (A: median |error| <= 5%, P90 <= 10%) and A2 (A's median at least 2 points below M's).
Reported: the sbhd-layout call against the bshd one, the card's batch-1 factor against the committed H100 one.

    python -m calibration.dropout_form [--fresh DIR] [--json FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration.dense_dropout import attention_dropout_terms, probabilities, with_kernel_sums
from calibration.records import records_root
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv
from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import fitted_profile

FRESH = "s28mlm2"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s28mlm2_judgement.json"
FIT_CALL = (16, 1)          # (heads a rank, batch): the committed factor's call, the rows of split 'fit'
MEDIAN_MAX, P90_MAX, MARGIN = 0.05, 0.10, 0.02
BENCHES = ("attn_fwd", "attn_fwd_bwd")
P_ON = 0.1


def fresh_dirs(root: Path | None = None) -> list[Path]:
    """Every <card>/s28mlm2/ folder holding the campaign's rows under the records root in use (--records)."""
    return sorted(d for d in Path(root or records_root()).glob(f"*/{FRESH}") if csv_exists(d / "dense_dropout.csv"))


def load(folder: Path) -> pd.DataFrame:
    df = read_csv(Path(folder) / "dense_dropout.csv")
    return df[df["sdpa_ran"] == "cudnn"] if (df["sdpa_backend"] == "cudnn").any() else df


def call_times(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (block, heads, batch, bench, dropout): the median time over the passes and the call's n."""
    keys = ["block", "num_heads", "batch", "seq_len", "bench", "attention_dropout", "split"]
    out = df.groupby(keys, as_index=False).agg(time_s=("time_s", "median"), passes=("time_s", "size"))
    out["n"] = [probabilities(r) for _, r in out.iterrows()]
    return out


def _t(calls: pd.DataFrame, block: str, heads: int, batch: int, bench: str, p: float) -> float | None:
    g = calls[(calls["block"] == block) & (calls["num_heads"] == heads) & (calls["batch"] == batch)
              & (calls["bench"] == bench) & np.isclose(calls["attention_dropout"], p)]
    return float(g["time_s"].iloc[0]) if len(g) else None


def judge(df: pd.DataFrame) -> dict:
    """The rule's figures for one card's fresh rows."""
    calls = call_times(df)
    bshd = calls[calls["block"] == "attention"]
    fit_rows = bshd[bshd["split"] == "fit"]
    heads_fit, batch_fit = int(fit_rows["num_heads"].iloc[0]), int(fit_rows["batch"].iloc[0])
    n_fit = float(bshd[(bshd["num_heads"] == heads_fit) & (bshd["batch"] == batch_fit)]["n"].iloc[0])
    fit = {}
    for bench in BENCHES:
        t0, t1 = (_t(calls, "attention", heads_fit, batch_fit, bench, p) for p in (0.0, P_ON))
        fit[bench] = {"t0_s": t0, "t1_s": t1, "factor": t1 / t0, "per_probability_s": (t1 - t0) / n_fit}
    rows = []
    for (heads, batch), _ in bshd.groupby(["num_heads", "batch"]):
        if (int(heads), int(batch)) == (heads_fit, batch_fit):
            continue
        n = float(bshd[(bshd["num_heads"] == heads) & (bshd["batch"] == batch)]["n"].iloc[0])
        for bench in BENCHES:
            t0, t1 = (_t(calls, "attention", int(heads), int(batch), bench, p) for p in (0.0, P_ON))
            if t0 is None or t1 is None:
                continue
            m = t0 * fit[bench]["factor"]
            a = t0 + n * fit[bench]["per_probability_s"]
            rows.append({"heads": int(heads), "batch": int(batch), "bench": bench, "t0_s": t0, "measured_s": t1,
                         "measured_factor": t1 / t0, "m_s": m, "a_s": a, "m_error": m / t1 - 1, "a_error": a / t1 - 1})
    out = {"fit_call": {"heads": heads_fit, "batch": batch_fit, "n": n_fit, **fit}, "held_out": rows}
    for form in ("m", "a"):
        e = np.abs([r[f"{form}_error"] for r in rows])
        out[form] = {"n": int(e.size), "median_abs": float(np.median(e)) if e.size else None,
                     "p90_abs": float(np.quantile(e, 0.9)) if e.size else None,
                     "signed_median": float(np.median([r[f"{form}_error"] for r in rows])) if e.size else None}
    a, m = out["a"], out["m"]
    full = a["n"] == 2 * (len(bshd.groupby(["num_heads", "batch"])) - 1) and a["n"] > 0
    out["criteria"] = {
        "A1": bool(full and a["median_abs"] <= MEDIAN_MAX and a["p90_abs"] <= P90_MAX),
        "A2": bool(full and a["median_abs"] <= m["median_abs"] - MARGIN),
        "all_held_out_present": bool(full)}
    out["verdict_forms"] = "adopt" if out["criteria"]["A1"] and out["criteria"]["A2"] else "not adopted"
    sb = {}
    for bench in BENCHES:   # report only: Megatron's sbhd views against the bshd call
        for p in (0.0, P_ON):
            s = calls[(calls["block"] == "attention_sbhd") & (calls["bench"] == bench)
                      & np.isclose(calls["attention_dropout"], p)]
            if len(s):
                r = s.iloc[0]
                b = _t(calls, "attention", int(r["num_heads"]), int(r["batch"]), bench, p)
                sb[f"{bench} p{p}"] = {"sbhd_s": float(r["time_s"]), "bshd_s": b,
                                       "ratio": float(r["time_s"]) / b if b else None}
    out["sbhd_vs_bshd"] = sb
    out["committed_h100_factor"] = h100 = attention_dropout_terms("h100").get("cudnn", {})
    out["committed_factor_on_this_card"] = committed_factor_errors(calls, h100)
    return out


def committed_factor_errors(calls: pd.DataFrame, factor: dict) -> list[dict]:
    """Report only: the twin's committed factors (forward; backward = the input-gradient pass) applied to each
    bshd call's own measured times without dropout (forward t0_f; backward t0_fb - t0_f), against its measured
    times with dropout: what the twin charges for dropout at each call, its curve's error aside."""
    if not factor:
        return []
    out = []
    bshd = calls[calls["block"] == "attention"]
    for (heads, batch), _ in bshd.groupby(["num_heads", "batch"]):
        h, b = int(heads), int(batch)
        f0, f1 = (_t(calls, "attention", h, b, "attn_fwd", p) for p in (0.0, P_ON))
        fb0, fb1 = (_t(calls, "attention", h, b, "attn_fwd_bwd", p) for p in (0.0, P_ON))
        if None in (f0, f1, fb0, fb1):
            continue
        fwd = f0 * factor["fwd"]
        fb = fwd + (fb0 - f0) * factor["bwd"]
        out.append({"heads": h, "batch": b, "fwd_error": fwd / f1 - 1, "fwd_bwd_error": fb / fb1 - 1})
    return out


def curve_errors(df: pd.DataFrame, gpu: str) -> list[dict]:
    """Report only: the card's fitted profile (cuDNN curves, no dropout) against each bshd call's measured times at
    dropout 0 (forward; forward + input gradient)."""
    prof, spec = fitted_profile(gpu), gpu_spec(gpu)
    calls = call_times(df)
    out = []
    for (heads, batch, seq), _ in calls[calls["block"] == "attention"].groupby(["num_heads", "batch", "seq_len"]):
        op = Op("attn_core", OpKind.ATTENTION, "attn", batch=int(batch), seq_len=int(seq), heads=int(heads),
                qk_dim=128, v_dim=128, causal=True)
        f, b = (compute.attention_time_s(op, d, spec, prof) for d in ("fwd", "bwd"))
        f0 = _t(calls, "attention", int(heads), int(batch), "attn_fwd", 0.0)
        fb0 = _t(calls, "attention", int(heads), int(batch), "attn_fwd_bwd", 0.0)
        if f0 and fb0:
            out.append({"heads": int(heads), "batch": int(batch), "fwd_error": f / f0 - 1, "fwd_bwd_error": (f + b) / fb0 - 1})
    return out


def judge_card(folder: Path) -> dict:
    df = load(folder)
    card = str(df["gpu_name"].iloc[0]) if len(df) else ""
    gpu = next((g for g in ("h200", "h100") if g.upper() in card.upper()), None)
    return {"folder": f"{Path(folder).parent.name}/{Path(folder).name}", "gpu_name": card,
            "sm_clock_mhz_median": float(pd.to_numeric(df["sm_clock_mhz"], errors="coerce").median()),
            "rows": int(len(df)), **judge(df),
            "card_curve_no_dropout": {"profile": gpu, "calls": curve_errors(df, gpu) if gpu else []},
            "kernels": kernel_level(folder)}


def kernel_level(folder: Path) -> dict:
    """Report only (seen after the verdict): the same judgement on each record's profiled kernel seconds instead of
    its event-timed seconds (which carry the host's launch gaps: ~0.05 ms on a 0.15 ms forward, ~0.25 ms on a
    batch-1 forward+backward)."""
    raw = read_csv(Path(folder) / "dense_dropout.csv")
    kernels = read_csv(Path(folder) / "dense_dropout_kernels.csv")
    df = with_kernel_sums(raw, kernels)
    df = df[df["sdpa_ran"] == "cudnn"] if (df["sdpa_backend"] == "cudnn").any() else df
    res = judge(df)
    res.pop("committed_h100_factor", None)
    card = str(df["gpu_name"].iloc[0]) if len(df) else ""
    gpu = next((g for g in ("h200", "h100") if g.upper() in card.upper()), None)
    res["card_curve_no_dropout"] = {"profile": gpu, "calls": curve_errors(df, gpu) if gpu else []}
    return res


def show(res: dict) -> None:
    f = res["fit_call"]
    print(f"{res['folder']} ({res['gpu_name']}, {res['rows']} rows, SM clock median {res['sm_clock_mhz_median']:.0f} MHz)")
    for bench in BENCHES:
        print(f"  fit {bench}: {f[bench]['t0_s'] * 1e3:.3f} -> {f[bench]['t1_s'] * 1e3:.3f} ms, factor "
              f"{f[bench]['factor']:.3f}, {f[bench]['per_probability_s'] * 1e15:.1f} fs a probability")
    print("  heads batch bench          t0 ms    t1 ms  factor    M err    A err")
    for r in res["held_out"]:
        print(f"  {r['heads']:5d} {r['batch']:5d} {r['bench']:12s} {r['t0_s'] * 1e3:8.3f} {r['measured_s'] * 1e3:8.3f} "
              f"{r['measured_factor']:7.3f} {r['m_error']:+8.1%} {r['a_error']:+8.1%}")
    for form in ("m", "a"):
        s = res[form]
        print(f"  {form.upper()}: {s['n']} figures, median |error| {s['median_abs']:.1%}, P90 {s['p90_abs']:.1%}, "
              f"signed median {s['signed_median']:+.1%}")
    print(f"  criteria {res['criteria']} -> {res['verdict_forms']}")
    for k, v in res["sbhd_vs_bshd"].items():
        print(f"  sbhd/bshd {k}: {v['sbhd_s'] * 1e3:.3f} / {v['bshd_s'] * 1e3:.3f} ms = {v['ratio']:.3f}")
    print(f"  committed H100 cuDNN factor (batch 1 x 16 heads): {res['committed_h100_factor']}")
    print("  the committed factors on this card's calls (report only): heads batch  fwd err  fwd+bwd err")
    for r in res["committed_factor_on_this_card"]:
        print(f"  {r['heads']:5d} {r['batch']:5d} {r['fwd_error']:+8.1%} {r['fwd_bwd_error']:+8.1%}")
    c = res["card_curve_no_dropout"]
    print(f"  the {c['profile']} fitted curve against the calls without dropout (report only): heads batch  fwd  fwd+bwd")
    for r in c["calls"]:
        print(f"  {r['heads']:5d} {r['batch']:5d} {r['fwd_error']:+8.1%} {r['fwd_bwd_error']:+8.1%}")
    k = res.get("kernels")
    if k:
        print("  on the profiled kernel seconds (report only):")
        for bench in BENCHES:
            print(f"    fit {bench}: factor {k['fit_call'][bench]['factor']:.3f}")
        for form in ("m", "a"):
            print(f"    {form.upper()}: median |error| {k[form]['median_abs']:.1%}, P90 {k[form]['p90_abs']:.1%}")
        print("    the committed factors on the kernels: " + ", ".join(
            f"{r['heads']}x{r['batch']} {r['fwd_error']:+.1%}/{r['fwd_bwd_error']:+.1%}" for r in k["committed_factor_on_this_card"]))
        print(f"    the {k['card_curve_no_dropout']['profile']} fitted curve on the kernels without dropout: " + ", ".join(
            f"{r['heads']}x{r['batch']} {r['fwd_error']:+.1%}/{r['fwd_bwd_error']:+.1%}" for r in k["card_curve_no_dropout"]["calls"]))


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.dropout_form", __doc__)
    ap.add_argument("--fresh", type=entry.folder, default=None, help="a folder of the campaign's rows (default: every "
                    f"committed <card>/{FRESH}/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the judgement (e.g. calibration/s28mlm2_judgement.json)")
    args = ap.parse_args(argv)
    folders = [args.fresh] if args.fresh else fresh_dirs()
    if not folders:
        print(f"error: --fresh: got none; allowed: a folder holding dense_dropout.csv (no committed */{FRESH}/ yet)",
              file=sys.stderr)
        return entry.EXIT_INVALID
    with entry.user_inputs("--fresh", args.fresh, "a folder holding the campaign's dense_dropout.csv"):
        results = [judge_card(f) for f in folders]
    for res in results:
        show(res)
    entry.write_json(args.json, {"rule": "docs/notes/s28mlm2_rule.md", "cards": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
