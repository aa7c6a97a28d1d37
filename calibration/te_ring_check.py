"""Check K of docs/notes/s27mlm_rule.md: torch's fused all-gather-matmul at Megatron-LM's TP8 ring GEMM shapes (campaign s27mlm, section async_tp_mlm) against the card's own copy-engine floor.

twin.training.step.ADOPT_TE_RING_EXCESS carries s20tt's floor (ATP_FUSED_EXCESS_FRAC, fitted on 70B TP2
slices of 8,192-row chunks) to TransformerEngine's ring_exchange, whose Megatron chunks are 512 rows.
Per held-out row of the campaign (calibration.async_tp.fused_excess_shares, s20tt's definition):
`excess` = (fused - mm) / collective; K's set is the rows whose GEMM alone outlasts the collective
alone (`long_gemm`). The card's floor `f_card` is fused_excess_frac of s20tt's records on the same card
kind (calibration/measurements/<kind>/s20tt_async_tp/). K holds if the median excess over K's set is at
least K_SHARE x f_card (the switch stays on); fails below it (the switch is turned off); undecided with
fewer than MIN_ROWS rows in K's set. Beside the verdict, what the copy engine alone costs a GEMM: per
row `copy_share` = (mm_beside_copy - mm) / p2p_copy, the GEMM's growth beside one peer pull as a share
of the pull (information: the rule's outcome reads it against C1's premise).

Usage: python -m calibration.te_ring_check FOLDER [--json FILE]
  FOLDER: a campaign s27mlm output folder (x2/async_tp.csv) or the filed records (async_tp.csv).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.async_tp import fused_excess_frac, fused_excess_shares
from calibration.records import MEASUREMENTS_DIR
from calibration.records_io import csv_exists, read_csv, read_json, write_json_text

K_SHARE = 0.5          # the rule's threshold: the median excess at least half the card's own floor
MIN_ROWS = 5           # fewer long-GEMM rows than this: undecided
MLM_PREFIX = "megatron-gpt"
JUDGEMENT = Path(__file__).with_name("s27mlm_judgement.json")


def records_of(folder: Path) -> pd.DataFrame:
    """The async_tp rows of a campaign folder (x2/async_tp.csv) or of the filed records (async_tp.csv)."""
    for path in (folder / "async_tp.csv", folder / "x2" / "async_tp.csv"):
        if csv_exists(path):
            return read_csv(path)
    raise FileNotFoundError(f"no async_tp.csv in {folder} or {folder / 'x2'}")


def card_kind(records: pd.DataFrame) -> str:
    """The records folder kind of the card the rows ran on: 'h100x2' or 'h200x2' (2 ranks)."""
    names = {str(n) for n in records["gpu_name"].dropna().unique()}
    for tag in ("H200", "H100"):
        if names and all(tag in n for n in names):
            return f"{tag.lower()}x2"
    raise ValueError(f"gpu_name {sorted(names)}: not one H100 or H200 card kind")


def card_floor(kind: str) -> float:
    """f_card: s20tt's fitted floor from that card kind's own records."""
    f = fused_excess_frac(read_csv(MEASUREMENTS_DIR / kind / "s20tt_async_tp" / "async_tp.csv"))
    if f is None:
        raise ValueError(f"{kind}: s20tt's records give no floor")
    return f


def copy_shares(records: pd.DataFrame) -> dict[str, float]:
    """shape_tag -> (mm_beside_copy - mm) / p2p_copy over the rows where the GEMM alone outlasts the
    pull alone (status ok): what a copy-engine pull beside a GEMM costs it, as a share of the pull."""
    ok = records[records["status"].fillna("ok") == "ok"]
    out = {}
    for tag, g in ok.groupby("shape_tag", sort=False):
        t = {r.op: float(r.time_s) for r in g.itertuples(index=False)}
        if {"mm", "p2p_copy", "mm_beside_copy"} <= set(t) and t["mm"] >= t["p2p_copy"]:
            out[str(tag)] = (t["mm_beside_copy"] - t["mm"]) / t["p2p_copy"]
    return out


def judge(records: pd.DataFrame, f_card: float) -> dict:
    """Check K on the Megatron-shaped rows of `records` against `f_card`."""
    mlm = records[records["shape_tag"].astype(str).str.startswith(MLM_PREFIX)]
    shares = fused_excess_shares(mlm)
    copy = copy_shares(mlm)
    kset = shares[shares["long_gemm"]]
    median = float(kset["excess"].median()) if len(kset) else None
    threshold = K_SHARE * f_card
    if len(kset) < MIN_ROWS:
        verdict = "undecided"
    else:
        verdict = "holds" if median >= threshold else "fails"
    return {"f_card": f_card, "threshold": threshold, "num_rows": int(len(shares)), "num_long_gemm": int(len(kset)),
            "median_excess": median, "verdict": verdict, "adopt_te_ring_excess": verdict != "fails",
            "median_copy_share": float(pd.Series(list(copy.values())).median()) if copy else None,
            "rows": [{**{k: (bool(v) if k == "long_gemm" else v) for k, v in r.items()},
                      "copy_share": copy.get(r["shape_tag"])}
                     for r in shares.to_dict(orient="records")]}


def format_judgement(j: dict, kind: str) -> str:
    lines = [f"check K on {kind}: f_card {j['f_card']:.3f}, threshold {j['threshold']:.3f}"]
    lines += [f"  {r['shape_tag']:34s} excess {r['excess']:+.3f} {'long GEMM' if r['long_gemm'] else 'collective longer':17s}"
              f" copy share {'-' if r['copy_share'] is None else format(r['copy_share'], '+.3f')}" for r in j["rows"]]
    if j["median_copy_share"] is not None:
        lines.append(f"median copy share (a GEMM beside one copy-engine pull, the pull's share) {j['median_copy_share']:.3f}")
    med = "-" if j["median_excess"] is None else f"{j['median_excess']:.3f}"
    lines.append(f"median over {j['num_long_gemm']} long-GEMM rows {med}: K {j['verdict']}; "
                 f"ADOPT_TE_RING_EXCESS {'stays True' if j['adopt_te_ring_excess'] else '-> False'}")
    return "\n".join(lines)


def read_judgement(path: Path = JUDGEMENT) -> dict:
    return read_json(path)


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.te_ring_check", __doc__)
    ap.add_argument("folder", type=entry.folder, help="a campaign s27mlm folder or the filed records")
    ap.add_argument("--json", type=Path, help="write the judgement here (calibration/s27mlm_judgement.json)")
    a = ap.parse_args(argv)
    with entry.user_inputs("FOLDER", a.folder, "a campaign s27mlm folder (x2/async_tp.csv) or its filed records"):
        records = records_of(a.folder)
        kind = card_kind(records)
    j = {"card_kind": kind, **judge(records, card_floor(kind))}
    print(format_judgement(j, kind))
    if a.json:
        write_json_text(a.json, json.dumps(j, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
