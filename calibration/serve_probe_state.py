"""What the host probe beside each EP2 load run tells about the host's state during the run (issue 15,
group C; docs/notes/s20srv3.md). Diagnostic on fit-split runs only: no fit or validation reads it.

The s13srv campaign brackets every load run with the host probe (real/serve/hostspeed.py: `launch_s`, host
seconds per small kernel launch over a 40 ms window, right before and right after the run; the slowest
rank's in probe_before/after_launch_s, each rank's mean of the two in probe_launch_ranks_s). The twin scales
an engine table's host terms by f = (p / p_ref)^beta, p the mean of before and after
(calibration.serve_load_validation.record_host_launch_s).

`decode_levels`: per fit run of an EP2 probe folder (the table's fit host and the never-fitted hosts' fit-split
runs), its decode-only iterations (no prompt work on any rank) against the twin before its spread, physics
+ f x the table's host terms: `level` = measured median / predicted median at the run's probe; `first_*` /
`last_*` the same over the run's first / last EDGE_S of decode with f from the probe before / after
(does a probe tell the moment it samples?); `window_min` / `window_max` the run's WINDOW_S windows' medians
over the unscaled table (how far the host swings inside one run).

`probe_tracking`: within each host, how the run's decode host factor follows each probe reading (the
slowest rank's launch mean the twin takes, the ranks' mean, the launch median, the pure-Python pass).

`formulations`: the decode levels' log errors, log(predicted / measured), under
  current   f = (p / p_ref)^beta, the committed references;
  launch_x_p the probe as the per-launch cost: host terms x c p, c least squares over the table's fit host's
             as-came (undosed) runs;
  constant  no probe: host terms x k, k likewise;
per table, host (fit / never fitted) and dosed or as came.

    python -m calibration.serve_probe_state
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.records_io import read_csv
from calibration.serve_decode_phases import WINDOW_S, instance_decode
from calibration.serve_engine_fit import base_table, design, load_runs, mark_new_sizes, predicted_s, probe_folders
from calibration.serve_load_validation import record_host_launch_s
from calibration.serve_switch_compare import new_host_folders
from twin.core.specs import serve_engines

EDGE_S = 0.5   # the first / last stretch of a run's decode read against the probe before / after it


def ep_probe_folders(root: str | Path | None = None) -> dict[str, tuple[Path, bool]]:
    """'<gpu folder>/<sub folder>' -> (records, whether it is the table's fit host) for every EP2 probe
    folder: the s13srv fit folders and the never-fitted hosts beside them."""
    root = rec.records_root() if root is None else root
    fit = {n: d for n, d in probe_folders(root).items() if n.endswith("x2")}
    out = {f"{n}/{d.name}": (d, True) for n, d in fit.items()}
    out.update({n: (d, False) for n, d in new_host_folders(fit).items()})
    return out


def decode_iterations(folder: Path, tables: dict | None = None) -> pd.DataFrame:
    """The fit runs' decode-only iterations of an EP probe folder: measured_s, physics_s, host_s (the
    unpinned table's host terms, unscaled), start_s and table."""
    tables = serve_engines() if tables is None else tables
    df, _ = design(Path(folder), "fit")
    parts = []
    for run in load_runs(folder):
        sub = df[df.run_id == run["run_id"]]
        if sub.empty:
            continue
        name = base_table(run)
        sub = mark_new_sizes(sub, int(tables[name].get("new_size_bin_tokens", 1)))
        pred = predicted_s(sub, tables[name])
        parts.append(sub.assign(table=name, host_s=pred - sub.physics_s))
    pred = pd.concat(parts, ignore_index=True)
    dec = pred[pred.prompt_iteration_s == 0][["run_id", "iteration", "measured_s", "physics_s", "host_s", "table"]]
    its = read_csv(Path(folder) / "serve_iterations.csv")
    return dec.merge(instance_decode(its)[["run_id", "iteration", "start_s"]], on=["run_id", "iteration"])


def _level(dec: pd.DataFrame, f: float) -> float:
    """measured median / (physics + f x host terms) median of decode iterations."""
    return float(dec.measured_s.median() / (dec.physics_s + f * dec.host_s).median())


def decode_levels(folder: Path, fit_host: bool, tables: dict | None = None) -> pd.DataFrame:
    """Per fit run of an EP probe folder: probes (us), decode level against the scaled twin (module doc)."""
    tables = serve_engines() if tables is None else tables
    runs = {r["run_id"]: r for r in load_runs(folder)}
    rows = []
    for run_id, d in decode_iterations(folder, tables).groupby("run_id"):
        run, t = runs[run_id], tables[d.table.iloc[0]]
        p_ref, beta = t.get("host_probe_launch_s", 0.0), t.get("host_probe_exponent", 0.0)
        if not p_ref > 0:
            continue
        before, after = float(run["probe_before_launch_s"]), float(run["probe_after_launch_s"])
        f = {w: (p / p_ref) ** beta for w, p in (("before", before), ("after", after))}
        first, last = d[d.start_s < d.start_s.min() + EDGE_S], d[d.start_s > d.start_s.max() - EDGE_S]
        window = ((d.start_s - d.start_s.min()) // WINDOW_S).astype(int)
        unscaled = d.groupby(window).apply(lambda w: w.measured_s.median() / (w.physics_s + w.host_s).median())
        ranks = [float(x) for x in str(run["probe_launch_ranks_s"]).split(";")]
        rows.append({"run_id": run_id, "table": d.table.iloc[0], "fit_host": fit_host,
                     "dosed": bool(run.get("co_runner_nice", "")), "p_before_us": before * 1e6,
                     "p_after_us": after * 1e6, "p_rank0_us": ranks[0] * 1e6, "p_rank1_us": ranks[-1] * 1e6,
                     "p_s": record_host_launch_s(run), "p_ranks_mean_s": float(np.mean(ranks)),
                     "p_launch_p50_s": _mean_of(run, "launch_p50_s"), "p_py_s": _mean_of(run, "py_s"),
                     "measured_s": float(d.measured_s.median()),
                     "physics_s": float(d.physics_s.median()), "host_s": float(d.host_s.median()),
                     "level": _level(d, (record_host_launch_s(run) / p_ref) ** beta),
                     "first_vs_before": _level(first, f["before"]), "first_vs_after": _level(first, f["after"]),
                     "last_vs_before": _level(last, f["before"]), "last_vs_after": _level(last, f["after"]),
                     "window_min": float(unscaled.min()), "window_max": float(unscaled.max())})
    return pd.DataFrame(rows)


def _mean_of(run: dict, key: str) -> float:
    """The mean of a probe measure before and after a run (the slowest rank's)."""
    return (float(run[f"probe_before_{key}"]) + float(run[f"probe_after_{key}"])) / 2


# the probe readings probe_tracking compares: the twin's input (the slowest rank's launch mean), the ranks'
# mean, the launch chains' median and the pure-Python pass
PROBES = ("p_s", "p_ranks_mean_s", "p_launch_p50_s", "p_py_s")


def probe_tracking(levels: pd.DataFrame) -> pd.DataFrame:
    """Within each host (folder), how each probe reading follows the host factor the run showed,
    (measured - physics) / host terms of its decode level: the demeaned logs' slope and correlation, and
    the mean |residual| with slope 1 (the twin's form), beside no probe; per dosed / as came."""
    x = levels.assign(factor=(levels.measured_s - levels.physics_s) / levels.host_s)
    rows = []
    for dosed, g in x.groupby("dosed"):
        y = np.log(g.factor) - np.log(g.factor).groupby(g.folder).transform("mean")
        rows.append({"dosed": dosed, "probe": "none", "slope": np.nan, "corr": np.nan, "resid": float(y.abs().mean())})
        for probe in PROBES:
            z = np.log(g[probe]) - np.log(g[probe]).groupby(g.folder).transform("mean")
            rows.append({"dosed": dosed, "probe": probe, "slope": float((y * z).sum() / (z * z).sum()),
                         "corr": float(np.corrcoef(y, z)[0, 1]), "resid": float((y - z).abs().mean())})
    return pd.DataFrame(rows)


def all_levels(root: str | Path | None = None) -> pd.DataFrame:
    root = rec.records_root() if root is None else root
    return pd.concat([decode_levels(d, fit_host).assign(folder=name)
                      for name, (d, fit_host) in ep_probe_folders(root).items()], ignore_index=True)


def _factor(fit: pd.DataFrame, h: pd.Series) -> float:
    """The least-squares factor on host terms `h` (rows of fit) of measured - physics."""
    return float(((fit.measured_s - fit.physics_s) * h).sum() / (h * h).sum())


def formulations(levels: pd.DataFrame, tables: dict | None = None) -> pd.DataFrame:
    """Per run, log(predicted / measured) of its decode level under the three forms (module doc)."""
    tables = serve_engines() if tables is None else tables
    out = []
    for name, g in levels.groupby("table"):
        t = tables[name]
        fit = g[g.fit_host & ~g.dosed]
        c, k = _factor(fit, fit.host_s * fit.p_s), _factor(fit, fit.host_s)
        forms = {"current": (g.p_s / t["host_probe_launch_s"]) ** t["host_probe_exponent"],
                 "launch_x_p": c * g.p_s, "constant": k + 0.0 * g.p_s}
        errs = {f: np.log((g.physics_s + x * g.host_s) / g.measured_s) for f, x in forms.items()}
        out.append(g[["folder", "run_id", "table", "fit_host", "dosed"]].assign(**errs, launch_x_p_ref_s=1.0 / c))
    return pd.concat(out, ignore_index=True)


@entry.script
def main(argv: list[str] | None = None) -> None:
    entry.parser("calibration.serve_probe_state", __doc__).parse_args(argv)
    pd.set_option("display.width", 250)
    lv = all_levels(rec.records_root())
    print("== within a host, the host factor each run showed against each probe reading (logs, demeaned per host)")
    print(probe_tracking(lv).round(3).to_string(index=False))
    print("== EP2 fit runs' decode-only iterations against the twin before its spread (level: measured / predicted)")
    shown = lv.assign(**{f"{k}_ms": lv[f"{k}_s"] * 1e3 for k in ("measured", "physics", "host")})
    print(shown.drop(columns=["table", *PROBES, "measured_s", "physics_s", "host_s"]).round(3).to_string(index=False))
    dev = np.log(lv.level) - np.log(lv.level).groupby([lv.folder, lv.dosed]).transform("mean")
    for dosed in (False, True):
        x = lv[lv.dosed == dosed]
        print(f"dosed={dosed}: mean |log deviation| from the host's mean: run level at the mean probe "
              f"{dev[lv.dosed == dosed].abs().mean():.3f}; " + ", ".join(
                  f"{k} {np.log(x[k]).groupby(x.folder).transform(lambda v: v - v.mean()).abs().mean():.3f}"
                  for k in ("first_vs_before", "first_vs_after", "last_vs_before", "last_vs_after")))
    fo = formulations(lv)
    print("== decode level, log(predicted / measured): mean / mean |.| per table, host, dosed")
    print(fo.groupby(["table", "fit_host", "dosed"])[["current", "launch_x_p", "constant"]].agg(
        lambda x: f"{x.mean():+.3f} / {x.abs().mean():.3f}").to_string())
    print("launch_x_p's equivalent reference (us): " + ", ".join(
        f"{t} {v * 1e6:.2f}" for t, v in fo.groupby("table").launch_x_p_ref_s.first().items()))


if __name__ == "__main__":
    main()
