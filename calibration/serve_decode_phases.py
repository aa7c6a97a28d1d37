"""Where real/serve's EP2 decode iterations spend their time, and where the twin's prediction of them
misses (issue 15, group C: the 2xH100 decode misses; docs/notes/s20srv.md). Diagnostic: no fit or
validation reads it.

An EP2 instance's decode-only iteration (no prompt work on any rank) is timed as its slower rank's
duration. `run_levels`: per run, the decode iterations in WINDOW_S windows; the run's fast level is
the FAST_QUANTILE of its window medians, a window over SLOW_FACTOR x that level is slow: the share of
slow windows and their level over the fast one (the host's phases, docs/notes/s9srv in the
measurements README). `floor_by_workload`: the fast levels by decode rows per rank and prompt length
(short / long contexts): the iteration's dependence on batch and KV length with the phases taken out.
`table_ratios`: measured / predicted (the run's engine table, before its spread) of each run's decode
iterations in its fast and its slow windows. `iteration_time_split`: per run, mean measured and
predicted decode-only and prompt-carrying iteration times and the loop gap against the table's
loop_s. `hostprobe_phases`: the s9srv probe's iteration segments (host launch before / in / after the
MoE dispatch, the GPU tail after the last launch, the ranks' gloo exchange, a pure-Python CPU probe)
in fast and slow windows, per rank.

    python -m calibration.serve_decode_phases
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from calibration.serve_engine_fit import design, load_runs, mark_new_sizes, predicted_s
from calibration.serve_load_validation import session_engine_name, sessions
from twin.core.specs import serve_engines

WINDOW_S = 0.25               # a window of decode iterations (the host's phases last 0.5-2 s)
MIN_WINDOW_ITERATIONS = 10    # fewer decode iterations: the window is left out
FAST_QUANTILE = 0.1           # a run's fast level: this quantile of its window medians
SLOW_FACTOR = 1.2             # a window this much over its run's fast level is slow
LONG_CONTEXT_TOKENS = 1024    # a run whose median decode context is longer is a long-prompt run
ROWS_BINS = (0, 2, 4, 8, 16, 32, 64)   # decode rows per rank: bin edges (right-closed) of floor_by_workload
# the 2xH100 records folders with EP2 load runs (fit-split runs read; the dosed '-slow' runs left out)
H100X2_FIT_FOLDERS = ("h100x2", "h100x2/s8srv_round1", "h100x2/s8srv_round2", "h100x2/s13srv",
                      "h100x2/s14srv_newhost_20261127_0135")
# ... those whose hosts ran the EP2 decode at one fast level (~4.4 ms at 8 rows a rank; the s13srv-script
# hosts' is 6.3-7.2 ms): the fast level's dependence on the workload is read over these alone
H100X2_FAST_HOST_FOLDERS = H100X2_FIT_FOLDERS[:3]
PROBE_SEGMENTS = ("duration_s", "host_s", "pre_dispatch_s", "dispatch_s", "post_dispatch_s", "tail_s",
                  "exchange_s", "cpu_probe_s")


def instance_decode(iterations: pd.DataFrame) -> pd.DataFrame:
    """The decode-only iterations of an EP instance (every rank's rows of one iteration number):
    run_id, iteration, start_s (the earliest rank's), duration_s (the slower rank's), rows_per_rank
    (the busiest rank's decode rows), ctx_tokens (mean decode context over the ranks' rows)."""
    g = iterations.groupby(["run_id", "iteration"])
    it = pd.DataFrame({"start_s": g.start_s.min(), "duration_s": g.duration_s.max(),
                       "prefill_tokens": g.prefill_tokens.sum(), "rows_per_rank": g.decode_seqs.max(),
                       "rows": g.decode_seqs.sum(), "kv_tokens": g.decode_kv_tokens.sum()}).reset_index()
    dec = it[(it.prefill_tokens == 0) & (it.rows > 0)].copy()
    dec["ctx_tokens"] = dec.kv_tokens / dec.rows
    return dec[["run_id", "iteration", "start_s", "duration_s", "rows_per_rank", "ctx_tokens"]].reset_index(drop=True)


def windows(decode: pd.DataFrame, value: str = "duration_s") -> pd.DataFrame:
    """One run's decode iterations in WINDOW_S windows of start_s: the median of `value` and the
    iterations of each window holding at least MIN_WINDOW_ITERATIONS, and whether it is slow (its
    median duration over SLOW_FACTOR x the run's fast level)."""
    w = (decode.start_s // WINDOW_S).astype(int)
    agg = decode.groupby(w).agg(duration_s=("duration_s", "median"), value=(value, "median"), n=("duration_s", "size"))
    agg = agg[agg.n >= MIN_WINDOW_ITERATIONS].copy()
    fast = agg.duration_s.quantile(FAST_QUANTILE) if len(agg) else np.nan
    agg["slow"] = agg.duration_s > SLOW_FACTOR * fast
    return agg


def run_levels(iterations: pd.DataFrame) -> pd.DataFrame:
    """Per run with at least 4 windows: rows per rank and context (medians), the decode median, the
    fast level, the share of slow windows and the slow windows' median over the fast ones'."""
    rows = []
    for run, dec in instance_decode(iterations).groupby("run_id"):
        win = windows(dec)
        if len(win) < 4:
            continue
        fast_s = float(win.duration_s.quantile(FAST_QUANTILE))
        slow = win[win.slow]
        rows.append({"run_id": run, "rows_per_rank": float(dec.rows_per_rank.median()),
                     "ctx_tokens": float(dec.ctx_tokens.median()), "median_s": float(dec.duration_s.median()),
                     "fast_s": fast_s, "slow_share": float(win.slow.mean()),
                     "slow_over_fast": float(slow.duration_s.median() / win.duration_s[~win.slow].median())
                     if len(slow) else np.nan})
    return pd.DataFrame(rows, columns=["run_id", "rows_per_rank", "ctx_tokens", "median_s", "fast_s", "slow_share",
                                       "slow_over_fast"])


def floor_by_workload(levels: pd.DataFrame) -> pd.DataFrame:
    """The runs' fast levels by decode rows per rank (ROWS_BINS) and prompt kind (long: median
    context over LONG_CONTEXT_TOKENS): runs, median and range of fast_s."""
    lv = levels.assign(prompt=np.where(levels.ctx_tokens > LONG_CONTEXT_TOKENS, "long", "short"),
                       rows_bin=pd.cut(levels.rows_per_rank, ROWS_BINS + (np.inf,)).astype(str))
    g = lv.groupby(["rows_bin", "prompt"], sort=False).fast_s
    out = pd.DataFrame({"runs": g.size(), "fast_median_s": g.median(), "fast_min_s": g.min(), "fast_max_s": g.max()})
    return out.reset_index().sort_values(["prompt", "rows_bin"], key=lambda s: s.map(_bin_low) if s.name == "rows_bin" else s)


def _bin_low(label: str) -> float:
    return float(label.strip("(]").split(",")[0])


def phase_by_prompt(iterations: pd.DataFrame, load: pd.DataFrame, max_rows_per_rank: int = 16) -> pd.DataFrame:
    """Per run (decode iterations of at most `max_rows_per_rank` rows a rank, where the rows move the
    fast level little): its windows' median over its session's reference (the 5th percentile of
    every such window of the session's runs: the host's fast level there), the share of windows over
    SLOW_FACTOR x the reference, and whether it is a long-prompt run; sessions as the replay groups
    them (calibration.serve_load_validation.sessions)."""
    sess = sessions(load.astype(str).to_dict("records"))
    dec = instance_decode(iterations)
    dec = dec[dec.rows_per_rank <= max_rows_per_rank]
    dec = dec.assign(window=(dec.start_s // WINDOW_S).astype(int))
    win = dec.groupby(["run_id", "window"]).agg(duration_s=("duration_s", "median"), n=("duration_s", "size"),
                                                 ctx_tokens=("ctx_tokens", "median")).reset_index()
    win = win[win.n >= MIN_WINDOW_ITERATIONS].assign(session=lambda w: w.run_id.map(sess))
    rows = []
    for session, ws in win.groupby("session"):
        ref_s = float(ws.duration_s.quantile(0.05))
        for run, wr in ws.groupby("run_id"):
            rows.append({"run_id": run, "session": session, "long": bool(wr.ctx_tokens.median() > LONG_CONTEXT_TOKENS),
                         "reference_s": ref_s, "over_reference": float(wr.duration_s.median() / ref_s),
                         "slow_share": float((wr.duration_s > SLOW_FACTOR * ref_s).mean())})
    return pd.DataFrame(rows, columns=["run_id", "session", "long", "reference_s", "over_reference", "slow_share"])


def long_over_short(phases: pd.DataFrame) -> pd.DataFrame:
    """Per session of `phase_by_prompt` rows: the long-prompt runs' median over_reference over the
    short-prompt runs' (1: the prompt length does not move the decode level)."""
    rows = []
    for session, p in phases.groupby("session"):
        lo, sh = p[p.long].over_reference, p[~p.long].over_reference
        if len(lo) and len(sh):
            rows.append({"session": session, "long_runs": len(lo), "short_runs": len(sh),
                         "long_over_reference": float(lo.median()), "short_over_reference": float(sh.median()),
                         "long_over_short": float(lo.median() / sh.median())})
    return pd.DataFrame(rows)


def predicted_design(folder: Path, split: str) -> pd.DataFrame:
    """The engine fit's design rows of a folder's `split` runs with pred_s (kernel physics + the
    run's session table's terms, before the spread) and the table's name."""
    folder = Path(folder)
    load = load_runs(folder)
    sess = sessions(load)
    table = serve_engines()
    df, _ = design(folder, split)
    parts = []
    for run in load:
        sub = df[df.run_id == run["run_id"]] if len(df) else df
        if sub.empty:
            continue
        name = session_engine_name(run, sess[run["run_id"]])
        coef = table[name]
        sub = mark_new_sizes(sub, int(coef.get("new_size_bin_tokens", 1)))
        parts.append(sub.assign(split=split, table=name, pred_s=predicted_s(sub, coef)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def table_ratios(pred: pd.DataFrame, iterations: pd.DataFrame) -> pd.DataFrame:
    """Per run of `pred` (predicted_design): its decode-only iterations' measured / predicted median
    over all, in its fast windows and in its slow windows (windows as run_levels), the slow share."""
    dec = pred[pred.prompt_iteration_s == 0][["run_id", "iteration", "measured_s", "pred_s", "physics_s"]]
    dec = dec.merge(instance_decode(iterations)[["run_id", "iteration", "start_s", "duration_s"]], on=["run_id", "iteration"])
    dec["ratio"] = dec.measured_s / dec.pred_s
    rows = []
    for run, d in dec.groupby("run_id"):
        win = windows(d, "ratio")
        if len(win) < 4:
            continue
        rows.append({"run_id": run, "predicted_s": float(d.pred_s.median()), "physics_s": float(d.physics_s.median()),
                     "ratio": float(d.ratio.median()), "fast_ratio": float(win.value[~win.slow].median()),
                     "slow_ratio": float(win.value[win.slow].median()) if win.slow.any() else np.nan,
                     "slow_share": float(win.slow.mean())})
    return pd.DataFrame(rows, columns=["run_id", "predicted_s", "physics_s", "ratio", "fast_ratio", "slow_ratio", "slow_share"])


def iteration_time_split(pred: pd.DataFrame, max_gap_s: float = 0.002) -> pd.DataFrame:
    """Per run of `pred` (predicted_design): decode-only and prompt-carrying iterations, their mean
    measured and predicted seconds, and the mean busy gap after an iteration (under max_gap_s: the
    loop did not sleep) beside the table's loop_s."""
    tables = serve_engines()
    rows = []
    for run, x in pred.groupby("run_id"):
        dec, pro = x[x.prompt_iteration_s == 0], x[x.prompt_iteration_s > 0]
        gaps = x.gap_s[x.gap_s < max_gap_s]
        rows.append({"run_id": run, "decode_iterations": len(dec), "decode_measured_s": dec.measured_s.mean(),
                     "decode_predicted_s": dec.pred_s.mean(), "prompt_iterations": len(pro),
                     "prompt_measured_s": pro.measured_s.mean(), "prompt_predicted_s": pro.pred_s.mean(),
                     "gap_measured_s": gaps.mean(), "loop_s": tables[x.table.iloc[0]]["loop_s"]})
    return pd.DataFrame(rows)


def hostprobe_phases(path: Path) -> pd.DataFrame:
    """One rank's s9srv hostprobe record (real/serve/hostprobe.py): the medians over its fast and its
    slow windows (decode phase, no prompt) of PROBE_SEGMENTS (tail_s = duration - host launch: the GPU's
    work after the last launch), and slow - fast."""
    d = read_csv(path)
    dec = d[(d.phase == "decode") & (d.prefill_tokens == 0)].assign(tail_s=lambda x: x.duration_s - x.host_s)
    w = (dec.start_s // WINDOW_S).astype(int)
    win = dec.groupby(w)[list(PROBE_SEGMENTS)].median()
    win = win[dec.groupby(w).size() >= MIN_WINDOW_ITERATIONS]
    slow = win.duration_s > SLOW_FACTOR * win.duration_s.quantile(FAST_QUANTILE)
    fast_s, slow_s = win[~slow].median(), win[slow].median()
    return pd.DataFrame({"fast_s": fast_s, "slow_s": slow_s, "slow_minus_fast_s": slow_s - fast_s}).T.assign(
        windows=len(win), slow_windows=int(slow.sum()))


@entry.script
def main(argv: list[str] | None = None) -> None:
    entry.parser("calibration.serve_decode_phases", __doc__).parse_args(argv)
    pd.set_option("display.width", 200)
    for name in ("h100x2", "h200x2"):
        folder = rec.records_root() / name
        if not csv_exists(folder / "serve_iterations.csv"):
            continue
        its = read_csv(folder / "serve_iterations.csv")
        load = read_csv(folder / "serve_load.csv").set_index("run_id")[["split", "timestamp_utc"]]
        pred = pd.concat([predicted_design(folder, s) for s in ("fit", "holdout")], ignore_index=True)
        lv = run_levels(its).set_index("run_id").join(load).join(
            table_ratios(pred, its).drop(columns="slow_share").set_index("run_id"))
        print(f"== {name}: decode-only iterations per run (seconds; ratio = measured / the table's prediction)")
        print(lv.sort_values("timestamp_utc").round(4).to_string())
        print(f"== {name}: per run, mean iteration times measured / predicted and the loop gap")
        print(iteration_time_split(pred).round(5).to_string(index=False))
    fit_levels, fit_phases = [], []
    for sub in H100X2_FIT_FOLDERS:
        fast_host = sub in H100X2_FAST_HOST_FOLDERS
        folder = rec.records_root() / sub
        load = read_csv(folder / "serve_load.csv")
        fit = set(load.run_id[(load.split == "fit") & ~load.run_id.str.endswith("-slow")])   # dosed hosts left out
        its = read_csv(folder / "serve_iterations.csv")
        lv, ph = run_levels(its), phase_by_prompt(its, load)
        if fast_host:
            fit_levels.append(lv[lv.run_id.isin(fit)])
        fit_phases.append(ph[ph.run_id.isin(fit)].assign(folder=sub))
    print(f"== 2xH100 fit runs of {', '.join(H100X2_FAST_HOST_FOLDERS)}: fast decode level by rows per rank and prompt kind")
    print(floor_by_workload(pd.concat(fit_levels)).round(5).to_string(index=False))
    print("== 2xH100 fit runs (<= 16 rows a rank): decode level over the session's fast reference, long / short prompts")
    print(long_over_short(pd.concat(fit_phases)).round(3).to_string(index=False))
    probe = rec.records_root() / "h100x2" / "s9srv" / "ep"
    for rank in (0, 1):
        path = probe / f"hostprobe_ep_r{rank}.csv"
        if csv_exists(path):
            print(f"== h100x2/s9srv EP2 decode (8 rows a rank, 512-token contexts), rank {rank}: segments, fast / slow windows")
            print(hostprobe_phases(path).round(6).to_string())


if __name__ == "__main__":
    main()
