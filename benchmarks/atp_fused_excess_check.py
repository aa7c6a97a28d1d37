"""Figures (not a test): docs/notes/s20tt_rule.md's checks of twin.training.step.ADOPT_ATP_FUSED_EXCESS.

Step 1 (always): f from campaign s20tt's fitting rows (calibration.async_tp.fused_excess_frac), and
the held-out op checks H1-H3: the campaign's 405B rows and the committed h100x4/async_tp.csv rows,
each fused op's excess share (fused - GEMM - reduction) / collective measured beside the twin's
(calibration.async_tp.predict_op) without and with the floor f, and the fused-op time errors.
Step 2 (`--rows`, only once H1-H3 pass): every published row and V3's golden step with the switch
off and on at f (R1-R2).

Usage: PYTHONPATH=. python benchmarks/atp_fused_excess_check.py [--records CSV] [--rows]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from calibration import async_tp
from calibration import published_runs as pr
from calibration.predict import gpu_spec
from calibration.records import MEASUREMENTS_DIR
from calibration.records_io import read_csv
from twin.costs.profile import fitted_profile
from twin.training import step as step_mod

S20TT = MEASUREMENTS_DIR / "h100x2" / async_tp.S20TT_RECORDS


def held_out_ops(records_s20tt, gpu_s20tt: str = "h100") -> list[dict]:
    """Per held-out fused op: measured and twin excess shares, and the twin's fused-op time error,
    each record set costed on its own GPU's profile (the campaign's rows on `gpu_s20tt`, the
    committed TP4 rows on the H100's)."""
    held = [(records_s20tt[records_s20tt["split"] == "holdout"], gpu_s20tt), (async_tp.load("h100", gpus=4), "h100")]
    out = []
    for recs, gpu in held:
        spec, profile = gpu_spec(gpu), fitted_profile(gpu)
        shares = async_tp.fused_excess_shares(recs).set_index(["shape_tag", "kind"])
        for (tag, kind), s in shares.iterrows():
            g = recs[(recs["shape_tag"] == tag) & (recs["kind"] == kind)].iloc[0]
            m, n, k, w = int(g["m"]), int(g["n"]), int(g["k"]), int(g["world_size"])
            tw = {op: async_tp.predict_op(kind, op, m, n, k, w, spec, profile) for op in ("mm", "collective", "fused", "reduce")}
            red = tw["reduce"] if kind == "reduce_scatter" else 0.0
            fused_meas = float(recs[(recs["shape_tag"] == tag) & (recs["kind"] == kind) & (recs["op"] == "fused")]["time_s"].iloc[0])
            out.append({"tag": tag, "kind": kind, "tp": w, "gpu": gpu, "long_gemm": bool(s["long_gemm"]),
                        "excess_meas": float(s["excess"]), "excess_twin": (tw["fused"] - tw["mm"] - red) / tw["collective"],
                        "coll_twin_s": tw["collective"], "fused_twin_s": tw["fused"], "fused_meas_s": fused_meas})
    return out


def op_checks(f: float, ops: list[dict]) -> dict:
    long_rows = [o for o in ops if o["long_gemm"]]
    h1_off = statistics.median(abs(o["excess_meas"] - o["excess_twin"]) for o in long_rows)
    h1_on = statistics.median(abs(o["excess_meas"] - max(o["excess_twin"], f)) for o in long_rows)
    err_off = statistics.median(abs(o["fused_twin_s"] / o["fused_meas_s"] - 1) for o in ops)
    err_on = statistics.median(abs((o["fused_twin_s"] + max(0.0, f - o["excess_twin"]) * o["coll_twin_s"])
                                   / o["fused_meas_s"] - 1) for o in ops)
    return {"h1_off": h1_off, "h1_on": h1_on, "h1": h1_on < h1_off,
            "h2_off": err_off, "h2_on": err_on, "h2": err_on - err_off <= 0.02}


def rows(f: float) -> None:
    out = {}
    for adopt in (False, True):
        step_mod.ADOPT_ATP_FUSED_EXCESS, step_mod.ATP_FUSED_EXCESS_FRAC = adopt, f
        res = pr.compare()
        out[adopt] = res
    for a, b in zip(out[False]["rows"], out[True]["rows"]):
        moved = a["predicted"] != b["predicted"]
        ea = "-" if a["rel_error"] is None else f"{a['rel_error']:+.1%}"
        eb = "-" if b["rel_error"] is None else f"{b['rel_error']:+.1%}"
        print(f"{a['id']:28s} {ea:>7s} -> {eb:>7s}{'  moved' if moved else ''}")
    for adopt in (False, True):
        s = out[adopt]["summary"]
        print(f"switch {adopt}: {s['num_within_row_target']} of {s['num_evaluated']} within 10%, "
              f"median {s['median_abs_rel_error']:.2%}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=Path, default=S20TT)
    ap.add_argument("--rows", action="store_true")
    args = ap.parse_args(argv)
    recs = read_csv(args.records)
    gpu_names = set(recs["gpu_name"].dropna().astype(str))
    fit = async_tp.fused_excess_shares(recs)
    print(f"records {args.records} ({', '.join(sorted(gpu_names))}): fitting rows\n{fit.to_string()}")
    f = async_tp.fused_excess_frac(recs)
    n_fit = int(((fit["split"] == "fit") & fit["long_gemm"]).sum())
    h3 = f is not None and n_fit >= 2 and 0.0 <= f <= 1.0
    print(f"f = {f} from {n_fit} fitting rows; H3 {'holds' if h3 else 'fails'}; H100 rows: "
          f"{all('H100' in g for g in gpu_names)}")
    if f is None:
        return 1
    ops = held_out_ops(recs, "h200" if any("H200" in g for g in gpu_names) else "h100")
    for o in ops:
        print(f"  {o['gpu']} {o['tag']:30s} {o['kind']:15s} TP{o['tp']} long={o['long_gemm']!s:5s} excess measured {o['excess_meas']:.2f}, "
              f"twin {o['excess_twin']:.2f} -> {max(o['excess_twin'], f):.2f}; fused error "
              f"{o['fused_twin_s'] / o['fused_meas_s'] - 1:+.1%} -> "
              f"{(o['fused_twin_s'] + max(0.0, f - o['excess_twin']) * o['coll_twin_s']) / o['fused_meas_s'] - 1:+.1%}")
    c = op_checks(f, ops)
    print(f"H1 median |excess error| on long-GEMM rows {c['h1_off']:.3f} -> {c['h1_on']:.3f}: {'holds' if c['h1'] else 'fails'}")
    print(f"H2 median |fused error| {c['h2_off']:.1%} -> {c['h2_on']:.1%}: {'holds' if c['h2'] else 'fails'}")
    if args.rows:
        rows(f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
