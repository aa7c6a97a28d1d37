"""Campaign s30mlm judged by its rule (docs/notes/s30mlm_rule.md): a held TP 8 GEMM beside real TP traffic, the
traffic beside it, and ADOPT_TP_TRAFFIC_MEASURED on the published rows.

Reads the ranks' files of real.bench.tp_traffic (tp_traffic_rank<r>.csv, every board of a host at once). Per window
(`ok`, traffic `covered`): the GEMM ratio = its time a call / the mean of the same board's and GEMM's `alone`
windows; the traffic ratio = the traffic's time a call while the GEMM ran / its time alone. The four figures
twin.training.step holds: TE_SM_GEMM_SLOWDOWN and TE_SM_COMM_SLOWDOWN (medians over the rs and ag windows: NCCL on
16 channels, high priority, standing in for TE's 16-SM kernels), TE_CE_GEMM_SLOWDOWN and TE_CE_COMM_SLOWDOWN (the ce
windows: copy-engine pulls), each floored at 1.0. Then, with them, the published rows with the switch off and on
(the rule's C1-C3) and, from two `twin validate --json` files, G1.

    python -m calibration.tp_traffic [--fresh DIR] [--json FILE] [--no-rows] [--guards OFF.json ON.json]
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from calibration import entry
from calibration import records as rec
from calibration.records_io import glob_csv, read_csv

MIN_BOARDS = 3              # C0: fewer boards give no verdict
COVERED_FRAC = 0.75         # C0: >= 75% of each traffic kind's windows covered
POWER_HELD_FRAC = 0.90      # C0: every board's median power over its alone windows >= 0.90 x its limit
NAMED_ROWS = ("mlm-gpt-119b", "mlm-gpt-462b", "mlm-gpt-177b-strong-96")   # the rule's C3
OFF_MEDIAN, OFF_WITHIN = 0.0697, 23   # the rule's C1 bar: published_runs on main after s29mlm (6.97%, 23 of 31)
# the twin's figures before the switch (the rule's "Why"): the H100 profile's untold slowdown at 16 SMs, unslowed
# kernels, a free copy engine
TODAY = {"sm_gemm": 1.352, "sm_comm": 1.0, "ce_gemm": 1.0, "ce_comm": 1.0}
CONSTANTS = {"sm_gemm": "TE_SM_GEMM_SLOWDOWN", "sm_comm": "TE_SM_COMM_SLOWDOWN", "ce_gemm": "TE_CE_GEMM_SLOWDOWN",
             "ce_comm": "TE_CE_COMM_SLOWDOWN"}


def fresh_dirs() -> list[Path]:
    """The committed campaign folders (<card>/s30mlm/ and round 2's <card>/s30mlm2/ under the records root)."""
    root = rec.records_root()
    return sorted(p for p in [*root.glob("*/s30mlm"), *root.glob("*/s30mlm2"), *root.glob("*/s30mlm3")]
                  if p.is_dir() and (glob_csv(p, "tp_traffic_rank*.csv") or glob_csv(p, "tp_te_order_rank*.csv")))


def judge_any(folder: Path) -> dict:
    """Round 3's judge for an s30mlm3 folder (round 2's records of a rerun), round 2's for a folder of
    tp_te_order_rank*.csv, round 1's otherwise."""
    if folder.name == "s30mlm3":
        return judge3(folder)
    return judge2(folder) if glob_csv(folder, "tp_te_order_rank*.csv") else judge(folder)


ROUND3_MIN_BOARDS = 2   # round 3: the copy engine's cost to a GEMM is its own board's


def judge3(folder: Path) -> dict:
    """Round 3 (the rule's "Round 3"): round 2's estimators on a rerun, the candidate narrowed to the copy-engine
    figures (the SM kernels keep today's pricing: TE_SM_GEMM_SLOWDOWN None, TE_SM_COMM_SLOWDOWN 1.0), C0 on the ce
    windows with >= 2 boards."""
    res = judge2(folder)
    res["round"] = 3
    res["figures"] = {"sm_gemm": None, "sm_comm": 1.0, "ce_gemm": res["figures"]["ce_gemm"],
                      "ce_comm": res["figures"]["ce_comm"]}
    c0 = res["C0"]
    c0["enough_boards"] = c0["boards"] >= ROUND3_MIN_BOARDS
    c0["all_covered"] = c0["covered"]["ce"] >= COVERED_FRAC
    c0["holds"] = c0["enough_boards"] and c0["all_capped"] and c0["all_covered"]
    return res


def _truthy(v) -> bool:
    return str(v).strip().lower() == "true"


def windows(folder: Path) -> list[dict]:
    """Every `ok` traffic window with its GEMM ratio and traffic ratio (and whether it was covered)."""
    out = []
    for path in glob_csv(folder, "tp_traffic_rank*.csv"):
        df = read_csv(path)
        df = df[df["status"] == "ok"]
        for (board, gemm_key), g in df.groupby([df["board"].astype(str), df["model"].astype(str) + "/" + df["gemm"]]):
            alone = g[g["condition"] == "alone"]["gemm_time_s"].astype(float)
            if alone.empty:
                continue
            base = float(alone.mean())
            for r in g[g["condition"] != "alone"].itertuples():
                out.append({"board": board, "gemm": gemm_key, "kind": str(r.condition), "rep": int(r.rep),
                            "covered": _truthy(r.covered), "gemm_ratio": float(r.gemm_time_s) / base,
                            "traffic_ratio": float(r.traffic_time_beside_s) / float(r.traffic_time_alone_s)})
    return out


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def judge(folder: Path) -> dict:
    """The four figures and the rule's C0 on one campaign folder."""
    rows = []
    for path in glob_csv(folder, "tp_traffic_rank*.csv"):
        rows.append(read_csv(path))
    gpu = str(rows[0]["gpu_name"].iloc[0]) if rows else ""
    power = {}
    for df in rows:
        a = df[(df["status"] == "ok") & (df["condition"] == "alone")]
        if len(a):
            power[str(a["board"].iloc[0])] = (float(a["power_w"].astype(float).median()),
                                              float(a["power_limit_w"].astype(float).iloc[0]))
    win = windows(folder)
    kept = [w for w in win if w["covered"]]
    per_kind = {}
    for kind in ("ce", "rs", "ag"):
        ws = [w for w in win if w["kind"] == kind]
        ok = [w for w in ws if w["covered"]]
        per_kind[kind] = {"windows": len(ws), "covered": len(ok), "covered_frac": len(ok) / len(ws) if ws else 0.0,
                          "gemm_ratio": _median([w["gemm_ratio"] for w in ok]),
                          "traffic_ratio": _median([w["traffic_ratio"] for w in ok])}
    sm = [w for w in kept if w["kind"] in ("rs", "ag")]
    ce = [w for w in kept if w["kind"] == "ce"]
    raw = {"sm_gemm": _median([w["gemm_ratio"] for w in sm]), "sm_comm": _median([w["traffic_ratio"] for w in sm]),
           "ce_gemm": _median([w["gemm_ratio"] for w in ce]), "ce_comm": _median([w["traffic_ratio"] for w in ce])}
    figures = {k: max(1.0, v) if not math.isnan(v) else float("nan") for k, v in raw.items()}
    capped = {b: p >= POWER_HELD_FRAC * lim for b, (p, lim) in power.items()}
    c0 = {"boards": len(power), "enough_boards": len(power) >= MIN_BOARDS, "capped": capped,
          "all_capped": bool(capped) and all(capped.values()),
          "covered": {k: v["covered_frac"] for k, v in per_kind.items()},
          "all_covered": all(v["covered_frac"] >= COVERED_FRAC for v in per_kind.values())}
    c0["holds"] = c0["enough_boards"] and c0["all_capped"] and c0["all_covered"]
    by_gemm = {}
    for w in kept:
        by_gemm.setdefault(w["gemm"], {}).setdefault(w["kind"], []).append(w["gemm_ratio"])
    return {"folder": f"{folder.parent.name}/{folder.name}", "round": 1, "gpu_name": gpu, "power_w": power,
            "per_kind": per_kind, "per_gemm": {g: {k: _median(v) for k, v in d.items()} for g, d in sorted(by_gemm.items())},
            "raw": raw, "figures": figures, "today": TODAY, "C0": c0}


SLOWDOWN_CAP = 10.0   # round 2: a kernel that made no progress beside the other


def invert(g_end: float, c_end: float, g: float, c: float) -> tuple[float, float]:
    """(sg, sc) of tp_overlap.shared_gpu_s from one iteration's ends (both from its start) and each kernel's time
    alone (the rule's round 2): the one that ends first sets its own factor; the other's factor is what makes its
    end come out, capped at SLOWDOWN_CAP where it made no progress."""
    def other(extra: float, span: float) -> float:
        left = 1.0 - extra / span
        return SLOWDOWN_CAP if left <= 1.0 / SLOWDOWN_CAP else 1.0 / left
    if c_end <= g_end:   # the transfer ends first
        return other(g_end - g, c_end), c_end / c
    return g_end / g, other(c_end - c, g_end)


def judge2(folder: Path) -> dict:
    """Round 2 (real.bench.tp_te_order, TE's bulk order): the four figures and the round's C0 on one folder."""
    power, gpu, out = {}, "", []
    expected = {k: 0 for k in ("ce", "rs", "ag")}
    for path in glob_csv(folder, "tp_te_order_rank*.csv"):
        df = read_csv(path)
        gpu = str(df["gpu_name"].iloc[0])
        a = df[(df["status"] == "ok") & (df["condition"] == "alone")]
        if len(a):
            power[str(a["board"].iloc[0])] = (float(a["power_w"].astype(float).median()),
                                              float(a["power_limit_w"].astype(float).iloc[0]))
        for kind in expected:
            expected[kind] += int((df["condition"] == kind).sum())
        ok = df[df["status"] == "ok"]
        for (board, gemm_key), grp in ok.groupby([ok["board"].astype(str), ok["model"].astype(str) + "/" + ok["gemm"]]):
            alone = grp[grp["condition"] == "alone"]["gemm_end_s"].astype(float)
            if alone.empty:
                continue
            g = float(alone.mean())
            for r in grp[grp["condition"].isin(list(expected))].itertuples():
                c_rows = grp[grp["condition"] == f"{r.condition}_alone"]["traffic_end_s"].astype(float)
                G, C = float(r.gemm_end_s), float(r.traffic_end_s)
                if c_rows.empty or not (G > 0 and C > 0):
                    continue
                c = float(c_rows.iloc[0])
                sg, sc = invert(G, C, g, c)
                out.append({"board": board, "gemm": gemm_key, "kind": str(r.condition), "rep": int(r.rep),
                            "g_alone_s": g, "c_alone_s": c, "g_end_s": G, "c_end_s": C, "sg": sg, "sc": sc})
    per_kind, per_gemm = {}, {}
    for kind in expected:
        ws = [w for w in out if w["kind"] == kind]
        per_kind[kind] = {"windows": expected[kind], "ok": len(ws), "ok_frac": len(ws) / expected[kind] if expected[kind] else 0.0,
                          "gemm_ratio": _median([w["sg"] for w in ws]), "traffic_ratio": _median([w["sc"] for w in ws])}
    for w in out:
        d = per_gemm.setdefault(w["gemm"], {})
        d.setdefault(f"{w['kind']} sg", []).append(w["sg"])
        d.setdefault(f"{w['kind']} sc", []).append(w["sc"])
    sm = [w for w in out if w["kind"] in ("rs", "ag")]
    ce = [w for w in out if w["kind"] == "ce"]
    raw = {"sm_gemm": _median([w["sg"] for w in sm]), "sm_comm": _median([w["sc"] for w in sm]),
           "ce_gemm": _median([w["sg"] for w in ce]), "ce_comm": _median([w["sc"] for w in ce])}
    figures = {k: max(1.0, v) if not math.isnan(v) else float("nan") for k, v in raw.items()}
    capped = {b: p >= POWER_HELD_FRAC * lim for b, (p, lim) in power.items()}
    c0 = {"boards": len(power), "enough_boards": len(power) >= MIN_BOARDS, "capped": capped,
          "all_capped": bool(capped) and all(capped.values()),
          "covered": {k: v["ok_frac"] for k, v in per_kind.items()},
          "all_covered": all(v["ok_frac"] >= COVERED_FRAC for v in per_kind.values())}
    c0["holds"] = c0["enough_boards"] and c0["all_capped"] and c0["all_covered"]
    return {"folder": f"{folder.parent.name}/{folder.name}", "round": 2, "gpu_name": gpu, "power_w": power,
            "per_kind": {k: {**v, "covered": v["ok"]} for k, v in per_kind.items()},
            "per_gemm": {g: {k: _median(v) for k, v in d.items()} for g, d in sorted(per_gemm.items())},
            "windows": out, "raw": raw, "figures": figures, "today": TODAY, "C0": c0}


def published_with(figures: dict) -> dict:
    """published_runs with ADOPT_TP_TRAFFIC_MEASURED off and on at `figures` (restored after)."""
    from calibration import published_runs as pr   # lazy: the twin's whole step machinery, only for this part
    from twin.training import step
    names = ["ADOPT_TP_TRAFFIC_MEASURED", *CONSTANTS.values()]
    saved = {n: getattr(step, n) for n in names}
    out = {}
    try:
        for label, on in (("off", False), ("on", True)):
            step.ADOPT_TP_TRAFFIC_MEASURED = on
            for key, name in CONSTANTS.items():
                setattr(step, name, figures[key])
            step._PREPARED.clear()   # costs built under other settings are kept there
            out[label] = {r.id: pr.evaluate(r).get("rel_error") for r in pr.load_runs()[0]}
    finally:
        for n, v in saved.items():
            setattr(step, n, v)
        step._PREPARED.clear()
    return out


def criteria(errors: dict) -> dict:
    """The rule's C1-C3 from {off, on} -> {row: rel_error or None}."""
    def summary(d):
        v = [abs(x) for x in d.values() if x is not None]
        return statistics.median(v), sum(x <= 0.10 for x in v)
    (m_off, w_off), (m_on, w_on) = summary(errors["off"]), summary(errors["on"])
    left = [k for k, x in errors["off"].items() if x is not None and abs(x) <= 0.10
            and (errors["on"][k] is None or abs(errors["on"][k]) > 0.10)]
    named = {lab: statistics.fmean(abs(errors[lab][k]) for k in NAMED_ROWS) for lab in ("off", "on")}
    return {"median_off": m_off, "median_on": m_on, "within_off": w_off, "within_on": w_on,
            "C1": m_on <= OFF_MEDIAN + 5e-5 and w_on >= OFF_WITHIN and m_on <= m_off + 1e-12,
            "C2_left_10pct": left, "C2": not left,
            "named_mean_off": named["off"], "named_mean_on": named["on"], "C3": named["on"] < named["off"]}


def te_rows() -> set[str]:
    """The published rows whose plan is TransformerEngine's userbuffers overlap at TP > 1."""
    from calibration import published_runs as pr   # lazy: as published_with
    return {r.id for r in pr.load_runs()[0]
            if r.plan.get("tp_comm_overlap") and r.plan.get("tp_overlap_kind") == "te_userbuffers" and r.plan.get("tp", 1) > 1}


def guards(off: dict, on: dict, allowed: set[str]) -> dict:
    """The rule's G1 from two `twin validate --json` results (switch off, on): the top-level sections that differ
    (beside inputs), and the published rows that moved outside `allowed` (the te_userbuffers rows)."""
    sections = sorted(k for k in set(off) | set(on) if k != "inputs" and off.get(k) != on.get(k))
    rows_off = {r["id"]: r for r in off["published_runs"]["rows"]}
    moved = sorted(r["id"] for r in on["published_runs"]["rows"] if r != rows_off.get(r["id"]))
    outside = [k for k in moved if k not in allowed]
    return {"sections_changed": sections, "rows_moved": moved, "rows_moved_outside": outside,
            "G1": sections in ([], ["published_runs"]) and not outside}


def show(res: dict, rows: bool) -> None:
    print(f"{res['folder']} (round {res['round']}, {res['gpu_name']}): {res['C0']['boards']} boards, power over alone windows "
          + ", ".join(f"{b} {p:.0f}/{lim:.0f} W" for b, (p, lim) in sorted(res["power_w"].items())))
    for kind, f in res["per_kind"].items():
        print(f"  {kind}: {f['covered']}/{f['windows']} windows covered (round 2: ran); GEMM x{f['gemm_ratio']:.4f}, "
              f"traffic x{f['traffic_ratio']:.4f}")
    for g, d in res["per_gemm"].items():
        print(f"    {g:16} " + "  ".join(f"{k} x{v:.4f}" for k, v in sorted(d.items())))
    print("  figures (floored at 1): " + ", ".join(
        f"{CONSTANTS[k]} {'None (today)' if v is None else f'{v:.4f}'} (raw {res['raw'][k]:.4f}; today {res['today'][k]:g})"
        for k, v in res["figures"].items()))
    c0 = res["C0"]
    least = ROUND3_MIN_BOARDS if res["round"] == 3 else MIN_BOARDS
    print(f"  C0: boards {c0['boards']} (>= {least}: {c0['enough_boards']}), capped {c0['all_capped']}, "
          f"covered {c0['all_covered']} -> {c0['holds']}")
    if "criteria" in res:
        c = res["criteria"]
        print(f"  published_runs: median {c['median_off'] * 100:.2f}% -> {c['median_on'] * 100:.2f}%, within 10% "
              f"{c['within_off']} -> {c['within_on']} (C1 {c['C1']}); left 10%: {c['C2_left_10pct'] or 'none'} "
              f"(C2 {c['C2']}); named rows' mean |error| {c['named_mean_off'] * 100:.2f}% -> "
              f"{c['named_mean_on'] * 100:.2f}% (C3 {c['C3']})")
        if "guards" in res:
            g = res["guards"]
            print(f"  G1: sections changed {g['sections_changed']}, rows moved outside te_userbuffers "
                  f"{g['rows_moved_outside'] or 'none'} -> {g['G1']}")
        if "round2_reading" in res:
            c = res["round2_reading"]["criteria"]
            print(f"  the same records by round 2's rule (all four figures, {res['round2_reading']['figures']}): median "
                  f"{c['median_on'] * 100:.2f}%, within 10% {c['within_on']}, left 10% {c['C2_left_10pct'] or 'none'} "
                  f"(C2 {c['C2']}): not adopted by that rule unless C2 holds")
        if rows:
            for k, off in res["errors"]["off"].items():
                on = res["errors"]["on"][k]
                if off is not None and on is not None and abs(on - off) > 5e-5:
                    print(f"    {k:28} {off * 100:+6.1f}% -> {on * 100:+6.1f}%")


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.tp_traffic", __doc__)
    ap.add_argument("--fresh", type=entry.folder, default=None,
                    help="a campaign folder: s30mlm's tp_traffic_rank*.csv or s30mlm2's tp_te_order_rank*.csv (default: "
                    "every committed <card>/s30mlm/, s30mlm2/, s30mlm3/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the judgement (calibration/s30mlm_judgement.json)")
    ap.add_argument("--no-rows", action="store_true", help="the figures and C0 only, not the published rows")
    ap.add_argument("--guards", nargs=2, type=Path, metavar=("OFF.json", "ON.json"), default=None,
                    help="G1 from `twin validate --json` with the switch off and on (at the measured figures)")
    args = ap.parse_args(argv)
    folders = [args.fresh] if args.fresh else fresh_dirs()
    if not folders:
        print("error: --fresh: got none; allowed: a folder holding tp_traffic_rank*.csv or tp_te_order_rank*.csv",
              file=sys.stderr)
        return entry.EXIT_INVALID
    with entry.user_inputs("--fresh", args.fresh, "a folder holding s30mlm's tp_traffic_rank*.csv"):
        results = [judge_any(f) for f in folders]
    for folder, res in zip(folders, results):
        if not args.no_rows and not any(v is not None and math.isnan(v) for v in res["figures"].values()):
            res["errors"] = published_with(res["figures"])
            res["criteria"] = criteria(res["errors"])
            if res["round"] == 3:   # the same records read by round 2's rule (its four figures): reported
                r2 = judge2(folder)
                errors2 = published_with(r2["figures"])
                res["round2_reading"] = {"figures": r2["figures"], "C0": r2["C0"], "errors": errors2,
                                         "criteria": criteria(errors2)}
            if args.guards and res["round"] == 3:   # the validate files are round 3's figures'
                with entry.user_inputs("--guards", args.guards, "two `twin validate --json` files"):
                    res["guards"] = guards(*(json.loads(Path(p).read_text()) for p in args.guards), te_rows())
            res["adopt"] = (res["C0"]["holds"] and all(res["criteria"][k] for k in ("C1", "C2", "C3"))
                            and res.get("guards", {}).get("G1", False))
        show(res, not args.no_rows)
    if args.json:
        kept = [{k: v for k, v in r.items() if k != "windows"} for r in results]   # per-window rows: the records'
        entry.write_json(args.json, {"rule": "docs/notes/s30mlm_rule.md", "cards": kept})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
