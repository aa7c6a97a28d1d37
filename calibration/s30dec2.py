"""s30dec2 (issue 13): a second fresh lease for the adopted decode pricing (s30dec's ADOPT_SYNCED_KERNEL_HOST), a
pre-registered blind confirmation. Nothing is fitted and no switch changes: the fresh cases are predicted by
calibration.s30dec's candidate exactly (synchronised window, decode expert occupancy, the record's profiled kernels at
w x ratio x probe; w the one s30dec's committed predictions fixed) and judged by s30dec's own judge functions.

    python -m calibration.s30dec2 write                    # the predictions JSON (refuses a dirty tree)
    python -m calibration.s30dec2 [--json calibration/s30dec2_judgement.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from calibration import prereg
from calibration import records as rec
from calibration import s29dec
from calibration import s30dec
from calibration.validate import MEDIAN_TARGET, P90_TARGET

NAME = "s30dec2"
PREDICTIONS_FILE = prereg.PREREG_DIR / "s30dec2_predictions.json"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s30dec2_judgement.json"
# h200 only: this session lends no H100 (a lease that comes as one gets no verdict; the rule says so), and the file
# stays half the size
GPUS = ("h200",)
# real/campaigns/s30dec2.sh's CASES, in its order (a test holds them equal): prompt lengths and decode batches no
# committed folder holds for these slices (prompts seen 256-2048: mixtral-slice p512 in s21host, so it takes p2560;
# decode batches seen 1, 2, 4, 6, 8, 12, 16, 24, 32, 40, 48, 64, 128, 256).
CASES = (("llama3-8b-slice", 2560, 64, (3,), (3, 20, 56)),
         ("dsv2-slice", 512, 64, (3,), (3, 20, 56)),
         ("phi35moe-slice", 512, 64, (3,), (3, 20, 56)),
         ("olmoe-slice", 2560, 64, (3,), (3, 20, 56)),
         ("mixtral-slice", 2560, 64, (3,), (3, 20, 56)),
         ("v2-lite-slice", 512, 64, (3,), (3, 20, 56)))
REG = prereg.Registration(NAME, PREDICTIONS_FILE, NAME, CASES, section="serve")
LEASES = ("s30dec2",)
MIN_DECODE_RECORDS = 12
# the fields lease_rows reads (calibration.s29dec.lease_rows, calibration.s30dec.lease_rows); nothing else is written
ROW_FIELDS = (*prereg.SERVE_KEY, "profile_infer_host_s_per_kernel", "plain_predicted_s", "grid_predicted_s",
              "synced_grid_predicted_s", "cand_grid_predicted_s", "twin_ops")


def case_rows() -> list[dict]:
    return [r for r in prereg.case_rows(REG) if r["gpu"] in GPUS]


def adopted_weight() -> dict:
    """w per GPU as s30dec's committed predictions fixed it (the adopted twin's; never refitted here)."""
    w = s30dec.load_predictions()["kernel_host_weight"]
    return {gpu: {"w": w[gpu]["w"], "source": "s30dec_predictions.json"} for gpu in GPUS}


def predict(rows: list[dict]) -> dict:
    """s30dec's prediction of every row (s29dec's plain and grids, the candidate's grid, the decode twin op count),
    only the fields the judge reads; w from s30dec's committed predictions."""
    out = s29dec.predict(rows)
    slim = []
    for r in out["rows"]:
        r["cand_grid_predicted_s"] = s30dec.candidate_grid(r)
        r["twin_ops"] = s30dec._twin_ops(r)
        slim.append({k: r[k] for k in ROW_FIELDS})
    return {"registration": NAME, "rule": "docs/notes/s30dec2_rule.md",
            "host_grid_s_per_kernel": out["host_grid_s_per_kernel"], "rows": slim,
            "kernel_host_weight": adopted_weight(), "formula": "calibration.s30dec's (s30dec_predictions.json)"}


def write(path: Path = PREDICTIONS_FILE, allow_dirty: bool = False) -> dict:
    return s29dec.write(path, allow_dirty, predict_cases=lambda: predict(case_rows()))


def load_predictions(path: Path = PREDICTIONS_FILE) -> dict:
    return s29dec.load_predictions(path)


def verdict(fresh: dict) -> dict:
    """The rule's verdict: held iff on the fresh lease the adopted pricing's decode meets issue 13 (median <= 5%,
    P90 <= 10%) over at least MIN_DECODE_RECORDS decode records carrying a kernel count. No switch follows from it."""
    d = [v["by_kind"].get("decode", {}).get("candidate", {}) for v in fresh.values()]
    enough = bool(d) and all(g.get("num_cases", 0) >= MIN_DECODE_RECORDS for g in d)
    return {"records_enough": enough, "decode_target_held": bool(enough and all(g.get("meets_target") for g in d))}


def judge(root: Path | str | None = None, pred: dict | None = None) -> dict:
    root = rec.records_root() if root is None else root
    pred = load_predictions() if pred is None else pred
    fresh = s30dec._judge(root, [(lease, GPUS, pred, pred) for lease in LEASES])
    return {"registration": NAME, "rule": "docs/notes/s30dec2_rule.md", "predictions_commit": pred.get("code_commit"),
            "targets": {"median": MEDIAN_TARGET, "p90": P90_TARGET}, "adopted": s30dec.ADOPT_SYNCED_KERNEL_HOST,
            "kernel_host_weight": pred["kernel_host_weight"], "leases": fresh, "verdict": verdict(fresh)}


def section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part s30dec2_confirm: the judgement live on the records under `root`."""
    return judge(root)


def format_table(sec: dict) -> str:
    lines = [f"Adopted decode pricing on a second fresh lease (s30dec2, blind confirmation; "
             f"w h200 {sec['kernel_host_weight'].get('h200', {}).get('w', float('nan')):.3f} from s30dec):"]
    if not sec["leases"]:
        lines.append("  s30dec2: no records yet")
    for lease, v in sec["leases"].items():
        for bench, g in v["by_kind"].items():
            c = g["candidate"]
            lines.append(f"  s30dec2 {lease} {bench}: {c.get('num_cases', 0)} rows, adopted {s30dec._fig(c)} "
                         f"(target {MEDIAN_TARGET:.0%} / {P90_TARGET:.0%}: "
                         f"{'met' if c.get('meets_target') else 'MISSED'}); s29dec's {s30dec._fig(g['in_force'])}")
    v = sec["verdict"]
    lines.append(f"  s30dec2 verdict: enough records {v['records_enough']}, decode target held "
                 f"{v['decode_target_held']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return s29dec.cli("s30dec2", __doc__, write, judge, format_table, argv)


if __name__ == "__main__":
    sys.exit(main())
