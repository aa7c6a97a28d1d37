"""Issue 13 (s12mla): do attention records at the MLA layers' small calls belong in the fit?

The campaign real/campaigns/s12mla.sh times causal BF16 SDPA (qk 192 / v 128) on attention.csv's
own path at calls of 32K-2M head-rows (batch x heads x seq), where attention.csv's first grid held
262K-1M (16,384 or 8,192 tokens a call) and the held-out V2-Lite MLA layers call 65K. This module
appends those rows to a copy of the committed records, refits the GPU's profile (calibration.fit,
which fits the curve's tail term SeqCurve.rows_half once the head-rows span ROWS_SPAN_MIN), and
prints `twin validate`'s held-out figures before and after: per GPU the kernels-and-layers figure
the golden file holds, and per kind (mla_layer, attention, moe_layer, train_step, ...).

Adoption rule, written down before any held-out figure with the new records was computed
(commit "s12mla: adoption rule ..."). Two candidates, judged in this order, the first that passes
is adopted:
  A  the new records appended and the profile refitted with the tail term (rows_half);
  B  the new records appended, the profile refitted without it (the old curve form).
A candidate passes when all of:
  1. consistency: at the call shapes measured both in the new rows and in the committed
     attention.csv, the median |new / old - 1| of time_s is at most 3% (same path, same machine
     kind: otherwise the rows cannot be pooled, and nothing is adopted);
  2. kernels: the GPU's golden figure (held-out median and P90 over kernels and layers, validate's
     `gpus`), computed on the committed record set with the refitted profile, is not above today's
     (H100 2.83% / 8.07%, H200 2.72% / 7.92%) at 0.01-point resolution;
  3. no kind that meets its target today (5% median, 10% P90) misses it after;
  4. the GPU's mla_layer held-out P90 does not rise.
Neither passes: the records are kept under calibration/measurements/<gpu>/s12mla/ (read by no fit)
and the profile stays as committed.

Result (2026-11-26, s12mla; calibration/measurements/<gpu>/s12mla/compare_*.txt): neither candidate
adopted on either GPU. The new rows sit 4.3% (H100) / 4.4% (H200) from the committed ones at the 40
shared shapes (another board of each type), over rule 1. Beyond it, A raises the golden kernels
figure by 0.01 pt (H100 2.84% / 8.08%) and cp_block's one-GPU rows past 5% median (6.4% / 6.5%),
while it takes H100 mla_layer 3.09% / 15.22% -> 2.61% / 13.84%. A campaign with both grids from one
board (real/campaigns/s12mla.sh with S12MLA_FULL=1) would let the grids replace the committed rows.

Second rule (s12mla2), written down before any held-out figure with the S12MLA_FULL=1 records was
computed: two runs of `S12MLA_FULL=1 bash real/campaigns/s12mla.sh` on the same H100 board, back to
back (round 1, round 2), each attn_small's 84 calls then attn_first's 36 (attention.csv's first grid
of attention cores, the shapes of the committed attn_fwd / attn_bwd rows). Round 2 is the repeat
check only: nothing is fitted or judged on it.
  0. repeatability: rows paired by position (same command, same order; their shapes must agree),
     the median |round 2 / round 1 - 1| of time_s over all rows (both grids, both passes) is at
     most 2% (REPEAT_MAX). Fails: nothing adopted.
  C  the committed <gpu>/attention.csv attn_fwd / attn_bwd rows (the grid attn_first re-times)
     replaced by round 1's attn_first rows, round 1's attn_small rows added (the MLA-layer rows of
     attention.csv kept as written), the profile refitted with the tail term (rows_half);
  D  the same records, the profile refitted without it (the old curve form).
Judged in that order, the first that passes is adopted. Every figure is validate's held-out one on
the record set adoption would commit (the replaced + added rows) with the candidate's profile: what
the golden file would then hold. A candidate passes when 0 holds and
  1. kernels: the GPU's golden figure is not above today's (H100 2.83% / 8.07%) at 0.01 point;
  2. no kind that meets its target today (5% median, 10% P90; cp_block's one-GPU rows included)
     misses it after;
  3. the GPU's mla_layer held-out P90 does not rise.
(Diagnostic beside it, not judged: the same profile on today's records.)

Result (2026-11-26, s12mla2; calibration/measurements/h100/s12mla_full_round1/compare_CD.txt): the
rounds repeat (median 1.45%, P90 7.1%), neither C nor D adopted. C: kernels 2.83% / 8.07% -> 2.91% /
7.97% and cp_block's one-GPU rows 4.35% / 6.67% -> 6.38% / 9.46% (the tail term lets e_max rise to
0.67, the large 128-head calls then run faster in the twin); mla_layer 15.22% -> 13.87% P90. D:
kernels 2.90% / 8.40%, attention 2.68% / 7.07% -> 3.38% / 12.64%.

    python -m calibration.attn_small CAMPAIGN_DIR [--gpu h100] [--json]
    python -m calibration.attn_small ROUND1_DIR --repeat ROUND2_DIR [--gpu h100]   (second rule)
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import fit as fitting
from calibration import records as rec
from calibration.fit import PROFILES_DIR, fit_gpu, write_profile
from calibration.predict import gpu_spec, predict_s
from calibration.split import is_held_out
from calibration.validate import MEDIAN_TARGET, P90_TARGET, validate
from calibration.records_io import csv_bytes, csv_exists, read_csv
from twin.core import atomic
from twin.costs.profile import Profile

SHAPE = ["bench", "batch", "seq_len", "num_heads", "qk_head_dim", "v_head_dim"]
CONSISTENCY_MAX = 0.03
REPEAT_MAX = 0.02      # second rule: same board, two rounds
TODAY_KERNELS = {"h100": (0.0283, 0.0807), "h200": (0.0272, 0.0792)}   # golden, before s12mla


def attn_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The attention-core rows (attn_fwd / attn_bwd) of an attention.csv frame."""
    return df[df["bench"].isin(["attn_fwd", "attn_bwd"])].copy()


def consistency(new: pd.DataFrame, old: pd.DataFrame) -> pd.DataFrame:
    """Shapes timed in both frames: old and new time_s and their ratio (new / old)."""
    n = attn_rows(new).groupby(SHAPE, as_index=False)["time_s"].median()
    o = attn_rows(old).groupby(SHAPE, as_index=False)["time_s"].median()
    both = n.merge(o, on=SHAPE, suffixes=("_new", "_old"))
    both["ratio"] = both["time_s_new"] / both["time_s_old"]
    return both


def layout_ratios(layout: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    """The MLA's operand layout (attention_layout.csv) against the same call in the grid (bhsd)."""
    keys = SHAPE
    lay = layout.groupby(keys, as_index=False)["time_s"].median()
    g = attn_rows(grid).groupby(keys, as_index=False)["time_s"].median()
    both = lay.merge(g, on=keys, suffixes=("_mla", "_bhsd"))
    both["ratio"] = both["time_s_mla"] / both["time_s_bhsd"]
    return both


def residuals(df: pd.DataFrame, gpu: str, profile: Profile) -> pd.DataFrame:
    """Each attention row's prediction by `profile`: head-rows, split and error (predicted / measured - 1)."""
    out = attn_rows(df).reset_index(drop=True)
    spec = gpu_spec(gpu)
    out["head_rows"] = out["batch"] * out["num_heads"] * out["seq_len"]
    out["held_out"] = [is_held_out(r) for _, r in out.iterrows()]
    out["predicted_s"] = [predict_s(r, spec, profile) for _, r in out.iterrows()]
    out["error"] = out["predicted_s"] / out["time_s"] - 1
    return out


def gpu_root(gpu: str, into: Path) -> Path:
    """A copy of the committed records of one GPU type: its folder and its multi-GPU folders
    (<gpu>x2, <gpu>x4, ...), which is all `validate` needs for that GPU's figures."""
    root = into / "measurements"
    for d in Path(rec.MEASUREMENTS_DIR).iterdir():
        if d.is_dir() and re.fullmatch(rf"{gpu}(x\d+)?", d.name):
            shutil.copytree(d, root / d.name)
    return root


def pooled_root(campaign: Path, gpu: str, into: Path) -> Path:
    """gpu_root with the campaign's attention rows appended to <gpu>/attention.csv."""
    root = gpu_root(gpu, into)
    append_rows(campaign / "attention.csv", root / gpu / "attention.csv")
    return root


def append_rows(src: Path, dst: Path) -> None:
    """The data lines of CSV `src` appended to `dst` as written (the committed rows keep their
    bytes); the two headers must agree. Either may be committed gzipped (records_io); `dst` is
    written plain, which readers then take ahead of a gzipped copy."""
    src_lines = _csv_text(src).splitlines(keepends=True)
    dst_text = _csv_text(dst)
    if src_lines[0].strip() != dst_text.splitlines()[0].strip():
        raise ValueError(f"{src}: columns differ from {dst}'s")
    if not dst_text.endswith("\n"):
        dst_text += "\n"
    dst.write_text(dst_text + "".join(src_lines[1:]))


def figures(result: dict, gpu: str) -> dict:
    """{'kernels': (median, p90), kind: (median, p90) ...} of one GPU's held-out cases."""
    g = result["gpus"][gpu]
    out = {"kernels": (g["median_abs_rel_error"], g["p90_abs_rel_error"])}
    for s in result["by_gpu_kind_gpus"]:
        held = s["held_out"]
        if s["gpu"] == gpu and held.get("num_cases"):
            kind = s["kind"] if s["num_gpus"] == 1 else f"{s['kind']} x{s['num_gpus']}"
            out[kind] = (held["median_abs_rel_error"], held["p90_abs_rel_error"])
    return out


def meets(fig: tuple) -> bool:
    return fig[0] is not None and fig[0] <= MEDIAN_TARGET and fig[1] <= P90_TARGET


def judge(before: dict, after_same_cases: dict, gpu: str, consistent: bool,
          inconsistent_why: str = f"new rows differ from the committed ones by > {CONSISTENCY_MAX:.0%} (median)") -> list[str]:
    """The adoption rule's failures (empty: the candidate passes)."""
    bad = [] if consistent else [inconsistent_why]
    today = TODAY_KERNELS.get(gpu, before["kernels"])
    k = after_same_cases["kernels"]
    if round(k[0], 4) > today[0] or round(k[1], 4) > today[1]:
        bad.append(f"kernels {k[0]:.2%}/{k[1]:.2%} above today's {today[0]:.2%}/{today[1]:.2%}")
    for kind, fig in before.items():
        if kind != "kernels" and meets(fig) and kind in after_same_cases and not meets(after_same_cases[kind]):
            bad.append(f"{kind} met its target before ({fig[0]:.1%}/{fig[1]:.1%}), misses after "
                       f"({after_same_cases[kind][0]:.1%}/{after_same_cases[kind][1]:.1%})")
    if "mla_layer" in before and after_same_cases.get("mla_layer", (0, 0))[1] > before["mla_layer"][1]:
        bad.append("mla_layer P90 rises")
    return bad


def refit(root: Path, gpu: str, profiles: Path, tail: bool) -> Profile:
    """The GPU's profile refitted from `root` (with or without the tail term), written under `profiles`."""
    span = fitting.ROWS_SPAN_MIN
    fitting.ROWS_SPAN_MIN = span if tail else float("inf")
    try:
        prof, _ = fit_gpu(gpu, root)
    finally:
        fitting.ROWS_SPAN_MIN = span
    write_profile(prof, profiles)
    return prof


def before_figures(gpu: str) -> dict:
    """Today's held-out figures of one GPU: the committed records and profiles."""
    with tempfile.TemporaryDirectory() as tmp:
        return figures(validate(root=gpu_root(gpu, Path(tmp)), gpus=[gpu]), gpu)


def compare(campaign: Path, gpu: str, candidates=("A", "B"), before: dict | None = None) -> dict:
    """Before / after figures of each candidate and the rule's verdict (`before`: today's figures
    where already computed, before_figures)."""
    new = read_csv(campaign / "attention.csv")
    old = read_csv(rec.MEASUREMENTS_DIR / gpu / "attention.csv")
    cons = consistency(new, old)
    dev = (cons["ratio"] - 1).abs()
    consistent = bool(len(cons)) and float(dev.median()) <= CONSISTENCY_MAX
    out = {"gpu": gpu, "consistency": {"shapes": int(len(cons)), "median_abs": float(dev.median()) if len(cons) else None,
                                       "max_abs": float(dev.max()) if len(cons) else None,
                                       "rows": cons.to_dict("records")}}
    lay = campaign / "attention_layout.csv"
    if csv_exists(lay):
        out["layout"] = layout_ratios(read_csv(lay), new).to_dict("records")
    out["before"] = before or before_figures(gpu)
    with tempfile.TemporaryDirectory() as tmp:
        committed = gpu_root(gpu, Path(tmp) / "committed")
        root = pooled_root(campaign, gpu, Path(tmp))
        for name in candidates:
            profiles = Path(tmp) / f"profiles_{name}"
            shutil.copytree(PROFILES_DIR, profiles)
            prof = refit(root, gpu, profiles, tail=name == "A")
            same = figures(validate(root=committed, profiles_dir=profiles, gpus=[gpu]), gpu)   # committed records
            pooled = figures(validate(root=root, profiles_dir=profiles, gpus=[gpu]), gpu)      # + the new records
            res = residuals(new, gpu, prof)
            fails = judge(out["before"], same, gpu, consistent)
            out[name] = {"attention": {d: vars(c) for d, c in prof.attention.items()},
                         "same_cases": same, "with_new_records": pooled, "fails": fails,
                         "new_rows_held_out": _err_summary(res[res.held_out]),
                         "new_rows_fit": _err_summary(res[~res.held_out]),
                         "profile": json.loads((profiles / f"{gpu}.json").read_text())}
    out["adopted"] = next((n for n in candidates if not out[n]["fails"]), None)
    return out


def split_rounds(df: pd.DataFrame, core_shapes: set) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(attn_small rows, attn_first rows) of one S12MLA_FULL=1 attention.csv: attn_first ran last,
    its rows are the trailing block of one row per committed (bench, shape) key."""
    n_first = len(core_shapes)   # (bench, shape) keys: one row each
    first = df.iloc[len(df) - n_first:]
    got = set(map(tuple, first[SHAPE].itertuples(index=False)))
    if len(df) < n_first or got != core_shapes:
        raise ValueError(f"the last {n_first} rows are not attn_first's grid (the committed core shapes)")
    return df.iloc[:len(df) - n_first], first


def core_shapes(df: pd.DataFrame) -> set:
    """The (bench, shape) keys of the attention-core rows of an attention.csv frame."""
    return set(map(tuple, attn_rows(df)[SHAPE].itertuples(index=False)))


def repeatability(round1: pd.DataFrame, round2: pd.DataFrame) -> dict:
    """|round 2 / round 1 - 1| of time_s over rows paired by position (their shapes must agree)."""
    if len(round1) != len(round2) or not (round1[SHAPE].values == round2[SHAPE].values).all():
        raise ValueError("the two rounds' rows differ in number or shape order")
    dev = (round2["time_s"].to_numpy() / round1["time_s"].to_numpy() - 1)
    a = np.abs(dev)
    return {"rows": int(a.size), "median_abs": float(np.median(a)), "p90_abs": float(np.percentile(a, 90)),
            "max_abs": float(a.max()), "signed_median": float(np.median(dev)),
            "repeatable": bool(np.median(a) <= REPEAT_MAX)}


def replaced_root(campaign: Path, gpu: str, into: Path) -> Path:
    """gpu_root with <gpu>/attention.csv's attention-core rows replaced by the campaign's rows (its
    attn_small and attn_first rows as written); the MLA-layer rows keep their bytes."""
    root = gpu_root(gpu, into)
    dst = root / gpu / "attention.csv"
    dst.write_text(replace_core_lines(_csv_text(dst), _csv_text(campaign / "attention.csv")))
    return root


def _csv_text(path: Path) -> str:
    """The text of the CSV behind `path`, plain or gzipped (records_io.csv_bytes), read with universal
    newlines as Path.read_text reads a plain file (real/'s CSVs end their lines in CRLF)."""
    return io.TextIOWrapper(io.BytesIO(csv_bytes(path))).read()


def replace_core_lines(committed: str, campaign: str) -> str:
    """The committed attention.csv text without its attn_fwd / attn_bwd lines, the campaign's data
    lines after it; the two headers must agree."""
    old, new = committed.splitlines(keepends=True), campaign.splitlines(keepends=True)
    if old[0].strip() != new[0].strip():
        raise ValueError("the campaign's attention.csv columns differ from the committed one's")
    kept = [ln for ln in old[1:] if ln.split(",", 1)[0] not in ("attn_fwd", "attn_bwd")]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    return old[0] + "".join(kept) + "".join(new[1:])


def compare_full(round1: Path, round2: Path, gpu: str, candidates=("C", "D"), before: dict | None = None) -> dict:
    """The second rule: repeatability of the two rounds, then each candidate's figures on the
    record set it would commit (round 1 replacing the committed core rows)."""
    r1, r2 = read_csv(round1 / "attention.csv"), read_csv(round2 / "attention.csv")
    old = read_csv(rec.MEASUREMENTS_DIR / gpu / "attention.csv")
    shapes = core_shapes(old)
    small1, first1 = split_rounds(r1, shapes)
    split_rounds(r2, shapes)
    rep = repeatability(r1, r2)
    out = {"gpu": gpu, "repeat": rep,
           "first_vs_committed": _cons_summary(consistency(first1, old)),
           "small_vs_first_same_board": _cons_summary(consistency(small1, first1))}
    out["before"] = before or before_figures(gpu)
    with tempfile.TemporaryDirectory() as tmp:
        committed = gpu_root(gpu, Path(tmp) / "committed")
        root = replaced_root(round1, gpu, Path(tmp))
        for name in candidates:
            profiles = Path(tmp) / f"profiles_{name}"
            shutil.copytree(PROFILES_DIR, profiles)
            prof = refit(root, gpu, profiles, tail=name == "C")
            after = figures(validate(root=root, profiles_dir=profiles, gpus=[gpu]), gpu)
            old_records = figures(validate(root=committed, profiles_dir=profiles, gpus=[gpu]), gpu)
            res = residuals(r1, gpu, prof)
            out[name] = {"attention": {d: vars(c) for d, c in prof.attention.items()},
                         "judged": after, "old_records": old_records,
                         "fails": judge(out["before"], after, gpu, rep["repeatable"],
                                        f"rounds differ by > {REPEAT_MAX:.0%} (median)"),
                         "new_rows_held_out": _err_summary(res[res.held_out]),
                         "new_rows_fit": _err_summary(res[~res.held_out]),
                         "profile": json.loads((profiles / f"{gpu}.json").read_text())}
    out["adopted"] = next((n for n in candidates if not out[n]["fails"]), None)
    return out


def _cons_summary(cons: pd.DataFrame) -> dict:
    dev = (cons["ratio"] - 1).abs()
    return {"shapes": int(len(cons)), "median_abs": float(dev.median()) if len(cons) else None,
            "max_abs": float(dev.max()) if len(cons) else None,
            "signed_median": float((cons["ratio"] - 1).median()) if len(cons) else None}


def format_full(out: dict) -> str:
    """compare_full's output as text: repeatability, consistency diagnostics, then the table."""
    r = out["repeat"]
    lines = [f"{out['gpu']}: round 2 / round 1 over {r['rows']} rows: median |diff| {r['median_abs']:.2%} "
             f"(signed {r['signed_median']:+.2%}), P90 {r['p90_abs']:.2%}, max {r['max_abs']:.2%}: "
             f"{'repeatable' if r['repeatable'] else 'NOT repeatable'} (<= {REPEAT_MAX:.0%})"]
    for key, what in (("first_vs_committed", "round 1 attn_first / committed core rows"),
                      ("small_vs_first_same_board", "round 1 attn_small / attn_first at shared shapes")):
        c = out[key]
        lines.append(f"  {what}: {c['shapes']} shapes, median |diff| {c['median_abs']:.2%} "
                     f"(signed {c['signed_median']:+.2%}), max {c['max_abs']:.2%}")
    names = [n for n in ("C", "D") if n in out]
    kinds = sorted(set(out["before"]) | {k for n in names for k in out[n]["judged"]},
                   key=lambda k: (k != "kernels", k))

    def f(t):
        return f"{t[0]:.2%}/{t[1]:.2%}" if t and t[0] is not None else "-"

    head = f"{'kind':<14} {'before':>13}" + "".join(f" {n + ' (judged)':>14} {n + ' old recs':>14}" for n in names)
    lines.append(head)
    for k in kinds:
        lines.append(f"{k:<14} {f(out['before'].get(k)):>13}" + "".join(
            f" {f(out[n]['judged'].get(k)):>14} {f(out[n]['old_records'].get(k)):>14}" for n in names))
    for n in names:
        lines.append(f"{n}: attention {out[n]['attention']}; round 1 rows held out {out[n]['new_rows_held_out']}, "
                     f"fit {out[n]['new_rows_fit']}; fails: {out[n]['fails'] or 'none'}")
    lines.append(f"adopted: {out['adopted'] or 'neither'}")
    return "\n".join(lines)


def _err_summary(res: pd.DataFrame) -> dict:
    e = res["error"].abs().to_numpy()
    if e.size == 0:
        return {"num": 0}
    return {"num": int(e.size), "median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
            "signed_median": float(res["error"].median())}


def format_report(out: dict) -> str:
    gpu = out["gpu"]
    c = out["consistency"]
    lines = [f"{gpu}: {c['shapes']} shapes in both the new and the committed attention.csv: "
             f"median |new/old - 1| {c['median_abs']:.1%}, max {c['max_abs']:.1%}" if c["shapes"] else
             f"{gpu}: no shape in both the new and the committed attention.csv"]
    for r in out.get("layout", []):
        lines.append(f"  layout {r['bench']} b{r['batch']} s{r['seq_len']} h{r['num_heads']}: MLA's "
                     f"{r['time_s_mla'] * 1e6:.0f} us / bhsd {r['time_s_bhsd'] * 1e6:.0f} us = {r['ratio']:.3f}")
    kinds = sorted(set(out["before"]) | {k for n in ("A", "B") if n in out for k in out[n]["with_new_records"]},
                   key=lambda k: (k != "kernels", k))
    head = f"{'kind':<14} {'before':>12}"
    for n in ("A", "B"):
        if n in out:
            head += f" {n + ' same cases':>15} {n + ' +new rows':>15}"
    lines.append(head)

    def f(t):
        return f"{t[0]:.2%}/{t[1]:.2%}" if t and t[0] is not None else "-"

    for k in kinds:
        line = f"{k:<14} {f(out['before'].get(k)):>12}"
        for n in ("A", "B"):
            if n in out:
                line += f" {f(out[n]['same_cases'].get(k)):>15} {f(out[n]['with_new_records'].get(k)):>15}"
        lines.append(line)
    for n in ("A", "B"):
        if n in out:
            lines.append(f"{n}: attention {out[n]['attention']}; new rows held out {out[n]['new_rows_held_out']}, "
                         f"fit {out[n]['new_rows_fit']}; fails: {out[n]['fails'] or 'none'}")
    lines.append(f"adopted: {out['adopted'] or 'neither'}")
    return "\n".join(lines)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.attn_small", description=__doc__.splitlines()[0])
    ap.add_argument("campaign", type=Path, help="the campaign's folder (attention.csv, attention_layout.csv)")
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--candidates", default="A,B")
    ap.add_argument("--json", type=Path, help="also write the whole comparison (profiles included) here")
    ap.add_argument("--before", type=Path, help="today's figures as JSON: read if the file exists, else computed and written")
    ap.add_argument("--repeat", type=Path, help="second rule: round 2's folder (CAMPAIGN is round 1); candidates C,D")
    args = ap.parse_args(argv)
    with entry.user_inputs("CAMPAIGN", args.campaign, "an s12mla campaign folder (attention.csv, attention_layout.csv)"):
        before = None
        if args.before and args.before.is_file():
            before = {k: tuple(v) for k, v in json.loads(args.before.read_text()).items()}
        elif args.before:
            before = before_figures(args.gpu)
            atomic.write_text(args.before, json.dumps(before))
        if args.repeat:
            out = compare_full(args.campaign, args.repeat, args.gpu, ("C", "D"), before)
            print(format_full(out))
        else:
            out = compare(args.campaign, args.gpu, tuple(args.candidates.split(",")), before)
            print(format_report(out))
        if args.json:
            atomic.write_text(args.json, json.dumps(out, indent=1, default=str))
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
