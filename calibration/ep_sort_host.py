"""s25ep (issue 13, docs/notes/s25ep_rule.md): the EP2 step's remaining host terms, judged on fresh shapes.

Three switches are judged, alone and together, on the held-out EP2 steps of a real/campaigns/s25ep.sh run:
- A1: calibration.pipeline.ADOPT_EP_BWD_RUN_HOST (s24bwd3 with its amendment A1: the EP backward's host a launch
  from the run's own fitting EP2 step, calibration.ep_bwd_run);
- C = F4 + H: calibration.predict.ADOPT_EP_FOUR_SORTS (an EP rank's four forward argsorts, each on torch's
  threshold with its own count) and ADOPT_CUB_LAUNCH_HOST (a cub radix launch at CUB_LAUNCH_HOST_S host seconds
  where a step's op lists take a per-launch rate; the rates solved from host intervals price it the same way).

cub_launch_host_s: the host seconds a cub radix launch inside one torch.argsort call, from a sort_sweep.csv
(real/bench/sort_sweep.py): the median over the argsort sizes above torch's threshold (4,096) of
(host_s - host_small) / (device ops - device ops there), host_small and its device ops the medians over the sizes
4,000-4,096 (the in-place path). Host seconds a call are perf_counter around it from an idle device.

    python -m calibration.ep_sort_host cub SORT_SWEEP_CSV
    python -m calibration.ep_sort_host judge RUN_FOLDER GPU     (RUN_FOLDER: <gpu>x2/s25ep_<stamp>, its part folders)
    python -m calibration.ep_sort_host guards OFF.json ON.json  (twin validate --json with C off and on: G1-G5)
    python -m calibration.ep_sort_host record OUT.json GPU RUN_FOLDER...   (the judgement's rows and verdicts)

`record` writes what the judge computed on the deliveries (JUDGEMENT_FILE: calibration/s25ep_judgement.json), so
the tests that hold its figures read them back instead of pricing every row under every setting again; one test
recomputes a part of it (tests/calibration/test_ep_sort_host.py) so the file cannot go stale unseen.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
import calibration.predict as predict
from calibration import entry, ep_bwd_run, prereg
from calibration.ep_postsync import error_line
from calibration.records_io import csv_exists, read_csv, write_json_text

SMALL_SIZES = (4000, 4096)   # the sweep's in-place-path sizes the radix path is measured against

# setting -> (ADOPT_EP_BWD_RUN_HOST, ADOPT_EP_FOUR_SORTS, ADOPT_CUB_LAUNCH_HOST); the judged ones and the reported
SETTINGS = {"base": (False, False, False), "A1": (True, False, False), "C": (False, True, True),
            "A1+C": (True, True, True), "F4": (False, True, False), "H": (False, False, True),
            "A1+F4": (True, True, False), "A1+H": (True, False, True)}
JUDGED = ("A1", "C", "A1+C")
CONTROL_PART = "v2-lite-2l"   # the first delivery's GPU-bound control; the second's (amendment A2): mixtral-2l
CONTROL_PARTS = ("v2-lite-2l", "mixtral-2l")
TARGET_MEDIAN, TARGET_P90 = 0.05, 0.10
CONTROL_MOVE = 0.01
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s25ep_judgement.json"
RECORDED = ("base",) + JUDGED   # the settings a judgement file holds (the rule's verdict reads these alone)
ROW_KEYS = ["part", "num_microbatches", "measured_s", "run_bwd_host_s"]


def cub_launch_host_s(sweep: pd.DataFrame) -> float:
    """Host seconds a cub radix launch (module docstring) from sort_sweep rows."""
    a = sweep[sweep["op"] == "argsort"]
    small = a[a["elems"].isin(SMALL_SIZES)]
    big = a[a["elems"] > predict.SMALL_SORT_ELEMS]
    if small.empty or big.empty:
        raise ValueError("sort_sweep rows: need argsort at 4,000-4,096 and above 4,096 elements")
    host0, ops0 = float(small["host_s"].median()), float(small["kernels"].median())
    per = (big["host_s"] - host0) / (big["kernels"] - ops0)
    return float(per.median())


@contextlib.contextmanager
def setting(name: str):
    """The three switches set as SETTINGS[name] inside the block (restored after)."""
    old = (pipe.ADOPT_EP_BWD_RUN_HOST, predict.ADOPT_EP_FOUR_SORTS, predict.ADOPT_CUB_LAUNCH_HOST)
    pipe.ADOPT_EP_BWD_RUN_HOST, predict.ADOPT_EP_FOUR_SORTS, predict.ADOPT_CUB_LAUNCH_HOST = SETTINGS[name]
    try:
        yield
    finally:
        pipe.ADOPT_EP_BWD_RUN_HOST, predict.ADOPT_EP_FOUR_SORTS, predict.ADOPT_CUB_LAUNCH_HOST = old


def fresh_errors(run, gpu: str, names=tuple(SETTINGS)) -> pd.DataFrame:
    """The held-out EP2 steps of a run folder, or of several (`run` a list: a `run` column tells them apart), as
    (part, num_microbatches, measured_s, run_bwd_host_s) with rel_error_<setting> for each setting: `committed`
    pricing where the setting leaves A1 off, `run` pricing where on (ep_bwd_run.run_table); the committed folder's
    inputs are recomputed once a setting (H re-solves its rates)."""
    runs = [Path(r) for r in (run if isinstance(run, (list, tuple)) else [run])]
    out = None
    for name in names:
        with setting(name):
            inputs = prereg.two_gpu_inputs(gpu)
            t = pd.concat([ep_bwd_run.run_table(r, gpu, inputs).assign(run=r.name) for r in runs], ignore_index=True)
        col = t["rel_error_run" if SETTINGS[name][0] else "rel_error_committed"]
        if out is None:
            out = t[["run", "part", "num_microbatches", "measured_s", "run_bwd_host_s"]].copy()
        out[f"rel_error_{name}"] = col.to_numpy()
    return out if len(runs) > 1 else out.drop(columns="run")


def verdict(t: pd.DataFrame) -> dict:
    """R1-R3 of the rule per judged setting (the fresh side; G comes from twin validate), and the decision
    over the fresh side alone: {setting: {median, p90, r1, r2, r3}, "fresh_pass": [...]}."""
    base = t["rel_error_base"].to_numpy()
    control = t["part"].isin(CONTROL_PARTS).to_numpy()
    out: dict = {}
    for name in JUDGED:
        e = t[f"rel_error_{name}"].to_numpy()
        a = np.abs(e)
        med, p90 = float(np.median(a)), float(np.percentile(a, 90))
        moves = np.abs(e[control] - base[control])
        out[name] = {"median": med, "p90": p90, "r1": med <= TARGET_MEDIAN and p90 <= TARGET_P90,
                     "r2": med < float(np.median(np.abs(base))), "r3": bool(np.all(moves <= CONTROL_MOVE)),
                     "control_rows": int(control.sum())}
    out["fresh_pass"] = [n for n in JUDGED if out[n]["r1"] and out[n]["r2"] and out[n]["r3"]]
    return out


def decision(fresh: dict, guards_pass: bool) -> list[str]:
    """The rule's decision: the switches adopted ([] none) from the fresh verdict and G (for C's settings)."""
    ok = {n for n in fresh["fresh_pass"] if n == "A1" or guards_pass}
    if "A1+C" in ok:
        return ["A1", "C"]
    alone = [n for n in ("A1", "C") if n in ok]
    if len(alone) == 2:
        alone = [min(alone, key=lambda n: fresh[n]["median"])]
    return alone


GUARD_EP_KINDS = ("ep_step", "pipeline_step")
GUARD_EP_MEDIAN, GUARD_EP_P90, GUARD_OTHER_MEDIAN, GUARD_TOTAL, GUARD_PREREG = 0.005, 0.01, 0.002, 0.003, 0.01
G2_ONE_SIDED = True   # amendment A2 (docs/notes/s25ep_rule.md): G2 as "not worse by more than 0.2 point"
PREREG_SECTIONS = ("prereg_s20epnew", "fresh_s21ep2", "prereg_s21pp4", "prereg_s21pp4b")


def _orders(d: dict) -> list:
    """Every schedule order / ordered flag a validate JSON's ranking sections hold (G4)."""
    out = []
    for section in ("ranking", "ranking_interleaved"):
        for key, v in sorted((d.get(section) or {}).items()):
            out += [(section, key, c.get("config"), tuple(c.get("predicted", ()))) for c in v.get("configs", [])]
    for section in ("prereg_s21pp4", "prereg_s21pp4b"):
        out += [(section, r.get("gpu"), r.get("model"), r.get("pair"), r.get("num_microbatches"), r.get("predicted_faster"))
                for r in (d.get(section) or {}).get("ranking", [])]
    return out


def guards(off: dict, on: dict) -> tuple[bool, list[str]]:
    """The rule's G1-G5 on two `twin validate --json` outputs (C off, C on): (all hold, the printed lines)."""
    lines, ok = [], True

    def check(name: str, before: float, after: float, margin: float, worse_only: bool = True) -> None:
        nonlocal ok
        delta = after - before
        good = delta <= margin if worse_only else abs(delta) <= margin
        ok &= good
        if delta != 0 or not good:
            lines.append(f"  {'ok ' if good else 'BAD'} {name}: {before:.4%} -> {after:.4%} ({delta * 100:+.2f} pt, "
                         f"margin {margin * 100:.1f})")

    for gpu, kinds in off["by_gpu_kind"].items():
        for kind, v in kinds.items():
            h0, h1 = v.get("held_out") or {}, on["by_gpu_kind"][gpu][kind].get("held_out") or {}
            if not h0.get("num_cases"):
                continue
            if kind in GUARD_EP_KINDS:    # G1
                check(f"G1 {gpu} {kind} median", h0["median_abs_rel_error"], h1["median_abs_rel_error"], GUARD_EP_MEDIAN)
                check(f"G1 {gpu} {kind} P90", h0["p90_abs_rel_error"], h1["p90_abs_rel_error"], GUARD_EP_P90)
            else:                         # G2 (amendment A2: one-sided, not worse; as first written: both ways)
                check(f"G2 {gpu} {kind} median", h0["median_abs_rel_error"], h1["median_abs_rel_error"],
                      GUARD_OTHER_MEDIAN, worse_only=G2_ONE_SIDED)
    for gpu, v in off["gpus"].items():    # G3
        for stat in ("median_abs_rel_error", "p90_abs_rel_error"):
            check(f"G3 {gpu} held-out total {stat}", v[stat], on["gpus"][gpu][stat], GUARD_TOTAL, worse_only=False)
        t = off["targets"]
        met = [on["gpus"][gpu][s] <= t[s] for s in t] == [v[s] <= t[s] for s in t]
        ok &= met
        if not met:
            lines.append(f"  BAD G3 {gpu}: a target changes pass/fail")
    same = _orders(off) == _orders(on)    # G4
    ok &= same
    lines.append(f"  {'ok ' if same else 'BAD'} G4 schedule rankings {'unchanged' if same else 'CHANGED'}")
    for section in PREREG_SECTIONS:       # G5
        for gpu, v in ((off.get(section) or {}).get("by_gpu") or {}).items():
            check(f"G5 {section} {gpu} median", v["median_abs_rel_error"],
                  on[section]["by_gpu"][gpu]["median_abs_rel_error"], GUARD_PREREG)
    return ok, lines


def judgement(runs: list, gpu: str) -> dict:
    """The fresh rows of each run folder under RECORDED's settings and the verdict on them, as JSON-ready values
    ({"gpu", "settings", "runs": {run name: {"rows": [...], "verdict": {...}}}}; a missing A1 input as null)."""
    t = fresh_errors([Path(r) for r in runs], gpu, names=RECORDED)
    if "run" not in t:
        t = t.assign(run=Path(runs[0]).name)
    out: dict = {"gpu": gpu, "settings": list(RECORDED), "runs": {}}
    for run, g in t.groupby("run", sort=False):
        rows = g.drop(columns="run").reset_index(drop=True)
        records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                   for r in rows.to_dict(orient="records")]
        out["runs"][run] = {"rows": records, "verdict": verdict(rows)}
    return out


def judged_rows(judged: dict) -> dict[str, pd.DataFrame]:
    """A judgement's rows read back: {run name: the table fresh_errors gave (ROW_KEYS, rel_error_<setting>)}."""
    return {run: pd.DataFrame(v["rows"]).astype({"measured_s": float, "run_bwd_host_s": float})
            for run, v in judged["runs"].items()}


def _code_commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True, cwd=repo,
                          check=False).stdout.strip()


def sweep_lines(run: Path) -> list[str]:
    path = Path(run) / "sortsweep" / "sort_sweep.csv"
    if not csv_exists(path):
        return ["  sortsweep: no rows"]
    s = read_csv(path)
    return [f"  sortsweep ({s['gpu_name'].iloc[0]}): {cub_launch_host_s(s) * 1e6:.2f} us a cub launch; committed "
            f"CUB_LAUNCH_HOST_S {({k: round(v * 1e6, 2) for k, v in predict.CUB_LAUNCH_HOST_S.items()})} us"]


def _parser():
    ap = entry.parser("calibration.ep_sort_host", __doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("cub", help="the host seconds of one cub radix launch from a sort sweep").add_argument(
        "sweep", type=entry.csv_file, metavar="SORT_SWEEP_CSV")
    g = sub.add_parser("guards", help="G1-G5 from two twin validate --json outputs (C off, C on)")
    g.add_argument("off", type=Path, metavar="OFF.json")
    g.add_argument("on", type=Path, metavar="ON.json")
    r = sub.add_parser("record", help="write the judgement of fresh deliveries to OUT.json")
    r.add_argument("out", type=Path, metavar="OUT.json")
    r.add_argument("gpu")
    r.add_argument("runs", type=entry.folder, nargs="+", metavar="RUN_FOLDER")
    j = sub.add_parser("judge", help="the fresh EP2 rows of one delivery under every setting")
    j.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    j.add_argument("gpu")
    return ap


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    argv = [args.command, *{"cub": lambda: [str(args.sweep)], "guards": lambda: [str(args.off), str(args.on)],
                            "record": lambda: [str(args.out), args.gpu, *map(str, args.runs)],
                            "judge": lambda: [str(args.run), args.gpu]}[args.command]()]
    if argv[0] == "cub":
        print(f"{cub_launch_host_s(read_csv(Path(argv[1]))):.4g}")
        return 0
    if argv[0] == "guards":
        ok, lines = guards(json.loads(Path(argv[1]).read_text()), json.loads(Path(argv[2]).read_text()))
        print("\n".join(lines))
        print(f"G (C off -> on): {'holds' if ok else 'FAILS'}")
        return 0
    if argv[0] == "record":
        dirty = prereg.dirty_paths(Path(__file__).resolve().parents[1])
        if dirty:
            print(f"record: uncommitted changes under twin/ or calibration/ ({dirty[:3]}): the file names the "
                  "commit of the code that computed it", file=sys.stderr)
            return 2
        out = {"command": "python -m calibration.ep_sort_host " + " ".join(argv), "code_commit": _code_commit(),
               **judgement([Path(r) for r in argv[3:]], argv[2])}
        write_json_text(argv[1], json.dumps(out, indent=1) + "\n")
        for run, v in out["runs"].items():
            print(run, {n: f"{v['verdict'][n]['median']:.2%} / {v['verdict'][n]['p90']:.2%}" for n in JUDGED},
                  "fresh side passes:", v["verdict"]["fresh_pass"] or "none")
        return 0
    run, gpu = Path(argv[1]), argv[2]
    pd.set_option("display.width", 220)
    print("\n".join(sweep_lines(run)))
    t = fresh_errors(run, gpu)
    for name in SETTINGS:
        print(error_line(f"{name:6s}", t[f"rel_error_{name}"].to_numpy()))
    print(t.to_string(index=False, float_format=lambda x: f"{x:+.4f}"))
    v = verdict(t)
    for name in JUDGED:
        r = v[name]
        print(f"{name}: median {r['median']:.2%} P90 {r['p90']:.2%} R1 {r['r1']} R2 {r['r2']} R3 {r['r3']} "
              f"(control rows {r['control_rows']})")
    print(f"fresh side passes: {v['fresh_pass'] or 'none'}; adopt = decision(fresh, G from twin validate C on/off)")
    print(f"  if G holds: adopt {decision(v, True) or 'nothing'}; if G fails: adopt {decision(v, False) or 'nothing'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
