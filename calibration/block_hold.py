"""FlashAttention-2 held inside the torchtitan 8B rows' own block against FA2 held alone, and the rule's judgement
(session s30tt, issue 14; rule docs/notes/s30tt_rule.md, written before campaign s30tt's records).

Records: campaign s30tt (real/campaigns/s30tt.sh, real.bench.block_hold; <card>/s30tt/block_hold.csv): the
compiled, fully checkpointed Llama-3.1-8B block with tensorwise Float8 linears and flash SDPA at 32K and 8K
positions, flash SDPA alone at the same calls, the block's w1 GEMM alone in tensorwise FP8; each burst after an idle
pause, then held 12 s at the board's power limit, kernels profiled in the burst and at the end of the hold.

Per case X and kernel class c (gemm, attention_fwd = the flash forward and its recomputation, attention_bwd):
seconds a call at burst b and held h (each kernel's mean seconds a kernel call x its calls in the burst call),
the steady draw P_X (median power of the hold windows past half the hold), and the rule of
calibration.power_cap.fa2_factors applied in-block: F_X(c) = min(1, b / h) x ((W - idle) / (P_X - idle))^(1/3),
capped at the maximum clock. k(p, L) = F_block_L(p) / F_fa2_L(p): how much more FA2 slows under a limit inside the
block than alone. The candidate (twin.core.specs.ADOPT_FA2_IN_BLOCK_HELD) carries k as a ratio onto the H100's own
FA2 factors (s11fa2, calibration.power_cap.fa2_factors): F(p, L) x k(p, L), 16K at the mean of 8K's and 32K's k;
the catalog row h100-hbm2e-500w's `attention_clock_fracs_in_block` = F x k / the profile's attention ratio.

Round 2 (the rule's section "Round 2", no candidate): `--step FOLDER` (campaign s30tt's step_fp8 / step_bf16 parts:
real.fsdp_memory's rows and the last step's kernels) against the twin's prediction of the same step, pre-registered in
the rule: tt-8b-cp1-32k's plan on the records' GPU at their GPU count (FSDP over them, one sequence a GPU), the
training step's sustained profile. Measured: the median over steps 3 and 4 of the slower rank's step; per kernel
class the profiled step 5 on rank 0 beside the twin's 32 blocks (calibration.cp_block.twin_block_parts) and its
head, loss, FSDP and optimizer.

    python -m calibration.block_hold [--fresh FOLDER] [--json OUT]
    python -m calibration.block_hold --step FOLDER [--json OUT]
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from pathlib import Path
from unittest import mock

import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration import cp_block
from calibration.cp_block import measured_kernel_class
from calibration.power_cap import MAX_SM_CLOCK_MHZ, fa2_factors, power_law, profile_attention_ratio
from calibration.published_runs import load_runs, predicted_metric, scenario_of
from calibration.records_io import glob_csv, read_csv
from twin.core import scenario as scenario_mod
from twin.core.errors import InfeasiblePlan
from twin.training import step as step_mod
from twin.training.results import Perturb

CARD = "h100-hbm2e-500w"          # the capped card every torchtitan row runs on
LIMIT_W = 500.0                   # its power limit (hardware.toml power_limit_w)
PASSES = {"fwd": "attention_fwd", "bwd": "attention_bwd"}
LENGTHS = {8192: ("block8k", "fa2_8k"), 32768: ("block32k", "fa2_32k")}
P1_TOL, P2_MIN = 0.04, 0.015      # the rule's transfer premise and least effect
RULE = "docs/notes/s30tt_rule.md"


def fresh_dirs() -> list[Path]:
    """The committed campaign folders (<card>/s30tt/ under the records root)."""
    return sorted(p for p in rec.records_root().glob("*/s30tt") if p.is_dir() and glob_csv(p, "block_hold.csv"))


def load(folder: Path | str) -> pd.DataFrame:
    paths = glob_csv(Path(folder), "block_hold.csv")
    if not paths:
        raise FileNotFoundError(f"{folder}: no block_hold.csv")
    return pd.concat([read_csv(p) for p in paths], ignore_index=True)


def gpu_of(df: pd.DataFrame) -> str:
    """The records' GPU as a profile name (h200, h100), from the rows' gpu_name."""
    name = str(df["gpu_name"].dropna().iloc[0])
    return "h200" if "H200" in name else "h100" if "H100" in name else name


def class_seconds(df: pd.DataFrame, case: str) -> dict[str, dict[str, float]]:
    """{'burst'|'held': {class: seconds a call}}: each kernel's mean seconds a kernel call x its calls in the
    burst's profiled call (the held trace names the same kernels; a kernel the burst call did not run is left out)."""
    d = df[df["case"] == case]
    burst = d[d["phase"] == "burst_kernel"].set_index("kernel")
    held = d[d["phase"] == "held_kernel"].set_index("kernel")
    out = {"burst": {}, "held": {}}
    for name, r in burst.iterrows():
        cls, n = measured_kernel_class(str(name)), float(r["kernel_calls"])
        out["burst"][cls] = out["burst"].get(cls, 0.0) + float(r["time_s"]) * n
        if name in held.index:
            out["held"][cls] = out["held"].get(cls, 0.0) + float(held.loc[name, "time_s"]) * n
    return out


def steady(df: pd.DataFrame, case: str) -> dict:
    """The case's burst time a call, its hold windows, and past half the hold: time a call, median power and clock."""
    d = df[df["case"] == case]
    burst, hold = d[d["phase"] == "burst"], d[d["phase"] == "hold"]
    late = hold[hold["window"] > hold["window"].max() / 2]
    return {"burst_s": float(burst["time_s"].iloc[0]) if len(burst) else math.nan, "windows": len(hold),
            "steady_s": float(late["time_s"].mean()) if len(late) else math.nan,
            "power_w": float(late["power_w"].median()) if len(late) else math.nan,
            "sm_clock_mhz": float(late["sm_clock_mhz"].median()) if len(late) else math.nan}


def law_frac(power_w: float, clock_mhz: float, idle_w: float, exponent: float, limit_w: float = LIMIT_W) -> float:
    """The clock under limit_w over the steady clock at the records' limit (calibration.power_cap's law)."""
    if math.isnan(power_w) or limit_w >= power_w:
        return 1.0
    frac = ((limit_w - idle_w) / (power_w - idle_w)) ** (1.0 / exponent)
    return min(frac, MAX_SM_CLOCK_MHZ / clock_mhz) if clock_mhz == clock_mhz and clock_mhz > 0 else frac


def factors(df: pd.DataFrame) -> dict:
    """Per case: steady figures, class seconds and F(c) for its classes; k(p, L) and k_gemm."""
    gpu = gpu_of(df)
    law = power_law(gpu)
    cases = {}
    for case in sorted(set(df["case"])):
        st, cs = steady(df, case), class_seconds(df, case)
        lf = law_frac(st["power_w"], st["sm_clock_mhz"], law.static_w, law.exponent)
        f = {c: min(1.0, b / cs["held"][c]) * lf for c, b in cs["burst"].items()
             if cs["held"].get(c, 0) > 0 and c in ("gemm", "attention_fwd", "attention_bwd")}
        cases[case] = {**st, "law_frac": lf, "seconds": cs, "F": f}
    k = {}
    for p, cls in PASSES.items():
        for n, (blk, alone) in LENGTHS.items():
            fb, fa = cases.get(blk, {}).get("F", {}).get(cls), cases.get(alone, {}).get("F", {}).get(cls)
            k[f"{p}_{n}"] = fb / fa if fb and fa else math.nan
    fg_b, fg_a = cases.get("block32k", {}).get("F", {}).get("gemm"), cases.get("gemm_fp8", {}).get("F", {}).get("gemm")
    return {"gpu": gpu, "idle_w": law.static_w, "exponent": law.exponent, "cases": cases, "k": k,
            "k_gemm": fg_b / fg_a if fg_b and fg_a else math.nan}


def candidate_fracs(k: dict[str, float]) -> list[list]:
    """The card's attention_clock_fracs_in_block: s11fa2's H100 F(p, L) x k(p, L) / the profile's attention ratio
    (16K: k the mean of 8K's and 32K's)."""
    h100 = fa2_factors(LIMIT_W, "h100")
    ratio = profile_attention_ratio("h100")
    out = []
    for (p, n), f in sorted(h100.items()):
        kk = k.get(f"{p}_{n}", (k[f"{p}_8192"] + k[f"{p}_32768"]) / 2)
        out.append([p, n, round(f * kk / ratio, 3)])
    return out


def _row_error(run, gpu_fn=None) -> float | None:
    """A published row's error with the card replaced by gpu_fn(card) (None: as catalogued); None if refused."""
    sc = scenario_of(run)
    gpu = gpu_fn(sc.gpu) if gpu_fn is not None and run.gpu == CARD else sc.gpu
    step_mod._PREPARED.clear()
    try:
        with mock.patch.object(scenario_mod, "get_gpu", lambda name: gpu):
            sc = scenario_of(run)
            try:
                st = step_mod.simulate_step(sc, record_events=False)
            except InfeasiblePlan:   # the refused row: no error figure
                return None
            return predicted_metric(run, sc, st) / run.published - 1.0
    finally:
        step_mod._PREPARED.clear()


def published_with(fracs: list[list] | None, k_gemm: float = 1.0) -> dict[str, float | None]:
    """Every published row's error: the card's FA2 fracs replaced by `fracs` (None: as catalogued) and its
    clock_frac times k_gemm."""
    def card(g):
        if fracs is not None:
            g = dataclasses.replace(g, attention_clock_fracs=tuple((str(p), float(n), float(f)) for p, n, f in fracs))
        return dataclasses.replace(g, clock_frac=g.clock_frac * k_gemm) if k_gemm != 1.0 else g
    return {r.id: _row_error(r, card if (fracs is not None or k_gemm != 1.0) else None) for r in load_runs()[0]}


def summary(errors: dict[str, float | None]) -> dict:
    v = [abs(e) for e in errors.values() if e is not None]
    return {"median_abs": statistics.median(v), "within_10": sum(e <= 0.10 for e in v), "evaluated": len(v)}


def judge(folder: Path | str) -> dict:
    df = load(folder)
    fac = factors(df)
    res = {"folder": Path(folder).name, **fac, "gpu_name": str(df["gpu_name"].dropna().iloc[0]),
           "power_limit_w": float(pd.to_numeric(df["power_limit_w"], errors="coerce").dropna().iloc[0])
           if df["power_limit_w"].notna().any() else math.nan}
    # P0: whole records on the judged card
    cases, errs = fac["cases"], df[df["error"].astype("string").fillna("") != ""]
    whole = {c: (c in cases and cases[c]["windows"] >= 8 and not math.isnan(cases[c]["burst_s"])
                 and bool(cases[c]["seconds"]["held"])) for c in ("block32k", "block8k", "fa2_32k", "fa2_8k", "gemm_fp8")}
    flash = {c: all(cases[c]["seconds"][ph].get(cls, 0) > 0 for ph in ("burst", "held") for cls in PASSES.values())
             for c in ("block32k", "block8k") if c in cases}
    fwd_calls = {c: float(df[(df["case"] == c) & (df["phase"] == "burst_kernel")
                             & df["kernel"].astype(str).str.contains("flash_fwd")]["kernel_calls"].sum())
                 for c in ("block32k", "block8k")}
    res["P0"] = {"card": fac["gpu"] == "h200", "limit_700": abs(res["power_limit_w"] - 700) < 1, "whole": whole,
                 "flash_both_passes": flash, "flash_fwd_calls": fwd_calls, "errors": len(errs)}
    res["P0"]["holds"] = (res["P0"]["card"] and res["P0"]["limit_700"] and all(whole.values()) and len(flash) == 2
                          and all(flash.values()) and all(v == 2 for v in fwd_calls.values()) and not len(errs))
    h100 = fa2_factors(LIMIT_W, "h100")
    p1 = {f"{p}_{n}": (cases.get(alone, {}).get("F", {}).get(cls, math.nan), h100[(p, n)])
          for p, cls in PASSES.items() for n, (_, alone) in LENGTHS.items()}
    res["P1"] = {"pairs_h200_h100": p1, "holds": all(abs(a - b) <= P1_TOL for a, b in p1.values())}
    res["P2"] = {"holds": any(abs(v - 1) >= P2_MIN for v in fac["k"].values() if v == v)}
    if any(v != v for v in fac["k"].values()):
        res["fracs"] = None
        res["adopt"] = False
        return res
    fracs = candidate_fracs(fac["k"])
    res["fracs"] = fracs
    off, on = published_with(None), published_with(fracs)
    sym = published_with(fracs, fac["k_gemm"]) if fac["k_gemm"] == fac["k_gemm"] else None
    s_off, s_on = summary(off), summary(on)
    res["errors"] = {"off": off, "on": on, "on_with_gemm": sym}
    res["summary"] = {"off": s_off, "on": s_on, "on_with_gemm": summary(sym) if sym else None}
    c3 = [k for k, e in off.items() if e is not None and abs(e) <= 0.10 and (on[k] is None or abs(on[k]) > 0.10)]
    res["C1"] = abs(on["tt-8b-cp1-32k"]) < abs(off["tt-8b-cp1-32k"])
    res["C2"] = s_on["median_abs"] <= s_off["median_abs"]
    res["C3"] = {"left_10": c3, "holds": not c3}
    res["C4"] = s_on["within_10"] >= s_off["within_10"]
    if sym:
        s_sym = summary(sym)
        left = [k for k, e in off.items() if e is not None and abs(e) <= 0.10 and (sym[k] is None or abs(sym[k]) > 0.10)]
        res["S"] = {"median_abs": s_sym["median_abs"], "left_10": left,
                    "holds": s_sym["median_abs"] <= s_off["median_abs"] and not left}
    else:
        res["S"] = {"holds": False, "why": "no k_gemm"}
    res["adopt"] = bool(res["P0"]["holds"] and res["P1"]["holds"] and res["P2"]["holds"] and res["C1"] and res["C2"]
                        and res["C3"]["holds"] and res["C4"] and res["S"]["holds"])
    return res


TIMED_STEPS = (3, 4)   # step 1 compiles, 2 warms, 5 is profiled (real/campaigns/s30tt.sh round 2)


def step_prediction(gpu: str, num_gpus: int, precision: str) -> dict:
    """The twin's step of tt-8b-cp1-32k's plan on `gpu` x num_gpus (FSDP over them, one 32K sequence a GPU; no CP),
    with 'bf16' or the row's 'fp8' linears: {step_s, blocks_s, head_loss_s, fsdp_s, optimizer_s, classes: {class: s}}."""
    run = next(r for r in load_runs()[0] if r.id == "tt-8b-cp1-32k")
    plan = {k: v for k, v in run.plan.items() if k != "cp_kind"}
    if precision == "bf16":
        plan = {k: v for k, v in plan.items() if k != "fp8_recipe"} | {"gemm_precision": "bf16"}
    sc = scenario_of(dataclasses.replace(run, gpu=gpu, num_gpus=num_gpus, global_batch_seqs=num_gpus, plan=plan))
    st = step_mod.simulate_step(sc, record_events=False, check_memory=False)   # the time even where the count says no
    _, costs, *_ = step_mod._prepare(sc, None, Perturb(), False)
    ops = costs.blocks[0].ops
    block_s = sum(t.duration_s for t in (*costs._forward_tasks(ops), *costs._backward_tasks(ops, True)))
    head_s = sum(costs._compute_s(list(costs.extra_last), ph) for ph in ("fwd", "bwd_input", "bwd_weight"))
    parts = cp_block.twin_block_parts(cp_block.block_scenario(1, gpu, sc.workload.seq_len,
                                                              "fp8-tensorwise" if precision == "fp8" else "bf16"))
    classes = {c: sc.model.num_layers * (parts["fwd"][c] + parts["bwd"][c]) for c in parts["fwd"]}
    return {"step_s": st.step_time_s, "blocks_s": sc.model.num_layers * block_s, "head_loss_s": head_s,
            "fsdp_s": sum(v for k, v in st.op_time_s.items() if k.startswith("fsdp_")),
            "optimizer_s": st.op_time_s.get("optimizer", 0.0), "block_classes_s": classes,
            "memory_gib": st.memory_per_gpu_bytes / 2**30}


def step_check(folder: Path | str) -> dict:
    """Round 2: each part's measured step (median over TIMED_STEPS of the slower rank) beside the twin's prediction,
    the allocator's figures, and the profiled step's kernel seconds by class."""
    folder = Path(folder)
    out = {}
    for part in sorted(p for p in folder.iterdir() if p.is_dir() and glob_csv(p, "fsdp_memory_r*.csv")):
        rows = pd.concat([read_csv(p) for p in glob_csv(part, "fsdp_memory_r*.csv")], ignore_index=True)
        ok = rows[(rows["status"] == "ok") & rows["step"].isin(TIMED_STEPS)]
        slower = ok.groupby("step")["step_time_s"].max()
        gpu = "h200" if "H200" in str(rows["gpu_name"].iloc[0]) else "h100"
        precision = "fp8" if str(rows["float8"].iloc[0]) == "True" else "bf16"
        pred = step_prediction(gpu, int(rows["world_size"].iloc[0]), precision)
        measured = float(slower.median()) if len(slower) else math.nan
        res = {"gpu_name": str(rows["gpu_name"].iloc[0]), "world_size": int(rows["world_size"].iloc[0]),
               "precision": precision, "steps_ok": sorted(int(x) for x in rows[rows["status"] == "ok"]["step"].unique()),
               "step_times_s": {int(k): float(v) for k, v in rows.groupby("step")["step_time_s"].max().items()},
               "measured_s": measured, "predicted": pred, "rel_error": pred["step_s"] / measured - 1.0,
               "peak_reserved_gib": float(rows["peak_reserved_bytes"].max()) / 2**30,
               "peak_allocated_gib": float(rows["peak_allocated_bytes"].max()) / 2**30,
               "alloc_retries": int(rows["num_alloc_retries"].max())}
        kpaths = glob_csv(part, "fsdp_step_kernels_r0.csv")
        if kpaths:
            k = read_csv(kpaths[0])
            k = k.assign(cls=k["kernel"].astype(str).map(measured_kernel_class))
            res["profiled_classes_s"] = {c: float(v) for c, v in k.groupby("cls")["time_s"].sum().items()}
            res["profiled_kernels_s"] = float(k["time_s"].sum())
        out[part.name] = res
    if not out:
        raise FileNotFoundError(f"{folder}: no part folder holding fsdp_memory_r*.csv")
    return out


def show_step(res: dict) -> None:
    for part, r in res.items():
        p = r["predicted"]
        print(f"{part}: {r['gpu_name']} x {r['world_size']}, {r['precision']}, steps ok {r['steps_ok']}, "
              f"times {', '.join(f'{s}: {t:.3f}' for s, t in r['step_times_s'].items())} s")
        print(f"  measured {r['measured_s']:.3f} s, twin {p['step_s']:.3f} s ({r['rel_error']:+.1%}); twin blocks "
              f"{p['blocks_s']:.3f}, head+loss {p['head_loss_s']:.3f}, fsdp {p['fsdp_s']:.3f}, optimizer {p['optimizer_s']:.3f}")
        print(f"  allocator: peak reserved {r['peak_reserved_gib']:.1f} GiB, allocated {r['peak_allocated_gib']:.1f} GiB, "
              f"retries {r['alloc_retries']}; the twin's count {p['memory_gib']:.1f} GiB")
        if "profiled_classes_s" in r:
            cls = r["profiled_classes_s"]
            print(f"  profiled step (rank 0, kernels {r['profiled_kernels_s']:.3f} s): "
                  + ", ".join(f"{c} {v:.3f}" for c, v in sorted(cls.items()))
                  + "; twin's 32 blocks: " + ", ".join(f"{c} {v:.3f}" for c, v in p["block_classes_s"].items()))


def show(res: dict) -> None:
    print(f"{res['folder']}: {res['gpu_name']} at {res['power_limit_w']:.0f} W (idle {res['idle_w']:.1f} W, "
          f"exponent {res['exponent']:g})")
    print(f"  {'case':9} {'burst ms':>9} {'steady ms':>9} {'b/s':>6} {'W':>5} {'MHz':>6} {'law@500':>7}  "
          "class: burst -> held ms (F)")
    for case, c in res["cases"].items():
        cls = "; ".join(f"{k} {c['seconds']['burst'][k] * 1e3:.2f} -> {c['seconds']['held'].get(k, math.nan) * 1e3:.2f}"
                        + (f" ({c['F'][k]:.3f})" if k in c["F"] else "") for k in sorted(c["seconds"]["burst"]))
        print(f"  {case:9} {c['burst_s'] * 1e3:9.2f} {c['steady_s'] * 1e3:9.2f} {c['burst_s'] / c['steady_s']:6.3f} "
              f"{c['power_w']:5.0f} {c['sm_clock_mhz']:6.0f} {c['law_frac']:7.3f}  {cls}")
    print("  k (FA2 in the held block / alone): " + ", ".join(f"{k} {v:.4f}" for k, v in res["k"].items())
          + f"; k_gemm {res['k_gemm']:.4f}")
    print(f"  P0 {res['P0']['holds']}  P1 {res['P1']['holds']} "
          + ", ".join(f"{k} {a:.3f}/{b:.3f}" for k, (a, b) in res["P1"]["pairs_h200_h100"].items())
          + f"  P2 {res['P2']['holds']}")
    if res.get("fracs"):
        print(f"  candidate attention_clock_fracs_in_block: {res['fracs']}")
        so, sn = res["summary"]["off"], res["summary"]["on"]
        print(f"  median {so['median_abs']:.2%} -> {sn['median_abs']:.2%}, within 10% {so['within_10']} -> "
              f"{sn['within_10']} of {sn['evaluated']}; C1 {res['C1']} C2 {res['C2']} C3 {res['C3']['holds']} "
              f"{res['C3']['left_10']} C4 {res['C4']} S {res['S']['holds']}")
        for k, off in res["errors"]["off"].items():
            on, sym = res["errors"]["on"][k], (res["errors"]["on_with_gemm"] or {}).get(k)
            if off is not None and off != on:
                print(f"    {k:28} {off:+7.1%} -> {on:+7.1%}" + (f"   (with GEMMs: {sym:+.1%})" if sym is not None else ""))
    print(f"  adopt: {res['adopt']}")


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.block_hold", __doc__)
    ap.add_argument("--fresh", type=entry.folder, default=None,
                    help="a folder holding block_hold.csv (default: every committed <card>/s30tt/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the judgement (calibration/s30tt_judgement.json)")
    ap.add_argument("--step", type=entry.folder, default=None,
                    help="round 2: a folder of s30tt's step parts (step_fp8/, step_bf16/) against the twin's step")
    args = ap.parse_args(argv)
    if args.step:
        with entry.user_inputs("--step", args.step, "a folder holding s30tt's step_*/fsdp_memory_r*.csv"):
            res = step_check(args.step)
        show_step(res)
        entry.write_json(args.json, {"rule": RULE + " (Round 2)", "parts": res}, default=float)
        return 0
    folders = [args.fresh] if args.fresh else fresh_dirs()
    if not folders:
        print("error: --fresh: got none; allowed: a folder holding block_hold.csv", file=sys.stderr)
        return entry.EXIT_INVALID
    with entry.user_inputs("--fresh", args.fresh, "a folder holding s30tt's block_hold.csv"):
        results = [judge(f) for f in folders]
    for res in results:
        show(res)
    entry.write_json(args.json, {"rule": RULE, "records": results}, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
