"""Campaign s29mlm judged by its rule (docs/notes/s29mlm_rule.md): the spread of a host's boards' held rates, and
ADOPT_SLOWEST_BOARD_PACE on the published rows.

Reads the boards' files of real.bench.board_spread (board_spread_<board>.csv, one a board, all run at once): per
board and case, the burst rate and the held rate (the mean time a call over the windows at elapsed >= HELD_FROM_S),
the median board power over those windows against the power limit. cv = the sample standard deviation (ddof 1) of
the boards' held rates of the reference GEMM (`ref`) over their mean: the figure twin.training.step's
BOARD_HELD_RATE_CV holds. Then, with that cv, the published rows with the switch off and on (the rule's C1-C3).

    python -m calibration.board_spread [--fresh DIR] [--json FILE] [--no-rows] [--guards OFF.json ON.json]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from calibration import entry
from calibration import records as rec
from calibration.records_io import glob_csv, read_csv
from twin.costs import board_pace

HELD_FROM_S = 15.0          # the rule: a board's held windows are those at elapsed >= 15 s of its 30 s hold
POWER_HELD_FRAC = 0.95      # C0: median board power over the held windows >= 0.95 x the power limit
MIN_BOARDS = 3              # C0: fewer boards give no verdict
MLM_CV_RATIO_MAX = 3.0      # C0: the second shape's cv within a factor 3 of the reference's
# the rows the rule's C3 names (its "Why")
NAMED_ROWS = ("mlm-gpt-1.7b", "mlm-gpt-119b", "mlm-gpt-462b", "mlm-gpt-177b-strong-96", "tt-405b-3d-1f1b",
              "tt-405b-3d-interleaved", "tt-8b-fsdp128-compile", "tt-8b-fsdp128-compile-fp8")
OFF_MEDIAN, OFF_WITHIN = 0.0712, 18   # the rule's C1 bar: published_runs on this tree with the switch off (7.12%, 18)


def fresh_dirs() -> list[Path]:
    """The committed campaign folders (<card>/s29mlm/ under the records root)."""
    root = rec.records_root()
    return sorted(p for p in root.glob("*/s29mlm") if p.is_dir() and glob_csv(p, "board_spread_*.csv"))


def boards(folder: Path) -> dict:
    """{board: {case: {burst_rate, held_rate, held_windows, power_w, power_limit_w, sm_clock_mhz}}} (rates in
    FLOP/s), with the card's name."""
    out = {}
    gpu = ""
    for path in glob_csv(folder, "board_spread_*.csv"):
        df = read_csv(path)
        gpu = str(df["gpu_name"].iloc[0])
        for (board, case), g in df.groupby(["board", "case"], sort=True):
            b = g[g["phase"] == "burst"]
            h = g[(g["phase"] == "held") & (g["elapsed_s"] >= HELD_FROM_S)]
            flops = float(g["flops"].iloc[0])
            out.setdefault(str(board), {})[str(case)] = {
                "burst_rate": flops / float(b["time_s"].iloc[0]) if len(b) else float("nan"),
                "held_rate": flops / float(h["time_s"].mean()) if len(h) else float("nan"),
                "held_windows": int(len(h)),
                "power_w": float(h["power_w"].median()) if len(h) else float("nan"),
                "power_limit_w": float(g["power_limit_w"].iloc[0]),
                "sm_clock_mhz": float(h["sm_clock_mhz"].median()) if len(h) else float("nan")}
    return {"gpu_name": gpu, "boards": out}


def cv(rates: list[float]) -> float:
    """Sample standard deviation (ddof 1) over the mean; nan with fewer than two."""
    return statistics.stdev(rates) / statistics.fmean(rates) if len(rates) >= 2 else float("nan")


def judge(folder: Path) -> dict:
    """The spread and the rule's C0 on one campaign folder."""
    data = boards(folder)
    per = data["boards"]
    full = [b for b, cases in per.items() if cases.get("ref", {}).get("held_windows", 0) > 0]
    figures = {case: {kind: cv([per[b][case][kind] for b in full if case in per[b]])
                      for kind in ("held_rate", "burst_rate")} for case in ("ref", "mlm")}
    capped = {b: per[b]["ref"]["power_w"] >= POWER_HELD_FRAC * per[b]["ref"]["power_limit_w"] for b in full}
    ratio = figures["mlm"]["held_rate"] / figures["ref"]["held_rate"] if figures["ref"]["held_rate"] else float("nan")
    c0 = {"boards": len(full), "enough_boards": len(full) >= MIN_BOARDS, "capped": capped,
          "all_capped": bool(capped) and all(capped.values()), "mlm_over_ref_cv": ratio,
          "mlm_within_factor": 1.0 / MLM_CV_RATIO_MAX <= ratio <= MLM_CV_RATIO_MAX}
    c0["holds"] = c0["enough_boards"] and c0["all_capped"] and c0["mlm_within_factor"]
    return {"folder": folder.name if folder.name != "s29mlm" else f"{folder.parent.name}/s29mlm",
            "gpu_name": data["gpu_name"], "per_board": per, "cv": figures, "board_held_rate_cv": figures["ref"]["held_rate"],
            "C0": c0}


def published_with(cv_value: float) -> dict:
    """published_runs with ADOPT_SLOWEST_BOARD_PACE off and on at BOARD_HELD_RATE_CV = cv_value (restored after)."""
    from calibration import published_runs as pr   # lazy: the twin's whole step machinery, only for this part
    from twin.training import step
    saved = step.ADOPT_SLOWEST_BOARD_PACE, board_pace.BOARD_HELD_RATE_CV
    out = {}
    try:
        for label, on in (("off", False), ("on", True)):
            step.ADOPT_SLOWEST_BOARD_PACE, board_pace.BOARD_HELD_RATE_CV = on, cv_value
            out[label] = {r.id: pr.evaluate(r).get("rel_error") for r in pr.load_runs()[0]}
    finally:
        step.ADOPT_SLOWEST_BOARD_PACE, board_pace.BOARD_HELD_RATE_CV = saved
    return out


def criteria(errors: dict) -> dict:
    """The rule's C1-C3 from {off, on} -> {row: rel_error or None}."""
    def summary(d):
        v = [abs(x) for x in d.values() if x is not None]
        return statistics.median(v), sum(x <= 0.10 for x in v)
    (m_off, w_off), (m_on, w_on) = summary(errors["off"]), summary(errors["on"])
    left = [k for k, x in errors["off"].items() if x is not None and abs(x) <= 0.10
            and (errors["on"][k] is None or abs(errors["on"][k]) > 0.10)]
    named = {lab: statistics.median(abs(errors[lab][k]) for k in NAMED_ROWS) for lab in ("off", "on")}
    return {"median_off": m_off, "median_on": m_on, "within_off": w_off, "within_on": w_on,
            "C1": m_on <= OFF_MEDIAN + 5e-5 and w_on >= OFF_WITHIN and m_on <= m_off,
            "C2_left_10pct": left, "C2": not left,
            "named_median_off": named["off"], "named_median_on": named["on"], "C3": named["on"] < named["off"]}


TENSOR_COUNTS = ("weights", "gradients", "optimizer", "activations", "comm_buffers", "loss", "fsdp_gathered",
                 "recompute", "pp_outputs")   # G1 (amendment 1): these may not move; grad_queue (timing-derived) may


def guards(off: dict, on: dict) -> dict:
    """The rule's G1 from two `twin validate --json` results (switch off, on): the top-level sections that differ
    (beside inputs), and in published_runs the rows whose tensor counts or fit changed."""
    sections = sorted(k for k in set(off) | set(on) if k != "inputs" and off.get(k) != on.get(k))
    rows_off = {r["id"]: r for r in off["published_runs"]["rows"]}
    counts_moved, fits_moved, timing_moved = [], [], []
    for r in on["published_runs"]["rows"]:
        o = rows_off[r["id"]]
        a, b = o.get("memory_breakdown_bytes") or {}, r.get("memory_breakdown_bytes") or {}
        if any(a.get(k) != b.get(k) for k in TENSOR_COUNTS):
            counts_moved.append(r["id"])
        if o.get("memory_fits") != r.get("memory_fits"):
            fits_moved.append(r["id"])
        if a.get("grad_queue") != b.get("grad_queue"):
            timing_moved.append(r["id"])
    return {"sections_changed": sections, "tensor_counts_moved": counts_moved, "fits_moved": fits_moved,
            "grad_queue_moved": timing_moved,
            "G1": sections == ["published_runs"] and not counts_moved and not fits_moved}


def show(res: dict, rows: bool) -> None:
    print(f"{res['folder']} ({res['gpu_name']}): {res['C0']['boards']} boards")
    for b, cases in sorted(res["per_board"].items()):
        for case, f in sorted(cases.items()):
            print(f"  {b} {case:4} burst {f['burst_rate'] / 1e12:7.1f} TF/s  held {f['held_rate'] / 1e12:7.1f} TF/s "
                  f"({f['held_windows']} windows, {f['sm_clock_mhz']:.0f} MHz, {f['power_w']:.0f} of {f['power_limit_w']:.0f} W)")
    for case, f in res["cv"].items():
        print(f"  cv {case}: held {f['held_rate'] * 100:.3f}%  burst {f['burst_rate'] * 100:.3f}%")
    c0 = res["C0"]
    print(f"  C0: boards {c0['boards']} (>= {MIN_BOARDS}: {c0['enough_boards']}), capped {c0['all_capped']}, "
          f"mlm / ref cv {c0['mlm_over_ref_cv']:.2f} (within {MLM_CV_RATIO_MAX:g}x: {c0['mlm_within_factor']}) -> {c0['holds']}")
    if "criteria" in res:
        c = res["criteria"]
        print(f"  published_runs at cv {res['board_held_rate_cv'] * 100:.3f}%: median {c['median_off'] * 100:.2f}% -> "
              f"{c['median_on'] * 100:.2f}%, within 10% {c['within_off']} -> {c['within_on']} (C1 {c['C1']}); "
              f"left 10%: {c['C2_left_10pct'] or 'none'} (C2 {c['C2']}); named rows' median "
              f"{c['named_median_off'] * 100:.2f}% -> {c['named_median_on'] * 100:.2f}% (C3 {c['C3']})")
        if "guards" in res:
            g = res["guards"]
            print(f"  G1: sections changed {g['sections_changed']}, tensor counts moved {g['tensor_counts_moved'] or 'none'}, "
                  f"fits moved {g['fits_moved'] or 'none'}, grad_queue moved {g['grad_queue_moved'] or 'none'} -> {g['G1']}")
        if rows:
            for k, off in res["errors"]["off"].items():
                on = res["errors"]["on"][k]
                if off is not None:
                    print(f"    {k:28} {off * 100:+6.1f}% -> {on * 100:+6.1f}%")


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.board_spread", __doc__)
    ap.add_argument("--fresh", type=entry.folder, default=None,
                    help="a folder of s29mlm's board_spread_*.csv (default: every committed <card>/s29mlm/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the judgement (calibration/s29mlm_judgement.json)")
    ap.add_argument("--no-rows", action="store_true", help="the spread and C0 only, not the published rows")
    ap.add_argument("--guards", nargs=2, type=Path, metavar=("OFF.json", "ON.json"), default=None,
                    help="G1 from `twin validate --json` with the switch off and on (at the measured cv)")
    args = ap.parse_args(argv)
    folders = [args.fresh] if args.fresh else fresh_dirs()
    if not folders:
        print("error: --fresh: got none; allowed: a folder holding board_spread_*.csv", file=sys.stderr)
        return entry.EXIT_INVALID
    with entry.user_inputs("--fresh", args.fresh, "a folder holding s29mlm's board_spread_*.csv"):
        results = [judge(f) for f in folders]
    for res in results:
        if not args.no_rows and res["board_held_rate_cv"] == res["board_held_rate_cv"]:   # not nan
            res["errors"] = published_with(res["board_held_rate_cv"])
            res["criteria"] = criteria(res["errors"])
            if args.guards:
                with entry.user_inputs("--guards", args.guards, "two `twin validate --json` files"):
                    res["guards"] = guards(*(json.loads(Path(p).read_text()) for p in args.guards))
            res["adopt"] = (res["C0"]["holds"] and all(res["criteria"][k] for k in ("C1", "C2", "C3"))
                            and res.get("guards", {}).get("G1", False))
        show(res, not args.no_rows)
    entry.write_json(args.json, {"rule": "docs/notes/s29mlm_rule.md", "cards": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
