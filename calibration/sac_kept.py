"""What torchtitan's per-op selective AC keeps of a Llama 3.1 8B block, measured (campaign s28tt,
real.sac_attention_memory) against the twin's count, and the checks of docs/notes/s28tt_rule.md:
- D0: campaign s27mlm2's FSDP2 record kept, per block and token, the twin's count less the attention's output and
  log-sum-exp (the per-block slope of after-loss bytes, 32 blocks less 16);
- D: each part's bytes kept a block and token (the median over its blocks) against the rule's prediction, and the
  SDPA backend torch picked (default part);
- C1 / C2: the compiled block (flash_compile) and the eager one (flash) against the counts with and without
  candidate twin.costs.memory.ADOPT_COMPILED_SAC_NEEDED_ONLY; adopt iff both hold;
- G1 / memory: the published rows with the candidate off and on (throughput fields unchanged; the memory summary).

Usage: python -m calibration.sac_kept [--json FILE]   (e.g. calibration/s28tt_judgement.json)
"""

from __future__ import annotations

import sys
from pathlib import Path

from calibration import entry, published_runs
from calibration.records import MEASUREMENTS_DIR, records_root
from calibration.records_io import csv_exists, read_csv
from twin.costs import flops, memory
from twin.costs.flops import BF16_BYTES, FP32_BYTES, OpKind

JUDGEMENT = Path(__file__).resolve().parent / "s28tt_judgement.json"
RECORDS = tuple(Path(gpu) / "s28tt" / "sac_attention_memory.csv" for gpu in ("h200", "h100"))
S27MLM2 = tuple(Path(gpu) / "s27mlm2" / "fsdp_memory.csv" for gpu in ("h200x2", "h100x2"))


def _under_root(paths) -> Path | None:
    """The first of `paths` (relative to the records root in use: calibration/measurements, or --records DIR)
    that exists."""
    return next((records_root() / p for p in paths if csv_exists(records_root() / p)), None)


def _shown(path: Path) -> str:
    """A record's path as the judgement shows it: from the repository root where it lies in the tree."""
    try:
        return str(path.resolve().relative_to(MEASUREMENTS_DIR.parent.parent))
    except ValueError:
        return str(path)
D_TOL = 64.0     # B a token a block (rule: small philox tensors round to 512 B)
C1_TOL = 256.0   # B a token a block (rule: an extra small tensor Inductor may keep)
# the fields of a published row that are not memory (G1: none may move)
THROUGHPUT_FIELDS = ("predicted", "rel_error", "status", "step_time_s", "mfu_frac", "bubble_frac", "exposed_comm_frac",
                     "predicted_ignoring_memory")


def model_and_plans():
    """Llama 3.1 8B and torchtitan's eager and compiled 8B FSDP plans (Table 1's rows)."""
    runs, _ = published_runs.load_runs()
    eager = published_runs.scenario_of(next(r for r in runs if r.id == "tt-8b-fsdp8"))
    compiled = published_runs.scenario_of(next(r for r in runs if r.id == "tt-8b-fsdp8-compile"))
    return eager.model, eager.plan, compiled.plan


def attention_kept_per_token(m, plan) -> float:
    """What the policy keeps of the attention op a token (output BF16, log-sum-exp FP32), as _op_sac_parts counts."""
    att = next(op for op in flops.attention_ops(m, 1, 1, plan.tp) if op.kind == OpKind.ATTENTION)
    return att.heads * att.v_dim * BF16_BYTES + att.heads * FP32_BYTES


def twin_counts() -> dict:
    """The twin's per-block count a token (TP 1, the 8B's dense block) for each measured part, from the live model."""
    m, eager, compiled = model_and_plans()
    saved = memory.ADOPT_COMPILED_SAC_NEEDED_ONLY
    try:
        memory.ADOPT_COMPILED_SAC_NEEDED_ONLY = False
        listed = memory.activation_bytes_per_token(m, True, eager)
        memory.ADOPT_COMPILED_SAC_NEEDED_ONLY = True
        compiled_on = memory.activation_bytes_per_token(m, True, compiled)
        eager_on = memory.activation_bytes_per_token(m, True, eager)
    finally:
        memory.ADOPT_COMPILED_SAC_NEEDED_ONLY = saved
    att = attention_kept_per_token(m, eager)
    return {"listed": listed, "attention": att, "not_listed": listed - att, "compiled_candidate": compiled_on,
            "eager_with_candidate_on": eager_on}


def predictions(c: dict) -> dict:
    return {"default": c["not_listed"], "flash": c["listed"], "cudnn": c["not_listed"], "cudnn_saved": c["listed"],
            "flash_compile": c["compiled_candidate"]}


def d0_s27mlm2(c: dict) -> dict | None:
    """The s27mlm2 record's per-block bytes a token: (after loss - step start) of 32 blocks less 16, steady steps."""
    path = _under_root(S27MLM2)
    if path is None:
        return None
    df = read_csv(path)
    df = df[(df["step"] >= 2) & (df["status"] == "ok")]
    kept = (df["after_loss_allocated_bytes"] - df["start_allocated_bytes"]).groupby(df["layers"]).median()
    tokens = int(df["seq_len"].iloc[0] * df["local_batch"].iloc[0])
    per = float((kept[32] - kept[16]) / 16 / tokens)
    return {"record": _shown(path), "tokens": tokens,
            "kept_per_block_per_token": per, "twin_listed": c["listed"], "twin_not_listed": c["not_listed"],
            "gap_to_twin": c["listed"] - per, "equals_not_listed": abs(per - c["not_listed"]) <= D_TOL}


def record_path(path: Path | str | None = None) -> Path | None:
    if path is not None:
        return Path(path)
    return _under_root(RECORDS)


def parts(path: Path | str | None = None) -> dict:
    """Each part's median bytes kept a block and token over its blocks, its SDPA choice and status."""
    p = record_path(path)
    if p is None:
        return {}
    df = read_csv(p)
    out = {}
    for mode, g in df.groupby("mode", sort=False):
        ok = g[g["status"] == "ok"]
        out[str(mode)] = {"status": "ok" if len(ok) else str(g["status"].iloc[0]),
                          "blocks": [float(v) for v in ok["block_kept_bytes_per_token"]],
                          "median": float(ok["block_kept_bytes_per_token"].median()) if len(ok) else None,
                          "sdp_choice": str(ok["sdp_choice"].iloc[0]) if len(ok) else "",
                          "gpu_name": str(g["gpu_name"].iloc[0]), "torch_version": str(g["torch_version"].iloc[0]),
                          "cudnn_version": str(g["cudnn_version"].iloc[0])}
    return out


def within(part: dict | None, want: float, tol: float) -> bool:
    return bool(part and part["median"] is not None and abs(part["median"] - want) <= tol)


def published_each_way() -> dict:
    """The published rows with the candidate off and on: G1 (no throughput field moves) and the memory summary."""
    saved = memory.ADOPT_COMPILED_SAC_NEEDED_ONLY
    res = {}
    try:
        for on in (False, True):
            memory.ADOPT_COMPILED_SAC_NEEDED_ONLY = on
            res[on] = published_runs.compare(path=published_runs.RUNS_FILE)
    finally:
        memory.ADOPT_COMPILED_SAC_NEEDED_ONLY = saved
    moved_throughput, moved_memory = [], {}
    for a, b in zip(res[False]["rows"], res[True]["rows"]):
        if any(a.get(k) != b.get(k) for k in THROUGHPUT_FIELDS):
            moved_throughput.append(a["id"])
        if a.get("memory_per_gpu_bytes") != b.get("memory_per_gpu_bytes"):
            moved_memory[a["id"]] = {"off_bytes": a["memory_per_gpu_bytes"], "on_bytes": b["memory_per_gpu_bytes"],
                                     "off_rel_error": a.get("memory_rel_error"), "on_rel_error": b.get("memory_rel_error")}
    # diagnostic (s27mlm2's B stays off): the count with the measured reserve, the candidate off and on
    with_b = {}
    saved_b = published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK
    try:
        published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK = True
        for on in (False, True):
            memory.ADOPT_COMPILED_SAC_NEEDED_ONLY = on
            r = published_runs.compare(path=published_runs.RUNS_FILE)
            with_b["on" if on else "off"] = {
                "rows": {x["id"]: x["memory_rel_error"] for x in r["rows"] if x["id"] in moved_memory},
                "median_abs_rel_error": r["summary"]["memory"]["median_abs_rel_error"],
                "num_within_row_target": r["summary"]["memory"]["num_within_row_target"]}
    finally:
        published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK = saved_b
        memory.ADOPT_COMPILED_SAC_NEEDED_ONLY = saved
    keys = ("median_abs_rel_error", "median_rel_error", "num_within_row_target", "num_fitting", "not_fitting")
    return {"G1_no_throughput_moves": not moved_throughput, "throughput_moved": moved_throughput,
            "memory_moved": moved_memory, "diagnostic_with_s27mlm2_B": with_b,
            "memory_summary_off": {k: res[False]["summary"]["memory"][k] for k in keys},
            "memory_summary_on": {k: res[True]["summary"]["memory"][k] for k in keys},
            "summary_off": {k: res[False]["summary"][k] for k in ("num_evaluated", "num_within_row_target",
                                                                   "median_abs_rel_error", "refused")},
            "summary_on": {k: res[True]["summary"][k] for k in ("num_evaluated", "num_within_row_target",
                                                                 "median_abs_rel_error", "refused")}}


def judge(path: Path | str | None = None) -> dict:
    c = twin_counts()
    want = predictions(c)
    got = parts(path)
    if not got:
        raise SystemExit(f"calibration.sac_kept: no s28tt record under {records_root()} (<gpu>/s28tt/"
                         "sac_attention_memory.csv, gpu h200 or h100)")
    d = {mode: {"predicted": want[mode], "measured": (got.get(mode) or {}).get("median"),
                "holds": within(got.get(mode), want[mode], D_TOL)} for mode in ("default", "flash", "cudnn", "cudnn_saved")}
    d_choice = (got.get("default") or {}).get("sdp_choice", "")
    c1 = within(got.get("flash_compile"), want["flash_compile"], C1_TOL)
    c2 = within(got.get("flash"), want["flash"], D_TOL)
    return {"rule": "docs/notes/s28tt_rule.md", "record": _shown(record_path(path)), "twin_counts": c, "parts": got,
            "D0": d0_s27mlm2(c),
            "D": {"parts": d, "default_sdp_choice": d_choice,
                  "holds": bool(all(v["holds"] for v in d.values()) and d_choice == "cudnn")},
            "C": {"C1": c1, "C1_predicted": want["flash_compile"],
                  "C1_measured": (got.get("flash_compile") or {}).get("median"), "C2": c2, "adopt": bool(c1 and c2)},
            "published": published_each_way()}


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.sac_kept", __doc__)
    ap.add_argument("--json", type=Path, default=None, help="write the judgement here")
    args = ap.parse_args(argv)
    if record_path() is None:
        print(f"calibration.sac_kept: no s28tt record under {records_root()} (<gpu>/s28tt/sac_attention_memory.csv, "
              "gpu h200 or h100)", file=sys.stderr)
        return entry.EXIT_INVALID
    return entry.print_json(args.json, judge(), sort_keys=True, default=float)


if __name__ == "__main__":
    raise SystemExit(main())
