"""The twin's FlashAttention-2 cost against the flash calls of the long-context published rows'
per-GPU shapes (campaign s24long, real/bench/long_attention.py: long_attn.csv), and the criteria of
docs/notes/s24long_rule.md.

A long_attn row is one SDPA flash call as torchtitan makes it (repeat_kv, then SDPA), forward or
forward + backward. The twin costs it as a training step costs the call: one attention Op
(twin.costs.compute.attention_time_s on the profile's FA2 curves, `Profile.with_attention_kernel`)
at its heads, query length, key length (Op.kv_len) and mask (a lower-right causal call is the twin's
causal Op with kv_len > seq_len; a non-causal rectangle its causal=False Op), plus the repeat_kv copy
(the step's `repeat_kv` op: K and V read at the KV heads, written at the query heads, and back in the
backward). The profile is the committed one (twin/data/profiles/<gpu>.json, as `twin validate` predicts
the records: burst timings, not the sustained-load curves a training step uses) on its own card at its
own limit (h100: 700 W): the records' conditions.

    python -m calibration.long_attention FOLDER
    PYTHONPATH=. python benchmarks/long_attention_predictions.py   (the twin's seconds of every case, no records)
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.fit import PROFILES_DIR, profile_files
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv
from twin.costs import compute
from twin.costs.flops import BF16_BYTES, Op, OpKind
from twin.costs.profile import Profile, profile_from_json
from twin.core.specs import GPUSpec

LONG_ATTN_FILE = "long_attn.csv"
# rule criteria (docs/notes/s24long_rule.md), fixed before the records
TIE_TOL = 0.05          # T0: this GPU's 8B 32K causal call against h100/cp_chunks.csv's
NO_CHANGE_TOL = 0.10    # C1: every row's forward + backward within this: no model change
CLASS_SHIFT_TOL = 0.05  # C2/C3: a class's fitting ratio beyond this (both fitting rows the same sign)
HELD_OUT_TOL = 0.05     # C2/C3: every held-out row of the class within this under the class factor


def call_op(heads: int, head_dim: int, q_len: int, kv_len: int, mask: str, batch: int = 1) -> Op:
    """The twin's attention Op of one call (module docstring)."""
    if mask == "causal":
        return Op("attn_core", OpKind.ATTENTION, "attn", batch=batch, seq_len=q_len, heads=heads, qk_dim=head_dim,
                  v_dim=head_dim, causal=True, precision="bf16")
    return Op("attn_core", OpKind.ATTENTION, "attn", batch=batch, seq_len=q_len, heads=heads, qk_dim=head_dim,
              v_dim=head_dim, causal=mask == "lower_right", precision="bf16", kv_len=kv_len)


def _batch(row) -> int:
    return int(row.get("batch", 1)) if not pd.isna(row.get("batch", 1)) else 1


def _call_s(op: Op, direction: str, gpu: GPUSpec, fa2: Profile, shape_factor: bool) -> float:
    """The twin's seconds of one call; `shape_factor` False: on the FA2 curve alone, whatever the s24long
    switches say (the rule's baseline), the class's factor taken back off the kernel term."""
    t = compute.attention_time_s(op, direction, gpu, fa2)
    return t if shape_factor else (t - fa2.launch_s) / compute.fa2_shape_factor(op, fa2) + fa2.launch_s


def row_s(row, gpu: GPUSpec, fa2: Profile, shape_factor: bool = True) -> float:
    """The twin's seconds of a long_attn row: its call forward (and backward for fwd_bwd) and the
    repeat_kv copy each way (`fa2`: the profile with the FA2 curves; `shape_factor` False: the curve
    alone, the rule's baseline)."""
    H, K, E = int(row["num_heads"]), int(row["num_kv_heads"]), int(row["head_dim"])
    q, kv = int(row["q_len"]), int(row["kv_len"])
    B = _batch(row)
    op = call_op(H, E, q, kv, str(row["mask"]), B)
    dirs = ("fwd",) if row["phase"] == "fwd" else ("fwd", "bwd")
    t = sum(_call_s(op, d, gpu, fa2, shape_factor) for d in dirs)
    if K < H:
        copy_bytes = 2 * B * kv * (K + H) * E * BF16_BYTES
        t += sum(compute.memory_time_s(copy_bytes, gpu, fa2) for _ in dirs)
    return t


def call_class(row) -> str:
    """The rule's class of a row's call (twin.costs.compute.fa2_call_class)."""
    return compute.fa2_call_class(call_op(int(row["num_heads"]), int(row["head_dim"]), int(row["q_len"]),
                                          int(row["kv_len"]), str(row["mask"]), _batch(row)))


def load_rows(folder: Path | str) -> pd.DataFrame:
    df = read_csv(Path(folder) / LONG_ATTN_FILE)   # plain or compressed (records_io)
    if "batch" not in df.columns:   # run 1 (commit 03c2d4a) wrote no batch column: every call was batch 1
        df["batch"] = 1
    df["time_s"] = pd.to_numeric(df["time_s"], errors="coerce")
    return df[df["time_s"] > 0].reset_index(drop=True)


def compare(rows: pd.DataFrame, gpu: GPUSpec, profile: Profile, shape_factor: bool = False) -> pd.DataFrame:
    """rows with the twin's seconds (twin_s), its error (twin / measured - 1) and the call class;
    `shape_factor` False (the rule's baseline): the FA2 curve alone, True: as the twin costs it now."""
    fa2 = profile.with_attention_kernel("fa2")
    out = rows.copy()
    out["twin_s"] = [row_s(r, gpu, fa2, shape_factor) for _, r in rows.iterrows()]
    out["err"] = out["twin_s"] / out["time_s"] - 1.0
    out["cls"] = [call_class(r) for _, r in rows.iterrows()]
    return out


def class_verdict(cmp: pd.DataFrame, cls: str) -> dict:
    """Criteria C2 (class few_heads) / C3 (few_queries) on the forward + backward rows: the fitting
    ratio r (median measured / twin over the class's fitting rows), whether it is a shift (beyond
    CLASS_SHIFT_TOL with every fitting row on the same side), and the held-out rows' errors with and
    without the factor 1 / r on the twin."""
    fb = cmp[(cmp["phase"] == "fwd_bwd") & (cmp["cls"] == cls)]
    fit, held = fb[fb["split"] == "fit"], fb[fb["split"] == "holdout"]
    if fit.empty:
        return {"class": cls, "fit_rows": 0, "adopt": False, "why": "no fitting row"}
    ratios = list(fit["time_s"] / fit["twin_s"])
    r = statistics.median(ratios)
    same_side = all(x > 1 for x in ratios) or all(x < 1 for x in ratios)
    shift = abs(r - 1) > CLASS_SHIFT_TOL and same_side
    before = list(held["err"])
    after = list(held["twin_s"] * r / held["time_s"] - 1.0)
    held_ok = bool(after) and all(abs(e) <= HELD_OUT_TOL for e in after)
    better = bool(after) and statistics.median(map(abs, after)) < statistics.median(map(abs, before))
    return {"class": cls, "fit_rows": len(fit), "ratio": r, "fit_ratios": ratios, "shift": shift,
            "held_err_before": before, "held_err_after": after, "held_within": held_ok, "held_better": better,
            "adopt": shift and held_ok and better}


def tie_error(cmp: pd.DataFrame, reference_s: float) -> float | None:
    """T0: this GPU's 8B 32K causal forward + backward over h100/cp_chunks.csv's (93.31 ms) - 1."""
    r = cmp[(cmp["model"] == "8b") & (cmp["q_len"] == 32768) & (cmp["mask"] == "causal") & (cmp["phase"] == "fwd_bwd")]
    return float(r["time_s"].iloc[0]) / reference_s - 1.0 if not r.empty else None


# h100/cp_chunks.csv, bench llama_causal, flash, 32768 x 32768 causal, fwd_bwd (campaign s13cph): the tie's reference
CP_CHUNKS_8B_32K_FWD_BWD_S = 0.0933056


def case_rows(cases) -> pd.DataFrame:
    """Rows (forward, forward + backward) of the cases (tag, heads, kv heads, head dim, q_len, kv_len,
    mask, row_for, split, batch) as real/bench/long_attention.LONG_ATTN_CASES lists them, without times."""
    return pd.DataFrame([dict(model=tag, batch=B, num_heads=H, num_kv_heads=K, head_dim=E, q_len=q, kv_len=kv,
                              mask=mask, phase=ph, split=split, row_for=row_for)
                         for tag, H, K, E, q, kv, mask, row_for, split, B in cases for ph in ("fwd", "fwd_bwd")])


def committed_profile(gpu: str) -> Profile:
    """The committed profile of a records folder's GPU (twin/data/profiles/<gpu>.json), as `twin
    validate` predicts the records; ValueError naming the profiles there when none is."""
    path = PROFILES_DIR / f"{gpu}.json"
    if not path.is_file():
        raise ValueError(f"--gpu {gpu!r}: no committed profile {path.name} (one of: "
                         f"{', '.join(p.stem for p in profile_files())})")
    return profile_from_json(json.loads(path.read_text()))


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.long_attention", description=__doc__.split("\n")[0])
    ap.add_argument("folder", help="a campaign s24long output folder (long_attn.csv)")
    ap.add_argument("--gpu", default="h100")
    args = ap.parse_args(argv)
    with entry.user_inputs("FOLDER", args.folder, "a campaign s24long output folder (long_attn.csv)"):
        try:
            profile = committed_profile(args.gpu)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        gpu = gpu_spec(args.gpu)
        cols = ["model", "batch", "num_heads", "q_len", "kv_len", "mask", "phase", "split", "cls"]
        path = Path(args.folder) / LONG_ATTN_FILE
        if not csv_exists(path):
            print(f"error: {path} not found (a campaign s24long output folder holds long_attn.csv)", file=sys.stderr)
            return 2
        cmp = compare(load_rows(args.folder), gpu, profile)
        live = compare(load_rows(args.folder), gpu, profile, shape_factor=True)
        cmp["meas_ms"], cmp["twin_ms"], cmp["live_err"] = cmp["time_s"] * 1e3, cmp["twin_s"] * 1e3, live["err"]
        cmp["tflops"] = cmp["achieved_flops_per_s"] / 1e12
        print("twin_ms / err: the FA2 curve alone (the rule's baseline); live_err: as the twin costs the call now")
        print(cmp[cols + ["meas_ms", "twin_ms", "err", "live_err", "tflops", "sm_clock_mhz"]].to_string(
            index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"GPU {cmp['gpu_name'].iloc[0]}, torch {cmp['torch_version'].iloc[0]}, CUDA {cmp['cuda_version'].iloc[0]}")
        tie = tie_error(cmp, CP_CHUNKS_8B_32K_FWD_BWD_S)
        print("T0 tie (8B 32K causal fwd+bwd vs h100/cp_chunks.csv): "
              + ("no row" if tie is None else f"{tie:+.1%} ({'holds' if abs(tie) <= TIE_TOL else 'FAILS'})"))
        fb = cmp[cmp["phase"] == "fwd_bwd"]
        worst = float(fb["err"].abs().max()) if not fb.empty else math.nan
        print(f"C1 every fwd+bwd row within {NO_CHANGE_TOL:.0%}: {'yes' if worst <= NO_CHANGE_TOL else 'no'} "
              f"(largest |err| {worst:.1%}; median {fb['err'].abs().median():.1%})")
        for cls in ("few_heads", "few_queries"):
            v = class_verdict(cmp, cls)
            if "ratio" not in v:
                print(f"class {cls}: {v['why']}")
                continue
            fit = ", ".join(f"{x:.3f}" for x in v["fit_ratios"])
            before = ", ".join(f"{e:+.1%}" for e in v["held_err_before"])
            after = ", ".join(f"{e:+.1%}" for e in v["held_err_after"])
            print(f"class {cls}: fitting ratio measured/twin {v['ratio']:.3f} (rows {fit}), shift "
                  f"{'yes' if v['shift'] else 'no'}; held-out err before {before} after {after}; "
                  f"adopt {'YES' if v['adopt'] else 'no'}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
