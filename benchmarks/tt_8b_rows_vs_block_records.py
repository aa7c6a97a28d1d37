"""Figures (not a test): torchtitan's Llama 3.1 8B CP rows (Table 2: 8 H100 HBM2e at 500 W, FSDP x CP
= 8, 32K positions a rank at every CP degree, local batch 1, full AC, compile + Float8) against the
measured compiled, fully checkpointed 8B blocks at 32K positions a rank (session s27cp2, issue 14).

Every row's rank runs the same block shape as calibration.cp_block's records (32K positions a rank;
at CP c its attention is c causal-call units), so the records say how far the twin's block is from a
measured one at the same CP degree, and the rest of the row's error is the conditions no record has
(the 500 W limit, the HBM2e card, sustained load, December 2024's stack) or the outside of the block.

Per row:
  twin block     (twin step - what the twin charges outside the blocks) / 32 layers
  pub block      (published step - the same outside charge) / 32: the block the row implies if the
                 twin's outside (head + FP32 loss, FSDP, optimizer: benchmarks/tt_cp1_outside_block.py)
                 is right
  record         each measured block at the row's CP degree: measured / twin at the record's own
                 conditions (h200x4: BF16, 4x H200, 700 W, burst; h100: one H100 80GB HBM3, 700 W,
                 burst, BF16 and tensorwise Float8)
  corrected      twin block x measured / twin of that record (the record's error carried to the row)
  residual       pub block / corrected - 1: what no record explains
  attn factor    the factor on the twin's attention-core seconds alone that would close the row
                 (1 + (published step - twin step) / attention-core seconds)

Usage: PYTHONPATH=. python benchmarks/tt_8b_rows_vs_block_records.py  (about a minute)
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from published_runs_cp_breakdown import ROWS, breakdown   # noqa: E402  (a sibling script)

from calibration import cp_block   # noqa: E402
from calibration.published_runs import load_runs   # noqa: E402
from calibration.records import MEASUREMENTS_DIR   # noqa: E402

RECORD_SETS = (("h200x4 bf16", MEASUREMENTS_DIR / "h200x4" / "cp_block", "h200"),
               ("h100 bf16/fp8", MEASUREMENTS_DIR / "h100" / "cp_block", "h100"))
NUM_LAYERS = 32   # Llama 3.1 8B


def records() -> list[dict]:
    """Every complete compiled block record: {set, cp, precision, measured_s, twin_s}."""
    out = []
    for name, folder, gpu in RECORD_SETS:
        for r in cp_block.compare(folder, gpu):
            if r["bench"] == "cp_block_compiled" and r["complete"]:
                out.append({"set": name, "cp": r["cp"], "precision": r["precision"],
                            "measured_s": r["measured_s"], "twin_s": r["twin_s"]})
    return out


def main() -> None:
    runs = {r.id: r for r in load_runs()[0]}
    recs = records()
    print(f"{'row':16s} {'err':>7s} {'twin blk ms':>11s} {'pub blk ms':>10s} {'attn factor':>11s}  "
          f"record: measured / twin ms -> corrected ms, residual")
    for rid in ROWS:
        b = breakdown(runs[rid])
        outside = b["parts_s"]["rest"]
        twin_blk = (b["step_s"] - outside) / NUM_LAYERS
        pub_blk = (b["published_step_s"] - outside) / NUM_LAYERS
        attn = sum(v for k, v in b["parts_s"].items() if k.startswith("attn_core"))
        factor = 1.0 + (b["published_step_s"] - b["step_s"]) / attn
        err = b["predicted"] / b["published"] - 1.0
        head = f"{rid:16s} {err:+7.1%} {twin_blk * 1e3:11.1f} {pub_blk * 1e3:10.1f} {factor:11.3f}"
        mine = [r for r in recs if r["cp"] == b["cp"]]
        if not mine:
            print(head + "  (no measured block at this CP degree)")
        for i, r in enumerate(mine):
            corrected = twin_blk * r["measured_s"] / r["twin_s"]
            print((head if i == 0 else " " * len(head)) +
                  f"  {r['set']} {r['precision']}: {r['measured_s'] * 1e3:.1f} / {r['twin_s'] * 1e3:.1f}"
                  f" -> {corrected * 1e3:.1f}, {pub_blk / corrected - 1.0:+.1%}")
    print(f"\noutside the blocks (twin, every row): {b['parts_s']['rest']:.3f} s a step")


if __name__ == "__main__":
    main()
