"""The host's measured speed as an input of the TP2/CP2 block rows (issue 14, s15cp; the rule:
docs/notes/s15cp_rule.md, committed before any record under it).

The s15cp campaign (real/campaigns/s15cp.sh) measures every block row beside the launch probe
(real/serve/hostspeed.py, before and after the row, the slowest rank's: `probe_launch_s`), twice:
round 1 replaces the folder's block records, round 2 lies in <gpu>x2/s15cp_round2/ (out of
validation). calibration.parallel_blocks takes the probe as an input where ADOPT_HOST_PROBE (or
`host_probe=True`): the fitting rows' host measurements brought to the folder's reference probe, each
row's host terms at its own probe over it.

What this module computes for the rule: per GPU, the held-out TP2/CP2 rows and the one-GPU references
with P off and on (`folder_figures`), round 2's held-out rows under round 1's terms (`round2_figures`),
and the criteria (`criteria`). `python -m calibration.block_host_speed` prints them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import parallel_blocks as blocks
from calibration import records as rec
from calibration.fit import collectives_terms
from calibration.validate import load_fitted_profile

GPUS = ("h100", "h200")
TARGET = 0.10
ROUND2 = "s15cp_round2"


CONFIG_COLS = ("bench", "block", "model", "tp", "cp", "cp_kind", "sequence_parallel", "tokens")


def fastest_rounds(rows: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (CONFIG_COLS), the row of its fastest round (lowest time_s), in the rows'
    first-seen order: the block at the host's fast state (docs/notes/s15cp2_rule.md; s14mla's
    calibration.mla_rounds for the one-GPU MLA records). Rows without a positive time are dropped."""
    rows = rows[pd.to_numeric(rows["time_s"], errors="coerce") > 0].reset_index(drop=True)
    key = rows[list(CONFIG_COLS)].apply(lambda c: c.map(lambda v: "" if pd.isna(v) else str(v))).agg("|".join, axis=1)
    best = pd.to_numeric(rows["time_s"], errors="coerce").groupby(key).idxmin()
    order = {k: i for i, k in enumerate(dict.fromkeys(key))}
    return rows.loc[sorted(best.values, key=lambda i: order[key[i]])].reset_index(drop=True)


def _world(row) -> int:
    return blocks._int(row["tp"]) * blocks._int(row["cp"])


def summary(results: list[dict]) -> dict:
    """Held-out rows of `results` (`predict_folder`'s dicts): {name: error} of the two-GPU rows and
    of the one-GPU references, and the two-GPU rows' count within TARGET, median and P90 |error|."""
    held = [r for r in results if r["held_out"]]
    err = {r["name"]: r["predicted_s"] / r["measured_s"] - 1 for r in held if _world(r["row"]) > 1}
    refs = {r["name"]: r["predicted_s"] / r["measured_s"] - 1 for r in held if _world(r["row"]) == 1}
    a = np.abs(np.array(list(err.values()), dtype=float))
    return {"errors": err, "references": refs, "rows": int(a.size),
            "within": int((a <= TARGET).sum()),
            "median": float(np.median(a)) if a.size else math.nan,
            "p90": float(np.percentile(a, 90)) if a.size else math.nan}


def folder_figures(gpu: str, profile, root: Path | None = None) -> dict:
    """{False: summary with P off, True: with P on} of <gpu>x2's block rows."""
    root = rec.records_root() if root is None else root
    folder = Path(root) / f"{gpu}x2"
    return {on: summary(blocks.predict_folder(folder, gpu, profile, host_probe=on)) for on in (False, True)}


def round2_figures(gpu: str, profile, root: Path | None = None) -> dict | None:
    """{False/True: summary} of round 2's rows (<gpu>x2/s15cp_round2/) predicted with round 1's folder
    terms (<gpu>x2/, P off / on: each round-2 row at its own probe against round 1's reference); None
    without round 2."""
    root = rec.records_root() if root is None else root
    folder = Path(root) / f"{gpu}x2"
    rows = blocks.load_block_rows(folder / ROUND2)
    if rows.empty:
        return None
    out = {}
    for on in (False, True):
        t = blocks.folder_terms(folder, gpu, profile, host_probe=on)
        out[on] = summary(blocks.predict_rows(t, rows, profile))
    return out


def criteria(figures: dict[str, dict], round2: dict[str, dict | None]) -> dict[str, bool]:
    """The rule's criteria 1-5 over the GPUs of `figures` ({gpu: folder_figures}); 6 (nothing else
    moves) is `twin validate --json`'s, checked apart."""
    c1 = all(f[True]["within"] >= f[False]["within"] for f in figures.values()) and \
        any(f[True]["within"] > f[False]["within"] for f in figures.values())
    c2 = all(abs(f[True]["errors"][n]) <= TARGET for f in figures.values()
             for n, e in f[False]["errors"].items() if abs(e) <= TARGET)
    c3 = all(f[True]["median"] <= f[False]["median"] and f[True]["p90"] <= f[False]["p90"] for f in figures.values())
    c4 = all(abs(f[True]["references"][n]) <= TARGET for f in figures.values()
             for n, e in f[False]["references"].items() if abs(e) <= TARGET)
    c5 = all(r is not None and r[True]["within"] >= r[False]["within"] and r[True]["median"] <= r[False]["median"]
             for r in round2.values())
    return {"1 count": c1, "2 none leaves": c2, "3 median/P90": c3, "4 references": c4, "5 round 2": c5}


def _line(tag: str, s: dict) -> str:
    return f"{tag}: within 10% {s['within']}/{s['rows']}, median {s['median']:.1%}, P90 {s['p90']:.1%}"


@entry.script
def main(argv: list[str] | None = None) -> None:
    entry.parser("calibration.block_host_speed", __doc__).parse_args(argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    figures, round2 = {}, {}
    for gpu in GPUS:
        prof, _ = load_fitted_profile(gpu, None)
        if not prof.collectives:
            prof = dataclasses.replace(prof, collectives=collectives_terms(gpu, root)[0])
        rows = blocks.load_block_rows(root / f"{gpu}x2")
        if blocks.reference_probe_s(rows) is None:
            print(f"{gpu}: no probed records (nothing to compare)")
            continue
        figures[gpu], round2[gpu] = folder_figures(gpu, prof, root), round2_figures(gpu, prof, root)
        f = figures[gpu]
        print(_line(f"{gpu} held-out TP2/CP2, P off", f[False]))
        print(_line(f"{gpu} held-out TP2/CP2, P on ", f[True]))
        for n in sorted(f[False]["errors"]):
            print(f"  {n:52} {f[False]['errors'][n]:+7.1%} -> {f[True]['errors'][n]:+7.1%}")
        for n in sorted(f[False]["references"]):
            print(f"  {n:52} {f[False]['references'][n]:+7.1%} -> {f[True]['references'][n]:+7.1%}  (reference)")
        if round2[gpu] is not None:
            r = round2[gpu]
            print(_line(f"{gpu} round 2 under round 1's terms, P off", r[False]))
            print(_line(f"{gpu} round 2 under round 1's terms, P on ", r[True]))
            for n in sorted(r[False]["errors"]):
                print(f"  {n:52} {r[False]['errors'][n]:+7.1%} -> {r[True]['errors'][n]:+7.1%}")
    if figures:
        res = criteria(figures, round2)
        print("criteria (docs/notes/s15cp_rule.md; 6 is twin validate's):", res)
        print(f"adopt P: {all(res.values())} (with 6); ADOPT_HOST_PROBE = {blocks.ADOPT_HOST_PROBE}")


if __name__ == "__main__":
    main()
