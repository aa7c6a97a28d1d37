"""The simulation profile's dense BF16 sustained ratio from several held GEMMs (session s28tt2; rule, fitting
and held-out sets, criteria and guards: docs/notes/s28tt2_rule.md, committed before any figure under it).

The simulation profile (twin.costs.profile.load_profile) scales the fitted dense BF16 curve by
sustained_curves["gemm/bf16"], the burst / held time of sustained.csv's one shape; a burst runs at boost clock and
varies by card. The candidate (twin.costs.profile.ADOPT_SUSTAINED_FROM_HELD) scales it instead by
Profile.sustained_held: the median, over the fitting held GEMMs (sustained.csv's BF16 shape and s25dense's 8),
of the fitted curve's own time at the shape (in-layer factors cleared) over the steady held time. Judged on
held records the estimator never reads: s25dense2's 8 held GEMMs (H1), its in-hold MLP step's GEMM kernels (H2),
s24mlm's 8 s hold (H3), s25dense's 3 held triples (H4).

    python -m calibration.sustained_held [--gpu h100] [--write] [--json FILE] [--guards OFF.json ON.json]
      (--write: the profile's sustained_held; --json: the judgement, calibration/s28tt2_judgement.json;
       --guards: `twin validate --json` files of the same code with the switch off and on -> guards G1-G3)
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import dense_clock, entry
from calibration import records as rec
from calibration.fit import held_gemm_shape, sustained_ratios
from calibration.predict import gpu_spec
from twin.core.atomic import write_text
from twin.costs import compute
from twin.costs import profile as profile_mod
from twin.costs.profile import fitted_profile, load_profile, profile_from_json

KEY = "gemm/bf16"
H2_CASE = "mlp_d5120_f13824_t4096"   # the rule: mlp_d4096's in-hold profile did not hold the state
S24MLM = Path("s24mlm") / "sustained.csv"
JUDGEMENT = Path(__file__).resolve().parent / "s28tt2_judgement.json"


def held_bf16(path: Path) -> list[dict]:
    """A sustained.csv's dense BF16 GEMMs: shape and steady held seconds (sustained_ratios' second half)."""
    _, per_kernel = sustained_ratios(path)
    return [{"shape": held_gemm_shape(k["config"]), "held_s": k["sustained_s"]} for k in per_kernel
            if k["precision"] == "bf16" and held_gemm_shape(k["config"]) is not None]


def s25_gemms(gpu: str, root: Path | str, records: Path) -> list[dict]:
    """An s25dense folder's held GEMMs (kind gemm): shape and steady held seconds (windows from 1.5 s)."""
    df = dense_clock.load(gpu, root, records)
    out = []
    for _, g in df[df["kind"] == "gemm"].groupby("case", sort=False) if len(df) else []:
        hold = dense_clock.steady_windows(g[g["phase"] == "hold"])
        if len(hold):
            out.append({"case": g["case"].iloc[0], "shape": dense_clock.case_gemms(g.iloc[0])[0],
                        "held_s": float(pd.to_numeric(hold["time_s"]).mean())})
    return out


def fitting_rows(gpu: str, root: Path | str | None = None) -> list[dict]:
    """The rule's fitting set with each GEMM's fitted-curve seconds and curve / held ratio: sustained.csv's
    BF16 shape and s25dense's 8 held GEMMs. [] where the GPU has no s25dense records (one shape is no median)."""
    root = rec.records_root() if root is None else root
    s25 = s25_gemms(gpu, root, dense_clock.RECORDS)
    if not s25:
        return []
    prof, spec = fitted_profile(gpu).alone(), gpu_spec(gpu)
    rows = [{"source": "sustained.csv", **r} for r in held_bf16(Path(root) / gpu / "sustained.csv")]
    rows += [{"source": "s25dense", **r} for r in s25]
    for r in rows:
        r["curve_s"] = compute.gemm_time_s(*r["shape"], "bf16", spec, prof)
        r["ratio"] = r["curve_s"] / r["held_s"]
    return rows


def held_terms(gpu: str, root: Path | str | None = None) -> dict:
    """Profile.sustained_held: {"gemm/bf16": min(1, median curve / held)} over the fitting set; {} without one."""
    root = rec.records_root() if root is None else root
    rows = fitting_rows(gpu, root)
    return {KEY: float(min(1.0, np.median([r["ratio"] for r in rows])))} if rows else {}


def write_held(gpu: str, root: Path | str | None = None, profiles_dir=profile_mod.PROFILES) -> dict:
    """Write `sustained_held` into the committed profile JSON (after sustained_vs_curve, else after
    sustained_curves; nothing else changes, no refit) and return it. A GPU without terms loses the key."""
    root = rec.records_root() if root is None else root
    path = Path(str(profiles_dir)) / f"{gpu}.json"
    data = json.loads(path.read_text())
    terms = held_terms(gpu, root)
    after = "sustained_vs_curve" if "sustained_vs_curve" in data else "sustained_curves"
    out = {}
    for key, value in data.items():
        if key != "sustained_held":
            out[key] = value
        if key == after and terms:
            out["sustained_held"] = terms
    profile_from_json(out)   # still a profile
    write_text(path, json.dumps(out, indent=1, sort_keys=False) + "\n")
    return terms


@contextmanager
def from_held(on: bool):
    """The twin with ADOPT_SUSTAINED_FROM_HELD on or off; restored after."""
    saved = profile_mod.ADOPT_SUSTAINED_FROM_HELD
    profile_mod.ADOPT_SUSTAINED_FROM_HELD = on
    try:
        yield
    finally:
        profile_mod.ADOPT_SUSTAINED_FROM_HELD = saved


def sim_profiles(gpu: str) -> dict:
    """The simulation profile with the switch off (load_profile) and on: the committed JSON with sustained_held
    as held_terms gives it (the committed JSON carries it only once the switch is on, see the note)."""
    with from_held(False):
        off = load_profile(gpu)
    data = json.loads(Path(str(profile_mod.profiles_dir().joinpath(f"{gpu}.json"))).read_text())
    on = profile_from_json({**data, "sustained_held": held_terms(gpu)}).as_stack(fp8_quant_fused=True)
    return {"off": off, "on": on.under_sustained_load(gpu in profile_mod.ADOPT_SUSTAINED_VS_CURVE, from_held=True)}


def gemms_s(shapes, gpu: str, prof) -> float:
    spec = gpu_spec(gpu)
    return float(sum(compute.gemm_time_s(m, n, k, "bf16", spec, prof) for m, n, k in shapes))


def summary(errors) -> dict:
    e = np.abs(np.asarray(errors, float))
    return {"n": int(len(e)), "median": float(np.median(e)), "p90": float(np.quantile(e, 0.9)),
            "signed_median": float(np.median(np.asarray(errors, float)))} if len(e) else {"n": 0}


def judge(gpu: str = "h100", root: Path | str | None = None) -> dict:
    """The rule's held-out figures H1-H4, simulation profile off and on, and its criteria 1-4."""
    root = rec.records_root() if root is None else root
    rows = fitting_rows(gpu, root)
    if not rows:
        return {}
    sims = sim_profiles(gpu)
    out = {"gpu": gpu, "sustained_held": held_terms(gpu, root),
           "fitting": [{"source": r["source"], "shape": list(r["shape"]), "held_s": r["held_s"],
                        "curve_s": r["curve_s"], "ratio": r["ratio"]} for r in rows]}
    h1 = s25_gemms(gpu, root, dense_clock.RECORDS2)
    out["H1_s25dense2_gemms"] = {s: summary([gemms_s([r["shape"]], gpu, p) / r["held_s"] - 1 for r in h1])
                                 for s, p in sims.items()}
    d2 = dense_clock.load(gpu, root, dense_clock.RECORDS2)
    g = d2[d2["case"] == H2_CASE]
    kern_s = dense_clock.in_hold_step_s(g, True)
    shapes = dense_clock.case_gemms(g.iloc[0])
    out["H2_in_hold_mlp_step"] = {"kernels_s": kern_s, **{s: gemms_s(shapes, gpu, p) / kern_s - 1
                                                          for s, p in sims.items()}}
    h3 = held_bf16(Path(root) / gpu / S24MLM)
    out["H3_s24mlm_hold"] = {s: [gemms_s([r["shape"]], gpu, p) / r["held_s"] - 1 for r in h3] for s, p in sims.items()}
    d1 = dense_clock.load(gpu, root, dense_clock.RECORDS)
    h4 = []
    for case, t in d1[d1["kind"] == "triple"].groupby("case", sort=False):
        hold = dense_clock.steady_windows(t[t["phase"] == "hold"])
        h4.append((dense_clock.case_gemms(t.iloc[0]), float(pd.to_numeric(hold["time_s"]).mean())))
    out["H4_s25dense_triples"] = {s: summary([gemms_s(sh, gpu, p) / held - 1 for sh, held in h4])
                                  for s, p in sims.items()}
    c1, c2, c3, c4 = (out[k] for k in ("H1_s25dense2_gemms", "H2_in_hold_mlp_step", "H3_s24mlm_hold",
                                       "H4_s25dense_triples"))
    out["criteria"] = {
        "1_held_gemms_other_card": bool(c1["on"]["median"] <= 0.04 and c1["on"]["p90"] <= 0.08
                                        and c1["on"]["median"] < c1["off"]["median"]),
        "2_in_hold_step_gemms": bool(abs(c2["on"]) <= 0.05 and abs(c2["on"]) < abs(c2["off"])),
        "3_s24mlm_hold": bool(c3["on"] and all(abs(a) < abs(b) for a, b in zip(c3["on"], c3["off"]))),
        "4_held_triples": bool(c4["on"]["median"] < c4["off"]["median"]),
    }
    return out


SERVE_FIGURES = ("output_tokens_per_s", "ttft_p50_s", "ttft_p99_s")
SIM_SECTIONS = {"h800_trace", "published_runs", "deepseek_serving_profiles", "serve_load", "sm_reserve"}


def changed_sections(off: dict, on: dict) -> list[str]:
    """The `twin validate --json` top-level sections (serve_load and sm_reserve per GPU) whose content differs."""
    out = []
    for key in sorted(set(off) | set(on)):
        if key == "inputs":
            continue
        a, b = off.get(key), on.get(key)
        if key in ("serve_load", "sm_reserve") and isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}/{g}" for g in sorted(set(a) | set(b)) if a.get(g) != b.get(g)]
        elif a != b:
            out.append(key)
    return out


def within_10(runs: list, figure: str) -> int:
    return sum(1 for r in runs if r.get("split") != "fit" and abs(r[f"{figure}_rel_error"]) <= 0.10)


def guards(off: dict, on: dict) -> dict:
    """The rule's guards G1-G3 from `twin validate --json` off and on (same code)."""
    changed = changed_sections(off, on)
    allowed = [c for c in changed if c.split("/")[0] in SIM_SECTIONS or
               (c.startswith("prereg_") and all(off[c].get(k) == on[c].get(k) for k in off[c]
                                                if not k.startswith("diagnostic")))]
    serve = {}
    g2 = True
    for gpu in ("h100", "h100x2"):
        a, b = off["serve_load"][gpu], on["serve_load"][gpu]
        for fig in SERVE_FIGURES:
            ma = a["holdout"]["figures"][fig]["median_abs_rel_error"]
            mb = b["holdout"]["figures"][fig]["median_abs_rel_error"]
            wa, wb = within_10(a["runs"], fig), within_10(b["runs"], fig)
            serve[f"{gpu}/{fig}"] = {"off": ma, "on": mb, "within_10_off": wa, "within_10_on": wb}
            g2 &= mb - ma <= 0.03 and wb >= wa - 1
    pa, pb = off["published_runs"]["summary"], on["published_runs"]["summary"]
    ta, tb = off["h800_trace"]["chunk_pair"]["rel_error"], on["h800_trace"]["chunk_pair"]["rel_error"]
    return {"changed": changed, "serve_load_holdout": serve,
            "h800_chunk_pair_rel_error": {"off": ta, "on": tb},
            "published_median_abs_rel_error": {"off": pa["median_abs_rel_error"], "on": pb["median_abs_rel_error"]},
            "published_within_row_target": {"off": pa["num_within_row_target"], "on": pb["num_within_row_target"]},
            "G1_only_simulation_figures": bool(changed) and allowed == changed and not any("h200" in c for c in changed),
            "G2_serving_holdout": bool(g2),
            "G3_sizes": bool(abs(abs(tb) - abs(ta)) <= 0.02
                             and pb["median_abs_rel_error"] - pa["median_abs_rel_error"] <= 0.03)}


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.sustained_held", __doc__)
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--write", action="store_true", help="write sustained_held into the h100 and h200 profiles")
    ap.add_argument("--json", metavar="FILE", help="write the judgement here (the committed one: "
                                                   "calibration/s28tt2_judgement.json)")
    ap.add_argument("--guards", nargs=2, metavar=("OFF", "ON"), type=Path,
                    help="`twin validate --json` files, switch off and on (same code): the guards G1-G3")
    args = ap.parse_args(argv)
    if args.write:
        for gpu in ("h100", "h200"):
            print(gpu, "sustained_held", write_held(gpu))
    out = judge(args.gpu)
    if not out:
        print(f"{args.gpu}: no held multi-shape records ({dense_clock.RECORDS}): no sustained_held")
        return 0
    if args.guards:
        with entry.user_inputs("--guards", " ".join(map(str, args.guards)), "two `twin validate --json` files"):
            off, on = (json.loads(p.read_text()) for p in args.guards)
            out["guards"] = guards(off, on)
    return entry.print_json(args.json, out)


if __name__ == "__main__":
    sys.exit(main())
