"""Where the serving twin misses real/serve's EP2 runs, iteration by iteration (issue 15, s9srv).

`residual_by_kind(folder)`: per run and kind of iteration (decode-only, mixed = prompt work beside
decode rows, prompt-only), the median measured time, the fitted engine's prediction (kernel
physics + the engine terms of the run's table, before the spread) and their ratio: which iterations
carry a run's miss. `host_state_windows(iterations)`: decode-only iterations per 0.25 s window with
the loop's gap after them (the control group's gloo flag exchange, CPU only): do the slow phases
slow the host's own work too? `repeat_pairs(load)`: runs of the same configuration repeated in one
process (s8srv round 2's pinning pairs), each figure's relative difference: the targets a perfect
model of the configuration could meet. `hostprobe_summary(dir)`: the s9srv campaign's records
(real/serve/hostprobe.py) reduced to what they decide. `first_met_excess(folder)` (s30ep): per run, the
prompt-carrying iterations by what their sizes were to their ranks (met before, a new exact size in a met
bin, a new bin), each's measured time less the twin's prediction without the first-met stall: what a
first-met size costs in that run, against what the table charges.

    python -m calibration.serve_ep_residual
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.serve_engine_fit import base_table, design, host_s, load_runs, mark_new_sizes, predicted_s
from twin.core.specs import serve_engines
from calibration.serve_load_validation import FIGURES, TARGETS, session_engine_name, sessions
from calibration.records_io import csv_exists, csv_name, csv_stem, glob_csv, read_csv

WINDOW_S = 0.25          # window of the phase analysis
SLOW_FACTOR = 1.25       # a window this much over the run's fastest decile of windows is 'slow'


def residual_by_kind(folder: Path) -> pd.DataFrame:
    """Per (split, run, kind): iterations, median measured and predicted seconds, median ratio."""
    folder = Path(folder)
    load = load_runs(folder)
    sess = sessions(load)
    table = serve_engines()
    parts = []
    for split in ("fit", "holdout"):
        df, _ = design(folder, split)
        if df.empty:
            continue
        for run in load:
            sub = df[df.run_id == run["run_id"]]
            if sub.empty:
                continue
            coef = table[session_engine_name(run, sess[run["run_id"]])]
            sub = mark_new_sizes(sub, int(coef.get("new_size_bin_tokens", 1)))
            parts.append(sub.assign(split=split, pred_s=predicted_s(sub, coef)))
    df = pd.concat(parts)
    df["kind"] = np.where(df.prompt_iteration_s > 0, np.where(df.decode_seqs > 0, "mixed", "prompt"), "decode")
    g = df.groupby(["split", "run_id", "kind"])
    return pd.DataFrame({"iterations": g.size(), "measured_s": g.measured_s.median(), "predicted_s": g.pred_s.median(),
                         "ratio": g.apply(lambda x: float((x.measured_s / x.pred_s).median()))}).reset_index()


def first_met_class(rank_sizes, met: set, met_bins: set, bin_tokens: int) -> str:
    """'new_bin' where some rank's flat size falls in a bin of `bin_tokens` that rank had not run,
    else 'new_size' where some rank's exact size is new to it, else 'met' (met: {(rank, size)},
    met_bins: {(rank, size // bin_tokens)}; the rule of serve_engine_fit.mark_new_sizes)."""
    keys = set(enumerate(rank_sizes))
    if any((g, n // bin_tokens) not in met_bins for g, n in keys):
        return "new_bin"
    return "new_size" if not keys <= met else "met"


def first_met_excess(folder: Path) -> pd.DataFrame:
    """Per (split, run, class of first_met_class), the eager prompt-carrying iterations: their number,
    the median and mean of measured less the prediction without the first-met stall (kernel physics +
    the run's table's terms, new_size_s / new_bin_s left out), and the mean stall the table charges
    them (host-bound rows only, as the twin). A committed folder's runs take their session table;
    another folder's, its GPU's unpinned table (base_table)."""
    df = first_met_rows(folder)
    g = df.groupby(["split", "run_id", "cls"], sort=False)
    return pd.DataFrame({"iterations": g.size(), "excess_median_s": g.excess_s.median(),
                         "excess_mean_s": g.excess_s.mean(), "charged_mean_s": g.charged_s.mean()}).reset_index()


def first_met_rows(folder: Path) -> pd.DataFrame:
    """first_met_excess's rows, one an eager prompt-carrying iteration: split, run_id, cls, measured_s (the slower
    rank's duration), excess_s and charged_s."""
    folder = Path(folder)
    load = load_runs(folder)
    sess = sessions(load)
    table = serve_engines()
    out = []
    for split in ("fit", "holdout"):
        df, _ = design(folder, split)
        if df.empty:
            continue
        for run in load:
            sub = df[df.run_id == run["run_id"]]
            if sub.empty:
                continue
            name = session_engine_name(run, sess[run["run_id"]])
            coef = table[name if name in table else base_table(run)]
            bin_tokens = int(coef.get("new_size_bin_tokens", 1))
            sub = mark_new_sizes(sub, bin_tokens)
            bound = (sub.physics_s < host_s(sub, coef)).astype(float) if coef.get("new_size_host_bound") else 1.0
            stall = (sub.new_size_flag * coef["new_size_s"] + sub.new_bin_flag * coef["new_bin_s"]) * bound
            bare = predicted_s(sub.assign(new_size_s=0.0, new_bin_s=0.0), coef)
            first = sub.iloc[0]
            met = set(first.sizes_before)
            met_bins = {(g, n // bin_tokens) for g, n in met}
            for row, b, st in zip(sub.itertuples(), bare, stall):
                if row.graph_rows:
                    continue
                cls = first_met_class(row.rank_sizes, met, met_bins, bin_tokens)
                met |= set(enumerate(row.rank_sizes))
                met_bins |= {(g, n // bin_tokens) for g, n in enumerate(row.rank_sizes)}
                if row.prompt_iteration_s > 0:
                    out.append({"split": split, "run_id": row.run_id, "cls": cls, "measured_s": row.measured_s,
                                "excess_s": row.measured_s - b, "charged_s": st})
    return pd.DataFrame(out, columns=["split", "run_id", "cls", "measured_s", "excess_s", "charged_s"])


def host_state_windows(iterations: pd.DataFrame) -> pd.DataFrame:
    """Decode-only, busy iterations of one or more runs (columns run_id, rank, start_s, duration_s,
    prefill_tokens, idle) in WINDOW_S windows: median duration and median gap to the rank's next
    iteration (gaps over 3 ms, the loop asleep, left out), and whether the window is slow (over
    SLOW_FACTOR x its run's 10th-percentile window)."""
    out = []
    for (run, rank), it in iterations.groupby(["run_id", "rank"]):
        it = it.sort_values("start_s")
        gap = it.start_s.shift(-1) - it.start_s - it.duration_s
        sel = (it.prefill_tokens == 0) & (it.idle.astype(int) == 0) & (gap < 0.003)
        w = (it.start_s[sel] // WINDOW_S).astype(int)
        agg = pd.DataFrame({"duration_s": it.duration_s[sel], "gap_s": gap[sel], "window": w}).groupby("window")
        win = pd.DataFrame({"duration_s": agg.duration_s.median(), "gap_s": agg.gap_s.median(),
                            "n": agg.size()}).reset_index()
        win = win[win.n >= 10]
        if win.empty:
            continue
        floor = win.duration_s.quantile(0.1)
        out.append(win.assign(run_id=run, rank=rank, slow=win.duration_s > SLOW_FACTOR * floor))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["window", "duration_s", "gap_s", "n", "run_id", "rank", "slow"])


def repeat_pairs(load: pd.DataFrame, suffixes=("-none", "-core")) -> pd.DataFrame:
    """Runs named <config><suffix> for both suffixes (one process, seconds apart): per configuration
    each figure's relative difference (second / first - 1) and whether it is within the target."""
    rows = []
    load = load.assign(config=load.run_id.str.replace(f"({'|'.join(suffixes)})$", "", regex=True))
    for cfg, g in load.groupby("config"):
        a, b = (g[g.run_id == cfg + s] for s in suffixes)
        if a.empty or b.empty:
            continue
        row = {"config": cfg}
        for k in FIGURES:
            d = float(b.iloc[0][k]) / float(a.iloc[0][k]) - 1.0
            row[f"{k}_diff"], row[f"{k}_within"] = d, abs(d) <= TARGETS[k]
        rows.append(row)
    return pd.DataFrame(rows)


def hostprobe_summary(directory: Path) -> dict:
    """What the s9srv campaign decides, per mode (solo, ep) and rank: decode iterations' median and
    the share of slow windows; in slow / fast windows the medians of the CPU probe, the gloo exchange,
    the dispatch wait and the pre/post launch segments (is the slow state the host's speed, or the
    ranks' synchronisation?); the VM's steal share over the run; kernels per iteration."""
    directory = Path(directory)
    out = {}
    for path in glob_csv(directory, "hostprobe_*_r*.csv", recursive=True):
        if path.name.startswith("hostprobe_kernels_"):
            continue
        d = read_csv(path)
        dec = d[(d.prefill_tokens == 0) & (d.get("phase", "decode") == "decode")]
        if dec.empty:
            continue
        w = (dec.start_s // WINDOW_S).astype(int)
        cols = ["duration_s", "cpu_probe_s", "exchange_s", "dispatch_s", "pre_dispatch_s", "post_dispatch_s"]
        win = dec.groupby(w)[cols].median()
        win = win[dec.groupby(w).size() >= 10]
        slow = win.duration_s > SLOW_FACTOR * win.duration_s.quantile(0.1)
        st = d.dropna(subset=["steal_jiffies"])
        st = st[st.steal_jiffies >= 0]
        steal = busy = math.nan
        if len(st) >= 2:
            steal = float(st.steal_jiffies.iloc[-1] - st.steal_jiffies.iloc[0])
            busy = float(st.busy_jiffies.iloc[-1] - st.busy_jiffies.iloc[0])
        entry = {"decode_iterations": int(len(dec)), "decode_median_s": float(dec.duration_s.median()),
                 "slow_window_share": float(slow.mean()) if len(win) else math.nan,
                 "steal_share_of_busy": steal / (steal + busy) if busy and busy > 0 else math.nan,
                 "corr_duration_cpu_probe": _corr(win.duration_s, win.cpu_probe_s),
                 "corr_duration_exchange": _corr(win.duration_s, win.exchange_s)}
        for k in cols:
            entry[f"{k}_slow_over_fast"] = (float(win[k][slow].median() / win[k][~slow].median())
                                            if slow.any() and (~slow).any() else math.nan)
        entry.update(_mixed_phase(d))
        kern = path.with_name(csv_name(path).replace("hostprobe_", "hostprobe_kernels_"))
        if csv_exists(kern):
            k = read_csv(kern).iloc[0]
            entry["kernels_per_iteration"] = float(k.kernels_per_iteration)
            entry["aten_ops_per_iteration"] = float(k.aten_ops_per_iteration)
        out[csv_stem(path).removeprefix("hostprobe_")] = entry
    return out


def _mixed_phase(d: pd.DataFrame, n: int = 20) -> dict:
    """The mixed phase's prompt-carrying iterations: the first n against the last n (do they start
    slow and speed up?), and those during which the caching allocator took new device memory
    against the rest (is that why?)."""
    if "phase" not in d:
        return {}
    m = d[(d.phase == "mixed") & (d.prefill_tokens > 0)]
    out = {"mixed_prompt_iterations": int(len(m))}
    if len(m) >= 2 * n:
        out["mixed_first_over_last"] = float(m.duration_s.iloc[:n].median() / m.duration_s.iloc[-n:].median())
    if "segments_allocated" not in d or not (d.segments_allocated >= 0).all():
        return out
    grew = d.segments_allocated.diff().loc[m.index] > 0
    if grew.any() and (~grew).any():
        out["mixed_new_memory_over_none"] = float(m.duration_s[grew].median() / m.duration_s[~grew].median())
        out["mixed_new_memory_share"] = float(grew.mean())
    return out


def _corr(a: pd.Series, b: pd.Series) -> float:
    ok = a.notna() & b.notna()
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() >= 3 and b[ok].std() > 0 and a[ok].std() > 0 else math.nan


@entry.script
def main(argv: list[str] | None = None) -> None:
    entry.parser("calibration.serve_ep_residual", __doc__).parse_args(argv)
    pd.set_option("display.width", 160)
    for name in ("h100x2", "h200x2"):
        folder = rec.records_root() / name
        if not csv_exists(folder / "serve_iterations.csv"):
            continue
        print(f"== {name}: median measured / predicted by kind of iteration")
        print(residual_by_kind(folder).round(4).to_string(index=False))
        win = host_state_windows(read_csv(folder / "serve_iterations.csv"))
        print(f"== {name}: prompt iterations by first-met class, measured less the twin without the first-met stall")
        print(first_met_excess(folder).round(4).to_string(index=False))
        print(f"== {name}: decode windows of {WINDOW_S} s: slow share {win.slow.mean():.0%}; medians slow / fast: "
              f"duration {win.duration_s[win.slow].median() / win.duration_s[~win.slow].median():.2f}x, loop gap "
              f"{win.gap_s[win.slow].median() / win.gap_s[~win.slow].median():.2f}x")
    probe = rec.records_root() / "h100x2" / "s9srv"
    if probe.exists():
        print("== h100x2/s9srv hostprobe (columns: mode_rank)")
        print(pd.DataFrame(hostprobe_summary(probe)).round(4).to_string())
    r2 = rec.records_root() / "h100x2" / "s8srv_round2" / "serve_load.csv"
    if csv_exists(r2):
        pairs = repeat_pairs(read_csv(r2))
        within = sum(int(pairs[f"{k}_within"].sum()) for k in FIGURES)
        print(f"== repeats in one process (h100x2/s8srv_round2): {within} of {len(pairs) * len(FIGURES)} checks within target")


if __name__ == "__main__":
    main()
