"""The s23srvh judgement (docs/notes/s23srvh_rule.md): fresh held-out load runs of the three never-served models
(real/campaigns/s23srvh.sh, calibration.prereg_serve.S23), predicted by the committed twin and under each of two
switches, at each run's measured host inputs:

- `graph_unscaled`: twin.serving.timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED (a CUDA-graph replay's host terms at the
  table's fit host);
- `host_stalls`: twin.serving.engine.ADOPT_HOST_STALLS (each eager iteration pays the host's measured pauses,
  Poisson at the host's pause rate, sizes drawn from its pause probe);
- `base` both off (the committed twin), `both` both on (reported, never a criterion).

The host's pauses (real/serve/hostspeed.py pause_probe, the pause_* columns of serve_load.csv): pooled over every
run recorded on one machine (`host_pauses`: the pauses counted over the seconds of timed launching, their sizes),
given to each of its runs (`with_host_pauses`) as calibration.serve_load_validation.scenario_for reads them.

Each run is predicted as the s22ttft registration predicts (calibration.prereg_serve.predict: the requests from the
seeds, a closed loop's count found per replay, the committed one-GPU table, SPREAD_SEEDS replays, the median) but at
its measured launch probe directly; the rule's verdict is calibration.prereg_serve.rule_verdict of each switch's
setting against `base`. `committed_sets` replays every committed serving set (calibration.serve_switch_compare's)
with a switch off and on (criterion 4).

    python -m calibration.serve_host_stalls            # the verdict on the s23srvh records
    python -m calibration.serve_host_stalls --write    # and the predictions file prereg/s23srvh_predictions.csv
    python -m calibration.serve_host_stalls --committed ADOPT_HOST_STALLS   # criterion 4 for one switch
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pandas as pd

from calibration import entry
from calibration import prereg_serve as ps
from calibration import records as rec
from calibration import serve_switch_compare as sscm
from calibration.prereg import PREREG_DIR, write_registered
from calibration.records_io import csv_exists, read_csv
from calibration.serve_load_validation import FIGURES
from twin.serving import engine as serve_engine
from twin.serving import timing

REG = ps.S23
# setting -> (ADOPT_GRAPH_DECODE_HOST_UNSCALED, ADOPT_HOST_STALLS)
SETTINGS = {"base": (False, False), "graph_unscaled": (True, False), "host_stalls": (False, True), "both": (True, True)}
CANDIDATES = ("graph_unscaled", "host_stalls")   # each judged against base (docs/notes/s23srvh_rule.md)
SWITCHES = {"ADOPT_GRAPH_DECODE_HOST_UNSCALED": timing, "ADOPT_HOST_STALLS": serve_engine}
PREDICTIONS_FILE = PREREG_DIR / "s23srvh_predictions.csv"


@contextlib.contextmanager
def setting(name: str):
    """The twin with the two switches as SETTINGS[name], restored after."""
    saved = timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS
    timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS = SETTINGS[name]
    try:
        yield
    finally:
        timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS = saved


def _sizes(text) -> list[float]:
    return [float(x) for x in str(text or "").split(";") if x.strip()]


def host_pauses(rows: list[dict]) -> dict:
    """One host's pauses pooled over its runs' pause probes: pauses counted over seconds of timed launching
    (host_stall_rate_per_s), every pause size (host_stall_sizes_s), the seconds probed; rows without a probe
    count nothing."""
    window, count, sizes = 0.0, 0, []
    for r in rows:
        w = float(r.get("pause_window_s") or 0.0)
        if not w > 0:
            continue
        window += w
        count += int(float(r.get("pause_count") or 0))
        sizes += _sizes(r.get("pause_sizes_s"))
    return {"host_stall_rate_per_s": count / window if window > 0 else 0.0, "host_stall_sizes_s": sizes,
            "pause_window_s": window}


def with_host_pauses(rows: list[dict], host_key: str = "gpu") -> list[dict]:
    """`rows` with each given its host's pooled pauses (host_pauses over the rows of its `host_key`: one GPU kind's
    campaign ran on one machine)."""
    pooled = {h: host_pauses([r for r in rows if r[host_key] == h]) for h in {r[host_key] for r in rows}}
    return [{**r, "host_stall_rate_per_s": pooled[r[host_key]]["host_stall_rate_per_s"],
             "host_stall_sizes_s": ";".join(f"{x:.6g}" for x in pooled[r[host_key]]["host_stall_sizes_s"])}
            for r in rows]


def _run_case(run_id: str) -> tuple[str, ps.RunCase]:
    for model in ps.MODELS:
        for run in REG.runs:
            if ps.run_id(model, run, REG.prefix) == run_id:
                return model, run
    raise KeyError(f"{run_id}: not a run of registration {REG.name}")


def predict_row(r: dict, name: str) -> dict:
    """A recorded run's figures under setting `name`, at its measured probe and its host's pooled pauses."""
    model, run = _run_case(r["run_id"])
    extra = {"host_stall_rate_per_s": r.get("host_stall_rate_per_s", 0.0), "host_stall_sizes_s": r.get("host_stall_sizes_s", "")}
    with setting(name):
        return ps.predict(r["gpu"], model, run, float(r["probe_s"]), REG.prefix, extra)


def predictions(records: pd.DataFrame, names=tuple(SETTINGS)) -> pd.DataFrame:
    """One row per recorded run and setting: its key, the inputs (probe, pause rate, pauses) and the figures."""
    out = []
    for r in with_host_pauses(records.to_dict("records")):
        for name in names:
            out.append({"twin": name, "gpu": r["gpu"], "model": r["model"], "run_id": r["run_id"],
                        "host_launch_s": float(r["probe_s"]), "host_stall_rate_per_s": r["host_stall_rate_per_s"],
                        "host_stall_sizes_s": r["host_stall_sizes_s"], **predict_row(r, name)})
    return pd.DataFrame(out)


def compare(preds: pd.DataFrame, records: pd.DataFrame) -> list[dict]:
    """Per recorded run and setting, every figure's measured, predicted, error and whether it meets its target
    (calibration.prereg_serve.compare's row shape, variant 'host_input')."""
    out = []
    for r in records.to_dict("records"):
        for p in preds[(preds["gpu"] == r["gpu"]) & (preds["run_id"] == r["run_id"])].to_dict("records"):
            out.append({"gpu": r["gpu"], "model": r["model"], "run_id": r["run_id"], "twin": p["twin"],
                        "variant": "host_input", "probe_s": r["probe_s"], "gpu_name": r.get("gpu_name", ""),
                        **ps.figure_errors(r, p)})
    return out


def verdicts(rows: list[dict]) -> dict:
    """Each candidate's rule_verdict against base (docs/notes/s23srvh_rule.md criteria 1-3), base labelled
    'committed' there (rule_verdict's own keys 'base' / 'candidate' name the two settings and would hide a setting
    named 'base')."""
    named = [{**r, "twin": "committed" if r["twin"] == "base" else r["twin"]} for r in rows]
    return {c: ps.rule_verdict(named, "committed", c) for c in CANDIDATES}


def gpu_predictions_file(gpu: str):
    """A GPU's records that came after PREDICTIONS_FILE was written get a file of their own (never rewriting one)."""
    return PREREG_DIR / f"s23srvh_predictions_{gpu}.csv"


def written_predictions() -> pd.DataFrame:
    """Every written s23srvh predictions file (PREDICTIONS_FILE and the per-GPU ones), together."""
    files = [f for f in sorted(PREREG_DIR.glob("s23srvh_predictions*.csv")) if csv_exists(f)]
    return pd.concat([read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame(columns=["gpu"])


def judged(root=None) -> tuple[list[dict], dict]:
    """compare() rows of the s23srvh records against the written predictions (computed afresh for a GPU no file
    holds) and the verdicts."""
    root = rec.records_root() if root is None else root
    recs = ps.measured(root, REG)
    if recs.empty:
        return [], {}
    preds = written_predictions()
    missing = recs[~recs["gpu"].isin(set(preds["gpu"]))]
    if not missing.empty:
        preds = pd.concat([preds, predictions(missing)], ignore_index=True)
    rows = compare(preds, recs)
    return rows, verdicts(rows)


def committed_sets(switch: str) -> tuple[dict, dict, list[str]]:
    """calibration.serve_switch_compare's sets replayed with `switch` (a SWITCHES key) off and on: (summary off,
    summary on, the checks that moved)."""
    module = SWITCHES[switch]
    saved = getattr(module, switch)
    setattr(module, switch, False)
    try:
        off = sscm.all_rows(rec.records_root())
        setattr(module, switch, True)
        on = sscm.all_rows(rec.records_root())
    finally:
        setattr(module, switch, saved)
    return sscm.summary(off), sscm.summary(on), sscm.moved(off, on)


def format_rows(rows: list[dict], verdict: dict) -> list[str]:
    lines = []
    for label, s in ps.summarize(rows).items():
        lines.append(f"{label}: {s['checks_met']}/{s['checks']} checks, median |err| {s['median_abs_rel_error']:.2%}, "
                     f"P90 {s['p90_abs_rel_error']:.1%}, by figure {s['by_figure']}")
    for cand, v in verdict.items():
        b, c = v["base"], v["candidate"]
        lines.append(f"rule {cand}: base {v[b]['checks_met']}/{v[b]['checks']} (median {v[b]['median_abs_rel_error']:.2%}, "
                     f"by GPU {v[b]['by_gpu']}); {c} {v[c]['checks_met']}/{v[c]['checks']} (median "
                     f"{v[c]['median_abs_rel_error']:.2%}, by GPU {v[c]['by_gpu']}): "
                     f"{'criteria 1-3 met' if v['adopt'] else 'criteria 1-3 not met'}")
    for r in rows:
        figs = ", ".join(f"{k.removesuffix('_s')} {r[f'{k}_rel_error']:+.1%}{'' if r[f'{k}_within_target'] else '!'}"
                         for k in FIGURES)
        lines.append(f"  {r['twin']:15} {r['gpu']} {r['run_id']} (p {r['probe_s'] * 1e6:.1f} us): {figs}")
    return lines


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.serve_host_stalls", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the predictions file (refuses to overwrite one)")
    ap.add_argument("--committed", choices=sorted(SWITCHES), help="criterion 4: the committed sets with this switch off and on")
    args = ap.parse_args(argv)
    if args.committed:
        off, on, lines = committed_sets(args.committed)
        for name in off:
            (ma, na, ea), (mb, nb, eb) = off[name], on[name]
            print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   on {mb:3}/{nb:3} median {eb:.2%}")
        print("\n".join(lines))
        return 0
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    recs = ps.measured(root, REG)
    if recs.empty:
        print("no s23srvh records")
        return 0
    for gpu in sorted(recs["gpu"].unique()):
        h = host_pauses(recs[recs["gpu"] == gpu].to_dict("records"))
        sizes = np.array(h["host_stall_sizes_s"])
        print(f"{gpu} pauses: {len(sizes)} over {h['pause_window_s']:.1f} s of launching ({h['host_stall_rate_per_s']:.2f}/s)"
              + (f", sizes {np.min(sizes) * 1e3:.1f}-{np.max(sizes) * 1e3:.1f} ms, median {np.median(sizes) * 1e3:.1f} ms"
                 if sizes.size else ""))
    if args.write:   # stamped with the predicting code's commit; refuses a dirty tree or an existing file
        done = set(written_predictions()["gpu"])
        for gpu in sorted(set(recs["gpu"]) - done):
            path = PREDICTIONS_FILE if not done else gpu_predictions_file(gpu)
            write_registered(path, lambda: predictions(recs[recs["gpu"] == gpu]))
    rows, verdict = judged(root)
    print("\n".join(format_rows(rows, verdict)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
