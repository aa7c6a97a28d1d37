"""Is real/serve's low-rate prompt level the GPU's SM clock after idle? (s19srv, issue 15; fit split only)

Hypothesis tested (docs/notes/s19srv_rule.md): after idle the GPU drops its SM clock and ramps up over
tens to hundreds of ms, so at low arrival rates prompt iterations would run at a lower clock than at high
rates. Per prompt-carrying iteration of a folder's FIT runs this module gives: measured / predicted (the
committed engine table, its first-met-size terms charged where host-bound as the fit charges them), the
SM clock NVML read right after the iteration (`sm_clock_mhz`, newer records only; the lowest over the
ranks), the idle gap before it, and the busy fraction (duty) of the 50 / 100 / 500 ms before it on the
first rank's timeline (iteration spans: host and GPU work, the gaps idle). Held-out runs are never read.

    python -m calibration.serve_clock_idle h100 h200 h100/s8srv_round2 h100/s13srv h200/s13srv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration import serve_engine_fit as fit
from calibration.records_io import read_csv
from calibration.serve_engine_fit import host_bound_prompts_before
from calibration.serve_load_validation import sessions
from twin.core.specs import serve_engines

DUTY_WINDOWS_S = (0.05, 0.1, 0.5)
GAP_EDGES_S = (-1.0, 0.0005, 0.005, 0.02, 0.05, 0.1, 0.3, 1e9)
DUTY_EDGES = (-0.01, 0.1, 0.3, 0.6, 0.9, 1.01)
SINCE_EAGER_EDGES = (-1, 0, 3, 7, 15, 31, 63, 10**9)
PROMPTS_BEFORE_EDGES = (-1, 10, 25, 50, 100, 200, 10**9)


def gaps_before_s(starts_s: np.ndarray, ends_s: np.ndarray) -> np.ndarray:
    """The idle gap before each iteration (NaN before the first), iterations in start order."""
    return np.concatenate([[np.nan], starts_s[1:] - ends_s[:-1]])


def duty_before(starts_s: np.ndarray, ends_s: np.ndarray, window_s: float) -> np.ndarray:
    """Per iteration k, the fraction of [start_k - window_s, start_k) covered by earlier iterations'
    spans (time before the run's first iteration counts as idle)."""
    out = np.empty(len(starts_s))
    for k, start in enumerate(starts_s):
        lo = start - window_s
        busy = np.clip(np.minimum(ends_s[:k], start) - np.maximum(starts_s[:k], lo), 0.0, None).sum()
        out[k] = busy / window_s
    return out


def graphs_since_eager(run_ids, graph_rows) -> np.ndarray:
    """Per design row (in run order): the CUDA-graph rows of its run since the run's last eager row (before
    the run's first eager row: 10**9, cold), as twin.serving.engine counts them for cold_eager_s."""
    out, run, since = [], None, 10**9
    for r, g in zip(run_ids, graph_rows):
        if r != run:
            run, since = r, 10**9
        out.append(since)
        since = since + 1 if g else 0
    return np.array(out)


def masked_predicted_s(df: pd.DataFrame, coef: dict) -> pd.Series:
    """The table's time of each design row with the first-met-size terms charged only where the row
    is host-bound under the table (kernel physics below its host terms), as the fit and twin charge them."""
    bound = (df.physics_s < fit.host_s(df, coef)).astype(float)
    masked = df.assign(new_size_s=df.new_size_flag * bound, new_bin_s=df.new_bin_flag * bound,
                       cold_prompt_s=df.cold_flag * bound)
    return fit.predicted_s(masked, coef)


def run_sessions(folder: Path) -> dict[str, str]:
    """run id -> its engine process (calibration.serve_load_validation.sessions of the folder's runs)."""
    return sessions(fit.load_runs(folder))


def table_of_runs(folder: Path, meta: dict, run_ids, tables: dict) -> dict[str, str]:
    """run id -> the table the validation replays it with (its session's where one is kept; a pinned
    run's GPU and EP's unpinned table where no pinned one is kept, as serve_host_speed replays them)."""
    sess = run_sessions(folder)
    base = fit.engine_key(meta["gpu"], meta["ep"], meta["pin"])
    base = base if base in tables else fit.engine_key(meta["gpu"], meta["ep"], "")   # pinned runs: the unpinned table
    return {r: (f"{base}@{sess.get(r, '')}" if f"{base}@{sess.get(r, '')}" in tables else base) for r in set(run_ids)}


def timeline_features(iterations: pd.DataFrame) -> pd.DataFrame:
    """(run_id, iteration) -> gap before, duty over DUTY_WINDOWS_S (rank 0's timeline) and the lowest
    SM clock over the ranks (NaN where not recorded)."""
    rows = []
    for run, it in iterations[iterations["rank"] == 0].groupby("run_id"):
        it = it.sort_values("start_s")
        starts = it.start_s.to_numpy(float)
        ends = starts + it.duration_s.to_numpy(float)
        cols = {"run_id": run, "iteration": it.iteration.to_numpy(int), "gap_s": gaps_before_s(starts, ends)}
        for w in DUTY_WINDOWS_S:
            cols[f"duty_{int(round(w * 1e3))}ms"] = duty_before(starts, ends, w)
        rows.append(pd.DataFrame(cols))
    out = pd.concat(rows, ignore_index=True)
    clock = (iterations.groupby(["run_id", "iteration"]).sm_clock_mhz.min().rename("sm_clock_mhz")
             if "sm_clock_mhz" in iterations else None)
    out = out.merge(clock.reset_index(), on=["run_id", "iteration"], how="left") if clock is not None \
        else out.assign(sm_clock_mhz=np.nan)
    return out


def prompt_rows(folder: Path, tables: dict | None = None) -> pd.DataFrame:
    """The fit runs' prompt-carrying iterations of one records folder with ratio (measured / table),
    sm_clock_mhz, gap_s and the duty columns."""
    tables = tables or serve_engines()
    df, meta = fit.design(Path(folder), "fit")
    which = table_of_runs(folder, meta, df.run_id, tables)
    df["table"] = df.run_id.map(which)
    df["predicted_s"] = df["excess_s"] = np.nan
    df["host_bound"] = False
    for name, g in df.groupby("table"):
        coef = tables[name]
        df.loc[g.index, "predicted_s"] = masked_predicted_s(g, coef)
        # the excess over the table without its first-size terms (what a first-met size or a cold path adds)
        df.loc[g.index, "excess_s"] = g.measured_s - fit.predicted_s(g, {**coef, "new_size_s": 0.0, "new_bin_s": 0.0})
        df.loc[g.index, "host_bound"] = (g.physics_s < fit.host_s(g, coef)).to_numpy()
    df["ratio"] = df.measured_s / df.predicted_s
    df["graphs_since_eager"] = graphs_since_eager(df.run_id, df.graph_rows)
    df["host_bound_prompts_before"] = host_bound_prompts_before(df.run_id, df.prompt_iteration_s > 0, df.host_bound,
                                                                run_sessions(folder))
    prompts = df[df.prompt_iteration_s > 0][["run_id", "iteration", "table", "measured_s", "predicted_s", "ratio",
                                             "excess_s", "host_bound", "new_size_flag", "new_bin_flag",
                                             "graphs_since_eager", "host_bound_prompts_before"]]
    feats = timeline_features(read_csv(Path(folder) / "serve_iterations.csv"))
    return prompts.merge(feats, on=["run_id", "iteration"], how="left")


def by_bins(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Median ratio and count of the prompt rows by run, by gap before, by duty over 500 ms and by graph
    rows since the last eager one (first-met sizes apart); the host-bound rows' median excess (ms) by the
    host-bound prompt rows their process ran before, per first-size kind."""
    return {
        "run": rows.groupby("run_id").agg(n=("ratio", "size"), ratio=("ratio", "median"), gap_ms=("gap_s", "median"),
                                          duty_100ms=("duty_100ms", "median"), clock_min=("sm_clock_mhz", "min")),
        "gap": rows.groupby(pd.cut(rows.gap_s, GAP_EDGES_S), observed=True).ratio.agg(["size", "median"]),
        "duty": rows.groupby(pd.cut(rows.duty_500ms, DUTY_EDGES), observed=True).ratio.agg(["size", "median"]),
        # the eager host path gone cold while graphs replay (s15srv2), rows with a first-met size apart
        "graphs since eager": rows.groupby([pd.cut(rows.graphs_since_eager, SINCE_EAGER_EDGES),
                                            (rows.new_size_flag + rows.new_bin_flag > 0).rename("first_met")],
                                           observed=True).ratio.agg(["size", "median"]).unstack("first_met"),
        # the process's prompt path warming with its prompt work (s19srv, group B): host-bound rows' excess (ms)
        "host-bound prompts before": _excess_by_prompts_before(rows),
    }


def first_size_kind(rows: pd.DataFrame) -> pd.Series:
    """'new bin' / 'new size' (exact, in a met bin) / 'seen' per prompt row."""
    return pd.Series(np.where(rows.new_bin_flag > 0, "new bin", np.where(rows.new_size_flag > 0, "new size", "seen")),
                     index=rows.index, name="kind")


def _excess_by_prompts_before(rows: pd.DataFrame) -> pd.DataFrame:
    bound = rows[rows.host_bound.astype(bool)]
    return (bound.excess_s * 1e3).groupby([pd.cut(bound.host_bound_prompts_before, PROMPTS_BEFORE_EDGES),
                                           first_size_kind(bound)], observed=True).agg(["size", "median"]).unstack("kind")


def repeat_levels(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run (in record order): the prompt rows' median ratio where their exact flat size was run before
    by the process (seen) and where not (new), and how many of each: what a repeat campaign reads (s12srv,
    s19srv: a level still falling over identical repeats of one stream is the process warming up)."""
    seen = rows.new_size_flag == 0
    out = pd.DataFrame({"n_seen": rows[seen].groupby("run_id").size(), "seen": rows[seen].groupby("run_id").ratio.median(),
                        "n_new": rows[~seen].groupby("run_id").size(), "new": rows[~seen].groupby("run_id").ratio.median()})
    return out.reindex(list(dict.fromkeys(rows.run_id))).fillna({"n_seen": 0, "n_new": 0})


@entry.script
def main(argv: list[str] | None = None) -> None:
    ap = entry.parser("calibration.serve_clock_idle", __doc__)
    ap.add_argument("names", nargs="*", type=entry.records_folder, metavar="FOLDER",
                    default=["h100", "h200", "h100/s8srv_round2"],
                    help="serving records folders under calibration/measurements/ (default h100 h200 h100/s8srv_round2)")
    args = ap.parse_args(argv)
    tables = serve_engines()
    for name in args.names:
        with entry.user_inputs("FOLDER", name, "a serving records folder (serve_load.csv, serve_iterations.csv)"):
            rows = prompt_rows(rec.records_root() / name, tables)
        clocks = rows.sm_clock_mhz.value_counts(dropna=False).to_dict()
        print(f"== {name}: {len(rows)} fit prompt iterations; sampled SM clock (MHz: count) {clocks}")
        for label, t in by_bins(rows).items():
            print(f"-- by {label}\n{t.round(3).to_string()}")
        print(f"-- by run and exact size run before\n{repeat_levels(rows).round(3).to_string()}")


if __name__ == "__main__":
    main()
