"""s30dec (issue 13, round 3 of s29dec): a probed decode step as the run issues it (synchronised start, the experts
its few tokens reach, the kernels it launches at a fitted host cost per kernel).

s29dec / s29dec2 (docs/notes/s29dec.md, s29dec2.md) priced each probed decode step at ratio x probe a twin op,
back to back, and missed issue 13's decode target on three fresh H200 leases (in force 11.7% / 18.9%, 8.8% / 12.9%,
13.5% / 21.2%). Their residuals name three physical terms the judged twin leaves out, each already in the code base
but off:
  1. the synchronised window (whole_step.ADOPT_SYNCED_STEPS): every host_steps step starts on an idle device, so the
     GPU work still queued after the last issue (the tail) is in the step; the back-to-back window hides it
     (mixtral-slice -16..-25% back to back, -2..+10% synchronised);
  2. expert occupancy (whole_step.ADOPT_DECODE_OCCUPANCY, s22hostocc): a decode step's few tokens reach only some
     experts, and the grouped GEMMs stream only theirs (phi / mixtral at b2-b4: +9..+15% with balanced counts);
  3. the kernels the step launches (s29dec2's count: llama's 20 cuBLASLt split-K reduces the twin's op list lacks),
     each at a host cost per kernel w x ratio x probe, w FITTED on fitting records: the median over every probed
     decode step of the committed host_steps folders of the GPU (never this registration's lease) of the step's host
     seconds / (its probe x its lease's ratio x its record's profiled kernels) (fit_kernel_weight). w < 1: a decode
     step's kernel costs the host less than the fitting layers' (ratio's) kernel; a split-K reduce costs the same as
     any other kernel there (fitted apart they come out 0.93 and 0.93; docs/notes/s30dec_rule.md).

  in force   record = median_i grid_b2b(ratio x probe_i)                                   (s29dec's judged twin)
  candidate  record = median_i grid_synced_occ(ratio x probe_i x w x kernels / twin_ops)   (decode)
             record = median_i grid_synced(ratio x probe_i)                                 (prefill: reported)

grid, ratio and probe_i as calibration.s29dec; kernels = the record's own profiled step (serve_kernels.csv, a fitting
count of the same lease and shape, as s29dec2); twin_ops = step_host.twin_decode_ops at the record's mid cache length.
The switch ADOPT_SYNCED_KERNEL_HOST (default False) makes this section's judged line the candidate's; the rule
(docs/notes/s30dec_rule.md) decides it. The predictions file fixes, before the run, every grid and w; the guard
recomputes s29dec's two leases and s29dec2's lease under the candidate (their in-force figures from their own
committed predictions).

    python -m calibration.s30dec write                    # the predictions JSON (refuses a dirty tree)
    python -m calibration.s30dec [--json calibration/s30dec_judgement.json]
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import host_input
from calibration import prereg
from calibration import records as rec
from calibration import s29dec
from calibration import s29dec2
from calibration import step_host
from calibration import whole_step
from calibration.records_io import csv_exists, read_csv
from calibration.validate import MEDIAN_TARGET, P90_TARGET
from calibration.whole_step import gpu_spec

NAME = "s30dec"
# The candidate's switch (docs/notes/s30dec_rule.md): True makes the section's judged line the candidate's. Adopted by the
# rule (docs/notes/s30dec.md: fresh decode 4.9% / 9.2%, guards held).
ADOPT_SYNCED_KERNEL_HOST = True
PREDICTIONS_FILE = prereg.PREREG_DIR / "s30dec_predictions.json"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s30dec_judgement.json"
GPUS = prereg.GPUS
# real/campaigns/s30dec.sh's CASES, in its order (a test holds them equal): prompt lengths and batches no committed
# folder holds for these slices (s29dec: p1024 / p2048, decode b2, 8, 24, 48; s29dec2: p1024 / p2048, b4, 16, 32;
# s28blind: p1536, b4, 16, 64; s21host2: mixtral-slice p256 / p2048), and v2-lite-slice (MLA without a query
# low-rank, 64 experts top-6, 4 layers), which no host_steps folder holds.
CASES = (("llama3-8b-slice", 768, 64, (3,), (6, 12, 40)),
         ("dsv2-slice", 768, 64, (3,), (6, 12, 40)),
         ("phi35moe-slice", 1280, 64, (3,), (6, 12, 40)),
         ("olmoe-slice", 1280, 64, (3,), (6, 12, 40)),
         ("mixtral-slice", 768, 64, (3,), (6, 12, 40)),
         ("v2-lite-slice", 1280, 64, (3,), (6, 12, 40)))
REG = prereg.Registration(NAME, PREDICTIONS_FILE, NAME, CASES, section="serve")
LEASES = ("s30dec",)
# the guard leases (h200): each with the registration whose committed predictions give its twin in force
GUARD_LEASES = (("s29dec_a", s29dec.REG), ("s29dec_b", s29dec.REG), ("s29dec2", s29dec2.REG))
KEY = prereg.SERVE_KEY
# the fitting folders' files (real/bench/host_steps.py with its profiled decode step)
FIT_FILES = ("model.csv", "host_dispatch.csv", "serve_steps.csv", "serve_kernels.csv")


def case_rows() -> list[dict]:
    return prereg.case_rows(REG)


def guard_rows() -> list[dict]:
    """The guard leases' cases (h200 only: no other GPU ran them)."""
    return [r for _, reg in GUARD_LEASES[1:] for r in prereg.case_rows(reg) if r["gpu"] == "h200"]


def fit_folders(gpu: str, root: Path | str | None = None) -> list[Path]:
    """The GPU's committed host_steps folders with a profiled decode step (every FIT_FILES), this registration's own
    leases excluded."""
    base = Path(rec.records_root() if root is None else root) / gpu
    return [d for d in sorted(base.iterdir()) if d.is_dir() and d.name not in LEASES
            and all(csv_exists(d / f) for f in FIT_FILES)]


def kernel_host_values(folder: Path, gpu: str) -> pd.DataFrame:
    """Per probed decode step of a fitting folder: host_s / (probe x the lease's ratio x the record's profiled
    kernels), with the record's key; empty where the folder has no ratio."""
    model, hd, steps, kernels = (read_csv(folder / f) for f in FIT_FILES)
    ratio = step_host.fit_step_ratio(hd, steps, gpu)
    if not np.isfinite(ratio):
        return pd.DataFrame()
    out = []
    for _, r in model[model["bench"] == "decode"].iterrows():
        k = s29dec2.kernel_factor(kernels, r, 1)
        s = step_host.record_steps(steps, r)
        s = s[(s["host_probe_launch_s"].astype(float) > 0) & (s["host_s"].astype(float) > 0)]
        if not (np.isfinite(k) and k > 0 and len(s)):
            continue
        v = s["host_s"].astype(float) / (s["host_probe_launch_s"].astype(float) * ratio * k)
        out.append(pd.DataFrame({"folder": folder.name, "model": r["model"], "batch": int(r["batch"]),
                                 "prompt_len": int(r["prompt_len"]), "kernels": k, "value": v.to_numpy()}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def fit_kernel_weight(gpu: str, root: Path | str | None = None) -> dict:
    """w: the median over every probed decode step of the GPU's fitting folders of host_s / (probe x ratio x
    kernels); with the folders, the step and record counts."""
    frames = [kernel_host_values(d, gpu) for d in fit_folders(gpu, root)]
    v = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else None
    if v is None:
        return {"w": float("nan"), "num_steps": 0, "num_records": 0, "folders": []}
    return {"w": float(v["value"].median()), "num_steps": int(len(v)),
            "num_records": int(v.groupby(["folder", "model", "batch", "prompt_len"]).ngroups),
            "p10": float(v["value"].quantile(0.1)), "p90": float(v["value"].quantile(0.9)),
            "folders": sorted(v["folder"].unique().tolist())}


@contextlib.contextmanager
def decode_occupancy():
    """whole_step's decode expert counts under uniform routing's expected occupancy (s22hostocc) for the block."""
    before = whole_step.ADOPT_DECODE_OCCUPANCY
    whole_step.ADOPT_DECODE_OCCUPANCY = True
    try:
        yield
    finally:
        whole_step.ADOPT_DECODE_OCCUPANCY = before


def candidate_grid(row: dict) -> list[float]:
    """The candidate's grid of a row: synchronised window, decode expert occupancy, over GRID_S."""
    prof, spec = s29dec._profile(row["gpu"]), gpu_spec(row["gpu"])
    with decode_occupancy():
        return s29dec._ns(host_input.predict_at_host_s(row, spec, prof, s29dec.GRID_S, True))


def _twin_ops(r: dict) -> int:
    if r["bench"] != "decode":
        return 0
    mid = {"model": r["model"], "batch": r["batch"], "cache_len": int(r["prompt_len"]) + int(r["gen_len"]) // 2}
    return int(step_host.twin_decode_ops(mid, gpu_spec(r["gpu"]), s29dec._profile(r["gpu"])))


def predict(rows: list[dict], guards: list[dict]) -> dict:
    """s29dec's predictions of the fresh rows (plain, the in-force grid, the synchronised grid) plus, for them and the
    guard rows, the candidate's grid and the decode twin op count; w per GPU from the fitting folders."""
    out = s29dec.predict(rows)
    for r in out["rows"]:
        r["cand_grid_predicted_s"] = candidate_grid(r)
        r["twin_ops"] = _twin_ops(r)
    out["guard_rows"] = [{**r, "cand_grid_predicted_s": candidate_grid(r), "twin_ops": _twin_ops(r)} for r in guards]
    out["kernel_host_weight"] = {gpu: fit_kernel_weight(gpu) for gpu in GPUS}
    out.update(registration=NAME, rule="docs/notes/s30dec_rule.md",
               candidate_formula="decode record = median over probed steps i of grid_synced_occupancy(ratio x probe_i "
                                 "x w x kernels / twin_ops); kernels = the record's profiled step (serve_kernels.csv); "
                                 "w = kernel_host_weight[gpu].w; prefill: median_i grid_synced(ratio x probe_i)")
    return out


def write(path: Path = PREDICTIONS_FILE, allow_dirty: bool = False) -> dict:
    return s29dec.write(path, allow_dirty, predict_cases=lambda: predict(case_rows(), guard_rows()))


def load_predictions(path: Path = PREDICTIONS_FILE) -> dict:
    return s29dec.load_predictions(path)


def lease_rows(folder: Path, gpu: str, in_force_pred: dict, cand_pred: dict) -> tuple[pd.DataFrame, dict]:
    """s29dec.lease_rows under the twin in force's predictions (`rel_error`; plain, synced beside) plus each record's
    candidate (`cand_rel_error`) from the candidate's grid and w in `cand_pred` (its rows or guard_rows)."""
    rows, info = s29dec.lease_rows(folder, gpu, in_force_pred)
    if rows.empty:
        return rows, info
    steps = read_csv(folder / "serve_steps.csv")
    kernels = read_csv(folder / "serve_kernels.csv") if csv_exists(folder / "serve_kernels.csv") else pd.DataFrame(
        columns=["bench", "model", "batch", "prompt_len", "kernels"])
    cand_rows = [r for r in cand_pred["rows"] + cand_pred.get("guard_rows", []) if r["gpu"] == gpu]
    grid = pd.DataFrame([{**{k: r[k] for k in KEY}, "host_s_per_kernel": h, "predicted_s": t}
                         for r in cand_rows for h, t in zip(cand_pred["host_grid_s_per_kernel"],
                                                            r["cand_grid_predicted_s"])])
    ops = {tuple(r[k] for k in KEY): r["twin_ops"] for r in cand_rows}
    w = cand_pred["kernel_host_weight"][gpu]["w"]
    fac, cand = [], []
    for _, r in rows.iterrows():
        g = s29dec._case_grid(grid, gpu, r)
        if r["bench"] != "decode":
            fac.append(1.0)
            cand.append(step_host.record_prediction(g, steps, r, info["probe_ratio"]) if len(g) else float("nan"))
            continue
        k = s29dec2.kernel_factor(kernels, r, ops.get(tuple(r[k] for k in KEY), 0))
        fac.append(w * k)
        cand.append(step_host.record_prediction(g, steps, r, info["probe_ratio"] * w * k)
                    if np.isfinite(k) and len(g) else float("nan"))
    rows = rows.assign(kernel_host_factor=fac, cand_predicted_s=cand)
    rows["cand_rel_error"] = rows["cand_predicted_s"] / rows["measured_s"] - 1.0
    return rows, info


def _judge(root, leases) -> dict:
    """{"<gpu> <lease>": {ratio, probe, by_kind {bench: in_force, candidate, synced, plain}, rows}} for every
    (lease, in-force predictions, candidate predictions) of `leases` filed under root."""
    out = {}
    for lease, gpus, in_force, cand in leases:
        for gpu in gpus:
            rows, info = lease_rows(Path(root) / gpu / lease, gpu, in_force, cand)
            if rows.empty:
                continue
            groups = {b: {"in_force": s29dec2._group(sub["rel_error"]),
                          "candidate": s29dec2._group(sub["cand_rel_error"]),
                          "synced": s29dec2._group(sub["synced_rel_error"]),
                          "plain": s29dec2._group(sub["plain_rel_error"])}
                      for b, sub in rows.groupby("bench")}
            out[f"{gpu} {lease}"] = {**info, "by_kind": groups, "rows": rows.to_dict("records")}
    return out


def verdict(fresh: dict, guard: dict) -> dict:
    """The rule's verdict: adopt iff (C1) on the fresh lease the candidate's decode meets issue 13 (median <= 5%,
    P90 <= 10%, at least 12 decode records with a kernel count) and (G) on each guard lease the candidate's decode
    median and P90 are each no worse than the twin in force's."""
    d = [v["by_kind"].get("decode", {}).get("candidate", {}) for v in fresh.values()]
    met = bool(d) and all(g.get("meets_target") and g["num_cases"] >= 12 for g in d)
    guards = {}
    for k, v in guard.items():
        g = v["by_kind"].get("decode")
        if g and g["candidate"].get("num_cases"):
            guards[k] = bool(g["candidate"]["median_abs_rel_error"] <= g["in_force"]["median_abs_rel_error"]
                             and g["candidate"]["p90_abs_rel_error"] <= g["in_force"]["p90_abs_rel_error"])
    held = len(guards) == len(GUARD_LEASES) and all(guards.values())
    return {"fresh_decode_met": met, "guards_held": guards, "adopt": bool(met and held)}


def judge(root: Path | str | None = None, pred: dict | None = None) -> dict:
    root = rec.records_root() if root is None else root
    pred = load_predictions() if pred is None else pred
    fresh = _judge(root, [(lease, GPUS, pred, pred) for lease in LEASES])
    guard = _judge(root, [(lease, ("h200",), s29dec.load_predictions(reg.predictions_file), pred)
                          for lease, reg in GUARD_LEASES])
    return {"registration": NAME, "rule": "docs/notes/s30dec_rule.md", "predictions_commit": pred.get("code_commit"),
            "targets": {"median": MEDIAN_TARGET, "p90": P90_TARGET}, "adopted": ADOPT_SYNCED_KERNEL_HOST,
            "kernel_host_weight": pred["kernel_host_weight"], "leases": fresh, "guard_leases": guard,
            "verdict": verdict(fresh, guard)}


def section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part s30dec_synced_kernels: the judgement live on the records under `root`."""
    return judge(root)


def _fig(g: dict) -> str:
    return (f"{g['median_abs_rel_error']:.1%} / {g['p90_abs_rel_error']:.1%}" if g.get("num_cases") else "-")


def format_table(sec: dict) -> str:
    w = sec["kernel_host_weight"].get("h200", {})
    lines = [f"Probed decode as issued (s30dec: synchronised start, expert occupancy, kernels launched at w x ratio x "
             f"probe, w h200 {w.get('w', float('nan')):.3f}; candidate "
             f"{'ADOPTED' if sec['adopted'] else 'not adopted'}):"]
    for part, leases in (("fresh", sec["leases"]), ("guard", sec["guard_leases"])):
        if not leases:
            lines.append(f"  {part}: no records yet")
        for lease, v in leases.items():
            for bench, g in v["by_kind"].items():
                judged = g["candidate"] if sec["adopted"] else g["in_force"]
                lines.append(f"  synced-kernels {part} {lease} {bench}: {g['in_force']['num_cases']} rows, judged "
                             f"{_fig(judged)}; in force {_fig(g['in_force'])}, candidate {_fig(g['candidate'])} "
                             f"(target {MEDIAN_TARGET:.0%} / {P90_TARGET:.0%}: "
                             f"{'met' if g['candidate'].get('meets_target') else 'MISSED'}), synced {_fig(g['synced'])}")
            if part == "fresh":
                for r in v["rows"]:
                    lines.append(f"    {r['bench']} {r['model']} b{r['batch']} p{r['prompt_len']}: measured "
                                 f"{r['measured_s'] * 1e3:.2f} ms, in force {r['rel_error']:+.1%}, candidate "
                                 f"{r['cand_rel_error']:+.1%} (host factor {r['kernel_host_factor']:.3f})")
    v = sec["verdict"]
    lines.append(f"  synced-kernels verdict: fresh decode met {v['fresh_decode_met']}, guards {v['guards_held']}, "
                 f"adopt {v['adopt']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return s29dec.cli("s30dec", __doc__, write, judge, format_table, argv)


if __name__ == "__main__":
    sys.exit(main())
