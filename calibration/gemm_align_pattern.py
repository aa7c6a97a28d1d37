"""The alignment term's second form (session s23align2; rule, form and criteria:
docs/notes/s23align2_rule.md, committed before its held-out records existed): a factor per operand
pattern (twin.costs.gemm_alignment.pattern_key: the kernel family the operands' alignments select and
which of A, B, C are misaligned), fitted on every s23align record, applied to the GEMM's compute term.

Fit: each misaligned s23align BF16 row's ratio (time per FLOP over its aligned neighbour's at the same
tokens and pass, calibration.gemm_align_fit.records) grouped by pattern; factor = the median; a
family factor (median over the family's rows) for patterns without rows. Judged on the s23align2
records (fresh shapes, NEIGHBOUR2): the ratio, the twin's absolute time without and with the switch.
Writes the "pattern_fits" key of twin/data/gemm_alignment.json.

    python -m calibration.gemm_align_pattern [--write]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import gemm_align_fit as gf
from twin.core import atomic
from twin.costs import compute
from twin.costs import gemm_alignment
from twin.costs.gemm_alignment import kernel_family, operand_alignments, pattern_key
from twin.costs.profile import load_profile
from twin.core.specs import get_gpu

RECORDS2 = Path("s23align2") / "gemm_align.csv"
# each misaligned s23align2 layer's aligned neighbour (same role, nearest width that is a multiple of 8)
NEIGHBOUR2 = {
    "vocab_32001": "vocab_32000", "vocab_151655": "vocab_151680",
    "h2560_up_f6827": "h2560_up_f6832", "h2560_down_f6827": "h2560_down_f6832",
    "h2560_down_f6828": "h2560_down_f6832",
    "rect_3000x2049": "rect_3000x2048", "rect_2049x3000": "rect_2048x3000", "square_2049": "square_2048",
    "tp2_up_f6849": "tp2_up_f6848", "tp2_down_f6849": "tp2_down_f6848",
}


def with_patterns(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with their operand alignments' pattern key and kernel family."""
    df = df.copy()
    aligns = [operand_alignments(o, i, p) for o, i, p in zip(df["outputs"], df["inputs"], df["pass"])]
    df["pattern"] = [pattern_key(a) for a in aligns]
    df["family"] = [kernel_family(a) for a in aligns]
    return df


def fit_patterns(rows: pd.DataFrame) -> dict:
    """Median ratio per pattern and per family over the misaligned rows that have a ratio."""
    mis = rows[(rows["family"] != "aligned") & rows["ratio"].notna()]
    return {"factors": {k: float(np.median(g["ratio"])) for k, g in mis.groupby("pattern")},
            "family_factors": {k: float(np.median(g["ratio"])) for k, g in mis.groupby("family")}}


def predicted(row, fit: dict) -> float:
    """A row's predicted ratio: its pattern's factor, else its family's, 1 where aligned."""
    if row["family"] == "aligned":
        return 1.0
    return fit["factors"].get(row["pattern"], fit["family_factors"].get(row["family"], 1.0))


def ratio_errors(rows: pd.DataFrame, fit: dict) -> np.ndarray:
    mis = rows[(rows["family"] != "aligned") & rows["ratio"].notna()]
    return np.array([predicted(r, fit) / r["ratio"] - 1.0 for _, r in mis.iterrows()])


def leave_one_layer_out(rows: pd.DataFrame) -> dict:
    """Each misaligned layer's rows predicted from the other layers' patterns."""
    errs = [ratio_errors(rows[rows["layer"] == layer], fit_patterns(rows[rows["layer"] != layer]))
            for layer in sorted(rows.loc[rows["family"] != "aligned", "layer"].unique())]
    return gf.summary(np.concatenate(errs) if errs else np.array([]))


def twin_time_s(row, gpu: str, adopt: bool) -> float:
    """The twin's gemm_time_s of a record's GEMM with ADOPT_GEMM_ALIGNMENT_PATTERN set to `adopt`."""
    saved = compute.ADOPT_GEMM_ALIGNMENT_PATTERN
    compute.ADOPT_GEMM_ALIGNMENT_PATTERN = adopt
    try:
        return compute.gemm_time_s(int(row["m"]), int(row["n"]), int(row["k"]), "bf16", get_gpu(gpu), load_profile(gpu),
                                   pass_=row["pass"], widths=(int(row["outputs"]), int(row["inputs"])))
    finally:
        compute.ADOPT_GEMM_ALIGNMENT_PATTERN = saved


def twin_errors(rows: pd.DataFrame, gpu: str) -> dict:
    """The twin's time against measured, without and with the switch, misaligned and aligned rows."""
    meas = rows["time_s"].to_numpy()
    off = np.array([twin_time_s(r, gpu, False) for _, r in rows.iterrows()])
    on = np.array([twin_time_s(r, gpu, True) for _, r in rows.iterrows()])
    mis = (rows["family"] != "aligned").to_numpy()
    return {"misaligned_without": gf.summary(off[mis] / meas[mis] - 1.0),
            "misaligned_with": gf.summary(on[mis] / meas[mis] - 1.0),
            "aligned": gf.summary(off[~mis] / meas[~mis] - 1.0),
            "aligned_max_rel_change": float(np.max(np.abs(on[~mis] / off[~mis] - 1.0))) if (~mis).any() else 0.0}


def fit_gpu(gpu: str) -> dict | None:
    """The pattern fit on s23align's records, its leave-one-layer-out, and (where they exist) the
    s23align2 held-out scores."""
    df = gf.records(gpu)
    if df.empty:
        return None
    df = with_patterns(df)
    fit = fit_patterns(df)
    out = {**fit, "fit_rows": int((df["family"] != "aligned").sum()),
           "fit_leave_one_layer_out": leave_one_layer_out(df), "gpu_name": str(df["gpu_name"].iloc[0])}
    held = gf.records(gpu, RECORDS2, NEIGHBOUR2)
    if not held.empty:
        held = with_patterns(held)
        out["held_out_ratio"] = gf.summary(ratio_errors(held, fit))
        out["held_out_gpu_name"] = str(held["gpu_name"].iloc[0])
    return out


def held_out_twin(gpu: str) -> dict:
    """The twin's absolute errors on the s23align2 rows (criterion 2) under the table as written."""
    held = gf.records(gpu, RECORDS2, NEIGHBOUR2)
    return twin_errors(with_patterns(held), gpu) if not held.empty else {}


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.gemm_align_pattern", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {gf.TABLE.name}'s pattern_fits")
    args = ap.parse_args(argv)
    fits = {g: f for g in gf.GPUS if (f := fit_gpu(g)) is not None}
    print(json.dumps(fits, indent=1))
    if args.write:
        table = json.loads(gf.TABLE.read_text())
        table["pattern_fits"] = {g: {k: v for k, v in f.items() if k != "held_out_ratio"} for g, f in fits.items()}
        atomic.write_text(gf.TABLE, json.dumps(table, indent=1, sort_keys=True) + "\n")
        gemm_alignment._table.cache_clear()
    print(json.dumps({g: held_out_twin(g) for g in fits}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
